package topology

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ferryhq/ferry/sdk/routing"
	"github.com/ferryhq/ferry/sdk/transport"
	"github.com/hashicorp/hcl/v2"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata")

// testSchemas stands in for the schemas plugins declare.
func testSchemas(plugin string) ([]transport.Setting, error) {
	switch plugin {
	case "tcp":
		return []transport.Setting{{Name: "keepalive", Type: transport.Duration, Default: "15s"}}, nil
	case "serial":
		return []transport.Setting{
			{Name: "baud", Type: transport.Int, Default: "115200"},
			{Name: "flow", Type: transport.Bool},
			{Name: "timeout", Type: transport.Duration, Default: "1s"},
		}, nil
	case "kafka":
		return []transport.Setting{
			{Name: "topic", Type: transport.String, Required: true, Description: "this node's inbound topic"},
			{Name: "brokers", Type: transport.String, Default: "127.0.0.1:9092"},
		}, nil
	case "portal-tcp":
		return nil, nil
	case "broken":
		return nil, errors.New("plugin binary ./bin/ferry-broken: no such file or directory")
	}
	return nil, ErrSchemaUnknown
}

func render(t *testing.T, top *Topology, diags hcl.Diagnostics) string {
	t.Helper()
	var b bytes.Buffer
	if err := top.WriteDiagnostics(&b, diags, 0, false); err != nil {
		t.Fatalf("write diagnostics: %v", err)
	}
	return b.String()
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./host/topology -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from the output (go test -update rewrites it)\n--- got ---\n%s\n--- want ---\n%s", path, got, want)
	}
}

// Each file holds one typical mistake; the first diagnostic must name it at
// the right place, and no cascade of follow-up errors may bury it.
func TestErrorFiles(t *testing.T) {
	cases := []struct {
		file    string
		summary string
		line    int
		col     int
		detail  string // a phrase the detail must contain
	}{
		{"typo_block", "Unsupported block type", 2, 3, `Did you mean "transport"?`},
		{"unknown_attribute", "Unsupported argument", 3, 5, `Did you mean "listen"?`},
		{"missing_label", "Missing name for node", 5, 6, `Write node "NAME" {`},
		{"undefined_node", "Reference to undefined node", 7, 14, `no node named "n9"`},
		{"wrong_type", "Incorrect attribute value type", 4, 14, `allow must be a list`},
		{"duplicate_node", "Duplicate node name", 7, 6, "already declared at"},
		{"unknown_plugin", "Unknown plugin", 3, 14, `Did you mean "tcp"?`},
		{"cycle", "Dependency cycle", 11, 10, "n1 → n2 → n1"},
		{"cycle_three", "Dependency cycle", 13, 25, "a → b → c → a"},
		{"bad_route", "Invalid route", 7, 37, "must start with '/'"},
		{"bad_setting", "Invalid setting value", 5, 25, "baud must be an int"},
		{"unknown_setting", "Unsupported setting", 5, 31, `Did you mean "flow"?`},
		{"missing_setting", "Missing required setting", 2, 3, `requires setting "topic"`},
		{"schema_error", "Cannot read plugin settings schema", 1, 1, "no such file"},
		{"undeclared_var", "Undeclared variable", 7, 30, `Did you mean "relay_port"?`},
		{"unknown_service", "Unknown service type", 2, 11, `Did you mean "uppercase"?`},
		{"bad_port", "Invalid port", 3, 14, "0 to 65535"},
		{"missing_attribute", "Missing required argument", 2, 22, `Add to = node.NAME.transport.NAME`},
		{"node_in_route_text", "Node names in route text", 8, 14, "node.n2.transport.NAME"},
		{"undefined_listener", "Reference to undefined transport", 7, 27, `Did you mean "public"?`},
		{"relay_elsewhere", "Relay is hosted elsewhere", 21, 41, "write node.n2.relay.n3"},
		{"reference_not_allowed", "Reference not allowed here", 7, 14, "listen cannot refer to other blocks"},
		{"wrong_plugin_kind", "Wrong kind of plugin", 3, 14, `"tcp" is a transport plugin`},
		{"listen_number", "Incorrect attribute value type", 3, 14, "the number 7000"},
		{"conflicting_settings", "Conflicting plugin settings", 10, 25, `already sets baud = "9600"`},
		{"self_connection", "Connection to the node itself", 4, 10, "remove this connection"},
		{"reference_kind_typo", "Invalid reference", 7, 17, `Did you mean "transport"?`},
		{"allow_warning", "Allowed address not served", 3, 13, `Did you mean "uppercase"?`},
		{"syntax_error", "Unexpected comma after argument", 3, 27, "separated by newlines"},
		{"unknown_address_type", "Unknown address type", 7, 37, `Did you mean "service"?`},
		{"route_without_port", "Invalid address in route", 5, 15, "has no port"},
		{"too_deep", "Topology file nested too deeply", 3, 106, "nested more than 100 deep"},
		{"bad_max_sessions", "Invalid max_sessions", 5, 20, "max_sessions must be a whole number from 1 to 65536; this is 0."},
	}
	seen := map[string]bool{}
	for _, c := range cases {
		seen[c.file+".hcl"] = true
		t.Run(c.file, func(t *testing.T) {
			path := filepath.Join("testdata", "errors", c.file+".hcl")
			top, diags := Load(path, LoadOptions{Schemas: testSchemas})
			if !diags.HasErrors() {
				t.Fatalf("no errors")
			}
			out := render(t, top, diags)
			golden(t, strings.TrimSuffix(path, ".hcl")+".golden", out)
			d := diags[0]
			if d.Summary != c.summary {
				t.Errorf("summary %q, want %q\n%s", d.Summary, c.summary, out)
			}
			if d.Subject == nil {
				t.Fatalf("diagnostic has no source range:\n%s", out)
			}
			if d.Subject.Filename != path || d.Subject.Start.Line != c.line || d.Subject.Start.Column != c.col {
				t.Errorf("at %s:%d:%d, want %s:%d:%d\n%s", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column, path, c.line, c.col, out)
			}
			if !strings.Contains(d.Detail, c.detail) {
				t.Errorf("detail %q does not contain %q", d.Detail, c.detail)
			}
			if n := len(diags.Errs()); n != 1 {
				t.Errorf("%d errors, want exactly 1 (no cascades):\n%s", n, out)
			}
			if _, err := top.Order(); err == nil {
				t.Errorf("Order succeeded on a file with errors")
			}
			if _, err := top.ResolveNode("n1", top.StaticLookup); err == nil {
				t.Errorf("ResolveNode succeeded on a file with errors")
			}
		})
	}
	files, _ := filepath.Glob(filepath.Join("testdata", "errors", "*.hcl"))
	for _, f := range files {
		if !seen[filepath.Base(f)] {
			t.Errorf("%s has no case in TestErrorFiles", f)
		}
	}
}

