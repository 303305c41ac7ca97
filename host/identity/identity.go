// Package identity keeps a node's identities: Ed25519 key pairs in a vault
// directory (by default $FERRY_HOME/vault), one file per identity. The vault
// directory is created with mode 0700 and every key file with mode 0600; a
// key file or vault that others can read or write is refused with an error
// that says how to fix it, because a key anyone else can read is no longer
// an identity.
//
// An identity's identifier is derived from its public key alone
// ("I" followed by the first 20 bytes of SHA-256(public key) in hex), so a
// peer that proves possession of the key (host/securechannel does) proves
// the identifier; nothing else needs to be trusted.
package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Errors callers can test with errors.Is.
var (
	ErrNotFound    = errors.New("no such identity")
	ErrExists      = errors.New("identity already exists")
	ErrPermissions = errors.New("insecure permissions")
)

// IdentifierPrefix starts every identifier.
const IdentifierPrefix = "I"

// identifierBytes is how much of SHA-256(public key) an identifier keeps:
// 160 bits, enough that finding a second key with the same identifier is
// infeasible.
const identifierBytes = 20

// IdentifierLen is the length of an identifier in characters.
const IdentifierLen = len(IdentifierPrefix) + 2*identifierBytes

// keyFileExt ends the name of every key file in the vault.
const keyFileExt = ".key"

// fileVersion is written into every key file so a later format can be told apart.
const fileVersion = 1

// Identifier derives the identifier of an Ed25519 public key.
func Identifier(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return IdentifierPrefix + hex.EncodeToString(sum[:identifierBytes])
}

// ValidIdentifier checks the shape of an identifier someone typed.
func ValidIdentifier(s string) error {
	if len(s) != IdentifierLen || !strings.HasPrefix(s, IdentifierPrefix) {
		return fmt.Errorf("identifier %q: want %q followed by %d lower-case hex digits", s, IdentifierPrefix, 2*identifierBytes)
	}
	for _, c := range s[len(IdentifierPrefix):] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fmt.Errorf("identifier %q: want %q followed by %d lower-case hex digits", s, IdentifierPrefix, 2*identifierBytes)
		}
	}
	return nil
}

// ValidName checks an identity name: 1 to 64 characters from a-z, A-Z, 0-9,
// '-', '_' and '.', not starting with '.'.
func ValidName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("identity name %q: want 1 to 64 characters", name)
	}
	if name[0] == '.' {
		return fmt.Errorf("identity name %q must not start with '.'", name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("identity name %q: only a-z, A-Z, 0-9, '-', '_' and '.' are allowed", name)
		}
	}
	return nil
}

// Identity is a named Ed25519 key pair.
type Identity struct {
	Name       string
	Identifier string
	PublicKey  ed25519.PublicKey
	Created    time.Time
	private    ed25519.PrivateKey
}

// New makes an identity with a fresh key pair that is kept in memory only
// (tests and embedding programs that manage keys themselves use it).
func New(name string) (*Identity, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key for identity %s: %w", name, err)
	}
	return &Identity{Name: name, Identifier: Identifier(pub), PublicKey: pub, Created: time.Now().UTC(), private: priv}, nil
}

// Sign signs msg with the identity's private key.
func (id *Identity) Sign(msg []byte) []byte { return ed25519.Sign(id.private, msg) }

// Verify checks a signature made by the holder of pub.
func Verify(pub ed25519.PublicKey, msg, sig []byte) bool {
	if len(pub) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize {
		return false
	}
	return ed25519.Verify(pub, msg, sig)
}

// keyFile is the JSON stored for one identity.
type keyFile struct {
	Version    int       `json:"version"`
	Name       string    `json:"name"`
	Identifier string    `json:"identifier"`
	Seed       string    `json:"ed25519_seed"` // hex, 32 bytes
	Created    time.Time `json:"created"`
}

// Vault is a directory of identities.
type Vault struct {
	dir string
}

// OpenVault opens (creating it with mode 0700 if missing) the vault at dir.
// A vault directory that group or others can access is refused.
func OpenVault(dir string) (*Vault, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create vault %s: %w", dir, err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("open vault %s: %w", dir, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("open vault %s: not a directory", dir)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("open vault %s: the directory has mode %04o, which lets other users at the keys; run chmod 700 %s: %w", dir, perm, dir, ErrPermissions)
	}
	return &Vault{dir: dir}, nil
}

// Dir returns the vault's directory.
func (v *Vault) Dir() string { return v.dir }

