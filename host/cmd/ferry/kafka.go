package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/ferryhq/ferry/host/plugins"
)

// newKafkaCmd is `ferry kafka`: helpers for the kafka transport.
//
// The dev broker (franz-go's kfake) is not linked into ferry: this binary
// is also every background node (`ferry node run`), and kfake with its
// compression codecs made an idle node 2.3 MB bigger in RSS (bin/ferry
// 28.7 -> 23.4 MB). It runs in the kafka plugin's binary instead, found
// where nodes find it, which links franz-go already.
func (a *app) newKafkaCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "kafka", Short: "Helpers for the kafka transport"}
	var listen, dataDir, pluginDir string
	var partitions int
	dev := &cobra.Command{
		Use:   "dev [--listen 127.0.0.1:9092]",
		Short: "Run a local Kafka-protocol broker (franz-go's kfake) in the foreground, for demos and tests",
		Long: `Run a single Kafka-protocol broker (franz-go's kfake) until Ctrl-C or SIGTERM.
It prints the seed broker address to give the kafka transport as --setting brokers=ADDRESS.
Topics and offsets live in memory unless --data-dir keeps them across restarts.
It is not a production Kafka: point the transport at a real cluster for that.
The broker runs in the kafka plugin's binary (bin/plugins/kafka), so that plugin must be built.`,
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
			m, err := plugins.NewManager(plugins.Config{Dir: pluginDir, Logger: hclog.NewNullLogger()})
			if err != nil {
				return fmt.Errorf("plugin manager: %w", err)
			}
			bin := filepath.Join(m.Dir(), "kafka")
			if _, err := os.Stat(bin); err != nil {
				return fmt.Errorf("the kafka dev broker runs in the kafka plugin: %w (build it with make build or set FERRY_PLUGIN_DIR)", err)
			}
			args := []string{"dev-broker", "--listen", listen, "--partitions", strconv.Itoa(partitions)}
			if dataDir != "" {
				args = append(args, "--data-dir", dataDir)
			}
			if a.json() {
				args = append(args, "--json")
			}
			// Ctrl-C reaches the broker through the terminal's process
			// group; a SIGTERM to ferry alone is passed on.
			c := exec.CommandContext(cmd.Context(), bin, args...)
			c.Cancel = func() error { return c.Process.Signal(syscall.SIGTERM) }
			c.WaitDelay = 10 * time.Second
			var stderr bytes.Buffer
			c.Stdout, c.Stderr = a.stdout, &stderr
			err = c.Run()
			if cmd.Context().Err() != nil && c.ProcessState != nil && c.ProcessState.Success() {
				return nil // stopped by the signal passed on
			}
			if msg := strings.TrimSpace(strings.TrimPrefix(stderr.String(), "ferry: ")); msg != "" {
				return errors.New(msg)
			}
			if err != nil {
				return fmt.Errorf("kafka dev broker (%s): %w", bin, err)
			}
			return errors.New("kafka dev broker stopped by itself")
		},
	}
	dev.Flags().StringVar(&listen, "listen", "127.0.0.1:9092", "host:port the broker listens on (port 0 picks a free one)")
	dev.Flags().StringVar(&dataDir, "data-dir", "", "keep topics and committed offsets in this directory across restarts (default: memory only)")
	dev.Flags().IntVar(&partitions, "partitions", 1, "partitions of topics created without a count")
	dev.Flags().StringVar(&pluginDir, "plugin-dir", "", "directory of plugin binaries (default $FERRY_PLUGIN_DIR, else beside the ferry binary)")
	cmd.AddCommand(dev)
	return cmd
}