func TestVariables(t *testing.T) {
	path := filepath.Join("..", "..", "configs", "bridge.hcl")
	top, diags := Load(path, LoadOptions{Vars: map[string]string{"n2_port": "0", "n3_port": "7203"}})
	if diags.HasErrors() {
		t.Fatal(render(t, top, diags))
	}
	if got := top.Node("n2").Listeners[0].Address; got != "127.0.0.1:0" {
		t.Errorf("n2 listens at %q, want the override 127.0.0.1:0", got)
	}
	if got := top.Node("n3").Listeners[0].Address; got != "127.0.0.1:7203" {
		t.Errorf("n3 listens at %q, want 127.0.0.1:7203", got)
	}

	for _, c := range []struct {
		vars    map[string]string
		summary string
		detail  string
	}{
		{map[string]string{"n2_prot": "1"}, "Undeclared variable", `Did you mean "n2_port"?`},
		{map[string]string{"n2_port": "seven"}, "Invalid value for variable", "--var n2_port=seven"},
	} {
		top, diags := Load(path, LoadOptions{Vars: c.vars})
		if !diags.HasErrors() {
			t.Fatalf("vars %v: no error", c.vars)
		}
		d := diags[0]
		if d.Summary != c.summary || !strings.Contains(d.Detail, c.detail) {
			t.Errorf("vars %v: got %q: %q, want %q containing %q", c.vars, d.Summary, d.Detail, c.summary, c.detail)
		}
		render(t, top, diags) // a diagnostic without a range must print too
	}

	src := `variable "p" {}
node "n1" {
  transport "t" {
    listen   = "127.0.0.1:${var.p}"
    allow    = [var.p]
    settings = { x = var.p }
  }
  inlet "i" {
    listen = "127.0.0.1:1"
    to     = ["/service/${var.p}"]
  }
}`
	top, diags = LoadSource("novalue.hcl", []byte(src), LoadOptions{})
	if len(diags) != 1 || diags[0].Summary != "Variable has no value" || diags[0].Subject.Start.Line != 1 {
		t.Errorf("variable without value: %s", render(t, top, diags))
	}
	top, diags = LoadSource("novalue.hcl", []byte(src), LoadOptions{Vars: map[string]string{"p": "7300"}})
	for _, d := range diags {
		if d.Severity == hcl.DiagWarning && d.Summary == "Allowed address not served" {
			continue
		}
		t.Errorf("unexpected: %s", render(t, top, hcl.Diagnostics{d}))
	}
	diags = nil
	if diags.HasErrors() {
		t.Fatal(render(t, top, diags))
	}
	if got := top.Node("n1").Listeners[0].Address; got != "127.0.0.1:7300" {
		t.Errorf("listen %q", got)
	}
}

