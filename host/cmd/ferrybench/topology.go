package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2/hclparse"

	"github.com/ferryhq/ferry/host/topology"
)

// The topology section measures what `ferry validate` and `ferry up` pay to
// load a file: parse + decode + reference, settings and order checks, and
// resolving every node. The baseline is hcl's parser alone on the same
// bytes, measured in the same run, so the ratio is our checking overhead.
var topologySection = section{
	name: "topology",
	desc: "load + check + resolve a topology file vs hcl parsing alone",
	run:  runTopology,
}

// chainFile generates n nodes, each listening and connecting to the
// previous one, with a service and an inlet routed through the chain.
func chainFile(n int) []byte {
	var b strings.Builder
	b.WriteString("variable \"host\" {\n  default = \"127.0.0.1\"\n}\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "node \"n%d\" {\n  transport \"public\" {\n    listen = \"${var.host}:0\"\n    allow = [\"hop\", \"echo\"]\n  }\n", i)
		if i > 0 {
			fmt.Fprintf(&b, "  connection \"prev\" {\n    to = node.n%d.transport.public\n  }\n", i-1)
			fmt.Fprintf(&b, "  inlet \"web\" {\n    listen = \"127.0.0.1:0\"\n    to = [node.n%d.connection.prev, \"/service/hop/service/echo\"]\n  }\n", i)
		}
		b.WriteString("  service \"hop\" {}\n  service \"echo\" {}\n}\n")
	}
	return []byte(b.String())
}

func runTopology(ctx context.Context, cfg config) (*table, error) {
	budget := 400 * time.Millisecond
	if cfg.quick {
		budget = 20 * time.Millisecond
	}
	lookup := func(r topology.Ref) (string, error) {
		if r.Kind == topology.RefListener {
			return "127.0.0.1:40000", nil
		}
		return "/worker/0123456789abcdef0123456789abcdef", nil
	}
	// median runs f repeatedly for about budget and returns its median.
	median := func(f func() error) (time.Duration, error) {
		var ds []time.Duration
		deadline := time.Now().Add(budget)
		for len(ds) < 5 || time.Now().Before(deadline) {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
			t0 := time.Now()
			if err := f(); err != nil {
				return 0, err
			}
			ds = append(ds, time.Since(t0))
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds[len(ds)/2], nil
	}
	t := newTable("file", "nodes", "bytes", "hcl parse (base)", "load+check", "ratio", "load+order+resolve all", "ratio")
	for _, n := range []int{3, 30, 300} {
		src := chainFile(n)
		parse, err := median(func() error {
			_, d := hclparse.NewParser().ParseHCL(src, "chain.hcl")
			if d.HasErrors() {
				return d
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		load, err := median(func() error {
			_, d := topology.LoadSource("chain.hcl", src, topology.LoadOptions{})
			if d.HasErrors() {
				return d
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		full, err := median(func() error {
			top, d := topology.LoadSource("chain.hcl", src, topology.LoadOptions{})
			if d.HasErrors() {
				return d
			}
			order, err := top.Order()
			if err != nil {
				return err
			}
			for _, node := range order {
				if _, err := top.ResolveNode(node.Name, lookup); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		t.add(fmt.Sprintf("chain-%d", n), fmt.Sprint(n), fmt.Sprint(len(src)), fmtDur(parse), fmtDur(load), fmtRatio(float64(load), float64(parse)),
			fmtDur(full), fmtRatio(float64(full), float64(parse)))
	}
	t.note("median of repeated runs; each node listens, connects to the previous one and has an inlet routed through it")
	return t, nil
}