func (v *Vault) path(name string) string { return filepath.Join(v.dir, name+keyFileExt) }

// Create makes a new identity called name and stores its key with mode 0600.
func (v *Vault) Create(name string) (*Identity, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	id, err := New(name)
	if err != nil {
		return nil, err
	}
	kf := keyFile{Version: fileVersion, Name: name, Identifier: id.Identifier, Seed: hex.EncodeToString(id.private.Seed()), Created: id.Created}
	data, err := json.MarshalIndent(kf, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode identity %s: %w", name, err)
	}
	// Written to a temporary name and linked into place, so a crash never
	// leaves a half-written key and two creators cannot both win.
	tmp, err := os.CreateTemp(v.dir, ".tmp-"+name+"-*")
	if err != nil {
		return nil, fmt.Errorf("create identity %s: %w", name, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("create identity %s: %w", name, err)
	}
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("create identity %s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("create identity %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("create identity %s: %w", name, err)
	}
	if err := os.Link(tmp.Name(), v.path(name)); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("create identity %s: %w", name, ErrExists)
		}
		return nil, fmt.Errorf("create identity %s: %w", name, err)
	}
	return id, nil
}

// Get loads the identity called name. A key file that group or others can
// access is refused.
func (v *Vault) Get(name string) (*Identity, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	p := v.path(name)
	f, err := os.Open(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("identity %s: %w (create it with `ferry identity create %s`)", name, ErrNotFound, name)
		}
		return nil, fmt.Errorf("identity %s: %w", name, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("identity %s: %w", name, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("identity %s: %s is not a regular file", name, p)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("identity %s: key file %s has mode %04o, which lets other users read or change the private key; run chmod 600 %s: %w", name, p, perm, p, ErrPermissions)
	}
	// A key file is a few hundred bytes; anything much larger is not one.
	data, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return nil, fmt.Errorf("identity %s: read %s: %w", name, p, err)
	}
	return decodeKeyFile(name, p, data)
}

func decodeKeyFile(name, path string, data []byte) (*Identity, error) {
	var kf keyFile
	if err := json.Unmarshal(data, &kf); err != nil {
		return nil, fmt.Errorf("identity %s: %s is not a key file: %w", name, path, err)
	}
	if kf.Version != fileVersion {
		return nil, fmt.Errorf("identity %s: %s has format version %d; this ferry reads version %d", name, path, kf.Version, fileVersion)
	}
	seed, err := hex.DecodeString(kf.Seed)
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("identity %s: %s holds no valid Ed25519 seed", name, path)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	pub := priv.Public().(ed25519.PublicKey)
	idf := Identifier(pub)
	if kf.Identifier != "" && kf.Identifier != idf {
		return nil, fmt.Errorf("identity %s: %s says identifier %s but its key gives %s; the file was changed", name, path, kf.Identifier, idf)
	}
	return &Identity{Name: name, Identifier: idf, PublicKey: pub, Created: kf.Created, private: priv}, nil
}

// GetOrCreate loads name, creating it first when it does not exist.
func (v *Vault) GetOrCreate(name string) (*Identity, error) {
	id, err := v.Get(name)
	if errors.Is(err, ErrNotFound) {
		id, err = v.Create(name)
		if errors.Is(err, ErrExists) { // created concurrently
			return v.Get(name)
		}
	}
	return id, err
}

// Names lists the identities in the vault, sorted.
func (v *Vault) Names() ([]string, error) {
	ents, err := os.ReadDir(v.dir)
	if err != nil {
		return nil, fmt.Errorf("list vault %s: %w", v.dir, err)
	}
	var out []string
	for _, e := range ents {
		n := e.Name()
		if !e.Type().IsRegular() || !strings.HasSuffix(n, keyFileExt) {
			continue
		}
		n = strings.TrimSuffix(n, keyFileExt)
		if ValidName(n) == nil {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out, nil
}

// List loads every identity in the vault. One that cannot be loaded (for
// example a key file with wrong permissions) makes the whole call fail, so
// the problem is seen.
func (v *Vault) List() ([]*Identity, error) {
	names, err := v.Names()
	if err != nil {
		return nil, err
	}
	out := make([]*Identity, 0, len(names))
	for _, n := range names {
		id, err := v.Get(n)
		if err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, nil
}

// Delete removes the identity called name.
func (v *Vault) Delete(name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if err := os.Remove(v.path(name)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("delete identity %s: %w", name, ErrNotFound)
		}
		return fmt.Errorf("delete identity %s: %w", name, err)
	}
	return nil
}
