package pluginwire

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/ferryhq/ferry/internal/pluginpb/pluginv1"
)

// RingEnv names the environment variable that tells a plugin which
// descriptors hold the shared-memory rings of its data channel: "S,M", the
// space wake-up socket and the memfd (the second and third of
// exec.Cmd.ExtraFiles, after the data socket).
const RingEnv = "FERRY_DATA_RING"

// DataChannel is one end of a data channel before Hello settled how it is
// used: its socket (the embedded net.Conn, usable as is) and, when the
// host created them, the shared-memory rings. Use picks the stream the Mux
// runs on.
type DataChannel struct {
	net.Conn
	ring *ringConn
	// child holds, on the host side, the plugin's ends until it started.
	child []*os.File
}

// NewDataChannel creates a data channel for a plugin about to start: a
// socketpair and, with ringSize > 0 where the system has them, a ring pair
// of ringSize bytes per direction (a power of two) with its wake-up
// socketpair. Pass ExtraFiles and Env to the plugin's command and call
// CloseChildFiles once it started.
func NewDataChannel(ringSize int) (*DataChannel, error) {
	host, child, err := Socketpair()
	if err != nil {
		return nil, err
	}
	d := &DataChannel{Conn: host, child: []*os.File{child}}
	if ringSize <= 0 || !ringSupported {
		return d, nil
	}
	ring, files, err := newHostRing(host, ringSize)
	if err != nil {
		// The socketpair alone still carries the data.
		return d, nil
	}
	d.ring, d.child = ring, append(d.child, files...)
	return d, nil
}

func newHostRing(data net.Conn, size int) (*ringConn, []*os.File, error) {
	space, spaceChild, err := Socketpair()
	if err != nil {
		return nil, nil, err
	}
	memf, mem, err := newRingMem(size)
	if err != nil {
		space.Close()
		spaceChild.Close()
		return nil, nil, err
	}
	rc, err := newRingConn(mem, data, space, true)
	if err != nil {
		unmapRing(mem)
		memf.Close()
		space.Close()
		spaceChild.Close()
		return nil, nil, err
	}
	return rc, []*os.File{spaceChild, memf}, nil
}

// ExtraFiles are the plugin's ends, for exec.Cmd.ExtraFiles (in order:
// they become DataFD and, with rings, the descriptors RingEnv names).
func (d *DataChannel) ExtraFiles() []*os.File { return d.child }

// Env is what tells the plugin about its ends.
func (d *DataChannel) Env() []string {
	env := []string{fmt.Sprintf("%s=%d", DataEnv, DataFD)}
	if d.ring != nil {
		env = append(env, fmt.Sprintf("%s=%d,%d", RingEnv, DataFD+1, DataFD+2))
	}
	return env
}

// CloseChildFiles closes the host's copies of the plugin's ends, once the
// plugin started (it holds its own) or will not.
func (d *DataChannel) CloseChildFiles() {
	for _, f := range d.child {
		f.Close()
	}
	d.child = nil
}

// PluginEnd turns the plugin's ends into the plugin side of the channel
// in this process (an in-process plugin, tests) and closes them here.
func (d *DataChannel) PluginEnd() (*DataChannel, error) {
	files := d.child
	d.child = nil
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	if len(files) == 0 {
		return nil, errors.New("data channel: the plugin's ends are gone")
	}
	return inherit(files[0], files[1:])
}

// inherit builds the plugin side from the data socket and, if given, the
// space socket and the memfd; it does not close the files.
func inherit(data *os.File, ring []*os.File) (*DataChannel, error) {
	c, err := net.FileConn(data)
	if err != nil {
		return nil, fmt.Errorf("data channel: %w", err)
	}
	d := &DataChannel{Conn: c}
	if len(ring) != 2 || !ringSupported {
		return d, nil
	}
	// Without usable rings the plugin does not offer them: the socket
	// alone carries the data.
	space, err := net.FileConn(ring[0])
	if err != nil {
		return d, nil
	}
	mem, err := mapRingMem(ring[1])
	if err != nil {
		space.Close()
		return d, nil
	}
	rc, err := newRingConn(mem, c, space, false)
	if err != nil {
		unmapRing(mem)
		space.Close()
		return d, nil
	}
	d.ring = rc
	return d, nil
}

// Offer is what this end offers in Hello for its data channel.
func (d *DataChannel) Offer() []pluginv1.Capability {
	caps := []pluginv1.Capability{pluginv1.Capability_CAPABILITY_DATA_CHANNEL}
	if d.ring != nil {
		caps = append(caps, pluginv1.Capability_CAPABILITY_DATA_RING)
	}
	return caps
}

// Use returns the stream the Mux runs on once Hello told what the peer
// offers: the rings when both sides offer them, otherwise the socket (the
// rings are then freed). Call it once; the stream owns the channel.
func (d *DataChannel) Use(peer []pluginv1.Capability) net.Conn {
	if d.ring == nil {
		return d.Conn
	}
	if Has(peer, pluginv1.Capability_CAPABILITY_DATA_RING) {
		return d.ring
	}
	d.ring.dropRing()
	return d.Conn
}

// Ring reports whether this end has rings to offer.
func (d *DataChannel) Ring() bool { return d.ring != nil }

// Close frees everything (waiting for any copy in progress on the rings).
func (d *DataChannel) Close() error {
	d.CloseChildFiles()
	if d.ring != nil {
		d.ring.dropRing()
	}
	return d.Conn.Close()
}

// DataOffer is what a plugin whose data channel is data offers for it in
// Hello (data is what InheritedConn or the host of an in-process plugin
// gave it).
func DataOffer(data net.Conn) []pluginv1.Capability {
	if d, ok := data.(*DataChannel); ok {
		return d.Offer()
	}
	return []pluginv1.Capability{pluginv1.Capability_CAPABILITY_DATA_CHANNEL}
}

// DataConn is the stream a plugin's Mux runs on, given what the host
// offered in Hello.
func DataConn(data net.Conn, host []pluginv1.Capability) net.Conn {
	if d, ok := data.(*DataChannel); ok {
		return d.Use(host)
	}
	return data
}

// InheritedConn returns the data channel the host passed this plugin
// process, or nil if it passed none: a *DataChannel when the host passed
// rings too (DataOffer and DataConn settle their use in Hello), else the
// socket.
func InheritedConn() net.Conn {
	fd, ok := envFD(os.Getenv(DataEnv))
	if !ok {
		return nil
	}
	data := os.NewFile(uintptr(fd), "ferry-data")
	if data == nil {
		return nil
	}
	defer data.Close()
	var ring []*os.File
	if s, m, ok := strings.Cut(os.Getenv(RingEnv), ","); ok {
		sfd, ok1 := envFD(s)
		mfd, ok2 := envFD(m)
		if ok1 && ok2 && sfd != mfd && sfd != fd && mfd != fd {
			ring = []*os.File{os.NewFile(uintptr(sfd), "ferry-data-space"), os.NewFile(uintptr(mfd), "ferry-data-ring")}
			defer ring[0].Close()
			defer ring[1].Close()
		}
	}
	d, err := inherit(data, ring)
	if err != nil {
		return nil
	}
	if d.ring == nil {
		return d.Conn
	}
	return d
}

func envFD(v string) (int, bool) {
	fd, err := strconv.Atoi(v)
	return fd, err == nil && fd >= 3
}
