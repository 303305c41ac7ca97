package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// These tests run the built ferry binary and real plugin subprocesses, with
// FERRY_HOME and the plugin directory in temporary directories.

var (
	binDir    string // holds ferry and plugins/
	ferryBin  string
	pluginDir string
	repoRoot  string

	pluginBuilds sync.Map // plugin name -> *pluginBuild
)

type pluginBuild struct {
	once sync.Once
	err  error
}

// needPlugin builds plugins/NAME into the tests' plugin directory on first
// use, so a test of a transport other than tcp (udp, quic, serial, kafka)
// pays for its build only when it runs.
func needPlugin(t *testing.T, name string) {
	t.Helper()
	v, _ := pluginBuilds.LoadOrStore(name, &pluginBuild{})
	pb := v.(*pluginBuild)
	pb.once.Do(func() {
		if _, err := os.Stat(filepath.Join(pluginDir, name)); err == nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", filepath.Join(pluginDir, name), "./plugins/"+name)
		cmd.Dir = repoRoot
		if b, err := cmd.CombinedOutput(); err != nil {
			pb.err = fmt.Errorf("go build ./plugins/%s: %v\n%s", name, err, b)
		}
	})
	if pb.err != nil {
		t.Fatal(pb.err)
	}
}

func TestMain(m *testing.M) {
	code, err := buildAndRun(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "transcript tests:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func buildAndRun(m *testing.M) (int, error) {
	dir, err := os.MkdirTemp("", "ferrybin")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	binDir, ferryBin, pluginDir = dir, filepath.Join(dir, "ferry"), filepath.Join(dir, "plugins")
	root, err := filepath.Abs("../../..")
	if err != nil {
		return 0, err
	}
	repoRoot = root
	build := func(out, pkg string) error {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
		}
		return nil
	}
	if err := build(ferryBin, "./host/cmd/ferry"); err != nil {
		return 0, err
	}
	if err := build(filepath.Join(pluginDir, "tcp"), "./plugins/tcp"); err != nil {
		return 0, err
	}
	if err := build(filepath.Join(pluginDir, "portal-tcp"), "./plugins/portal-tcp"); err != nil {
		return 0, err
	}
	// A third-party transport, as a user would drop it into the plugin
	// directory.
	if err := build(filepath.Join(pluginDir, "unix"), "./examples/unixtransport"); err != nil {
		return 0, err
	}
	return m.Run(), nil
}

// env is one FERRY_HOME with helpers to run the binary in it.
type env struct {
	t    *testing.T
	home string
	tmp  string // TMPDIR of every process: go-plugin's sockets land here
}

func newEnv(t *testing.T) *env {
	t.Helper()
	// Removed after cleanup has stopped every node (cleanups run last
	// registered first), so plugin sockets a killed plugin leaves behind
	// go with the test instead of staying in /tmp.
	e := &env{t: t, home: t.TempDir(), tmp: t.TempDir()}
	t.Cleanup(e.cleanup)
	return e
}

func (e *env) environ() []string {
	return append(os.Environ(), "FERRY_HOME="+e.home, "FERRY_PLUGIN_DIR="+pluginDir, "TMPDIR="+e.tmp)
}

type result struct {
	stdout, stderr string
	code           int
}

func (e *env) run(args ...string) result {
	e.t.Helper()
	return e.runEnv(nil, args...)
}

