package topology

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// capsFile is a topology with max_sessions on an inlet and an outlet and
// max_registrations on a relay service; the values are filled in per case.
const capsFile = `node "n2" {
  transport "public" {
    listen = "127.0.0.1:0"
    allow  = ["relay"]
  }
  service "relay" {
    max_registrations = %s
  }
}

node "n3" {
  connection "to_n2" {
    to = node.n2.transport.public
  }
  outlet "web" {
    to           = "127.0.0.1:9000"
    max_sessions = %s
  }
}

node "n1" {
  connection "to_n2" {
    to = node.n2.transport.public
  }
  inlet "web" {
    listen       = "127.0.0.1:0"
    to           = [node.n1.connection.to_n2, "/service/outlet"]
    max_sessions = %s
  }
}
`

func writeCaps(t *testing.T, relay, outlet, inlet string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "caps.hcl")
	if err := os.WriteFile(p, []byte(fmt.Sprintf(capsFile, relay, outlet, inlet)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// max_sessions and max_registrations reach the nodes' specs.
func TestCapsDecoded(t *testing.T) {
	top, diags := Load(writeCaps(t, "1", "3", "2"), LoadOptions{Schemas: testSchemas})
	if diags.HasErrors() {
		t.Fatal(render(t, top, diags))
	}
	resolve := func(Ref) (string, error) { return "127.0.0.1:7000", nil }
	spec := func(name string) *NodeSpec {
		s, err := top.ResolveNode(name, resolve)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if got := spec("n1").Inlets[0].MaxSessions; got != 2 {
		t.Errorf("inlet max_sessions: %d, want 2", got)
	}
	if got := spec("n3").Outlets[0].MaxSessions; got != 3 {
		t.Errorf("outlet max_sessions: %d, want 3", got)
	}
	var relay *ServiceSpec
	for i, s := range spec("n2").Services {
		if s.Type == "relay" {
			relay = &spec("n2").Services[i]
		}
	}
	if relay == nil || relay.MaxRegistrations != 1 {
		t.Errorf("relay service: %+v, want max_registrations 1", relay)
	}
	// The largest allowed value is accepted.
	if _, diags := Load(writeCaps(t, "65536", "65536", "65536"), LoadOptions{Schemas: testSchemas}); diags.HasErrors() {
		t.Fatal(diags.Error())
	}
}

// A cap that is not a whole number in range is one error at its value,
// with the file, line and column, naming the attribute.
func TestCapsRefused(t *testing.T) {
	for _, c := range []struct {
		relay, outlet, inlet string
		summary              string
		line, col            int
		detail               string
	}{
		{"1", "1", "0", "Invalid max_sessions", 28, 20, "max_sessions must be a whole number from 1 to 65536; this is 0."},
		{"1", "1", "-3", "Invalid max_sessions", 28, 20, "this is -3."},
		{"1", "1", "65537", "Invalid max_sessions", 28, 20, "this is 65537."},
		{"1", "2.5", "1", "Invalid max_sessions", 17, 20, "this is 2.5."},
		{"1", `"ten"`, "1", "Incorrect attribute value type", 17, 20, `max_sessions must be a whole number from 1 to 65536; this is the string "ten".`},
		{"0", "1", "1", "Invalid max_registrations", 7, 25, "max_registrations must be a whole number from 1 to 65536; this is 0."},
		{"1e9", "1", "1", "Invalid max_registrations", 7, 25, "this is 1e+09."},
	} {
		p := writeCaps(t, c.relay, c.outlet, c.inlet)
		top, diags := Load(p, LoadOptions{Schemas: testSchemas})
		if len(diags.Errs()) != 1 {
			t.Errorf("relay %s, outlet %s, inlet %s: want exactly 1 error:\n%s", c.relay, c.outlet, c.inlet, render(t, top, diags))
			continue
		}
		d := diags[0]
		if d.Summary != c.summary || d.Subject == nil || d.Subject.Filename != p || d.Subject.Start.Line != c.line || d.Subject.Start.Column != c.col || !strings.Contains(d.Detail, c.detail) {
			t.Errorf("relay %s, outlet %s, inlet %s:\n%s\nwant %q at line %d column %d with %q", c.relay, c.outlet, c.inlet, render(t, top, diags), c.summary, c.line, c.col, c.detail)
		}
	}
}

// max_registrations belongs to the relay service only.
func TestMaxRegistrationsOnlyRelay(t *testing.T) {
	src := strings.Replace(fmt.Sprintf(capsFile, "1", "1", "1"), `service "relay"`, `service "echo"`, 1)
	p := filepath.Join(t.TempDir(), "caps.hcl")
	if err := os.WriteFile(p, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	top, diags := Load(p, LoadOptions{Schemas: testSchemas})
	if !diags.HasErrors() {
		t.Fatal("no error")
	}
	d := diags[0]
	if d.Summary != "Unsupported argument" || d.Subject == nil || d.Subject.Start.Line != 7 || d.Subject.Start.Column != 5 ||
		!strings.Contains(d.Detail, `max_registrations applies to the relay service only, not to service "echo".`) {
		t.Fatalf("%s", render(t, top, diags))
	}
}
