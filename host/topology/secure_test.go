package topology

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// secure = true in an inlet, outlet or relay block reaches the node's
// spec; a value that is not a bool is an error at that attribute.
func TestSecurePortals(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "..", "configs", "relay-portal.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	write := func(inlet, outlet string) string {
		s := strings.Replace(string(src), "    listen = var.inlet_address\n", "    listen = var.inlet_address\n    secure = "+inlet+"\n", 1)
		s = strings.Replace(s, "    to   = var.target\n", "    to   = var.target\n    secure = "+outlet+"\n", 1)
		s = strings.Replace(s, "    at = node.n3.connection.to_n2\n", "    at = node.n3.connection.to_n2\n    secure = "+outlet+"\n", 1)
		if s == string(src) {
			t.Fatal("relay-portal.hcl changed; update this test")
		}
		p := filepath.Join(t.TempDir(), "secure.hcl")
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	top, diags := Load(write("true", "true"), LoadOptions{Schemas: testSchemas})
	if diags.HasErrors() {
		t.Fatal(render(t, top, diags))
	}
	resolve := func(Ref) (string, error) { return "127.0.0.1:7000", nil }
	n1, err := top.ResolveNode("n1", resolve)
	if err != nil {
		t.Fatal(err)
	}
	n3, err := top.ResolveNode("n3", resolve)
	if err != nil {
		t.Fatal(err)
	}
	if !n1.Inlets[0].Secure || !n3.Outlets[0].Secure || !n3.Relays[0].Secure {
		t.Fatalf("inlet %+v, outlet %+v, relay %+v: want all secure", n1.Inlets[0], n3.Outlets[0], n3.Relays[0])
	}
	top, diags = Load(write("false", "false"), LoadOptions{Schemas: testSchemas})
	if diags.HasErrors() {
		t.Fatal(render(t, top, diags))
	}
	if n1, _ := top.ResolveNode("n1", resolve); n1.Inlets[0].Secure {
		t.Fatal("secure = false gave a secure inlet")
	}
	if n3, _ := top.ResolveNode("n3", resolve); n3.Relays[0].Secure {
		t.Fatal("secure = false gave a secure relay")
	}
	_, diags = Load(write(`"yes"`, "true"), LoadOptions{Schemas: testSchemas})
	if !diags.HasErrors() || !strings.Contains(diags.Error(), "secure must be true or false") {
		t.Fatalf("secure = \"yes\": %v", diags)
	}
}
