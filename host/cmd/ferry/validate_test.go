package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// runValidate runs `ferry validate` in-process under a root carrying the
// persistent --output flag, as the real root does.
func runValidate(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := &cobra.Command{Use: "ferry", SilenceErrors: true, SilenceUsage: true}
	root.PersistentFlags().StringP("output", "o", "text", "")
	root.AddCommand(newValidateCmd())
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(append([]string{"validate"}, args...))
	err = root.Execute()
	return out.String(), errb.String(), err
}

func writeFile(t *testing.T, name, src string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestValidateConfigs(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("..", "..", "..", "configs", "*.hcl"))
	if len(files) == 0 {
		t.Fatal("no configs")
	}
	for _, f := range files {
		out, errOut, err := runValidate(t, f)
		if err != nil {
			t.Errorf("%s: %v\n%s", f, err, errOut)
			continue
		}
		if !strings.HasPrefix(out, f+": ") || !strings.HasSuffix(out, "OK\n") || strings.Count(out, "\n") != 1 {
			t.Errorf("%s: summary %q", f, out)
		}
	}
	out, _, err := runValidate(t, filepath.Join("..", "..", "..", "configs", "bridge.hcl"), "--var", "n2_port=0")
	if err != nil || !strings.Contains(out, "3 nodes, 2 listeners, 2 connections") || !strings.Contains(out, "start order n3, n2, n1") {
		t.Errorf("bridge: %q, %v", out, err)
	}
}

func TestValidateErrors(t *testing.T) {
	bad := writeFile(t, "typo.hcl", "node \"n1\" {\n  transprt \"public\" {}\n}\n")
	out, errOut, err := runValidate(t, bad)
	if err == nil {
		t.Fatal("no error for a file with a typo")
	}
	if out != "" {
		t.Errorf("stdout %q, want nothing", out)
	}
	for _, want := range []string{"Unsupported block type", "typo.hcl line 2", `Did you mean "transport"?`, `transprt "public"`} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	if !strings.Contains(err.Error(), "1 error") {
		t.Errorf("error %v", err)
	}

	// Built-in tcp settings are checked against the schema the transport
	// declares, without starting a plugin.
	tcp := writeFile(t, "tcp.hcl", "node \"n1\" {\n  transport \"t\" {\n    settings = { idle_timeout = 5 }\n  }\n}\n")
	_, errOut, err = runValidate(t, tcp)
	if err == nil || !strings.Contains(errOut, "idle_timeout must be a duration") || !strings.Contains(errOut, "line 3") {
		t.Errorf("tcp settings: %v\n%s", err, errOut)
	}
	unknown := writeFile(t, "tcp2.hcl", "node \"n1\" {\n  transport \"t\" {\n    settings = { idle_timout = \"5s\" }\n  }\n}\n")
	_, errOut, err = runValidate(t, unknown)
	if err == nil || !strings.Contains(errOut, `Did you mean "idle_timeout"?`) {
		t.Errorf("tcp unknown setting: %v\n%s", err, errOut)
	}

	if _, _, err := runValidate(t, bad, "--var", "novalue"); err == nil || !strings.Contains(err.Error(), "name=value") {
		t.Errorf("--var without '=': %v", err)
	}
	if _, _, err := runValidate(t, filepath.Join(t.TempDir(), "missing.hcl")); err == nil {
		t.Error("missing file validated")
	}
}

func TestValidateJSON(t *testing.T) {
	bad := writeFile(t, "typo.hcl", "node \"n1\" {\n  transprt \"public\" {}\n}\n")
	out, _, err := runValidate(t, bad, "-o", "json")
	if err == nil {
		t.Fatal("no error")
	}
	var v validation
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if v.OK || len(v.Diagnostics) != 1 || v.Diagnostics[0].Line != 2 || v.Diagnostics[0].Column != 3 {
		t.Errorf("%+v", v)
	}
	out, _, err = runValidate(t, filepath.Join("..", "..", "..", "configs", "bridge.hcl"), "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	v = validation{}
	if err := json.Unmarshal([]byte(out), &v); err != nil || !v.OK || strings.Join(v.Order, ",") != "n3,n2,n1" {
		t.Errorf("%+v %v", v, err)
	}
}

// --check-plugins reads a third-party plugin's schema by starting it; a
// plugin that cannot start is a diagnostic naming its plugin block.
func TestValidateCheckPlugins(t *testing.T) {
	f := writeFile(t, "third.hcl", `plugin "mine" {
  path = "./no-such-plugin"
}

node "n1" {
  transport "t" {
    plugin = "mine"
    listen = "somewhere"
  }
}
`)
	if out, errOut, err := runValidate(t, f); err != nil {
		t.Fatalf("without --check-plugins the file is valid: %v\n%s", err, errOut)
	} else if !strings.Contains(out, "OK") {
		t.Errorf("stdout %q", out)
	}
	_, errOut, err := runValidate(t, f, "--check-plugins")
	if err == nil {
		t.Fatal("a plugin that cannot start passed --check-plugins")
	}
	for _, want := range []string{"Cannot read plugin settings schema", "line 1", `plugin "mine"`, "no-such-plugin"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
}
