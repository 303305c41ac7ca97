package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestReleaseBuildMatchesMakefile keeps the idle section's build in step
// with `make build`: the section must measure the binaries that ship, so
// a change to the Makefile's RELEASE_ENV or RELEASE_FLAGS that is not made
// here (or the other way round) fails.
func TestReleaseBuildMatchesMakefile(t *testing.T) {
	b, err := os.ReadFile("../../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		want []string
	}{{"RELEASE_ENV", releaseEnv}, {"RELEASE_FLAGS", releaseFlags}} {
		m := regexp.MustCompile(`(?m)^` + c.name + `\s*\?=\s*(.*)$`).FindSubmatch(b)
		if m == nil {
			t.Errorf("Makefile has no %s ?= line", c.name)
			continue
		}
		if got := strings.Fields(string(m[1])); strings.Join(got, " ") != strings.Join(c.want, " ") {
			t.Errorf("Makefile %s = %q, ferrybench idle builds with %q", c.name, got, c.want)
		}
	}
}
