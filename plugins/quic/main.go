// Command quic is Ferry's QUIC transport plugin. The host launches it from
// the plugin directory (bin/plugins/quic); it is not meant to be run by
// hand. The implementation is package quictransport, which embedding
// programs can also use in-process.
package main

import (
	"github.com/ferryhq/ferry/plugins/quic/quictransport"
	"github.com/ferryhq/ferry/sdk/transport"
)

func main() {
	transport.Serve(quictransport.New(quictransport.WithLogger(transport.NewPluginLogger("quic"))))
}
