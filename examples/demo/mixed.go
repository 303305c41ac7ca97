package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// runMixed is the default demo: configs/udp-tcp-kafka.hcl, a path that
// changes protocol at every hop, with a Kafka broker (kfake) and the target
// HTTP server inside this process.
func runMixed(ctx context.Context, ferry, plugins, config string, requests int, wait bool) (err error) {
	for _, p := range []string{ferry, filepath.Join(plugins, "tcp"), filepath.Join(plugins, "udp"),
		filepath.Join(plugins, "kafka"), filepath.Join(plugins, "portal-tcp")} {
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

	// The Kafka broker between the bridge and the site: franz-go's kfake,
	// in this process, on a free loopback port.
	kafka, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.ListenFn(func(network, _ string) (net.Listener, error) {
		return net.Listen(network, "127.0.0.1:0")
	}))
	if err != nil {
		return fmt.Errorf("kafka broker (kfake): %w", err)
	}
	defer kafka.Close()
	brokers := kafka.ListenAddrs()[0]

	// The target: a plain HTTP server next to the site node.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("target server: %w", err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Served-By", "the target next to the site node")
		fmt.Fprintf(w, "Hello from %s next to the site node: you asked for %s %s; your request crossed UDP, TCP and Kafka.\n", r.Host, r.Method, r.URL.Path)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	target := ln.Addr().String()

	fmt.Printf("==> kafka broker (kfake, in this process) on %s; HTTP target on %s\n", brokers, target)
	vars := []string{"--var", "brokers=" + brokers, "--var", "gateway_port=0", "--var", "bridge_port=0",
		"--var", "inlet_address=127.0.0.1:0", "--var", "target=" + target}
	fmt.Printf("==> ferry up %s (FERRY_HOME=%s)\n", config, home)
	out, err := d.ferryCmd(ctx, append([]string{"up", config}, vars...)...)
	fmt.Print(out)
	defer func() {
		// Stop everything, even after a failure or Ctrl-C.
		fmt.Printf("\n==> ferry down %s\n", config)
		out, derr := d.ferryCmd(context.Background(), append([]string{"down", config}, vars...)...)
		fmt.Print(out)
		if derr != nil && err == nil {
			err = derr
		}
	}()
	if err != nil {
		return err
	}

	var inlets []portalView
	if err := d.json(ctx, &inlets, "tcp-inlet", "list", "--at", "device"); err != nil {
		return err
	}
	if len(inlets) != 1 {
		return fmt.Errorf("the device has %d inlets, want 1", len(inlets))
	}
	inlet := inlets[0].Address

	fmt.Printf("\n==> %d × GET http://%s/demo/N (through the inlet on the device; one TCP connection, so one portal session, each)\n", requests, inlet)
	start := time.Now()
	for i := 1; i <= requests; i++ {
		if err := get(ctx, fmt.Sprintf("http://%s/demo/%d", inlet, i), i == 1); err != nil {
			return err
		}
	}
	fmt.Printf("%d responses, 200 OK, in %s\n", requests, time.Since(start).Round(time.Millisecond))

	if err := d.path(ctx, inlet, target); err != nil {
		return err
	}
	if wait {
		fmt.Printf("\nRunning. Try: curl %s   (Ctrl-C stops everything)\n", inlet)
		<-ctx.Done()
	}
	return nil
}

