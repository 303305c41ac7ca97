package topology

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A small file of deeply nested brackets is refused before HCL parses it
// (the parser would overflow the stack), with the position of the limit.
func TestNestingLimit(t *testing.T) {
	for name, src := range map[string][]byte{
		"brackets":        bytes.Repeat([]byte("["), 200_000),
		"in an attribute": []byte("node \"a\" {\n  x = " + strings.Repeat("(", 100_000) + "\n}\n"),
		"blocks":          []byte(strings.Repeat("a {\n", 150)),
		"interpolations":  []byte(`x = "` + strings.Repeat(`${"`, 60_000) + "\n"),
	} {
		t.Run(name, func(t *testing.T) {
			_, diags := LoadSource("deep.hcl", src, LoadOptions{Schemas: testSchemas})
			if !diags.HasErrors() || diags[0].Summary != "Topology file nested too deeply" {
				t.Fatalf("diags: %v", diags)
			}
			if s := diags[0].Subject; s == nil || s.Filename != "deep.hcl" || s.Start.Line < 1 {
				t.Fatalf("no position: %+v", diags[0])
			}
		})
	}
	// The position is where the limit is crossed.
	_, diags := LoadSource("deep.hcl", []byte("\n\n  "+strings.Repeat("[", MaxNesting+1)), LoadOptions{Schemas: testSchemas})
	if s := diags[0].Subject; s.Start.Line != 3 || s.Start.Column != 3+MaxNesting {
		t.Fatalf("position %+v, want line 3 column %d", s.Start, 3+MaxNesting)
	}
}

// Nesting that real files have, and brackets in strings and comments, are
// not counted against the limit.
func TestNestingLimitAllowsRealFiles(t *testing.T) {
	src := "# " + strings.Repeat("[", 500) + "\n" +
		"/* " + strings.Repeat("{", 500) + " */\n" +
		`variable "v" { default = "` + strings.Repeat("[", 500) + `" }` + "\n" +
		`variable "w" { default = "${"x"}" }` + "\n"
	if d := checkLimits("ok.hcl", []byte(src)); d.HasErrors() {
		t.Fatalf("real file refused: %v", d)
	}
	files, _ := filepath.Glob("../../configs/*.hcl")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if d := checkLimits(f, b); d.HasErrors() {
			t.Errorf("%s refused: %v", f, d)
		}
	}
}

func TestSizeLimit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big.hcl")
	big := bytes.Repeat([]byte("# padding line for a file that is far too large\n"), MaxFileSize/40)
	if err := os.WriteFile(path, big, 0o600); err != nil {
		t.Fatal(err)
	}
	_, diags := Load(path, LoadOptions{Schemas: testSchemas})
	if !diags.HasErrors() || diags[0].Summary != "Topology file too large" {
		t.Fatalf("diags: %v", diags)
	}
}

// A plugin found in the plugin directory is usable without a plugin block;
// the plugins a file may use are those installed, not a fixed list.
func TestInstalledPlugins(t *testing.T) {
	src := []byte(`node "a" {
  transport "sock" {
    plugin = "unix"
    listen = "/tmp/a.sock"
  }
  connection "c" {
    plugin = "unix"
    to     = "/tmp/b.sock"
  }
  inlet "i" {
    listen = "127.0.0.1:6000"
    to     = [node.a.connection.c, "/unix/x/service/outlet"]
  }
}
`)
	installed := map[string]InstalledPlugin{"unix": {}, "portal-tcp": {}}
	if _, diags := LoadSource("u.hcl", src, LoadOptions{Installed: installed}); diags.HasErrors() {
		t.Fatalf("installed plugin without a plugin block: %v", diags)
	}
	// Without it installed, the same file names what is.
	_, diags := LoadSource("u.hcl", src, LoadOptions{Installed: map[string]InstalledPlugin{"tcp": {}, "portal-tcp": {}}})
	if !diags.HasErrors() || diags[0].Summary != "Unknown plugin" || !strings.Contains(diags[0].Detail, `installed in the plugin directory ("portal-tcp" and "tcp")`) {
		t.Fatalf("diags: %v", diags)
	}
	// An installed plugin with another address type serves that type.
	installed["unix"] = InstalledPlugin{Kind: "transport", AddressType: "uds"}
	_, diags = LoadSource("u.hcl", src, LoadOptions{Installed: installed})
	if !diags.HasErrors() || diags[0].Summary != "Unknown address type" {
		t.Fatalf("address type of an installed plugin: %v", diags)
	}
}
