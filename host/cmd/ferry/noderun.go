package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/ferryhq/ferry/host/api"
	"github.com/ferryhq/ferry/host/api/daemon"
	"github.com/ferryhq/ferry/host/logging"
	"github.com/ferryhq/ferry/host/state"
	"github.com/ferryhq/ferry/host/topology"
)

// newNodeRunCmd is the background node process that `node create` and
// `node start` launch. It is hidden: users never run it themselves.
func (a *app) newNodeRunCmd() *cobra.Command {
	var readyFD int
	var verbose bool
	cmd := &cobra.Command{
		Use:    "run NAME",
		Short:  "Run a node in this process (used by node create/start)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			h, cfg, err := a.loadNode(args[0])
			var ready io.WriteCloser
			if readyFD > 0 {
				ready = os.NewFile(uintptr(readyFD), "ready")
				defer ready.Close()
			}
			var logTo io.Writer = os.Stderr
			if err == nil && readyFD > 0 {
				// A background node: its stderr is node.log; cap it (host/logging).
				if rf, lerr := logging.OpenRotating(h.LogPath(args[0]), logging.RotateOptions{Stderr: true}); lerr == nil {
					defer rf.Close()
					logTo = rf
				}
			}
			if err == nil {
				err = runNode(cmd.Context(), h, cfg, logTo, verbose, func(st api.Status) {
					if ready == nil {
						return
					}
					b, _ := json.Marshal(st)
					fmt.Fprintf(ready, "ok %s\n", b)
					ready.Close()
					ready = nil
				})
			}
			if err != nil && ready != nil {
				fmt.Fprintf(ready, "error %s\n", oneLine(err.Error()))
			}
			return err
		},
	}
	cmd.Flags().IntVar(&readyFD, "ready-fd", 0, "file descriptor to report readiness on")
	cmd.Flags().BoolVar(&verbose, "verbose", false, "log at debug level")
	return cmd
}

func oneLine(s string) string {
	out := []byte(s)
	for i, c := range out {
		if c == '\n' || c == '\r' {
			out[i] = ' '
		}
	}
	return string(out)
}

// runNode runs node cfg in this process until a signal or a shutdown call.
func runNode(ctx context.Context, h *state.Home, cfg *state.NodeConfig, logTo io.Writer, verbose bool, ready func(api.Status)) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The node's process is in its own session; a hang-up of the terminal
	// that created it must not stop it.
	signal.Ignore(syscall.SIGHUP)
	level := hclog.Info
	if verbose {
		level = hclog.Debug
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "ferry", Level: level, Output: logTo})
	var spec *topology.NodeSpec
	if cfg.ConfigFile != "" {
		var err error
		if spec, err = resolveSpec(ctx, h, cfg); err != nil {
			return err
		}
	}
	tr, err := newPluginTransports(cfg.PluginDir, log.Named("plugins"), spec)
	if err != nil {
		return err
	}
	return daemon.Run(ctx, daemon.Options{Config: *cfg, Home: h, Logger: log, Transports: tr, Spec: spec, Ready: ready})
}

// runForeground runs a node created with --foreground: status on stdout
// once it serves, logs on stderr, until Ctrl-C or `ferry node stop`.
func (a *app) runForeground(ctx context.Context, h *state.Home, name string, verbose bool) error {
	cfg, err := h.Load(name)
	if err != nil {
		return err
	}
	return runNode(ctx, h, cfg, a.stderr, verbose, func(st api.Status) {
		_ = a.printNode(nodeFromStatus(h, st), false)
	})
}