// fakeLookup plays the orchestrator: listeners got ports 40000+, and
// connections' workers have ids derived from their names.
func fakeLookup(top *Topology) Lookup {
	return func(r Ref) (string, error) {
		switch r.Kind {
		case RefListener:
			for i, n := range top.Nodes {
				for j, ls := range n.Listeners {
					if n.Name == r.Node && ls.Name == r.Name {
						return fmt.Sprintf("127.0.0.1:%d", 40000+10*i+j), nil
					}
				}
			}
		case RefConnection:
			return "/worker/" + workerID(r.Node+"."+r.Name), nil
		}
		return "", fmt.Errorf("unexpected %v", r)
	}
}

func workerID(s string) string {
	const hex = "0123456789abcdef"
	b := make([]byte, routing.WorkerIDLen)
	for i := range b {
		b[i] = hex[(int(s[i%len(s)])+i)%16]
	}
	return string(b)
}

func TestBridge(t *testing.T) {
	top, diags := Load(filepath.Join("..", "..", "configs", "bridge.hcl"), LoadOptions{Schemas: testSchemas})
	if diags.HasErrors() {
		t.Fatal(render(t, top, diags))
	}
	order, err := top.Order()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range order {
		names = append(names, n.Name)
	}
	if !reflect.DeepEqual(names, []string{"n3", "n2", "n1"}) {
		t.Errorf("order %v, want [n3 n2 n1]", names)
	}
	if got := top.Node("n1").Dependencies(); !reflect.DeepEqual(got, []string{"n2"}) {
		t.Errorf("n1 depends on %v", got)
	}
	if got, want := top.Summary(), "3 nodes, 2 listeners, 2 connections, 4 services, 0 relays, 0 inlets, 0 outlets"; got != want {
		t.Errorf("summary %q, want %q", got, want)
	}
	lookup := func(r Ref) (string, error) {
		if r.Kind == RefListener && r.Node == "n3" && r.Name == "public" {
			return "127.0.0.1:41003", nil
		}
		return "", fmt.Errorf("unexpected lookup %s", r)
	}
	spec, err := top.ResolveNode("n2", lookup)
	if err != nil {
		t.Fatal(err)
	}
	want := &NodeSpec{
		Name:        "n2",
		Plugins:     []PluginSpec{{Name: "tcp", AddressType: "tcp", Settings: map[string]string{"keepalive": "15s"}}},
		Listeners:   []ListenerSpec{{Name: "public", Plugin: "tcp", Address: "127.0.0.1:7002", Allow: []string{"hop"}}},
		Connections: []ConnectionSpec{{Name: "to_n3", Plugin: "tcp", Address: "127.0.0.1:41003", Allow: []string{"hop"}}},
		Services:    []ServiceSpec{{Type: "hop", Address: "hop"}},
	}
	if !reflect.DeepEqual(spec, want) {
		t.Errorf("n2 spec\n got %+v\nwant %+v", spec, want)
	}
	// n1 declares no services: its connection lets network input reach
	// nothing (replies are the node's business).
	spec, err = top.ResolveNode("n1", func(r Ref) (string, error) { return "127.0.0.1:41002", nil })
	if err != nil {
		t.Fatal(err)
	}
	if c := spec.Connections[0]; c.Address != "127.0.0.1:41002" || c.Allow == nil || len(c.Allow) != 0 {
		t.Errorf("n1 connection %+v", c)
	}
	// Across machines: fixed ports resolve from the file alone.
	spec, err = top.ResolveNode("n1", top.StaticLookup)
	if err != nil || spec.Connections[0].Address != "127.0.0.1:7002" {
		t.Errorf("static: %+v, %v", spec, err)
	}
	if _, err := top.ResolveNode("n9", lookup); err == nil {
		t.Error("ResolveNode of an unknown node succeeded")
	}
	if _, err := top.ResolveNode("n2", func(Ref) (string, error) { return "", errors.New("n3 is down") }); err == nil || !strings.Contains(err.Error(), "n3 is down") || !strings.Contains(err.Error(), "node.n3.transport.public") {
		t.Errorf("lookup error not reported with the reference: %v", err)
	}

	top, diags = Load(filepath.Join("..", "..", "configs", "bridge.hcl"), LoadOptions{Vars: map[string]string{"n2_port": "0"}})
	if diags.HasErrors() {
		t.Fatal(render(t, top, diags))
	}
	if _, err := top.ResolveNode("n1", top.StaticLookup); err == nil || !strings.Contains(err.Error(), "port 0") {
		t.Errorf("static lookup of a :0 listener: %v", err)
	}
}

