package quictransport

import (
	"errors"

	"github.com/ferryhq/ferry/internal/streamframe"
)

// The frames are those of the tcp transport (streamframe, whose package
// comment gives the wire format), on the link's one QUIC stream. QUIC keeps
// the connection alive itself, so the empty signal frame the tcp transport
// sends as a heartbeat serves here as frameOpen: the dialer's first frame,
// which makes the stream visible to the listener (a QUIC stream exists for
// the peer only once something was sent on it).

// FrameVersion is the first byte of every frame this package writes and the
// only version it accepts.
const FrameVersion = streamframe.Version

const (
	frameData  = streamframe.TypeData
	frameOpen  = streamframe.TypeSignal
	frameClose = streamframe.TypeClose
)

// ErrBadFrame is wrapped by every error about malformed bytes received from
// the network; the link that carried them is closed.
var ErrBadFrame = errors.New("quic transport: bad frame")

// frameErrors has no receive-memory error: quic readers have no shared
// budget (QUIC's flow control windows bound what a peer may send).
var frameErrors = &streamframe.Errors{Transport: "quic", BadFrame: ErrBadFrame}
