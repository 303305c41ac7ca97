// Command demo is `make demo`. By default it shows a mixed-protocol path,
// configs/udp-tcp-kafka.hcl: it starts a Kafka broker (kfake) and an HTTP
// server in this process, brings the four nodes up with the built ferry
// binary and plugins (in a temporary FERRY_HOME, so your own nodes are
// untouched), sends HTTP requests through the device's inlet, prints the
// path with the counters of every hop, and stops everything on exit (also
// on Ctrl-C). -path relay shows configs/relay-portal.hcl instead: a relay
// and a TCP portal to a node that opens no port.
//
//	go run ./examples/demo [-path mixed|relay] [-ferry bin/ferry] [-plugins bin/plugins] [-wait]
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	ferry := flag.String("ferry", "bin/ferry", "the ferry binary (make build)")
	plugins := flag.String("plugins", "bin/plugins", "the plugin directory (make build)")
	path := flag.String("path", "mixed", "which demo: mixed (UDP → TCP → Kafka) or relay (relay + TCP portal)")
	config := flag.String("config", "", "the topology file (default configs/udp-tcp-kafka.hcl or configs/relay-portal.hcl)")
	requests := flag.Int("requests", 20, "how many HTTP requests the mixed demo sends")
	wait := flag.Bool("wait", false, "keep the topology running until Ctrl-C (to try curl yourself)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var err error
	switch *path {
	case "mixed":
		if *config == "" {
			*config = "configs/udp-tcp-kafka.hcl"
		}
		err = runMixed(ctx, *ferry, *plugins, *config, *requests, *wait)
	case "relay":
		if *config == "" {
			*config = "configs/relay-portal.hcl"
		}
		err = run(ctx, *ferry, *plugins, *config, *wait)
	default:
		err = fmt.Errorf("-path %q: want mixed or relay", *path)
	}
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

type demo struct {
	ferry, config string
	env           []string
}

// ferryCmd runs ferry and returns its stdout; stderr is passed through.
func (d *demo) ferryCmd(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.ferry, args...)
	cmd.Env = d.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("ferry %s: %w", strings.Join(args, " "), err)
	}
	return out.String(), nil
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	_, p, _ := net.SplitHostPort(l.Addr().String())
	return p, nil
}

func run(ctx context.Context, ferry, plugins, config string, wait bool) (err error) {
	for _, p := range []string{ferry, filepath.Join(plugins, "tcp"), filepath.Join(plugins, "portal-tcp")} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s is missing; run make build first", p)
		}
	}
	ferry, _ = filepath.Abs(ferry)
	plugins, _ = filepath.Abs(plugins)
	home, err := os.MkdirTemp("", "ferry-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(home)
	d := &demo{ferry: ferry, config: config,
		env: append(os.Environ(), "FERRY_HOME="+home, "FERRY_PLUGIN_DIR="+plugins)}

	// The target: a plain HTTP server next to n3, which is reached only
	// through the portal.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("target server: %w", err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Served-By", "the target behind n3")
		fmt.Fprintf(w, "Hello from %s behind n3: you asked for %s %s, and the request came from %s.\n", r.Host, r.Method, r.URL.Path, r.RemoteAddr)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	target := ln.Addr().String()

	n2Port, err := freePort()
	if err != nil {
		return err
	}
	inletPort, err := freePort()
	if err != nil {
		return err
	}
	inlet := "127.0.0.1:" + inletPort

	fmt.Printf("==> ferry up %s (FERRY_HOME=%s)\n", config, home)
	out, err := d.ferryCmd(ctx, "up", config, "--var", "n2_port="+n2Port, "--var", "inlet_address="+inlet, "--var", "target="+target)
	fmt.Print(out)
	defer func() {
		// Stop everything, even after a failure or Ctrl-C.
		fmt.Printf("\n==> ferry down %s\n", config)
		out, derr := d.ferryCmd(context.Background(), "down", config)
		fmt.Print(out)
		if derr != nil && err == nil {
			err = derr
		}
	}()
	if err != nil {
		return err
	}

	if err := d.where(ctx, inlet, target); err != nil {
		return err
	}

	fmt.Printf("\n==> GET http://%s/demo (through the inlet on n1)\n", inlet)
	if err := get(ctx, "http://"+inlet+"/demo", true); err != nil {
		return err
	}

	fmt.Println("\n==> what travelled")
	for _, args := range [][]string{
		{"tcp-inlet", "list", "--at", "n1"},
		{"relay", "list", "--at", "n2"},
		{"relay", "list", "--at", "n3"},
		{"tcp-outlet", "list", "--at", "n3"},
	} {
		out, err := d.ferryCmd(ctx, args...)
		if err != nil {
			return err
		}
		fmt.Printf("$ ferry %s\n%s", strings.Join(args, " "), out)
	}
	if wait {
		fmt.Printf("\nRunning. Try: curl --head %s   (Ctrl-C stops everything)\n", inlet)
		<-ctx.Done()
	}
	return nil
}

type nodeView struct {
	Name      string `json:"name"`
	Pid       int    `json:"pid"`
	Listeners []struct {
		Address string `json:"address"`
	} `json:"listeners"`
	Connections []struct {
		Worker   string `json:"worker"`
		Remote   string `json:"remote_address"`
		Name     string `json:"name"`
		Accepted bool   `json:"accepted"`
	} `json:"connections"`
	Relays *struct {
		Registrations []struct {
			Name, Relay, State string
		} `json:"registrations"`
		Forwarders []struct {
			Address, State string
		} `json:"forwarders"`
	} `json:"relays"`
	Inlets []struct {
		ID, Route, State string
	} `json:"inlets"`
	Outlets []struct {
		ID, Target, State string
	} `json:"outlets"`
}

// where prints which node listens where and the route sessions take.
func (d *demo) where(ctx context.Context, inlet, target string) error {
	fmt.Println("\n==> where the pieces are")
	for _, name := range []string{"n1", "n2", "n3"} {
		out, err := d.ferryCmd(ctx, "node", "show", name, "--output", "json")
		if err != nil {
			return err
		}
		var v nodeView
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			return fmt.Errorf("node show %s: %w", name, err)
		}
		fmt.Printf("%s (pid %d)\n", v.Name, v.Pid)
		for _, l := range v.Listeners {
			fmt.Printf("  listens on      /tcp/%s\n", l.Address)
		}
		if len(v.Listeners) == 0 {
			fmt.Printf("  listens on      nothing (only dials out)\n")
		}
		for _, c := range v.Connections {
			dir := "dialled to"
			if c.Accepted {
				dir = "accepted from"
			}
			fmt.Printf("  connection      %s %s %s\n", c.Worker, dir, c.Remote)
		}
		if v.Relays != nil {
			for _, r := range v.Relays.Forwarders {
				fmt.Printf("  relay           %s (%s)\n", r.Address, r.State)
			}
			for _, r := range v.Relays.Registrations {
				fmt.Printf("  registered      forward_to_%s at %s (%s)\n", r.Name, r.Relay, r.State)
			}
		}
		for _, in := range v.Inlets {
			fmt.Printf("  tcp inlet       %s -> %s (%s)\n", in.ID, in.Route, in.State)
		}
		for _, o := range v.Outlets {
			fmt.Printf("  tcp outlet      %s -> %s (%s)\n", o.ID, o.Target, o.State)
		}
	}
	fmt.Printf("\nclient -> %s (inlet on n1) -> n2's forward_to_n3 -> n3's connection -> hop -> outlet -> %s (target)\n", inlet, target)
	return nil
}
