package daemon_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferryhq/ferry/host/api"
	"github.com/ferryhq/ferry/host/api/daemon"
	"github.com/ferryhq/ferry/host/identity"
	"github.com/ferryhq/ferry/host/securechannel"
	"github.com/ferryhq/ferry/host/state"
)

func TestSecureChannelComponent(t *testing.T) {
	h, err := state.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n1 := startNode(t, h, "n1")
	n2 := startNode(t, h, "n2")

	id1, err := n1.c.Identity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id2, err := n2.c.Identity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Each node got its own identity, named after it, kept in the vault.
	if id1.Name != "n1" || id2.Name != "n2" || id1.Identifier == id2.Identifier || id1.Listener != "/service/api" {
		t.Fatalf("identities %+v %+v", id1, id2)
	}
	v, err := identity.OpenVault(daemon.VaultDir(h))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := v.Get("n2"); err != nil || got.Identifier != id2.Identifier {
		t.Fatalf("vault has %v, %v", got, err)
	}
	st, err := os.Stat(filepath.Join(daemon.VaultDir(h), "n2.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st, err)
	}
	svcs, err := n2.c.Services(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, s := range svcs {
		found = found || s.Address == "/service/api"
	}
	if !found {
		t.Fatalf("/service/api is not listed as a service: %v", svcs)
	}

	to := n2.st.Listeners[0].Route() + "/service/api"
	info, err := n1.c.CreateSecureChannel(ctx, api.CreateSecureChannelRequest{Route: to, Authorized: []string{id2.Identifier}})
	if err != nil {
		t.Fatal(err)
	}
	if info.PeerIdentifier != id2.Identifier || !strings.HasPrefix(info.Address, "/worker/") {
		t.Fatalf("channel %+v", info)
	}
	reply, err := n1.c.Send(ctx, api.SendRequest{Route: info.Address + "/service/uppercase", Payload: []byte("hello")})
	if err != nil || string(reply.Payload) != "HELLO" {
		t.Fatalf("through the channel: %q, %v", reply.Payload, err)
	}
	l2, err := n2.c.SecureChannels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(l2.Channels) != 1 || l2.Channels[0].PeerIdentifier != id1.Identifier || l2.Channels[0].Role != "responder" {
		t.Fatalf("n2's channels: %+v", l2)
	}
	// The reply is counted once it was handed on, a moment after the
	// requester may already have it.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		l1, err := n1.c.SecureChannels(ctx)
		if err == nil && len(l1.Channels) == 1 && l1.Channels[0].Stats.Delivered == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("n1's channels: %+v, %v", l1, err)
		}
	}

	// A channel to a node with another identifier than the one authorised.
	_, err = n1.c.CreateSecureChannel(ctx, api.CreateSecureChannelRequest{Route: to, Authorized: []string{id1.Identifier}})
	var ce *api.CallError
	if !errors.As(err, &ce) || ce.Code != 403 || !strings.Contains(err.Error(), id2.Identifier) {
		t.Fatalf("unauthorised peer: %v", err)
	}

	// A service only n1's identity may reach, and only through a channel.
	svc, err := n2.c.StartService(ctx, api.StartServiceRequest{Type: "uppercase", Address: "private", Authorized: []string{id1.Identifier}})
	if err != nil || len(svc.Authorized) != 1 {
		t.Fatalf("start guarded service: %+v, %v", svc, err)
	}
	reply, err = n1.c.Send(ctx, api.SendRequest{Route: info.Address + "/service/private", Payload: []byte("for n1")})
	if err != nil || string(reply.Payload) != "FOR N1" {
		t.Fatalf("guarded service through the channel: %q, %v", reply.Payload, err)
	}
	if _, err := n2.c.Send(ctx, api.SendRequest{Route: "/service/private", Payload: []byte("local"), Timeout: 300 * time.Millisecond}); err == nil {
		t.Fatal("a message not through a secure channel reached the guarded service")
	}
	if _, err := n1.c.Send(ctx, api.SendRequest{Route: n2.st.Listeners[0].Route() + "/service/private", Payload: []byte("plain"), Timeout: 300 * time.Millisecond}); err == nil {
		t.Fatal("a plaintext message over the network reached the guarded service")
	}
	if _, err := n2.c.CreateSecureChannel(ctx, api.CreateSecureChannelRequest{Route: n2.st.Listeners[0].Route() + "/service/api"}); err != nil {
		t.Fatal(err)
	}
	l2, err = n2.c.SecureChannels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var n2self string
	for _, c := range l2.Channels {
		if c.Role == "initiator" {
			n2self = c.Address
		}
	}
	if _, err := n2.c.Send(ctx, api.SendRequest{Route: n2self + "/service/private", Payload: []byte("n2"), Timeout: 300 * time.Millisecond}); err == nil {
		t.Fatal("another identity's channel reached the guarded service")
	}

	if err := n1.c.DeleteSecureChannel(ctx, info.Address); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		l2, err = n2.c.SecureChannels(ctx)
		if err == nil && !slices.ContainsFunc(l2.Channels, func(c securechannel.Info) bool { return c.PeerIdentifier == id1.Identifier }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("n2 still lists %+v, %v", l2, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := n1.c.DeleteSecureChannel(ctx, info.Address); !api.IsNotFound(err) {
		t.Fatalf("second delete: %v", err)
	}
}
