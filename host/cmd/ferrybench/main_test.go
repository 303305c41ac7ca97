package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestQuickRun builds ferrybench and runs every section with -quick, so a
// section that breaks is caught by make test rather than by the next
// make bench. It checks that each section printed its table; the figures
// themselves are not judged (speed is never asserted in tests).
func TestQuickRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs plugin processes")
	}
	bin := filepath.Join(t.TempDir(), "ferrybench")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	list, err := exec.Command(bin, "-list").Output()
	if err != nil {
		t.Fatalf("ferrybench -list: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-quick")
	cmd.Dir = "../../.." // sections find the module root (plugins, configs) from here
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ferrybench -quick: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(list)), "\n") {
		name := strings.Fields(line)[0]
		if !strings.Contains(string(out), "("+name+" took ") {
			t.Errorf("section %s printed no table:\n%s", name, out)
		}
	}
}
