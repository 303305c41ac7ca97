package topology

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad feeds arbitrary bytes to the loader: it must never panic, every
// error must print, and a file that loads cleanly must order and resolve.
func FuzzLoad(f *testing.F) {
	for _, pattern := range []string{"testdata/*/*.hcl", "../../configs/*.hcl"} {
		files, _ := filepath.Glob(pattern)
		for _, p := range files {
			b, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Add([]byte(`node "a" { connection "c" { to = node.a.connection.c } }`))
	f.Add([]byte(`node "a" { inlet "i" { listen = "127.0.0.1:1", to = [node["a"].connection["c"]] } }`))
	f.Add([]byte(`node "a" { service "relay" { max_registrations = 1.5 } outlet "o" { to = "127.0.0.1:1", max_sessions = 1e99 } }`))
	f.Fuzz(func(t *testing.T, src []byte) {
		top, diags := LoadSource("fuzz.hcl", src, LoadOptions{Schemas: testSchemas, Vars: map[string]string{}})
		if top == nil {
			t.Fatal("nil topology")
		}
		if err := top.WriteDiagnostics(io.Discard, diags, 80, false); err != nil {
			t.Fatalf("write diagnostics: %v", err)
		}
		for _, d := range diags {
			if d.Summary == "" {
				t.Fatalf("diagnostic without summary: %+v", d)
			}
		}
		if diags.HasErrors() {
			return
		}
		order, err := top.Order()
		if err != nil {
			t.Fatalf("valid file does not order: %v", err)
		}
		if len(order) != len(top.Nodes) {
			t.Fatalf("order has %d nodes, file %d", len(order), len(top.Nodes))
		}
		for _, n := range order {
			spec, err := top.ResolveNode(n.Name, fakeLookup(top))
			if err != nil {
				t.Fatalf("valid file: resolve %s: %v", n.Name, err)
			}
			for _, in := range spec.Inlets {
				_ = in.To.String()
			}
		}
	})
}
