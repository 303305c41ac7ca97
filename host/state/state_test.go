package state

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestCreateLoadSaveRemove(t *testing.T) {
	h, err := Open(filepath.Join(t.TempDir(), "home"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(h.Dir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("home mode = %v, %v; want 0700", st.Mode().Perm(), err)
	}
	c := &NodeConfig{Name: "n1", Listeners: []Listener{{Transport: "unix", Address: "/x.sock", Default: true}}}
	if err := h.Create(c); err != nil {
		t.Fatal(err)
	}
	if err := h.Create(c); !errors.Is(err, ErrExists) {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	c.Services = append(c.Services, Service{Type: "hop", Address: "hop"})
	if err := h.Save(c); err != nil {
		t.Fatal(err)
	}
	got, err := h.Load("n1")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Listeners) != 1 || got.Listeners[0].Address != "/x.sock" || !got.Listeners[0].Default || len(got.Services) != 1 || got.Services[0].Type != "hop" {
		t.Fatalf("loaded %+v", got)
	}
	st, err = os.Stat(h.ConfigPath("n1"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("config mode = %v, %v; want 0600", st.Mode().Perm(), err)
	}
	names, _ := h.Names()
	if len(names) != 1 || names[0] != "n1" {
		t.Fatalf("names = %v", names)
	}
	if err := h.Remove("n1"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Load("n1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("load after remove: %v", err)
	}
	if _, err := h.Load("../etc"); err == nil {
		t.Fatal("load of a path-like name succeeded")
	}
}

// A config written before listeners and connections named their transport
// loads as TCP ones, the default listener first.
func TestLoadsOldConfig(t *testing.T) {
	h, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(h.NodeDir("old"), 0o700); err != nil {
		t.Fatal(err)
	}
	old := `{"name":"old","tcp_listener_address":"127.0.0.1:0","listeners":["127.0.0.1:4000"],"connections":[{"id":"ab","address":"127.0.0.1:5000"}]}`
	if err := os.WriteFile(h.ConfigPath("old"), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := h.Load("old")
	if err != nil {
		t.Fatal(err)
	}
	want := []Listener{{Transport: "tcp", Address: "127.0.0.1:0", Default: true}, {Transport: "tcp", Address: "127.0.0.1:4000"}}
	if len(c.Listeners) != 2 || c.Listeners[0].Address != want[0].Address || !c.Listeners[0].Default || c.Listeners[1].Address != want[1].Address || c.Listeners[1].Transport != "tcp" {
		t.Fatalf("listeners = %+v, want %+v", c.Listeners, want)
	}
	if len(c.Connections) != 1 || c.Connections[0].Transport != "tcp" || c.LegacyTCPListener != "" {
		t.Fatalf("connections = %+v, legacy %q", c.Connections, c.LegacyTCPListener)
	}
}

func TestCorruptConfigSaysWhatToDo(t *testing.T) {
	h, _ := Open(t.TempDir())
	if err := h.Create(&NodeConfig{Name: "n1"}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(h.ConfigPath("n1"), []byte("{half"), 0o600)
	_, err := h.Load("n1")
	if err == nil || !strings.Contains(err.Error(), "delete the node") {
		t.Fatalf("err = %v", err)
	}
}

func TestWriteFileAtomicLeavesNoTemp(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f.json")
	for i := 0; i < 5; i++ {
		if err := WriteFileAtomic(p, []byte(strings.Repeat("x", i)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("dir has %d entries, want 1", len(ents))
	}
	b, _ := os.ReadFile(p)
	if string(b) != "xxxx" {
		t.Fatalf("content %q", b)
	}
}

func TestLockExcludes(t *testing.T) {
	h, _ := Open(t.TempDir())
	var mu sync.Mutex
	inside := 0
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := h.Lock("n1", 10*time.Second)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			inside++
			if inside != 1 {
				t.Error("two holders of one lock")
			}
			mu.Unlock()
			time.Sleep(time.Millisecond) // hold it briefly so contention happens
			mu.Lock()
			inside--
			mu.Unlock()
			l.Unlock()
		}()
	}
	wg.Wait()
	l, _ := h.Lock("n1", time.Second)
	if _, err := h.Lock("n1", 20*time.Millisecond); err == nil || !strings.Contains(err.Error(), "another ferry command") {
		t.Fatalf("contended lock: %v", err)
	}
	l.Unlock()
}

func TestProcessAlive(t *testing.T) {
	if !ProcessAlive(os.Getpid()) {
		t.Fatal("self not alive")
	}
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Skip(err)
	}
	pid := cmd.Process.Pid
	deadline := time.Now().Add(5 * time.Second)
	// Before Wait the exited child is a zombie, which must count as dead.
	for ProcessAlive(pid) {
		if time.Now().After(deadline) {
			t.Fatal("exited child still alive")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cmd.Wait()
	if ProcessAlive(0) || ProcessAlive(-1) {
		t.Fatal("non-positive pid alive")
	}
}

func TestSocketPathLimit(t *testing.T) {
	h := &Home{Dir: "/" + strings.Repeat("d", 90)}
	if err := h.CheckSocketPath("n1"); err == nil || !strings.Contains(err.Error(), "shorter FERRY_HOME") {
		t.Fatalf("err = %v", err)
	}
}

func FuzzValidName(f *testing.F) {
	for _, s := range []string{"n1", "", "-a", "a_b-c", "UPPER", "../x", strings.Repeat("a", 41)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidName(s) != nil {
			return
		}
		if strings.ContainsAny(s, "/.\x00") || len(s) > MaxNameLen || s == "" {
			t.Fatalf("accepted unsafe name %q", s)
		}
	})
}

// A new home is created 0700; an existing one keeps its mode (a shared
// directory keeps its sticky bit) and is not written to.
func TestHomeModes(t *testing.T) {
	base := t.TempDir()
	fresh := filepath.Join(base, "a", "b", "home")
	h, err := Open(fresh)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{h.Dir, filepath.Join(h.Dir, "nodes"), filepath.Join(h.Dir, "locks")} {
		if st, err := os.Stat(d); err != nil || st.Mode().Perm() != 0o700 {
			t.Fatalf("new %s: %v, %v; want 0700", d, st.Mode(), err)
		}
	}

	shared := filepath.Join(base, "shared")
	if err := os.Mkdir(shared, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(shared, os.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(shared); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(shared); st.Mode()&os.ModeSticky == 0 || st.Mode().Perm() != 0o777 {
		t.Fatalf("shared home re-moded to %v", st.Mode())
	}
}

// Read-only commands work on a read-only home: Open, Names and Load write
// nothing, and a home without nodes/ has no nodes.
func TestReadOnlyHome(t *testing.T) {
	dir := t.TempDir()
	h, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Create(&NodeConfig{Name: "n1"}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{h.NodeDir("n1"), filepath.Join(dir, "nodes"), filepath.Join(dir, "locks"), dir} {
		if err := os.Chmod(d, 0o500); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(d, 0o700) })
	}
	before := listTree(t, dir)
	h, err = Open(dir)
	if err != nil {
		t.Fatalf("open read-only home: %v", err)
	}
	names, err := h.Names()
	if err != nil || len(names) != 1 {
		t.Fatalf("names %v, %v", names, err)
	}
	if _, err := h.Load("n1"); err != nil {
		t.Fatal(err)
	}
	if after := listTree(t, dir); after != before {
		t.Fatalf("read-only use changed the home:\nbefore %s\nafter  %s", before, after)
	}

	empty := t.TempDir()
	if err := os.Chmod(empty, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(empty, 0o700) })
	if os.Getuid() != 0 { // root writes through modes
		h, err := Open(empty)
		if err != nil {
			t.Fatalf("open read-only empty home: %v", err)
		}
		if names, err := h.Names(); err != nil || len(names) != 0 {
			t.Fatalf("names of an empty read-only home: %v, %v", names, err)
		}
	}
}

func listTree(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %v %d %d;", p, info.Mode(), info.Size(), info.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// CheckCap accepts 0 (the default) and 1..limit, and names the setting
// when refusing.
func TestCheckCap(t *testing.T) {
	for _, n := range []int{0, 1, MaxSessionsLimit} {
		if err := CheckCap("max sessions", n, MaxSessionsLimit); err != nil {
			t.Errorf("%d: %v", n, err)
		}
	}
	for _, n := range []int{-1, MaxSessionsLimit + 1} {
		err := CheckCap("max sessions", n, MaxSessionsLimit)
		if err == nil || !strings.Contains(err.Error(), "max sessions") || !strings.Contains(err.Error(), "from 1 to 65536") {
			t.Errorf("%d: %v", n, err)
		}
	}
}
