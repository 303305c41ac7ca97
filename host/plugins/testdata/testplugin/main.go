// Command testplugin is a transport plugin for host/plugins tests and the
// ferrybench "grpc" section. It serves an in-memory "loop" transport, and
// misbehaves on purpose depending on the name it was installed under:
//
//	noisy    prints to stdout before serving (breaks the handshake)
//	silent   never completes the handshake
//	anything else serves normally
//
// Dialling "evil:garbage", "evil:4gib", "evil:unknown-id" or "evil:ring-counts" writes that
// onto the plugin's data channel, as a broken or hostile plugin might.
//
// With FERRY_UNIX_ECHO=path it instead serves a plain Unix-socket echo of
// length-prefixed batches (the benchmark's baseline), and exits when its
// parent does.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/ferryhq/ferry/sdk/transport"
)

func main() {
	if path := os.Getenv("FERRY_UNIX_ECHO"); path != "" {
		if err := unixEcho(path); err != nil {
			fmt.Fprintln(os.Stderr, "unix echo:", err)
			os.Exit(1)
		}
		return
	}
	name := filepath.Base(os.Args[0])
	switch {
	case strings.HasPrefix(name, "noisy"):
		fmt.Println("hello from a plugin that prints before serving")
	case strings.HasPrefix(name, "silent"):
		// Never answer; the host's start timeout must end this. Exit on our
		// own eventually so a broken test cannot leave us behind for long.
		time.Sleep(time.Minute)
		os.Exit(1)
	}
	if path := os.Getenv("FERRY_TESTPLUGIN_CPUPROFILE"); path != "" {
		// For looking at the plugin side of the benchmarks.
		if f, err := os.Create(path); err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	if os.Getenv("FERRY_TESTPLUGIN_NO_RING") != "" {
		// As a plugin built before the shared-memory rings: it knows
		// nothing of them, so it neither offers nor maps them.
		os.Unsetenv("FERRY_DATA_RING")
	}
	keepDataChannel()
	log := transport.NewPluginLogger(name)
	transport.Serve(newLoop(name, log), transport.WithLogger(log))
}
