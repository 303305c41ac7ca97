// Command ferrybench measures Ferry and prints one table per section, each
// with ratios to a baseline measured in the same run. `make bench` runs it.
//
//	ferrybench                 run every section
//	ferrybench -only core,tcp  run some sections
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// section is one benchmark group. run measures and returns its table.
type section struct {
	name string
	desc string
	run  func(ctx context.Context, cfg config) (*table, error)
}

type config struct {
	// quick shrinks sizes and durations so CI can check the program works.
	quick bool
}

// sections lists every group in the order they run. Add yours here.
var sections = []section{
	coreSection,
	tcpSection,
	grpcSection,
	cliSection,
	topologySection,
	portalSection,
	relaySection,
	udpSection,
	secureSection,
	kafkaSection,
	quicSection,
	serialSection,
	abuseSection,
	idleSection,
	mixedSection,
}

func main() {
	only := flag.String("only", "", "comma-separated sections to run (default all)")
	quick := flag.Bool("quick", false, "small sizes, for a smoke test")
	list := flag.Bool("list", false, "list sections and exit")
	flag.Parse()
	if *list {
		for _, s := range sections {
			fmt.Printf("%-10s %s\n", s.name, s.desc)
		}
		return
	}
	want := map[string]bool{}
	for _, s := range strings.Split(*only, ",") {
		if s = strings.TrimSpace(s); s != "" {
			want[s] = true
		}
	}
	for name := range want {
		found := false
		for _, s := range sections {
			found = found || s.name == name
		}
		if !found {
			fmt.Fprintf(os.Stderr, "ferrybench: unknown section %q; see ferrybench -list\n", name)
			os.Exit(2)
		}
	}
	ctx := context.Background()
	failed := false
	for _, s := range sections {
		if len(want) > 0 && !want[s.name] {
			continue
		}
		fmt.Printf("== %s: %s\n", s.name, s.desc)
		start := time.Now()
		t, err := s.run(ctx, config{quick: *quick})
		if err != nil {
			fmt.Fprintf(os.Stderr, "ferrybench: %s: %v\n", s.name, err)
			failed = true
			continue
		}
		t.print()
		fmt.Printf("(%s took %s)\n\n", s.name, time.Since(start).Round(time.Millisecond))
	}
	if failed {
		os.Exit(1)
	}
}

// table is a result table: a header and rows of cells.
type table struct {
	header []string
	rows   [][]string
	notes  []string
}

func newTable(header ...string) *table { return &table{header: header} }

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) note(format string, args ...any) {
	t.notes = append(t.notes, fmt.Sprintf(format, args...))
}

func (t *table) print() {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, strings.Join(t.header, "\t")+"\t")
	for _, r := range t.rows {
		fmt.Fprintln(w, strings.Join(r, "\t")+"\t")
	}
	w.Flush()
	for _, n := range t.notes {
		fmt.Println("  " + n)
	}
}

// Formatting helpers shared by sections.

func fmtRate(perSec float64) string {
	switch {
	case perSec >= 1e6:
		return fmt.Sprintf("%.2fM", perSec/1e6)
	case perSec >= 1e3:
		return fmt.Sprintf("%.1fk", perSec/1e3)
	}
	return fmt.Sprintf("%.0f", perSec)
}

func fmtMBps(bytesPerSec float64) string { return fmt.Sprintf("%.0f MB/s", bytesPerSec/1e6) }

func fmtRatio(v, base float64) string {
	if base == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", v/base)
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.1fµs", float64(d)/1e3)
}
