// Command kafka is Ferry's Kafka transport plugin. The host launches it from
// the plugin directory (bin/plugins/kafka); it is not meant to be run by
// hand. The implementation is package kafkatransport, which embedding
// programs can also use in-process.
//
// `ferry kafka dev` runs this binary as `kafka dev-broker ...` (devbroker.go):
// the development broker (franz-go's kfake) lives here, beside the client it
// is for, so the ferry binary every node runs does not carry it.
package main

import (
	"os"

	"github.com/ferryhq/ferry/plugins/kafka/kafkatransport"
	"github.com/ferryhq/ferry/sdk/transport"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == devBrokerArg {
		os.Exit(runDevBroker(os.Args[2:], os.Stdout, os.Stderr))
	}
	transport.Serve(kafkatransport.New())
}
