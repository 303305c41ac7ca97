package main

import (
	"fmt"
	"net"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kfake"
)

// newKafkaCmd is `ferry kafka`: helpers for the kafka transport.
func (a *app) newKafkaCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "kafka", Short: "Helpers for the kafka transport"}
	var listen, dataDir string
	var partitions int
	dev := &cobra.Command{
		Use:   "dev [--listen 127.0.0.1:9092]",
		Short: "Run a local Kafka-protocol broker (franz-go's kfake) in the foreground, for demos and tests",
		Long: `Run a single in-process Kafka-protocol broker (franz-go's kfake) until Ctrl-C or SIGTERM.
It prints the seed broker address to give the kafka transport as --setting brokers=ADDRESS.
Topics and offsets live in memory unless --data-dir keeps them across restarts.
It is not a production Kafka: point the transport at a real cluster for that.`,
		Example: `  ferry kafka dev
  ferry listener create n2 --at n2 --transport kafka --setting brokers=127.0.0.1:9092 --setting inbound_topic=n2`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkHostPort(listen); err != nil {
				return fmt.Errorf("--listen: %w", err)
			}
			if partitions < 1 {
				return fmt.Errorf("--partitions %d: want at least 1", partitions)
			}
			// kfake picks 127.0.0.1 and a port itself; ListenFn puts the
			// broker where --listen says instead.
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
			if a.json() {
				if err := a.printJSON(map[string]string{"brokers": addr}); err != nil {
					return err
				}
			} else {
				where := "in memory"
				if dataDir != "" {
					where = "in " + dataDir
				}
				a.printf("Kafka dev broker (kfake) listening on %s, data %s; stop with Ctrl-C\n", addr, where)
				a.printf("Use it with: --transport kafka --setting brokers=%s\n", addr)
			}
			<-cmd.Context().Done()
			return nil
		},
	}
	dev.Flags().StringVar(&listen, "listen", "127.0.0.1:9092", "host:port the broker listens on (port 0 picks a free one)")
	dev.Flags().StringVar(&dataDir, "data-dir", "", "keep topics and committed offsets in this directory across restarts (default: memory only)")
	dev.Flags().IntVar(&partitions, "partitions", 1, "partitions of topics created without a count")
	cmd.AddCommand(dev)
	return cmd
}
