// Package pluginproc holds what every Ferry plugin process does around
// go-plugin's Serve, whatever it serves (transports, portals): keep stdout
// for the handshake, and exit when the host is gone.
package pluginproc

import (
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
)

// WatchParent exits the process once its parent changes: the host died and
// the plugin was re-parented, so nobody will ever use it again. The
// parent-death signal the host sets covers Linux; this covers the rest and a
// host that could not set it. cleanup gets at most two seconds.
func WatchParent(every time.Duration, logger hclog.Logger, cleanup func()) {
	parent := os.Getppid()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for range tick.C {
		if os.Getppid() != parent {
			logger.Warn("host process is gone; exiting", "host_pid", parent)
			done := make(chan struct{})
			go func() { cleanup(); close(done) }()
			select {
			case <-done:
			case <-time.After(2 * time.Second):
			}
			os.Exit(3)
		}
	}
}
