// Command udp is Ferry's UDP transport plugin. The host launches it from
// the plugin directory (bin/plugins/udp); it is not meant to be run by hand.
// The implementation is package udptransport, which embedding programs can
// also use in-process.
package main

import (
	"github.com/ferryhq/ferry/plugins/udp/udptransport"
	"github.com/ferryhq/ferry/sdk/transport"
)

func main() { transport.Serve(udptransport.New()) }
