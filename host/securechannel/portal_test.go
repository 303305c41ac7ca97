package securechannel

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/ferryhq/ferry/host/node"
	"github.com/ferryhq/ferry/host/portals"
	"github.com/ferryhq/ferry/host/services"
	"github.com/ferryhq/ferry/plugins/portal-tcp/tcpportal"
	"github.com/ferryhq/ferry/sdk/routing"
)

// scanHop forwards like a relay worker and looks for a marker in every
// payload that passes, without keeping them.
type scanHop struct {
	marker []byte
	mu     sync.Mutex
	frames int
	bytes  int
	hits   int
}

func (h *scanHop) HandleMessage(c *node.Context, m *routing.Message) error {
	h.mu.Lock()
	h.frames++
	h.bytes += len(m.Payload)
	if bytes.Contains(m.Payload, h.marker) {
		h.hits++
	}
	h.mu.Unlock()
	return services.Hop{}.HandleMessage(c, m)
}

// TestPortalOverSecureChannelThroughRelay runs an HTTP download of 64 MiB
// through inlet → secure channel → relay node → outlet → HTTP server; the
// body arrives intact and the relay node never sees the marker the body is
// made of.
func TestPortalOverSecureChannelThroughRelay(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 64 MiB")
	}
	size := 64 << 20
	marker := []byte("FERRY-PLAINTEXT-MARKER-0123456789")
	body := bytes.Repeat(marker, size/len(marker)+1)[:size]
	sum := sha256.Sum256(body)

	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		_, _ = w.Write(body)
	}), ReadHeaderTimeout: 10 * time.Second}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(hl)
	t.Cleanup(func() { srv.Close() })

	ini, mid, resp := newNode(t, "initiator"), newNode(t, "relay"), newNode(t, "responder")
	bi, bm, br := attachTCP(t, ini), attachTCP(t, mid), attachTCP(t, resp)
	pt := tcpportal.New()
	t.Cleanup(func() { pt.Close() })

	idI, idR := newIdentity(t, "ini"), newIdentity(t, "resp")
	lis, err := Listen(resp, "api", ListenerConfig{Config: Config{Identity: idR, Authorized: []string{idI.Identifier}}})
	if err != nil {
		t.Fatal(err)
	}
	out, err := portals.NewOutlet(resp, portals.OutletOptions{Target: hl.Addr().String(), Portal: pt})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { out.Close() })
	// The outlet is reachable through the secure channel listener only:
	// the TCP listener admits the listener and nothing else.
	lis.Allow(out.Address().Value)
	lr, err := br.Listen(tctx(t), "127.0.0.1:0", "api")
	if err != nil {
		t.Fatal(err)
	}
	hop := &scanHop{marker: marker[:16]}
	startService(t, mid, "rec", hop)
	lm, err := bm.Listen(tctx(t), "127.0.0.1:0", "rec")
	if err != nil {
		t.Fatal(err)
	}
	toResp, err := bm.Connect(tctx(t), lr.Address)
	if err != nil {
		t.Fatal(err)
	}
	toMid, err := bi.Connect(tctx(t), lm.Address)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := Create(tctx(t), ini, routing.Route{toMid.Worker, routing.Local("rec"), toResp.Worker, routing.Local("api")},
		Config{Identity: idI, Authorized: []string{idR.Identifier}})
	if err != nil {
		t.Fatal(err)
	}
	in, err := portals.NewInlet(tctx(t), ini, portals.InletOptions{ListenAddress: "127.0.0.1:0", Route: routing.Route{ch.Address(), out.Address()}, Portal: pt})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+in.Addr()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatalf("after %d bytes: %v", n, err)
	}
	if n != int64(size) || !bytes.Equal(h.Sum(nil), sum[:]) {
		t.Fatalf("got %d bytes with sha256 %s, want %d bytes with %s", n, hex.EncodeToString(h.Sum(nil)), size, hex.EncodeToString(sum[:]))
	}
	hop.mu.Lock()
	frames, seen, hits := hop.frames, hop.bytes, hop.hits
	hop.mu.Unlock()
	if seen < size {
		t.Fatalf("the relay hop saw %d bytes in %d frames, less than the body: it is not on the path", seen, frames)
	}
	if hits != 0 {
		t.Fatalf("the relay hop saw the plaintext marker in %d of %d frames", hits, frames)
	}
	if st := lis.Stats(); st.Dropped() != 0 {
		t.Fatalf("frames dropped: %v", st)
	}
	t.Logf("64 MiB through the secure channel: %d frames, %d bytes at the relay hop", frames, seen)
}