func (d *demo) json(ctx context.Context, v any, args ...string) error {
	out, err := d.ferryCmd(ctx, append(args, "--output", "json")...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("ferry %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

type portalView struct {
	Address        string `json:"address"`
	Target         string `json:"target"`
	State          string `json:"state"`
	ActiveSessions int    `json:"active_sessions"`
	TotalSessions  int    `json:"total_sessions"`
	BytesOut       int64  `json:"bytes_out"`
	BytesIn        int64  `json:"bytes_in"`
	Retransmits    uint64 `json:"retransmits"`
	Duplicates     uint64 `json:"duplicates"`
}

type linkView struct {
	Transport string           `json:"transport"`
	Address   string           `json:"address"`
	Remote    string           `json:"remote_address"`
	Up        bool             `json:"up"`
	Counters  map[string]int64 `json:"counters"`
}

func state(up bool) string {
	if up {
		return "up"
	}
	return "DOWN"
}

// counters prints a transport's counters on one line: traffic first, then
// whatever counts losses (dropped, bad, duplicates, timeouts, errors).
func counters(c map[string]int64) string {
	if len(c) == 0 {
		return "(this transport reports no counters)"
	}
	var traffic, losses []string
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		s := fmt.Sprintf("%s=%d", k, c[k])
		switch {
		case strings.HasPrefix(k, "bytes_"), strings.HasPrefix(k, "messages_"), strings.HasPrefix(k, "records_"), strings.HasPrefix(k, "datagrams_"):
			traffic = append(traffic, s)
		case strings.Contains(k, "drop"), strings.Contains(k, "bad"), strings.Contains(k, "duplicate"),
			strings.Contains(k, "timeout"), strings.Contains(k, "error"), strings.Contains(k, "refused"):
			losses = append(losses, s)
		}
	}
	return strings.Join(traffic, " ") + "\n                 losses: " + strings.Join(losses, " ")
}

// path prints the route sessions take, hop by hop, with each hop's
// transport, state and counters as the nodes report them (ferry listener
// show, tcp-inlet list, tcp-outlet list).
func (d *demo) path(ctx context.Context, inlet, target string) error {
	var in, out []portalView
	if err := d.json(ctx, &in, "tcp-inlet", "list", "--at", "device"); err != nil {
		return err
	}
	if err := d.json(ctx, &out, "tcp-outlet", "list", "--at", "site"); err != nil {
		return err
	}
	hop := func(node, listener string) (linkView, error) {
		var v linkView
		err := d.json(ctx, &v, "listener", "show", listener, "--at", node)
		return v, err
	}
	udp, err := hop("gateway", "public")
	if err != nil {
		return err
	}
	tcp, err := hop("bridge", "public")
	if err != nil {
		return err
	}
	kin, err := hop("site", "inbox")
	if err != nil {
		return err
	}
	kback, err := hop("bridge", "inbox")
	if err != nil {
		return err
	}
	fmt.Println("\n==> the path, hop by hop, with each hop's counters")
	fmt.Printf("client\n")
	for _, p := range in {
		fmt.Printf("  │ tcp  %s  device: inlet (%s) sessions %d active/%d total, bytes out %d in %d, retransmits %d, duplicates %d\n",
			inlet, p.State, p.ActiveSessions, p.TotalSessions, p.BytesOut, p.BytesIn, p.Retransmits, p.Duplicates)
	}
	fmt.Printf("  ▼\ndevice ──udp──► gateway   listener /udp/%s (%s)\n                 %s\n", udp.Address, state(udp.Up), counters(udp.Counters))
	fmt.Printf("gateway ──tcp──► bridge   listener /tcp/%s (%s)\n                 %s\n", tcp.Address, state(tcp.Up), counters(tcp.Counters))
	fmt.Printf("bridge ──kafka──► site    topic /kafka/%s (%s)\n                 %s\n", kin.Address, state(kin.Up), counters(kin.Counters))
	fmt.Printf("site ──kafka──► bridge    replies, topic /kafka/%s (%s)\n                 %s\n", kback.Address, state(kback.Up), counters(kback.Counters))
	for _, p := range out {
		fmt.Printf("site: outlet %s (%s) sessions %d active/%d total, bytes out %d in %d, retransmits %d, duplicates %d\n",
			p.Address, p.State, p.ActiveSessions, p.TotalSessions, p.BytesOut, p.BytesIn, p.Retransmits, p.Duplicates)
	}
	fmt.Printf("  │ tcp\n  ▼\nHTTP server %s\n", target)
	return nil
}

// get sends one request; it prints the response when show is set.
func get(ctx context.Context, url string, show bool) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	// One connection per request: each request is a whole portal session.
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("request through the inlet: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("read the response: %w", err)
	}
	if show {
		fmt.Printf("%s %s\n", resp.Proto, resp.Status)
		for _, k := range []string{"X-Served-By", "Content-Length", "Content-Type"} {
			if v := resp.Header.Get(k); v != "" {
				fmt.Printf("%s: %s\n", k, v)
			}
		}
		fmt.Printf("\n%s\n", body)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: the target answered %s", url, resp.Status)
	}
	return nil
}
