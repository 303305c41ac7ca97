package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
)

// devBrokerArg is the first argument with which `ferry kafka dev` runs this
// binary. The host starts a plugin with no arguments, so the two never meet.
const devBrokerArg = "dev-broker"

// runDevBroker runs a single in-process Kafka-protocol broker (kfake) until
// SIGINT or SIGTERM and returns the exit code. `ferry kafka dev` has already
// checked the flags it passes; they are checked again here because this is
// a command line too.
func runDevBroker(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kafka "+devBrokerArg, flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:9092", "host:port the broker listens on (port 0 picks a free one)")
	dataDir := fs.String("data-dir", "", "keep topics and committed offsets in this directory across restarts")
	partitions := fs.Int("partitions", 1, "partitions of topics created without a count")
	jsonOut := fs.Bool("json", false, "print the broker address as JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected arguments %q\n", devBrokerArg, fs.Args())
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serveDevBroker(ctx, *listen, *dataDir, *partitions, *jsonOut, stdout); err != nil {
		fmt.Fprintf(stderr, "ferry: %v\n", err)
		return 1
	}
	return 0
}

// serveDevBroker serves the broker until ctx ends.
func serveDevBroker(ctx context.Context, listen, dataDir string, partitions int, jsonOut bool, stdout io.Writer) error {
	if _, _, err := net.SplitHostPort(listen); err != nil {
		return fmt.Errorf("--listen %q: want host:port such as 127.0.0.1:9092 (%v)", listen, err)
	}
	if partitions < 1 {
		return fmt.Errorf("--partitions %d: want at least 1", partitions)
	}
	// kfake picks 127.0.0.1 and a port itself; ListenFn puts the broker
	// where --listen says instead.
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.DefaultNumPartitions(partitions),
		kfake.ListenFn(func(network, _ string) (net.Listener, error) { return net.Listen(network, listen) }),
	}
	if dataDir != "" {
		opts = append(opts, kfake.DataDir(dataDir))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return fmt.Errorf("start the kafka dev broker on %s: %w", listen, err)
	}
	defer c.Close()
	addr := c.ListenAddrs()[0]
	if jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(map[string]string{"brokers": addr}); err != nil {
			return err
		}
	} else {
		where := "in memory"
		if dataDir != "" {
			where = "in " + dataDir
		}
		fmt.Fprintf(stdout, "Kafka dev broker (kfake) listening on %s, data %s; stop with Ctrl-C\n", addr, where)
		fmt.Fprintf(stdout, "Use it with: --transport kafka --setting brokers=%s\n", addr)
	}
	<-ctx.Done()
	return nil
}