func TestRelayPortal(t *testing.T) {
	top, diags := Load(filepath.Join("..", "..", "configs", "relay-portal.hcl"), LoadOptions{Schemas: testSchemas})
	if diags.HasErrors() {
		t.Fatal(render(t, top, diags))
	}
	order, _ := top.Order()
	var names []string
	for _, n := range order {
		names = append(names, n.Name)
	}
	if !reflect.DeepEqual(names, []string{"n2", "n3", "n1"}) {
		t.Errorf("order %v, want [n2 n3 n1]", names)
	}
	if h := top.Node("n3").Relays[0].Host; h != "n2" {
		t.Errorf("relay host %q, want n2", h)
	}
	spec, err := top.ResolveNode("n1", func(Ref) (string, error) { return "127.0.0.1:7000", nil })
	if err != nil {
		t.Fatal(err)
	}
	in := spec.Inlets[0]
	if in.Listen != "127.0.0.1:6000" || in.Plugin != "portal-tcp" {
		t.Errorf("inlet %+v", in)
	}
	if got := in.To.String(); got != "{connection.to_n2}/service/forward_to_n3/service/hop/service/outlet" {
		t.Errorf("inlet route %s", got)
	}
	id := strings.Repeat("ab", 16)
	r, err := in.To.Resolve(func(name string) (routing.Address, error) {
		if name != "to_n2" {
			return routing.Address{}, fmt.Errorf("no connection %q", name)
		}
		return routing.Local(id), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.String(); got != "/worker/"+id+"/service/forward_to_n3/service/hop/service/outlet" {
		t.Errorf("resolved %s", got)
	}
	if _, err := in.To.Resolve(nil); err == nil {
		t.Error("Resolve without the connection's worker succeeded")
	}
	n3, err := top.ResolveNode("n3", func(Ref) (string, error) { return "127.0.0.1:7000", nil })
	if err != nil {
		t.Fatal(err)
	}
	if got := n3.Relays[0].At.String(); got != "{connection.to_n2}" {
		t.Errorf("relay at %s", got)
	}
	if o := n3.Outlets[0]; o.Address != "outlet" || o.Target != "127.0.0.1:9000" {
		t.Errorf("outlet %+v", o)
	}
	if got := n3.Connections[0].Allow; !reflect.DeepEqual(got, []string{"hop", "outlet"}) {
		t.Errorf("n3 allow %v", got)
	}
}

// The decoded model and resolved specs of a file using every feature are
// kept as a golden JSON file, reviewed by hand.
func TestValidFiles(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "valid", "*.hcl"))
	if len(files) == 0 {
		t.Fatal("no valid test files")
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			top, diags := Load(path, LoadOptions{Schemas: testSchemas})
			if len(diags) != 0 {
				t.Fatal(render(t, top, diags))
			}
			order, err := top.Order()
			if err != nil {
				t.Fatal(err)
			}
			type out struct {
				Summary string
				Order   []string
				Plugins []*Plugin
				Specs   []*NodeSpec
			}
			o := out{Summary: top.Summary()}
			for _, p := range top.Plugins {
				cp := *p
				wd, _ := os.Getwd()
				if rel, err := filepath.Rel(wd, cp.Path); err == nil && filepath.IsAbs(cp.Path) {
					cp.Path = filepath.ToSlash(rel)
				} else {
					t.Errorf("plugin path %q is not absolute", cp.Path)
				}
				o.Plugins = append(o.Plugins, &cp)
			}
			for _, n := range order {
				o.Order = append(o.Order, n.Name)
				spec, err := top.ResolveNode(n.Name, fakeLookup(top))
				if err != nil {
					t.Fatal(err)
				}
				for i := range spec.Plugins {
					if p := spec.Plugins[i].Path; p != "" {
						wd, _ := os.Getwd()
						rel, _ := filepath.Rel(wd, p)
						spec.Plugins[i].Path = filepath.ToSlash(rel)
					}
				}
				o.Specs = append(o.Specs, spec)
			}
			b, err := json.MarshalIndent(o, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			golden(t, strings.TrimSuffix(path, ".hcl")+".golden.json", string(b)+"\n")
		})
	}
}