// runEnv runs ferry with extra environment variables (later ones win).
func (e *env) runEnv(extra []string, args ...string) result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, ferryBin, args...)
	cmd.Env = append(e.environ(), extra...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("ferry %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// ok runs a command that must succeed and returns its stdout.
func (e *env) ok(args ...string) string {
	e.t.Helper()
	r := e.run(args...)
	if r.code != 0 {
		e.t.Fatalf("ferry %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// fails runs a command that must fail with a message containing want.
func (e *env) fails(want string, args ...string) {
	e.t.Helper()
	r := e.run(args...)
	if r.code == 0 {
		e.t.Fatalf("ferry %s succeeded; want an error with %q\nstdout: %s", strings.Join(args, " "), want, r.stdout)
	}
	if !strings.Contains(r.stderr, want) {
		e.t.Fatalf("ferry %s: stderr %q does not say %q", strings.Join(args, " "), r.stderr, want)
	}
	if r.stdout != "" {
		e.t.Fatalf("ferry %s: error printed on stdout: %q", strings.Join(args, " "), r.stdout)
	}
}

func (e *env) json(v any, args ...string) {
	e.t.Helper()
	out := e.ok(append(args, "--output", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		e.t.Fatalf("ferry %s --output json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

type jsonNode struct {
	Name      string `json:"name"`
	Status    string `json:"status"`
	Pid       int    `json:"pid"`
	Listeners []struct {
		ID      string `json:"id"`
		Address string `json:"address"`
		Default bool   `json:"default"`
	} `json:"listeners"`
}

func (e *env) nodes() map[string]jsonNode {
	e.t.Helper()
	var list []jsonNode
	e.json(&list, "node", "list")
	out := map[string]jsonNode{}
	for _, n := range list {
		out[n.Name] = n
	}
	return out
}

// ferryProcesses lists processes started for this FERRY_HOME: nodes and
// the plugins they launched (which inherit the environment).
func (e *env) ferryProcesses() []int {
	ents, _ := os.ReadDir("/proc")
	want := []byte("FERRY_HOME=" + e.home + "\x00")
	var pids []int
	for _, d := range ents {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "environ"))
		if err != nil || !bytes.Contains(b, want) {
			continue
		}
		if st, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat")); err == nil {
			if i := bytes.LastIndexByte(st, ')'); i > 0 && i+2 < len(st) && st[i+2] == 'Z' {
				continue
			}
		}
		pids = append(pids, pid)
	}
	return pids
}

// cleanup deletes every node and then checks that no process of this
// FERRY_HOME is left, killing leftovers so a failing test leaks nothing.
func (e *env) cleanup() {
	e.run("node", "delete", "--all")
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := e.ferryProcesses()
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, p := range pids {
				syscall.Kill(p, syscall.SIGKILL)
			}
			e.t.Errorf("processes left running after node delete --all: %v (killed)", pids)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func eventually(t *testing.T, d time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var (
	nameLine   = regexp.MustCompile(`(?m)^Name:\s+([a-z0-9_-]+)$`)
	workerAddr = regexp.MustCompile(`^/worker/[0-9a-f]{32}$`)
)

func TestTranscript(t *testing.T) {
	e := newEnv(t)

	// ferry node create: random name, UP.
	out := e.ok("node", "create")
	m := nameLine.FindStringSubmatch(out)
	if m == nil || !strings.Contains(out, "Status:") || !strings.Contains(out, "UP") {
		t.Fatalf("node create printed %q; want Name and Status: UP", out)
	}
	random := m[1]

	out = e.ok("node", "create", "n1")
	if !regexp.MustCompile(`Name:\s+n1\n`).MatchString(out) || !regexp.MustCompile(`Status:\s+UP`).MatchString(out) {
		t.Fatalf("node create n1: %q", out)
	}
	e.fails(`node "n1" already exists`, "node", "create", "n1")

	// ferry node create n2 --foreground --verbose: logs each worker.
	fg := exec.Command(ferryBin, "node", "create", "n2", "--foreground", "--verbose")
	fg.Env = e.environ()
	stdout, _ := fg.StdoutPipe()
	var stderr syncBuffer
	fg.Stderr = &stderr
	if err := fg.Start(); err != nil {
		t.Fatal(err)
	}
	fgDone := make(chan error, 1)
	go func() { fgDone <- fg.Wait() }()
	t.Cleanup(func() { fg.Process.Kill() })
	upLine := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "Status:") {
				upLine <- sc.Text()
			}
		}
	}()
	select {
	case l := <-upLine:
		if !strings.Contains(l, "UP") {
			t.Fatalf("foreground node: %q", l)
		}
	case err := <-fgDone:
		t.Fatalf("foreground node exited: %v\n%s", err, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("foreground node did not report UP")
	}
	for _, w := range []string{"worker started", "echo", "uppercase"} {
		if !strings.Contains(stderr.String(), w) {
			t.Errorf("--verbose log lacks %q:\n%s", w, stderr.String())
		}
	}

	nodes := e.nodes()
	for _, n := range []string{random, "n1", "n2"} {
		if nodes[n].Status != "UP" || nodes[n].Pid == 0 {
			t.Errorf("node list: %s is %+v, want UP with a pid", n, nodes[n])
		}
	}
	text := e.ok("node", "list")
	if !regexp.MustCompile(`(?m)^n1\s+UP\s+\d+\s+tcp:127\.0\.0\.1:\d+$`).MatchString(text) {
		t.Errorf("node list text:\n%s", text)
	}

	out = e.ok("node", "show", "n1")
	for _, w := range []string{"Name:", "n1", "UP", "Pid:", "Listeners:", "Workers:", "/service/echo", "Services:", "uppercase  /service/uppercase"} {
		if !strings.Contains(out, w) {
			t.Errorf("node show n1 lacks %q:\n%s", w, out)
		}
	}

	if !regexp.MustCompile(`(?m)^  [0-9a-f]+\s+tcp\s+127\.0\.0\.1:\d+\s+UP\s+(/service/api, )?/service/echo`).MatchString(out) {
		t.Errorf("node show n1 lists no tcp listener:\n%s", out)
	}

	out = e.ok("worker", "list", "--at", "n1")
	if !strings.Contains(out, "/service/echo") || !strings.Contains(out, "/service/uppercase") {
		t.Errorf("worker list:\n%s", out)
	}
	out = e.ok("service", "list", "--at", "n1")
	if !regexp.MustCompile(`(?m)^echo\s+/service/echo$`).MatchString(out) || !regexp.MustCompile(`(?m)^uppercase\s+/service/uppercase$`).MatchString(out) {
		t.Errorf("service list:\n%s", out)
	}
	e.ok("service", "start", "hop", "--at", "n1")
	var svcs []struct{ Type, Address string }
	e.json(&svcs, "service", "list", "--at", "n1")
	if len(svcs) != 5 { // echo, uppercase, relay and api (every node runs them) and hop
		t.Errorf("services after start hop: %+v", svcs)
	}
	e.fails("in use", "service", "start", "hop", "--at", "n1")

	if got := e.ok("message", "send", "hello", "--to", "/node/n1/service/uppercase"); got != "HELLO\n" {
		t.Errorf("message send via /node/n1: %q", got)
	}
	if got := e.ok("message", "send", "hello", "--from", "n1", "--to", "/service/echo"); got != "hello\n" {
		t.Errorf("message send --from n1: %q", got)
	}
	// --from another node: n2 sends over n1's TCP listener, through n1's hop.
	if got := e.ok("message", "send", "hello", "--from", "n2", "--to", "/node/n1/service/hop/service/uppercase"); got != "HELLO\n" {
		t.Errorf("message send --from n2 to /node/n1: %q", got)
	}

	// tcp-listener create / list / delete.
	var l struct{ ID, Address string }
	e.json(&l, "tcp-listener", "create", "127.0.0.1:0", "--at", "n1")
	if !strings.HasPrefix(l.Address, "127.0.0.1:") || strings.HasSuffix(l.Address, ":0") {
		t.Fatalf("tcp-listener create: %+v", l)
	}
	if out := e.ok("tcp-listener", "list", "--at", "n1"); !strings.Contains(out, l.Address) {
		t.Errorf("tcp-listener list lacks %s:\n%s", l.Address, out)
	}

	// tcp-connection create prints the worker address to use in routes
	// (the transcript's 127.0.0.1:7000 is this listener).
	w := strings.TrimSpace(e.ok("tcp-connection", "create", "--from", "n2", "--to", l.Address))
	if !workerAddr.MatchString(w) {
		t.Fatalf("tcp-connection create printed %q; want /worker/<32 hex>", w)
	}
	if got := e.ok("message", "send", "hi", "--from", "n2", "--to", w+"/service/uppercase"); got != "HI\n" {
		t.Errorf("send over the connection: %q", got)
	}
	if out := e.ok("tcp-connection", "list", "--at", "n2"); !strings.Contains(out, w) {
		t.Errorf("tcp-connection list lacks %s:\n%s", w, out)
	}
	e.ok("tcp-connection", "delete", w, "--at", "n2")
	if out := e.ok("tcp-connection", "list", "--at", "n2"); strings.Contains(out, w) {
		t.Errorf("deleted connection still listed:\n%s", out)
	}
	e.ok("tcp-listener", "delete", l.ID, "--at", "n1")
	if out := e.ok("tcp-listener", "list", "--at", "n1"); strings.Contains(out, l.Address) {
		t.Errorf("deleted listener still listed:\n%s", out)
	}
	e.fails("no tcp listener", "tcp-listener", "delete", l.ID, "--at", "n1")

	// plugin list: name, version, protocol, path, sha256.
	var ps []struct {
		Kind, Name, Version, Path, SHA256, Error string
		ProtocolMajor                            int `json:"protocol_major"`
	}
	e.json(&ps, "plugin", "list")
	kinds := map[string]string{}
	for _, p := range ps {
		kinds[p.Name] = p.Kind
		if p.Version == "" || p.ProtocolMajor != 1 || p.Path != filepath.Join(pluginDir, p.Name) || len(p.SHA256) != 64 || p.Error != "" {
			t.Errorf("plugin list: %s is %+v", p.Name, p)
		}
	}
	if kinds["tcp"] != "transport" || kinds["portal-tcp"] != "portal" {
		t.Errorf("plugin list kinds: %v, want tcp transport and portal-tcp portal", kinds)
	}
	if out := e.ok("plugin", "list"); !strings.Contains(out, "tcp") || !strings.Contains(out, pluginDir) {
		t.Errorf("plugin list text:\n%s", out)
	}

	// Only the owner can reach a node: socket 0600 in a 0700 directory.
	for path, want := range map[string]os.FileMode{
		filepath.Join(e.home, "nodes", "n1"):             0o700 | os.ModeDir,
		filepath.Join(e.home, "nodes", "n1", "api.sock"): 0o600 | os.ModeSocket,
	} {
		if st, err := os.Stat(path); err != nil || st.Mode() != want {
			t.Errorf("%s: mode %v (%v), want %v", path, st.Mode(), err, want)
		}
	}

	// Every command that prints has --output json.
	for _, args := range [][]string{
		{"node", "create", "j1"}, {"node", "show", "j1"}, {"node", "list"}, {"worker", "list", "--at", "j1"},
		{"service", "list", "--at", "j1"}, {"service", "start", "hop", "--at", "j1"},
		{"message", "send", "x", "--to", "/node/j1/service/echo"}, {"tcp-listener", "list", "--at", "j1"},
		{"tcp-connection", "create", "--from", "j1", "--to", "/node/n1"}, {"tcp-connection", "list", "--at", "j1"},
		{"plugin", "list", "--at", "j1"}, {"node", "stop", "j1"}, {"node", "start", "j1"}, {"node", "delete", "j1"},
	} {
		var v any
		e.json(&v, args...)
	}

	// stop keeps state; start brings back the same configuration (hop).
	e.ok("node", "stop", "n1")
	if s := e.nodes()["n1"].Status; s != "DOWN" {
		t.Fatalf("after stop n1 is %s", s)
	}
	e.fails(`node "n1" is not running`, "worker", "list", "--at", "n1")
	e.ok("node", "start", "n1")
	if got := e.ok("message", "send", "again", "--to", "/node/n1/service/hop/service/uppercase"); got != "AGAIN\n" {
		t.Errorf("after restart, hop: %q", got)
	}

	// The foreground node stops on node stop, keeping its state.
	e.ok("node", "stop", "n2")
	select {
	case <-fgDone:
	case <-time.After(15 * time.Second):
		t.Fatal("foreground node did not exit on node stop")
	}
	if s := e.nodes()["n2"].Status; s != "DOWN" {
		t.Errorf("after stop n2 is %s", s)
	}

	e.ok("node", "delete", "n1")
	e.fails(`node "n1" does not exist; see ferry node list`, "node", "show", "n1")
	var del struct{ Deleted []string }
	e.json(&del, "node", "delete", "--all")
	if len(del.Deleted) != 2 {
		t.Errorf("delete --all deleted %v, want the two remaining nodes", del.Deleted)
	}
	if out := e.ok("node", "list"); !strings.Contains(out, "No nodes") {
		t.Errorf("node list after delete --all:\n%s", out)
	}
}

func TestErrorsSayWhatToDo(t *testing.T) {
	e := newEnv(t)
	e.fails(`node "n9" does not exist; see ferry node list`, "node", "show", "n9")
	e.fails(`node "n9" does not exist; see ferry node list`, "worker", "list", "--at", "n9")
	e.fails(`node "n9" does not exist; see ferry node list`, "message", "send", "x", "--to", "/node/n9/service/echo")
	e.fails(`node "n9" does not exist`, "node", "delete", "n9")
	e.fails(`node "n9" does not exist`, "node", "start", "n9")
	e.fails("--at NAME", "worker", "list")
	e.fails("start the route with /node/NAME, or pass --from NAME", "message", "send", "x", "--to", "/service/echo")
	e.fails("must start with '/'", "message", "send", "x", "--to", "service/echo")
	e.fails("use text or json", "node", "list", "--output", "yaml")
	e.fails("see ferry node create --help", "node", "create", "--bogus")
	e.fails("node name", "node", "create", "Bad/Name")
	e.fails("want host:port", "tcp-connection", "create", "--from", "x1", "--to", "nowhere")

	e.ok("node", "create", "e1")
	e.fails("no reply", "message", "send", "x", "--to", "/node/e1/service/app/service/x", "--timeout", "200ms")
	e.fails("no worker at address", "message", "send", "x", "--to", "/node/e1/service/nothing")
	e.fails(`unknown service type "nope"; the types are: echo, hop, relay`, "service", "start", "nope", "--at", "e1")
	// A listener address that is taken is refused with the reason.
	n := e.nodes()["e1"]
	e.fails("address already in use", "tcp-listener", "create", n.Listeners[0].Address, "--at", "e1")
	// A node whose plugin is missing says what to do, keeps its state, and
	// starts once the plugin is there.
	r := e.runEnv([]string{"FERRY_PLUGIN_DIR=" + filepath.Join(e.home, "nope")}, "node", "create", "p1")
	if r.code == 0 || !strings.Contains(r.stderr, "build it (make build)") || !strings.Contains(r.stderr, "ferry node start p1") {
		t.Fatalf("create without plugins: exit %d, stderr %q", r.code, r.stderr)
	}
	if s := e.nodes()["p1"].Status; s != "DOWN" {
		t.Fatalf("p1 after a failed start is %q, want DOWN", s)
	}
	e.ok("node", "start", "p1")
	if got := e.ok("message", "send", "ok", "--to", "/node/p1/service/uppercase"); got != "OK\n" {
		t.Errorf("p1 after start: %q", got)
	}

	// A node that does not answer in time is killed, not left behind.
	e.fails("did not answer within 1ms", "node", "create", "slow", "--timeout", "1ms")
	if s := e.nodes()["slow"].Status; s != "DOWN" {
		t.Errorf("slow node is %q after its start timed out", s)
	}
	e.ok("node", "delete", "slow")

	// A broken config is reported, not half-used.
	e.ok("node", "stop", "e1")
	os.WriteFile(filepath.Join(e.home, "nodes", "e1", "config.json"), []byte("{"), 0o600)
	e.fails("delete the node and create it again", "node", "start", "e1")
}

func TestKill9ShowsDownAndStartRecovers(t *testing.T) {
	e := newEnv(t)
	e.ok("node", "create", "k1")
	n := e.nodes()["k1"]
	var ps []struct {
		Name    string
		Running bool
		Pid     int
	}
	e.json(&ps, "plugin", "list", "--at", "k1")
	pluginPid := 0
	for _, p := range ps {
		if p.Name == "tcp" && p.Running {
			pluginPid = p.Pid
		}
	}
	if pluginPid == 0 {
		t.Fatalf("node k1 runs no tcp plugin process: %+v", ps)
	}
	if err := syscall.Kill(n.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	eventually(t, 5*time.Second, "node list shows k1 DOWN", func() bool { return e.nodes()["k1"].Status == "DOWN" })
	t.Logf("DOWN %s after kill -9", time.Since(start).Round(time.Millisecond))
	// A plugin never outlives its host.
	eventually(t, 10*time.Second, "the killed node's tcp plugin exits", func() bool {
		return syscall.Kill(pluginPid, 0) != nil || isZombie(pluginPid)
	})
	out := e.ok("node", "start", "k1")
	if !regexp.MustCompile(`Status:\s+UP`).MatchString(out) {
		t.Fatalf("node start after kill: %q", out)
	}
	if got := e.ok("message", "send", "back", "--to", "/node/k1/service/uppercase"); got != "BACK\n" {
		t.Errorf("after recovery: %q", got)
	}
}

func isZombie(pid int) bool {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(st, ')')
	return i > 0 && i+2 < len(st) && st[i+2] == 'Z'
}

func TestConcurrentCreatesDoNotCorruptState(t *testing.T) {
	e := newEnv(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[string][]int{}
	runOne := func(key string, args ...string) {
		defer wg.Done()
		r := e.run(args...)
		mu.Lock()
		codes[key] = append(codes[key], r.code)
		mu.Unlock()
	}
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go runOne(fmt.Sprintf("c%d", i), "node", "create", fmt.Sprintf("c%d", i))
	}
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go runOne("random", "node", "create")
	}
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go runOne("same", "node", "create", "same")
	}
	wg.Wait()
	ok := 0
	for _, c := range codes["same"] {
		if c == 0 {
			ok++
		}
	}
	if ok != 1 {
		t.Errorf("three creates of one name: %d succeeded, want exactly 1 (%v)", ok, codes["same"])
	}
	nodes := e.nodes()
	if len(nodes) != 7 {
		t.Errorf("have %d nodes, want 7: %v", len(nodes), nodes)
	}
	for name, n := range nodes {
		if n.Status != "UP" {
			t.Errorf("node %s is %s", name, n.Status)
		}
		b, err := os.ReadFile(filepath.Join(e.home, "nodes", name, "config.json"))
		var cfg map[string]any
		if err != nil || json.Unmarshal(b, &cfg) != nil || cfg["name"] != name {
			t.Errorf("node %s config: %v %q", name, err, b)
		}
	}
	// Parallel deletes and lists of the same nodes are also safe.
	wg.Add(3)
	go runOne("del", "node", "delete", "--all")
	go runOne("del", "node", "delete", "--all")
	go runOne("list", "node", "list")
	wg.Wait()
	if n := e.nodes(); len(n) != 0 {
		t.Errorf("after parallel delete --all: %v", n)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer goroutine and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type jsonConn struct {
	Name     string `json:"name"`
	Worker   string `json:"worker"`
	Accepted bool   `json:"accepted"`
}

func TestUpBridgeMessageDown(t *testing.T) {
	e := newEnv(t)
	bridge, _ := filepath.Abs("../../../configs/bridge.hcl")
	out := e.ok("up", bridge, "--var", "n2_port=0", "--var", "n3_port=0")
	for _, w := range []string{"Started 3 nodes", "n1", "n2", "n3"} {
		if !strings.Contains(out, w) {
			t.Errorf("up summary lacks %q:\n%s", w, out)
		}
	}
	nodes := e.nodes()
	for _, n := range []string{"n1", "n2", "n3"} {
		if nodes[n].Status != "UP" {
			t.Fatalf("after up, %s is %+v", n, nodes[n])
		}
	}
	// Dependency order: n3 was started first, n1 last.
	if !(strings.Index(out, "\nn3 ") < strings.Index(out, "\nn2 ") && strings.Index(out, "\nn2 ") < strings.Index(out, "\nn1 ")) {
		t.Errorf("up did not start n3, n2, n1 in order:\n%s", out)
	}
	conn := func(node, name string) string {
		var v struct{ Connections []jsonConn }
		e.json(&v, "node", "show", node)
		for _, c := range v.Connections {
			if c.Name == name {
				return c.Worker
			}
		}
		t.Fatalf("node %s has no connection %s: %+v", node, name, v.Connections)
		return ""
	}
	// Across the bridge over the file's own connections: n1 -> n2's hop -> n3.
	route := conn("n1", "to_n2") + "/service/hop" + conn("n2", "to_n3") + "/service/uppercase"
	if got := e.ok("message", "send", "hello", "--from", "n1", "--to", route); got != "HELLO\n" {
		t.Errorf("across the bridge: %q", got)
	}
	// And with /node/ names resolved to the listeners.
	if got := e.ok("message", "send", "hello", "--from", "n1", "--to", "/node/n2/service/hop/node/n3/service/echo"); got != "hello\n" {
		t.Errorf("across the bridge by node names: %q", got)
	}
	// n2 has no uppercase service: the error comes back from n2 at once.
	e.fails("node n2 could not deliver", "message", "send", "x", "--from", "n1", "--to", "/node/n2/service/uppercase", "--timeout", "300ms")

	// up again is harmless: the nodes are running.
	e.ok("up", bridge, "--var", "n2_port=0", "--var", "n3_port=0")
	out = e.ok("down", bridge)
	if !strings.Contains(out, "3 nodes") {
		t.Errorf("down: %q", out)
	}
	eventually(t, 10*time.Second, "no process left after down", func() bool { return len(e.ferryProcesses()) == 0 })
	if n := e.nodes(); len(n) != 0 {
		t.Errorf("nodes after down: %v", n)
	}
}

func TestNodeCreateFromConfig(t *testing.T) {
	e := newEnv(t)
	bridge, _ := filepath.Abs("../../../configs/bridge.hcl")
	out := e.ok("node", "create", "n3", "--config", bridge, "--var", "n3_port=0")
	if !regexp.MustCompile(`Status:\s+UP`).MatchString(out) {
		t.Fatalf("node create n3 --config: %q", out)
	}
	var svcs []struct{ Type string }
	e.json(&svcs, "service", "list", "--at", "n3")
	if len(svcs) != 4 {
		t.Errorf("n3 from the file runs %+v, want echo, hop, uppercase and the secure channel listener", svcs)
	}
	// n2 refers to n3's listener: running here, so its bound port is used.
	e.ok("node", "create", "n2", "--config", bridge, "--var", "n3_port=0", "--var", "n2_port=0")
	if got := e.ok("message", "send", "hi", "--from", "n2", "--to", "/service/hop/node/n3/service/uppercase"); got != "HI\n" {
		t.Errorf("n2 -> n3: %q", got)
	}
	// n1 refers to n2, whose port 0 cannot be known from the file alone
	// when n2 is not running here.
	e.ok("node", "delete", "n2")
	e.fails("port 0", "node", "create", "n1", "--config", bridge, "--var", "n2_port=0")
	e.fails(`declares no node "n7"`, "node", "create", "n7", "--config", bridge)
	e.fails("--tcp-listener-address, --listener and --no-listener do not apply", "node", "create", "n9", "--config", bridge, "--tcp-listener-address", "127.0.0.1:0")

	bad := filepath.Join(t.TempDir(), "bad.hcl")
	os.WriteFile(bad, []byte("node \"a\" {\n  servce \"echo\" {}\n}\n"), 0o600)
	r := e.run("up", bad)
	if r.code == 0 || !strings.Contains(r.stderr, "bad.hcl line 2") || !strings.Contains(r.stderr, `Did you mean "service"`) {
		t.Errorf("up of a bad file: exit %d, stderr:\n%s", r.code, r.stderr)
	}
}

// A topology file's plugin block pins the plugin the node runs: a wrong
// checksum stops the node from starting, with the pin named in the error;
// an explicit path is used instead of the plugin directory.
func TestUpHonoursPluginBlocks(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "pinned.hcl")
	write := func(block string) {
		src := block + `
node "solo" {
  transport "public" {
    listen = "127.0.0.1:0"
  }
}
`
		if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`plugin "tcp" {
  sha256 = "` + strings.Repeat("0", 64) + `"
}`)
	e.fails("is pinned", "up", file)
	e.ok("down", file)
	eventually(t, 10*time.Second, "no process left after a failed up", func() bool { return len(e.ferryProcesses()) == 0 })

	// The same plugin copied elsewhere, named by path, with its real pin.
	src, err := os.ReadFile(filepath.Join(pluginDir, "tcp"))
	if err != nil {
		t.Fatal(err)
	}
	elsewhere := filepath.Join(dir, "my-tcp")
	if err := os.WriteFile(elsewhere, src, 0o700); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(src)
	write(`plugin "tcp" {
  path   = "` + elsewhere + `"
  sha256 = "` + hex.EncodeToString(sum[:]) + `"
}`)
	e.ok("up", file)
	var v []struct{ Name, Path string }
	e.json(&v, "plugin", "list", "--at", "solo")
	found := false
	for _, p := range v {
		found = found || (p.Name == "tcp" && p.Path == elsewhere)
	}
	if !found {
		t.Errorf("plugin list --at solo does not show tcp at %s: %+v", elsewhere, v)
	}
	e.ok("down", file)
}

// A third-party transport in the plugin directory works in routes without
// being declared on the sending node: /unix/... starts the plugin named
// "unix" on first use.
func TestThirdPartyTransportInRoutes(t *testing.T) {
	e := newEnv(t)
	sock := filepath.Join(t.TempDir(), "u2.sock")
	file := filepath.Join(t.TempDir(), "unix.hcl")
	src := `plugin "unix" {}

node "u2" {
  transport "sock" {
    plugin = "unix"
    listen = "` + sock + `"
    allow  = ["echo", "uppercase"]
  }
  service "echo" {}
  service "uppercase" {}
}
`
	if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	e.ok("up", file)
	defer e.ok("down", file)
	e.ok("node", "create", "u1")
	to := "/unix/" + strings.ReplaceAll(sock, "/", "%2F") + "/service/uppercase"
	if got := strings.TrimSpace(e.ok("message", "send", "hello", "--from", "u1", "--to", to)); got != "HELLO" {
		t.Fatalf("message over the unix transport: %q, want HELLO", got)
	}
	// A type no plugin serves says so.
	e.fails("no transport serves /nosuch/ routes", "message", "send", "x", "--from", "u1", "--to", "/nosuch/x/service/echo")
}

// Stopping a foreground node by signalling its whole process group (Ctrl-C
// in a terminal, `timeout`, a service manager's SIGTERM) stops it cleanly:
// its plugins are in their own group, so they do not die first and get
// reported as crashed.
func TestForegroundGroupSignal(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) { foregroundGroupSignal(t, sig) })
	}
}

func foregroundGroupSignal(t *testing.T, sig syscall.Signal) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, ferryBin, "node", "create", "fg", "--foreground", "--verbose")
	cmd.Env = e.environ()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // stands in for the terminal's group
	var stderr syncBuffer
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The status block is printed once the node serves.
	sc := bufio.NewScanner(stdout)
	up := false
	for !up && sc.Scan() {
		up = strings.Contains(sc.Text(), "UP")
	}
	if !up {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("foreground node never printed UP; stderr:\n%s", stderr.String())
	}
	go io.Copy(io.Discard, stdout)
	if err := syscall.Kill(-cmd.Process.Pid, sig); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("foreground node after %v to its group: %v; stderr:\n%s", sig, err, stderr.String())
	}
	if log := stderr.String(); strings.Contains(log, "crashed") {
		t.Fatalf("a clean stop by %v reported a plugin crash:\n%s", sig, log)
	}
}
