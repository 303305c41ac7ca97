package procmem

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func rssFile(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "RssFile:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

func TestReleaseExecutable(t *testing.T) {
	before := rssFile(t)
	released, err := ReleaseExecutable()
	if err != nil {
		t.Fatal(err)
	}
	after := rssFile(t)
	if released <= 0 {
		t.Fatalf("released %d bytes of the test binary's mappings", released)
	}
	// The pages come back on use: the process goes on running code it had
	// not run since the release, and a second release finds pages again.
	if after >= before {
		t.Errorf("RssFile %d before, %d after releasing %d bytes", before, after, released)
	}
	if _, err := strconv.ParseFloat("1.5e3", 64); err != nil {
		t.Fatal(err)
	}
	if again, err := ReleaseExecutable(); err != nil || again <= 0 {
		t.Errorf("second release: %d bytes, %v", again, err)
	}
	t.Logf("RssFile %d KiB before, %d KiB after releasing %d KiB", before>>10, after>>10, released>>10)
}

func TestReleaseAfterStopsOnDone(t *testing.T) {
	done := make(chan struct{})
	close(done)
	finished := make(chan struct{})
	go func() { ReleaseAfter(time.Hour, done); close(finished) }()
	select {
	case <-finished:
	case <-time.After(30 * time.Second):
		t.Fatal("ReleaseAfter did not return once done was closed")
	}
}

const sampleSmaps = `00400000-00e4d000 r-xp 00000000 fe:00 9978503                            /tmp/ferry
Size:              10548 kB
Rss:                8884 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me
01991000-01a30000 rw-p 01591000 fe:00 9978503                            /tmp/ferry
Rss:                 444 kB
Anonymous:           120 kB
7ffebfe0a000-7ffebfe2b000 rw-p 00000000 00:00 0                          [stack]
Rss:                  16 kB
Anonymous:            16 kB
`

func TestParseSmaps(t *testing.T) {
	maps, err := parseSmaps(strings.NewReader(sampleSmaps))
	if err != nil {
		t.Fatal(err)
	}
	if len(maps) != 3 {
		t.Fatalf("%d mappings, want 3: %+v", len(maps), maps)
	}
	text := maps[0]
	if text.start != 0x400000 || text.end != 0xe4d000 || text.inode != 9978503 || text.dev != "fe:00" ||
		text.rss != 8884<<10 || text.anon != 0 || !text.readOnlyPrivate() {
		t.Errorf("text mapping %+v", text)
	}
	if maps[1].readOnlyPrivate() || maps[1].anon != 120<<10 {
		t.Errorf("data mapping %+v", maps[1])
	}
	if _, err := parseSmaps(strings.NewReader("zzzz-0000 r-xp 0 fe:00 1 /x\n")); err == nil {
		t.Error("a bad range parsed")
	}
}

func FuzzParseSmaps(f *testing.F) {
	f.Add(sampleSmaps)
	f.Add("00400000-00e4d000 r-xp 00000000 fe:00 1\nRss: x kB\n")
	f.Add("Rss: 4 kB\n")
	f.Fuzz(func(t *testing.T, s string) {
		maps, err := parseSmaps(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, m := range maps {
			if m.end < m.start {
				t.Fatalf("mapping ends before it starts: %+v", m)
			}
		}
	})
}