// Every shipped configuration validates, with and without plugin schemas.
func TestConfigs(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("..", "..", "configs", "*.hcl"))
	if len(files) < 2 {
		t.Fatalf("found %d configs, want bridge.hcl and relay-portal.hcl at least", len(files))
	}
	for _, f := range files {
		// testSchemas' serial and kafka stand-ins are not the real plugins'
		// schemas: configs using those are checked against the real ones
		// by the ferry command's tests (ferry validate with plugins built).
		onlyTCP := func(p string) ([]transport.Setting, error) {
			if p == "tcp" || p == "portal-tcp" {
				return testSchemas(p)
			}
			return nil, ErrSchemaUnknown
		}
		for _, schemas := range []func(string) ([]transport.Setting, error){nil, onlyTCP} {
			top, diags := Load(f, LoadOptions{Schemas: schemas})
			if len(diags) != 0 {
				t.Errorf("%s:\n%s", f, render(t, top, diags))
				continue
			}
			order, err := top.Order()
			if err != nil || len(order) != len(top.Nodes) {
				t.Errorf("%s: order %v, %v", f, order, err)
			}
		}
	}
}

func TestMissingFile(t *testing.T) {
	top, diags := Load(filepath.Join(t.TempDir(), "nope.hcl"), LoadOptions{})
	if !diags.HasErrors() || diags[0].Summary != "Cannot read topology file" {
		t.Fatalf("diags %v", diags)
	}
	if out := render(t, top, diags); !strings.Contains(out, "nope.hcl") {
		t.Errorf("output does not name the file: %s", out)
	}
}

func TestSuggest(t *testing.T) {
	for _, c := range []struct{ given, want string }{
		{"transprt", "transport"},
		{"tpc", "tcp"},
		{"n9", "n1"},
		{"x", ""},
		{"completely-different", ""},
	} {
		if got := suggest(c.given, []string{"transport", "tcp", "n1", "connection"}); got != c.want {
			t.Errorf("suggest(%q) = %q, want %q", c.given, got, c.want)
		}
	}
}

// Independent mistakes are all reported in one run, each at its place.
func TestSeveralMistakes(t *testing.T) {
	src := `node "n1" {
  transport "public" {
    listen = "127.0.0.1"
  }
  service "ecko" {}
  connection "c" {
    to = node.n7.transport.public
  }
}
`
	top, diags := LoadSource("several.hcl", []byte(src), LoadOptions{})
	want := []struct {
		summary string
		line    int
	}{{"Invalid address", 3}, {"Unknown service type", 5}, {"Reference to undefined node", 7}}
	if len(diags) != len(want) {
		t.Fatalf("%d diagnostics, want %d:\n%s", len(diags), len(want), render(t, top, diags))
	}
	for i, w := range want {
		if diags[i].Summary != w.summary || diags[i].Subject.Start.Line != w.line {
			t.Errorf("diagnostic %d: %s at line %d, want %s at line %d", i, diags[i].Summary, diags[i].Subject.Start.Line, w.summary, w.line)
		}
	}
}

// A relay whose at is route text has no known host: a reference may name
// any node but the one registering it.
func TestRelayWithLiteralAt(t *testing.T) {
	src := `node "hub" {
  transport "public" {}
  service "relay" {}
}
node "edge" {
  relay "edge" {
    at = "/tcp/127.0.0.1:7000"
  }
}
node "client" {
  connection "up" {
    to = node.hub.transport.public
  }
  inlet "i" {
    listen = "127.0.0.1:6000"
    to     = [node.client.connection.up, node.hub.relay.edge, "/service/outlet"]
  }
}
`
	top, diags := LoadSource("relay.hcl", []byte(src), LoadOptions{})
	if diags.HasErrors() {
		t.Fatal(render(t, top, diags))
	}
	if h := top.Node("edge").Relays[0].Host; h != "" {
		t.Errorf("host %q, want unknown", h)
	}
	if got := top.Node("client").Dependencies(); !reflect.DeepEqual(got, []string{"hub"}) {
		t.Errorf("client depends on %v, want [hub]", got)
	}
	bad := strings.Replace(src, "node.hub.relay.edge", "node.edge.relay.edge", 1)
	top, diags = LoadSource("relay.hcl", []byte(bad), LoadOptions{})
	if !diags.HasErrors() || diags[0].Summary != "Relay is hosted elsewhere" || diags[0].Subject.Start.Line != 16 {
		t.Errorf("reference through the registering node:\n%s", render(t, top, diags))
	}
}
