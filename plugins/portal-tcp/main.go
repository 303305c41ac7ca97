// Command portal-tcp is the TCP portal plugin: inlets listen on TCP
// addresses and outlets dial TCP targets. The host launches it; it is not
// meant to be run by hand.
package main

import (
	"github.com/ferryhq/ferry/plugins/portal-tcp/tcpportal"
	"github.com/ferryhq/ferry/sdk/portal"
)

func main() { portal.Serve(tcpportal.New()) }
