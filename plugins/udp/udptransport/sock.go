package udptransport

import (
	"errors"
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// batchConn is the part of x/net's ipv4 and ipv6 PacketConn that uses
// recvmmsg and sendmmsg on Linux (one datagram per call elsewhere).
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// sock is one UDP socket with batched or single reads and writes.
type sock struct {
	conn      *net.UDPConn
	bc        batchConn // nil when batch is 1
	connected bool      // a dialer's socket: writes carry no address
	batch     int

	// Reading state, owned by the one reading goroutine.
	rmsgs []ipv4.Message
	rbufs [][]byte
	rlen  []int
	raddr []netip.AddrPort
}

func newSock(conn *net.UDPConn, connected bool, cfg config) *sock {
	s := &sock{conn: conn, connected: connected, batch: cfg.batchSize}
	if cfg.socketBuffer > 0 {
		// The kernel caps these at net.core.[rw]mem_max; a smaller buffer
		// only means more loss under bursts.
		_ = conn.SetReadBuffer(cfg.socketBuffer)
		_ = conn.SetWriteBuffer(cfg.socketBuffer)
	}
	if s.batch > 1 {
		if la, ok := conn.LocalAddr().(*net.UDPAddr); ok && la.IP.To4() == nil {
			s.bc = ipv6.NewPacketConn(conn)
		} else {
			s.bc = ipv4.NewPacketConn(conn)
		}
	}
	n := max(1, s.batch)
	s.rbufs = make([][]byte, n)
	s.rlen = make([]int, n)
	s.raddr = make([]netip.AddrPort, n)
	// One more byte than the largest datagram accepted, so a larger one is
	// seen as such instead of silently cut.
	buf := make([]byte, n*(cfg.datagramSize+1))
	for i := range s.rbufs {
		s.rbufs[i] = buf[i*(cfg.datagramSize+1) : (i+1)*(cfg.datagramSize+1)]
	}
	if s.bc != nil {
		s.rmsgs = make([]ipv4.Message, n)
		for i := range s.rmsgs {
			s.rmsgs[i].Buffers = [][]byte{s.rbufs[i]}
		}
	}
	return s
}

// read reads one or more datagrams; datagram i is s.rbufs[i][:s.rlen[i]]
// from s.raddr[i] (zero on a connected socket).
func (s *sock) read() (int, error) {
	if s.bc == nil {
		n, from, err := s.conn.ReadFromUDPAddrPort(s.rbufs[0])
		if err != nil {
			return 0, err
		}
		s.rlen[0], s.raddr[0] = n, unmap(from)
		return 1, nil
	}
	n, err := s.bc.ReadBatch(s.rmsgs, 0)
	if err != nil {
		return 0, err
	}
	for i := 0; i < n; i++ {
		m := &s.rmsgs[i]
		s.rlen[i] = m.N
		s.raddr[i] = netip.AddrPort{}
		if ua, ok := m.Addr.(*net.UDPAddr); ok {
			s.raddr[i] = unmap(ua.AddrPort())
		}
	}
	return n, nil
}

func unmap(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// writer is a batch of datagrams being built by one sender. Each datagram
// is a header and a payload slice, written without copying the payload
// when batching.
type writer struct {
	s    *sock
	to   net.Addr // nil on a connected socket
	toAP netip.AddrPort
	msgs []ipv4.Message
	bufs [][]byte
	hdrs []byte
	n    int
	flat []byte // single-write path: header and payload copied together
}

func newWriter(s *sock, to netip.AddrPort) *writer {
	w := &writer{s: s, toAP: to}
	if !s.connected {
		w.to = net.UDPAddrFromAddrPort(to)
	}
	n := max(1, s.batch)
	w.msgs = make([]ipv4.Message, n)
	w.bufs = make([][]byte, 2*n)
	w.hdrs = make([]byte, fragmentHeaderLen*n)
	for i := range w.msgs {
		w.msgs[i].Buffers = w.bufs[2*i : 2*i+2]
		w.msgs[i].Addr = w.to
	}
	return w
}

// next returns the header space of the next datagram (hlen bytes) and
// attaches payload; it flushes first when the batch is full.
func (w *writer) next(hlen int, payload []byte) ([]byte, error) {
	if w.n == len(w.msgs) {
		if err := w.flush(); err != nil {
			return nil, err
		}
	}
	h := w.hdrs[w.n*fragmentHeaderLen : w.n*fragmentHeaderLen+hlen]
	w.bufs[2*w.n] = h
	w.bufs[2*w.n+1] = payload
	w.n++
	return h, nil
}

// flush writes the datagrams built so far.
func (w *writer) flush() error {
	defer func() { w.n = 0 }()
	if w.n == 0 {
		return nil
	}
	if w.s.bc == nil {
		for i := 0; i < w.n; i++ {
			w.flat = append(append(w.flat[:0], w.bufs[2*i]...), w.bufs[2*i+1]...)
			var err error
			if w.s.connected {
				_, err = w.s.conn.Write(w.flat)
			} else {
				_, err = w.s.conn.WriteToUDPAddrPort(w.flat, w.toAP)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	for done := 0; done < w.n; {
		k, err := w.s.bc.WriteBatch(w.msgs[done:w.n], 0)
		if err != nil {
			return err
		}
		if k <= 0 {
			return errors.New("sendmmsg wrote nothing")
		}
		done += k
	}
	return nil
}

// writeOne sends a single control datagram outside any batch.
func (s *sock) writeOne(b []byte, to netip.AddrPort) error {
	var err error
	if s.connected {
		_, err = s.conn.Write(b)
	} else {
		_, err = s.conn.WriteToUDPAddrPort(b, to)
	}
	return err
}
