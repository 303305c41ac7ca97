package tcptransport

import (
	"errors"

	"github.com/ferryhq/ferry/internal/streamframe"
)

// Frames are streamframe's (see the package comment there for the wire
// format); tcp sends its empty signal frame as a heartbeat.

// FrameVersion is the first byte of every frame this package writes and the
// only version it accepts.
const FrameVersion = streamframe.Version

const (
	frameData      = streamframe.TypeData
	frameHeartbeat = streamframe.TypeSignal
	frameClose     = streamframe.TypeClose
)

// ErrBadFrame is wrapped by every error about malformed bytes received from
// the network; the link that carried them is closed.
var ErrBadFrame = errors.New("tcp transport: bad frame")

// ErrReceiveMemory is wrapped by the error Recv returns when a frame needs
// more read buffer than max_receive_memory has left for all links.
var ErrReceiveMemory = errors.New("tcp transport: receive memory budget exhausted")

var frameErrors = &streamframe.Errors{Transport: "tcp", BadFrame: ErrBadFrame, ReceiveMemory: ErrReceiveMemory}
