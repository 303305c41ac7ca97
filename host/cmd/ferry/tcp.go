package main

import (
	"fmt"
	"net"

	"github.com/spf13/cobra"
)

// The Ockam-compatible spellings: tcp-listener and tcp-connection are the
// generic listener and connection commands bound to the tcp transport.
const tcpTransport = "tcp"

func checkHostPort(addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("address %q: want host:port such as 127.0.0.1:4000 (%v)", addr, err)
	}
	return nil
}

var (
	tcpListenerCmd   = linkCmd{use: "tcp-listener", transport: tcpTransport, what: "tcp listener", check: checkHostPort}
	tcpConnectionCmd = linkCmd{use: "tcp-connection", transport: tcpTransport, what: "tcp connection", check: checkHostPort}
	listenerCmd      = linkCmd{use: "listener", what: "listener"}
	connectionCmd    = linkCmd{use: "connection", what: "connection"}
)

func (a *app) newTCPListenerCmd() *cobra.Command   { return a.newListenerCmd(tcpListenerCmd) }
func (a *app) newTCPConnectionCmd() *cobra.Command { return a.newConnectionCmd(tcpConnectionCmd) }
