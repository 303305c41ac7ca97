package identity

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestIdentifierDerivation(t *testing.T) {
	pub := make(ed25519.PublicKey, ed25519.PublicKeySize)
	for i := range pub {
		pub[i] = byte(i)
	}
	sum := sha256.Sum256(pub)
	want := "I" + hex.EncodeToString(sum[:20])
	if got := Identifier(pub); got != want {
		t.Fatalf("Identifier = %s, want %s", got, want)
	}
	if len(want) != IdentifierLen {
		t.Fatalf("IdentifierLen = %d, identifier has %d", IdentifierLen, len(want))
	}
	if err := ValidIdentifier(want); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "I", want[1:], strings.ToUpper(want), want + "0", "X" + want[1:]} {
		if ValidIdentifier(bad) == nil {
			t.Errorf("ValidIdentifier(%q) accepted", bad)
		}
	}
}

func TestVaultCreateListShowDelete(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vault")
	v, err := OpenVault(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o700 {
		t.Fatalf("vault mode %04o, want 0700", st.Mode().Perm())
	}
	a, err := v.Create("alice")
	if err != nil {
		t.Fatal(err)
	}
	if a.Identifier != Identifier(a.PublicKey) {
		t.Fatalf("identifier %s does not match the key", a.Identifier)
	}
	st, err = os.Stat(filepath.Join(dir, "alice.key"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %04o, want 0600", st.Mode().Perm())
	}
	if _, err := v.Create("alice"); !errors.Is(err, ErrExists) {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	b, err := v.Create("bob")
	if err != nil {
		t.Fatal(err)
	}
	if b.Identifier == a.Identifier {
		t.Fatal("two identities share an identifier")
	}
	got, err := v.Get("alice")
	if err != nil {
		t.Fatal(err)
	}
	if got.Identifier != a.Identifier || !got.PublicKey.Equal(a.PublicKey) {
		t.Fatalf("reloaded identity differs: %s vs %s", got.Identifier, a.Identifier)
	}
	// The reloaded private key signs what the original's public key verifies.
	sig := got.Sign([]byte("msg"))
	if !Verify(a.PublicKey, []byte("msg"), sig) {
		t.Fatal("signature by the reloaded key does not verify")
	}
	if Verify(b.PublicKey, []byte("msg"), sig) {
		t.Fatal("signature verifies under another key")
	}
	ids, err := v.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != 2 || ids[0].Name != "alice" || ids[1].Name != "bob" {
		t.Fatalf("List = %v", ids)
	}
	if err := v.Delete("alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Get("alice"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	if err := v.Delete("alice"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	names, _ := v.Names()
	if len(names) != 1 || names[0] != "bob" {
		t.Fatalf("names after delete: %v", names)
	}
	// No temporary files are left behind.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("vault holds %d entries, want 1", len(ents))
	}
	c, err := v.GetOrCreate("carol")
	if err != nil {
		t.Fatal(err)
	}
	c2, err := v.GetOrCreate("carol")
	if err != nil || c2.Identifier != c.Identifier {
		t.Fatalf("GetOrCreate twice: %v, %s vs %s", err, c2.Identifier, c.Identifier)
	}
}

func TestWrongPermissionsRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vault")
	v, err := OpenVault(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Create("n1"); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "n1.key")
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o666} {
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		_, err := v.Get("n1")
		if !errors.Is(err, ErrPermissions) {
			t.Fatalf("mode %04o: %v, want ErrPermissions", mode, err)
		}
		if !strings.Contains(err.Error(), "chmod 600") {
			t.Fatalf("error does not say how to fix it: %v", err)
		}
		if _, err := v.List(); !errors.Is(err, ErrPermissions) {
			t.Fatalf("List with mode %04o: %v", mode, err)
		}
	}
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Get("n1"); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenVault(dir); !errors.Is(err, ErrPermissions) || !strings.Contains(err.Error(), "chmod 700") {
		t.Fatalf("open vault with mode 0755: %v", err)
	}
}

func TestTamperedAndBadFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vault")
	v, err := OpenVault(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Create("x"); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "x.key")
	data, _ := os.ReadFile(p)
	// Change the recorded identifier: the key no longer matches it.
	s := strings.Replace(string(data), `"identifier": "I`, `"identifier": "I0`, 1)
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Get("x"); err == nil || !strings.Contains(err.Error(), "changed") {
		t.Fatalf("tampered file: %v", err)
	}
	if err := os.WriteFile(p, []byte("not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Get("x"); err == nil {
		t.Fatal("garbage key file accepted")
	}
	for _, bad := range []string{"", "../x", ".hidden", "a/b", strings.Repeat("a", 65)} {
		if _, err := v.Create(bad); err == nil {
			t.Errorf("Create(%q) accepted", bad)
		}
		if _, err := v.Get(bad); err == nil {
			t.Errorf("Get(%q) accepted", bad)
		}
	}
}
