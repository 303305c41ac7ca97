// Command unixtransport is an example third-party transport plugin: links
// over Unix-domain sockets, route address type "unix". Build it into the
// plugin directory under the plugin's name:
//
//	go build -o bin/plugins/unix ./examples/unixtransport
//
// The host launches it; it is not meant to be run by hand. See sdk/README.md.
package main

import (
	"github.com/ferryhq/ferry/examples/unixtransport/unixsock"
	"github.com/ferryhq/ferry/sdk/transport"
)

func main() { transport.Serve(unixsock.New()) }
