// Command tcp is Ferry's TCP transport plugin. The host launches it from
// the plugin directory (bin/plugins/tcp); it is not meant to be run by hand.
// The implementation is package tcptransport, which embedding programs can
// also use in-process.
package main

import (
	"github.com/ferryhq/ferry/plugins/tcp/tcptransport"
	"github.com/ferryhq/ferry/sdk/transport"
)

func main() { transport.Serve(tcptransport.New()) }
