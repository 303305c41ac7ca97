package kafkatransport

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/ferryhq/ferry/plugins/kafka/internal/kafkatest"
)

// selfSigned returns a server certificate for 127.0.0.1 and its PEM.
func selfSigned(t *testing.T) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kfake test broker"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestTLSAndSASL: the TLS and SASL settings reach the broker connection:
// the right CA and credentials work, a wrong password, an unknown CA and
// plaintext against TLS fail at Listen with an error.
func TestTLSAndSASL(t *testing.T) {
	cert, caPEM := selfSigned(t)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	_, addr := kafkatest.StartBroker(t, kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}),
		kfake.EnableSASL(), kfake.Superuser(SASLScramSHA512, "ferry", "secret"))
	good := quick(addr, SettingTLS, "true", SettingTLSCAFile, ca,
		SettingSASLMechanism, SASLScramSHA512, SettingSASLUser, "ferry", SettingSASLPassword, "secret",
		SettingDialTimeout, "3s")
	ctx := ctxFor(t, 60*time.Second)

	srv, cli := configured(t, good), configured(t, good)
	topic := topicFor(t, "in")
	ln, err := srv.Listen(ctx, topic)
	if err != nil {
		t.Fatalf("Listen with TLS and SCRAM: %v", err)
	}
	c, err := cli.Dial(ctx, topic)
	if err != nil {
		t.Fatalf("Dial with TLS and SCRAM: %v", err)
	}
	defer c.Close()
	s, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Send(ctx, [][]byte{[]byte("over tls")}); err != nil {
		t.Fatal(err)
	}
	if got := recvPackets(ctx, t, s, 1); string(got[0]) != "over tls" {
		t.Fatalf("got %q", got[0])
	}

	for name, settings := range map[string]map[string]string{
		"wrong password": with(good, SettingSASLPassword, "wrong"),
		"unknown CA":     with(good, SettingTLSCAFile, ""),
		"no TLS":         with(good, SettingTLS, "false", SettingTLSCAFile, ""),
	} {
		tr := configured(t, settings)
		if _, err := tr.Listen(ctx, topicFor(t, "x")); err == nil {
			t.Errorf("%s: Listen succeeded", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	skip := configured(t, with(good, SettingTLSCAFile, "", SettingTLSSkipVerify, "true"))
	if _, err := skip.Listen(ctx, topicFor(t, "skip")); err != nil {
		t.Errorf("tls_insecure_skip_verify: %v", err)
	}
}

func with(m map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			delete(out, kv[i])
			continue
		}
		out[kv[i]] = kv[i+1]
	}
	return out
}
