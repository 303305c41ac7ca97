// Package quictest holds what the quic transport's tests share: a
// certificate with its pin, a raw QUIC stream to send unframed bytes on,
// and a UDP proxy that can change its source port or drop everything.
package quictest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/ferryhq/ferry/plugins/quic/quictransport"
)

// Settings writes a certificate into a temporary directory of t and returns
// settings that make a transport present it and pin it when dialling, with
// short timeouts, and the certificate's fingerprint.
func Settings(t testing.TB) (map[string]string, string) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	fp, err := quictransport.WriteCertificate(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	s := map[string]string{
		quictransport.SettingCertFile:         certFile,
		quictransport.SettingKeyFile:          keyFile,
		quictransport.SettingPin:              fp,
		quictransport.SettingKeepAlive:        "250ms",
		quictransport.SettingIdleTimeout:      "2s",
		quictransport.SettingHandshakeTimeout: "4s", // a dial of a closed port waits it out (quic-go ignores ICMP): DialRefused
	}
	if MaxMessageSize > 0 {
		s[quictransport.SettingMaxMessageSize] = strconv.Itoa(MaxMessageSize)
	}
	return s, fp
}

// openFrame is the frame a dialer sends first (version 1, type open, no
// payload), which makes its stream visible to the listener.
var openFrame = []byte{quictransport.FrameVersion, 2, 0, 0, 0, 0}

// RawDial returns a dial function for transporttest.Config.RawDial: it
// makes a real QUIC connection (TLS, ALPN, checking pin), opens the stream,
// sends the open frame, and then carries whatever the test writes unframed.
// Close ends the connection abruptly, as a crash would.
func RawDial(pin string) func(addr string) (net.Conn, error) {
	return func(addr string) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := quic.DialAddr(ctx, addr, tlsConfig(pin), &quic.Config{MaxIdleTimeout: 5 * time.Second, KeepAlivePeriod: time.Second})
		if err != nil {
			return nil, err
		}
		str, err := conn.OpenStreamSync(ctx)
		if err != nil {
			_ = conn.CloseWithError(1, "")
			return nil, err
		}
		if _, err := str.Write(openFrame); err != nil {
			_ = conn.CloseWithError(1, "")
			return nil, err
		}
		return &streamConn{Stream: str, conn: conn}, nil
	}
}

type streamConn struct {
	*quic.Stream
	conn *quic.Conn
}

func (c *streamConn) Close() error                  { return c.conn.CloseWithError(99, "raw test connection dropped") }
func (c *streamConn) LocalAddr() net.Addr           { return c.conn.LocalAddr() }
func (c *streamConn) RemoteAddr() net.Addr          { return c.conn.RemoteAddr() }
func (c *streamConn) SetDeadline(t time.Time) error { return c.Stream.SetDeadline(t) }

// Proxy relays UDP datagrams between clients and one upstream address, with
// one upstream socket per client. Rebind swaps every upstream socket for a
// new one (a new source port, as a NAT rebinding or a new local address
// gives); Blackhole drops all traffic both ways.
type Proxy struct {
	ln       *net.UDPConn
	upstream *net.UDPAddr

	mu      sync.Mutex
	clients map[string]*proxyClient
	closed  bool
	wg      sync.WaitGroup

	blackhole atomic.Bool
	// Forwarded counts datagrams relayed either way.
	Forwarded atomic.Int64
}

type proxyClient struct {
	addr *net.UDPAddr
	up   *net.UDPConn
}

// NewProxy listens on 127.0.0.1:0 and relays to upstream. It is closed
// when t ends.
func NewProxy(t testing.TB, upstream string) *Proxy {
	t.Helper()
	ua, err := net.ResolveUDPAddr("udp", upstream)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, upstream: ua, clients: map[string]*proxyClient{}}
	p.wg.Add(1)
	go p.fromClients()
	t.Cleanup(p.Close)
	return p
}

// Addr is where clients send.
func (p *Proxy) Addr() string { return p.ln.LocalAddr().String() }

// Blackhole drops (true) or relays (false) every datagram from now on.
func (p *Proxy) Blackhole(on bool) { p.blackhole.Store(on) }

func (p *Proxy) fromClients() {
	defer p.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := p.ln.ReadFromUDP(buf)
		if err != nil {
			return
		}
		if p.blackhole.Load() {
			continue
		}
		c, err := p.client(from)
		if err != nil {
			continue
		}
		if _, err := c.up.WriteToUDP(buf[:n], p.upstream); err == nil {
			p.Forwarded.Add(1)
		}
	}
}

func (p *Proxy) client(from *net.UDPAddr) (*proxyClient, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, net.ErrClosed
	}
	if c, ok := p.clients[from.String()]; ok {
		return c, nil
	}
	c := &proxyClient{addr: from}
	if err := p.rebindLocked(c); err != nil {
		return nil, err
	}
	p.clients[from.String()] = c
	return c, nil
}

// rebindLocked gives c a new upstream socket; the old one is closed, which
// ends its relay goroutine.
func (p *Proxy) rebindLocked(c *proxyClient) error {
	up, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	if c.up != nil {
		_ = c.up.Close()
	}
	c.up = up
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		buf := make([]byte, 65536)
		for {
			n, _, err := up.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if p.blackhole.Load() {
				continue
			}
			if _, err := p.ln.WriteToUDP(buf[:n], c.addr); err == nil {
				p.Forwarded.Add(1)
			}
		}
	}()
	return nil
}

// Rebind moves every client to a new upstream source port and returns the
// old and new upstream addresses of the clients.
func (p *Proxy) Rebind() (before, after []string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.clients {
		before = append(before, c.up.LocalAddr().String())
		if err := p.rebindLocked(c); err != nil {
			return nil, nil, fmt.Errorf("rebind: %w", err)
		}
		after = append(after, c.up.LocalAddr().String())
	}
	return before, after, nil
}

// Close stops relaying and waits for the relay goroutines.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	_ = p.ln.Close()
	for _, c := range p.clients {
		_ = c.up.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// DialNoStream makes a QUIC connection to a listener (checking pin) and
// opens no stream, as a stalled or hostile dialer would.
func DialNoStream(addr, pin string) (*quic.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return quic.DialAddr(ctx, addr, tlsConfig(pin), &quic.Config{MaxIdleTimeout: 30 * time.Second, KeepAlivePeriod: time.Second})
}

func tlsConfig(pin string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{quictransport.ALPN},
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 || quictransport.Fingerprint(raw[0]) != pin {
				return errors.New("certificate does not match the pin")
			}
			return nil
		},
	}
}
