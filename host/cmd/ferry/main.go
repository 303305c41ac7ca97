// Command ferry drives Ferry nodes: it creates background nodes whose state
// lives in $FERRY_HOME (default ~/.ferry), talks to them over their local
// control API, and starts topologies from HCL files.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/ferryhq/ferry/host/api"
	"github.com/ferryhq/ferry/host/state"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// app carries what every command needs; it is built per invocation so
// tests could run commands in-process without shared state.
type app struct {
	output string
	stdout io.Writer
	stderr io.Writer
}

func main() {
	a := &app{stdout: os.Stdout, stderr: os.Stderr}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := a.root().ExecuteContext(ctx)
	stop()
	if err != nil {
		if a.json() {
			// Scripts asked for JSON: the error is JSON too, on stderr.
			b, _ := json.Marshal(api.Error{Error: err.Error()})
			fmt.Fprintf(os.Stderr, "%s\n", b)
		} else {
			fmt.Fprintf(os.Stderr, "ferry: %v\n", err)
		}
		os.Exit(1)
	}
}

func (a *app) root() *cobra.Command {
	root := &cobra.Command{
		Use:           "ferry",
		Short:         "Run Ferry nodes and route messages between them",
		Version:       readBuildInfo().Version,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if a.output != "text" && a.output != "json" {
				return fmt.Errorf("--output %q: use text or json", a.output)
			}
			return nil
		},
	}
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.PersistentFlags().StringVarP(&a.output, "output", "o", "text", "output format: text or json")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return fmt.Errorf("%w; see %s --help", err, cmd.CommandPath())
	})
	root.AddCommand(
		a.newNodeCmd(),
		a.newWorkerCmd(),
		a.newServiceCmd(),
		a.newMessageCmd(),
		a.newListenerCmd(listenerCmd),
		a.newConnectionCmd(connectionCmd),
		a.newTCPListenerCmd(),
		a.newTCPConnectionCmd(),
		a.newRelayCmd(),
		a.newTCPInletCmd(),
		a.newTCPOutletCmd(),
		a.newPluginCmd(),
		a.newIdentityCmd(),
		a.newSecureChannelCmd(),
		a.newUpCmd(),
		a.newDownCmd(),
		newValidateCmd(),
		a.newKafkaCmd(),
		a.newVersionCmd(),
	)
	rejectUnknownSubcommands(root)
	return root
}

// json reports whether output is for scripts.
func (a *app) json() bool { return a.output == "json" }

func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (a *app) printf(format string, args ...any) { fmt.Fprintf(a.stdout, format, args...) }

func (a *app) home() (*state.Home, error) { return state.Open("") }

// errNoNode is the message for a name without state.
func errNoNode(name string) error {
	return fmt.Errorf("node %q does not exist; see ferry node list", name)
}

// loadNode returns the home and node name's config, or a helpful error.
func (a *app) loadNode(name string) (*state.Home, *state.NodeConfig, error) {
	h, err := a.home()
	if err != nil {
		return nil, nil, err
	}
	if err := state.ValidName(name); err != nil {
		return nil, nil, err
	}
	c, err := h.Load(name)
	if errors.Is(err, state.ErrNotFound) {
		return nil, nil, errNoNode(name)
	}
	return h, c, err
}

// connect returns a client for a running node, or an error that says how
// to start it.
func (a *app) connect(ctx context.Context, name string) (*api.Client, api.Status, error) {
	h, _, err := a.loadNode(name)
	if err != nil {
		return nil, api.Status{}, err
	}
	c := api.NewClient(h.SocketPath(name))
	st, err := probe(ctx, c)
	if err != nil {
		c.Close()
		if errors.Is(err, api.ErrNotRunning) {
			return nil, api.Status{}, fmt.Errorf("node %q is not running; start it with ferry node start %s", name, name)
		}
		return nil, api.Status{}, fmt.Errorf("node %q does not answer (%v); see ferry node show %s and its log", name, err, name)
	}
	return c, st, nil
}
