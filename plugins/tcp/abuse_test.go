package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferryhq/ferry/host/plugins"
	"github.com/ferryhq/ferry/host/plugins/plugintest"
	"github.com/ferryhq/ferry/plugins/tcp/tcptransport"
)

// procKB reads a "Vm..." line of /proc/PID/status in KiB.
func procKB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), field+":"); ok {
			v, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return v
		}
	}
	t.Fatalf("%s not in /proc/%d/status", field, pid)
	return 0
}

func fds(pid int) int {
	e, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(e)
}

// The attack on the tcp plugin process, scaled down: many
// connections each declaring a 16 MiB frame, sending part of it, then
// trickling a byte now and then. The plugin's peak RSS stays within its
// receive-memory budget plus a margin, every such connection is cut off,
// and the process's descriptors come back to where they were.
func TestPluginUnderLargeFrameAndSlowlorisFlood(t *testing.T) {
	p := plugintest.Build(t, ".")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c, err := plugins.Launch(ctx, plugins.LaunchConfig{Path: p.Path, Kind: plugins.KindTransport})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Kill()
	tr := c.Transport()
	const budgetMiB = 16
	if err := tr.Configure(ctx, map[string]string{
		tcptransport.SettingMaxReceiveMemory: strconv.Itoa(budgetMiB << 20),
		tcptransport.SettingFrameTimeout:     "1s",
		tcptransport.SettingMinDataRate:      strconv.Itoa(8 << 20),
		tcptransport.SettingMaxConnections:   "40",
	}); err != nil {
		t.Fatal(err)
	}
	ln, err := tr.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pid := c.Pid()
	idleRSS, idleFDs := procKB(t, pid, "VmRSS"), fds(pid)

	ended := make(chan error, 64)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the node's side: accept and receive on every link
		defer wg.Done()
		for {
			l, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer l.Close()
				for {
					if _, err := l.Recv(ctx); err != nil {
						ended <- err
						return
					}
				}
			}()
		}
	}()
	defer func() { cancel(); ln.Close(); wg.Wait() }()

	const conns = 60
	chunk := make([]byte, 4<<20)
	stop := make(chan struct{})
	var awg sync.WaitGroup
	reset := 0
	var mu sync.Mutex
	for i := 0; i < conns; i++ {
		raw, err := net.Dial("tcp", ln.Addr())
		if err != nil {
			mu.Lock()
			reset++
			mu.Unlock()
			continue
		}
		awg.Add(1)
		go func() {
			defer awg.Done()
			defer raw.Close()
			if _, err := raw.Write([]byte{tcptransport.FrameVersion, 1, 1, 0, 0, 0}); err != nil { // 16 MiB
				return
			}
			if _, err := raw.Write(chunk); err != nil {
				return
			}
			for { // then 1 byte every 200 ms
				select {
				case <-stop:
					return
				case <-time.After(200 * time.Millisecond):
				}
				if _, err := raw.Write([]byte{0}); err != nil {
					return
				}
			}
		}()
	}
	start := time.Now()
	var slow, overBudget int
	for done := 0; done < conns-reset; done++ {
		select {
		case err := <-ended:
			switch {
			case errors.Is(err, tcptransport.ErrSlowFrame) || strings.Contains(err.Error(), "too slowly"):
				slow++
			case strings.Contains(err.Error(), "receive memory budget"):
				overBudget++
			default:
				slow++ // reported through the plugin boundary without the sentinel
				t.Logf("link ended: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("%d of %d links still open after 60s", conns-reset-done, conns-reset)
		}
	}
	cutOff := time.Since(start)
	close(stop)
	awg.Wait()
	peak := procKB(t, pid, "VmHWM")
	var endFDs int
	deadline := time.Now().Add(20 * time.Second)
	for {
		endFDs = fds(pid)
		if endFDs <= idleFDs+2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("tcp plugin: idle RSS %d MiB, %d fds; %d connections (%d refused at connect) each declaring 16 MiB, sending 4 MiB, then 1 B/200ms: all cut off within %s (%d too slow, %d over the %d MiB budget); peak RSS %d MiB; fds after %d",
		idleRSS>>10, idleFDs, conns, reset, cutOff.Round(time.Millisecond), slow, overBudget, budgetMiB, peak>>10, endFDs)
	if limit := idleRSS>>10 + budgetMiB + 64; peak>>10 > limit {
		t.Errorf("peak RSS %d MiB, ceiling %d MiB (idle + budget + 64 MiB)", peak>>10, limit)
	}
	if endFDs > idleFDs+2 {
		t.Errorf("%d fds after the attack, %d before", endFDs, idleFDs)
	}
}
