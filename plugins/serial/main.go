// Command serial is Ferry's serial-line transport plugin. The host launches
// it from the plugin directory (bin/plugins/serial); it is not meant to be
// run by hand. The implementation is package serialtransport, which
// embedding programs can also use in-process.
package main

import (
	"github.com/ferryhq/ferry/plugins/serial/serialtransport"
	"github.com/ferryhq/ferry/sdk/transport"
)

func main() { transport.Serve(serialtransport.New()) }
