package main

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// lossyUDP forwards datagrams between one client and server, dropping
// loss of them each way at random.
type lossyUDP struct {
	front, back *net.UDPConn
	loss        float64
	wg          sync.WaitGroup
	mu          sync.Mutex
	rng         *rand.Rand
	client      net.Addr
	drops       int
}

func newLossyUDP(t *testing.T, server string, loss float64) *lossyUDP {
	t.Helper()
	front, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	raddr, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		t.Fatal(err)
	}
	back, err := net.DialUDP("udp", nil, raddr)
	if err != nil {
		t.Fatal(err)
	}
	p := &lossyUDP{front: front, back: back, loss: loss, rng: rand.New(rand.NewPCG(5, 7))}
	relay := func(read func([]byte) (int, net.Addr, error), write func([]byte) error) {
		defer p.wg.Done()
		buf := make([]byte, 65536)
		for {
			n, _, err := read(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil || p.drop() {
				continue
			}
			_ = write(buf[:n])
		}
	}
	p.wg.Add(2)
	go relay(func(b []byte) (int, net.Addr, error) {
		n, from, err := front.ReadFrom(b)
		if err == nil {
			p.mu.Lock()
			p.client = from
			p.mu.Unlock()
		}
		return n, from, err
	}, func(b []byte) error { _, err := back.Write(b); return err })
	go relay(func(b []byte) (int, net.Addr, error) { n, err := back.Read(b); return n, nil, err },
		func(b []byte) error {
			p.mu.Lock()
			to := p.client
			p.mu.Unlock()
			if to == nil {
				return nil
			}
			_, err := front.WriteTo(b, to)
			return err
		})
	t.Cleanup(func() { front.Close(); back.Close(); p.wg.Wait() })
	return p
}

func (p *lossyUDP) drop() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rng.Float64() < p.loss {
		p.drops++
		return true
	}
	return false
}

// TestPortalOverLossyUDPHop: 16 MiB each way through an inlet on n1 and
// an outlet on n2 joined by a UDP connection that loses 1% of its
// datagrams each way arrive intact and in order: portal sessions
// retransmit end to end. (host/portals tests the session with 5% loss,
// reordering and duplication on an in-process hop; ferrybench mixed
// measures throughput at 1% and 5%.)
func TestPortalOverLossyUDPHop(t *testing.T) {
	needPlugin(t, "udp")
	size := 16 << 20
	if raceEnabled {
		size = 2 << 20
	}
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c); c.(*net.TCPConn).CloseWrite() }()
		}
	}()

	e := newEnv(t)
	e.ok("node", "create", "n2", "--no-listener")
	var l struct {
		Address string `json:"address"`
	}
	e.json(&l, "listener", "create", "127.0.0.1:0", "--at", "n2", "--transport", "udp", "--allow", "outlet")
	proxy := newLossyUDP(t, l.Address, 0.01)
	e.ok("tcp-outlet", "create", "--at", "n2", "--to", echo.Addr().String())
	e.ok("node", "create", "n1", "--no-listener")
	w := strings.TrimSpace(e.ok("connection", "create", "--from", "n1", "--transport", "udp", "--to", proxy.front.LocalAddr().String()))
	inlet := freeAddr(t)
	e.ok("tcp-inlet", "create", "--at", "n1", "--from", inlet, "--to", w+"/service/outlet")

	data := make([]byte, size)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	c, err := net.Dial("tcp", inlet)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(4 * time.Minute))
	go func() { c.Write(data); c.(*net.TCPConn).CloseWrite() }()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("after %d of %d bytes back: %v", len(got), size, err)
	}
	if sha256.Sum256(got) != sha256.Sum256(data) || !bytes.Equal(got, data) {
		t.Fatalf("got %d bytes back, not the %d sent (or not in order)", len(got), size)
	}
	proxy.mu.Lock()
	drops := proxy.drops
	proxy.mu.Unlock()
	var ins []portalJSON
	e.json(&ins, "tcp-inlet", "list", "--at", "n1")
	t.Logf("%d MiB each way intact; %d datagrams dropped; inlet %+v", size>>20, drops, ins)
	if drops == 0 {
		t.Fatal("the proxy dropped nothing: the test proved nothing")
	}
}
