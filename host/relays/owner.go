package relays

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Owned names: a relay name belongs to the registrant that registered it
// first. Every registration, check and delete carries a proof derived from a
// secret the registrant keeps (Options.Secret; a Set keeps one in
// Set.SecretFile), and the relay service refuses a registration of a taken
// name whose proof differs, so another registrant cannot take the name over
// and capture its traffic. The proof is per name, so the secret itself
// never leaves the registering node; a relay node learns only the proof for
// the names registered with it. A registration that arrives through a
// secure channel binds the name to the registrant's identity instead
// (routing.LocalInfo.Identity): from then on only requests through a secure
// channel from that identity may re-register, check or delete it, whatever
// proof they carry, so a relay node that replays a proof gains nothing.
// Names registered without a secure channel keep the secret-based ownership.

// SecretLen is the length of a generated registrant secret.
const SecretLen = 32

// minSecretLen bounds how short a given secret may be.
const minSecretLen = 16

// ownerProof derives the proof for name from secret.
func ownerProof(secret []byte, name string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("ferry relay owner v1\x00"))
	m.Write([]byte(name))
	return m.Sum(nil)
}

// NewSecret returns a fresh random registrant secret.
func NewSecret() []byte {
	b := make([]byte, SecretLen)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return b
}

// LoadOrCreateSecret reads the registrant secret kept at path (hex, one
// line), creating the file with a new random secret (mode 0600) when it does
// not exist. A node that keeps its secret there keeps its relay names across
// restarts.
func LoadOrCreateSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		s, err := hex.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(s) < minSecretLen {
			return nil, fmt.Errorf("relay secret %s: want at least %d hex-encoded bytes", path, minSecretLen)
		}
		return s, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("relay secret: %w", err)
	}
	s := NewSecret()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) { // created concurrently: use theirs
			return LoadOrCreateSecret(path)
		}
		return nil, fmt.Errorf("relay secret: %w", err)
	}
	_, werr := f.WriteString(hex.EncodeToString(s) + "\n")
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(path)
		return nil, fmt.Errorf("relay secret %s: %w", path, werr)
	}
	return s, nil
}
