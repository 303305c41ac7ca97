package portalclient_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/ferryhq/ferry/host/plugins/portalclient"
	"github.com/ferryhq/ferry/internal/pluginpb/pluginv1"
	"github.com/ferryhq/ferry/internal/pluginwire"
	"github.com/ferryhq/ferry/plugins/portal-tcp/tcpportal"
	"github.com/ferryhq/ferry/sdk/portal"
)

// serveInProcess serves a TCP portal through Serve and go-plugin in this
// process and returns the host's Remote for it.
//
// withData, when set, carries stream data on a data channel (a
// socketpair) as a plugin process would; otherwise on gRPC streams.
var withData bool

func serveInProcess(t *testing.T) *portalclient.Remote {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	reattach := make(chan *plugin.ReattachConfig, 1)
	closed := make(chan struct{})
	opts := []portal.ServeOption{portal.WithLogger(hclog.NewNullLogger()),
		portal.WithTestConfig(&plugin.ServeTestConfig{Context: ctx, ReattachConfigCh: reattach, CloseCh: closed})}
	var host net.Conn
	offer := pluginwire.HostCapabilities
	if withData {
		h, child, err := pluginwire.Socketpair()
		if err != nil {
			t.Fatal(err)
		}
		pc, err := net.FileConn(child)
		child.Close()
		if err != nil {
			t.Fatal(err)
		}
		host = h
		opts = append(opts, portal.WithDataChannel(pc))
		offer = append(offer[:len(offer):len(offer)], pluginv1.Capability_CAPABILITY_DATA_CHANNEL)
	}
	go portal.Serve(tcpportal.New(), opts...)
	var rc *plugin.ReattachConfig
	select {
	case rc = <-reattach:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve never became ready")
	}
	c := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig: pluginwire.Handshake(), Plugins: plugin.PluginSet{pluginwire.PluginName: pluginwire.ClientPlugin{}}, Reattach: rc,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC}, GRPCDialOptions: pluginwire.DialOptions(),
		Logger: hclog.NewNullLogger(),
	})
	t.Cleanup(func() {
		c.Kill()
		cancel()
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return")
		}
	})
	rpc, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := rpc.Dispense(pluginwire.PluginName)
	if err != nil {
		t.Fatal(err)
	}
	conn := raw.(*pluginwire.Conn).Conn
	hello, err := pluginwire.CallHello(ctx, conn, offer)
	if err != nil {
		t.Fatal(err)
	}
	var mux *pluginwire.Mux
	if host != nil {
		if !pluginwire.Has(hello.Capabilities, pluginv1.Capability_CAPABILITY_DATA_CHANNEL) {
			t.Fatal("the portal did not offer the data channel")
		}
		mux = pluginwire.NewMux(host, pluginwire.PortalMuxConfig())
		t.Cleanup(func() { mux.Close() })
	}
	r, err := portalclient.NewWithData(conn, hello, mux)
	if err != nil {
		t.Fatal(err)
	}
	if r.DataChannel() != withData {
		t.Fatalf("data channel in use: %v", r.DataChannel())
	}
	return r
}

func TestServeOverTheDataChannel(t *testing.T) {
	withData = true
	defer func() { withData = false }()
	t.Run("StreamsBothWaysWithHalfClose", TestServeStreamsBothWaysWithHalfClose)
	t.Run("ErrorsSayWhy", TestServeErrorsSayWhy)
}

func TestServeStreamsBothWaysWithHalfClose(t *testing.T) {
	r := serveInProcess(t)
	if i := r.Info(); i.Name != "portal-tcp" || i.Protocol != "tcp" || r.Pid() == 0 {
		t.Fatalf("info %+v pid %d", i, r.Pid())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := r.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan portal.Stream, 1)
	go func() {
		s, err := l.Accept(ctx)
		if err != nil {
			t.Error(err)
		}
		accepted <- s
	}()
	c, err := r.Dial(ctx, l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		t.FailNow()
	}
	payload := make([]byte, 8<<20)
	rand.NewChaCha8([32]byte{1}).Read(payload)
	go func() {
		c.Write(payload)
		c.CloseWrite()
	}()
	got, err := io.ReadAll(s)
	if err != nil || sha256.Sum256(got) != sha256.Sum256(payload) {
		t.Fatalf("received %d bytes (want %d), %v", len(got), len(payload), err)
	}
	// The other direction is still open after the half-close.
	if _, err := s.Write([]byte("reply")); err != nil {
		t.Fatal(err)
	}
	if err := s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	back, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(back, []byte("reply")) {
		t.Fatalf("reply %q %v", back, err)
	}
	c.Close()
	s.Close()
}

func TestServeErrorsSayWhy(t *testing.T) {
	r := serveInProcess(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if _, err := r.Listen(ctx, addr); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("listen on a used address: %v", err)
	}
	ln.Close()
	if _, err := r.Dial(ctx, addr); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("dial a closed port: %v", err)
	}
}
