package quictransport

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Certificate file names inside cert_dir.
const (
	CertDirCertFile = "cert.pem"
	CertDirKeyFile  = "key.pem"
)

// fingerprintPrefix starts every fingerprint and pin: the hash is named so
// another one can be added later without ambiguity.
const fingerprintPrefix = "sha256:"

// Fingerprint returns the pin of a DER certificate: "sha256:" and the
// lower-case hex SHA-256 of the DER bytes (what `openssl x509 -fingerprint
// -sha256` prints, without colons).
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return fingerprintPrefix + hex.EncodeToString(sum[:])
}

// ParsePin checks a pin ("sha256:" and 64 hex digits, either case; colons
// between byte pairs are allowed, and so is openssl's "sha256
// Fingerprint=AB:CD:..." line) and returns it in the form Fingerprint
// produces.
func ParsePin(s string) (string, error) {
	in := strings.TrimSpace(s)
	if i := len("sha256 Fingerprint="); len(in) > i && strings.EqualFold(in[:i], "sha256 Fingerprint=") {
		in = fingerprintPrefix + in[i:]
	}
	rest, ok := strings.CutPrefix(in, fingerprintPrefix)
	if !ok {
		if i := strings.IndexByte(s, ':'); i > 0 && i < 10 && !isHex(s[:i]) {
			return "", fmt.Errorf("pin %q: unsupported hash %q, want %s followed by 64 hex digits", s, s[:i], fingerprintPrefix)
		}
		return "", fmt.Errorf("pin %q: want %s followed by 64 hex digits (the listener's certificate fingerprint)", s, fingerprintPrefix)
	}
	rest = strings.ToLower(strings.ReplaceAll(rest, ":", ""))
	if len(rest) != 2*sha256.Size || !isHex(rest) {
		return "", fmt.Errorf("pin %q: want %s followed by 64 hex digits (the listener's certificate fingerprint)", s, fingerprintPrefix)
	}
	return fingerprintPrefix + rest, nil
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return s != ""
}

// newCertificate makes a self-signed ECDSA P-256 certificate. Dialers trust
// it by its fingerprint, not by a chain or a name, so the subject and the
// validity period only have to satisfy TLS libraries.
func newCertificate(validFor time.Duration) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "ferry quic listener"},
		DNSNames:              []string{"ferry"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validFor),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("create certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// WriteCertificate generates a self-signed certificate and its key as PEM
// files (the key readable by the owner only) and returns the certificate's
// fingerprint, the pin dialers use. The files suit the cert_file and
// key_file settings.
func WriteCertificate(certFile, keyFile string) (string, error) {
	c, err := newCertificate(10 * 365 * 24 * time.Hour)
	if err != nil {
		return "", err
	}
	if err := writeCertificate(c, certFile, keyFile); err != nil {
		return "", err
	}
	return Fingerprint(c.Certificate[0]), nil
}

func writeCertificate(c tls.Certificate, certFile, keyFile string) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		return fmt.Errorf("encode key: %w", err)
	}
	// The key first: a certificate file without its key would be loaded
	// next time as a half-written pair.
	if err := writeFileAtomic(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return writeFileAtomic(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o644)
}

func writeFileAtomic(name string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), name); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// loadCertificate loads a PEM certificate and key pair.
func loadCertificate(certFile, keyFile string) (tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load certificate %s and key %s: %w", certFile, keyFile, err)
	}
	return c, nil
}

// certFromDir loads cert.pem and key.pem from dir, generating and saving
// them first when neither exists, so the fingerprint survives restarts.
func certFromDir(dir string) (c tls.Certificate, generated bool, err error) {
	certFile, keyFile := filepath.Join(dir, CertDirCertFile), filepath.Join(dir, CertDirKeyFile)
	_, cerr := os.Stat(certFile)
	_, kerr := os.Stat(keyFile)
	switch {
	case cerr == nil && kerr == nil:
		c, err = loadCertificate(certFile, keyFile)
		return c, false, err
	case errors.Is(cerr, fs.ErrNotExist) && errors.Is(kerr, fs.ErrNotExist):
	case errors.Is(cerr, fs.ErrNotExist) != errors.Is(kerr, fs.ErrNotExist):
		return c, false, fmt.Errorf("cert_dir %s holds only one of %s and %s; restore the other or remove both to generate a new pair (dialers pinning the old fingerprint must then be updated)", dir, CertDirCertFile, CertDirKeyFile)
	default:
		return c, false, fmt.Errorf("cert_dir %s: %w", dir, errors.Join(cerr, kerr))
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return c, false, fmt.Errorf("cert_dir: %w", err)
	}
	c, err = newCertificate(10 * 365 * 24 * time.Hour)
	if err != nil {
		return c, false, err
	}
	if err := writeCertificate(c, certFile, keyFile); err != nil {
		return c, false, err
	}
	return c, true, nil
}
