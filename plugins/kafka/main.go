// Command kafka is Ferry's Kafka transport plugin. The host launches it from
// the plugin directory (bin/plugins/kafka); it is not meant to be run by
// hand. The implementation is package kafkatransport, which embedding
// programs can also use in-process.
package main

import (
	"github.com/ferryhq/ferry/plugins/kafka/kafkatransport"
	"github.com/ferryhq/ferry/sdk/transport"
)

func main() { transport.Serve(kafkatransport.New()) }
