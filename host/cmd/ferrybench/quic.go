package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/quic-go/quic-go"

	"github.com/ferryhq/ferry/plugins/quic/quictransport"
	"github.com/ferryhq/ferry/sdk/transport"
)

// The quic section measures node to node over the QUIC transport, in-process
// and as subprocess plugins, against quic-go alone (this process as client,
// a helper process, this binary re-executed, as server; one stream, the
// transport's flow-control windows).
var quicSection = section{
	name: "quic",
	desc: "node to node over the QUIC transport (in-process and plugin) vs quic-go alone on one stream",
	run:  runQUIC,
}

// quicHelperEnv makes this binary run the quic-go baseline's server instead
// of the benchmarks, with the certificate and key files it names
// (CERT and KEY joined by the path list separator); it is set only on the helper process the section starts.
const quicHelperEnv = "FERRYBENCH_QUIC_HELPER"

func init() {
	if v := os.Getenv(quicHelperEnv); v != "" {
		cert, key, _ := strings.Cut(v, string(os.PathListSeparator))
		if err := rawQUICHelper(cert, key); err != nil {
			fmt.Fprintln(os.Stderr, "ferrybench quic helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

func rawQUICConfig() *quic.Config {
	return &quic.Config{
		MaxIdleTimeout:                 15 * time.Second,
		InitialStreamReceiveWindow:     512 << 10,
		MaxStreamReceiveWindow:         8 << 20,
		InitialConnectionReceiveWindow: 512 << 10,
		MaxConnectionReceiveWindow:     8 << 20,
	}
}

// rawQUICHelper serves the baseline: it prints its address, then serves
// connections until stdin closes.
func rawQUICHelper(certFile, keyFile string) error {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return err
	}
	ln, err := quic.ListenAddr("127.0.0.1:0", &tls.Config{
		MinVersion:   tls.VersionTLS13,
		NextProtos:   []string{quictransport.ALPN},
		Certificates: []tls.Certificate{cert},
	}, rawQUICConfig())
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr().String())
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		io.Copy(io.Discard, os.Stdin) // the parent went away: stop
		cancel()
		ln.Close()
	}()
	for {
		conn, err := ln.Accept(ctx)
		if err != nil {
			return nil
		}
		go func() {
			for {
				str, err := conn.AcceptStream(ctx)
				if err != nil {
					return
				}
				go serveRawQUIC(str)
			}
		}()
	}
}

func runQUIC(ctx context.Context, cfg config) (*table, error) {
	sz := tcpSizes{small: 100_000, large: 4_000, rtt: 5_000, largeSize: 64 << 10}
	if cfg.quick {
		sz = tcpSizes{small: 1_000, large: 50, rtt: 100, largeSize: 64 << 10}
	}
	dir, err := os.MkdirTemp("", "ferrybench-quic")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	pin, err := quictransport.WriteCertificate(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	settings := map[string]string{
		quictransport.SettingCertFile: certFile,
		quictransport.SettingKeyFile:  keyFile,
		quictransport.SettingPin:      pin,
	}

	raw, err := measureRawQUIC(ctx, sz, certFile, keyFile, pin)
	if err != nil {
		return nil, fmt.Errorf("quic-go baseline: %w", err)
	}
	inproc, err := measureNodes(ctx, sz, inProcess(ctx, func() transport.Transport {
		return quictransport.New(quictransport.WithLogger(hclog.NewNullLogger()))
	}, settings))
	if err != nil {
		return nil, fmt.Errorf("in-process: %w", err)
	}
	bin, err := buildPlugin(ctx, dir, "quic")
	if err != nil {
		return nil, err
	}
	sub, err := measureNodes(ctx, sz, pluginProcess(ctx, bin, settings))
	if err != nil {
		return nil, fmt.Errorf("subprocess plugin: %w", err)
	}

	t := newTable("measurement", "quic-go alone", "in-process", "÷ raw", "plugin", "÷ raw", "target")
	large := float64(sz.largeSize)
	t.add(fmt.Sprintf("%d KiB one-way, MB/s", sz.largeSize>>10), fmtMBps(raw.largeRate*large), fmtMBps(inproc.largeRate*large),
		fmtRatio(inproc.largeRate, raw.largeRate), fmtMBps(sub.largeRate*large), fmtRatio(sub.largeRate, raw.largeRate), "plugin ≥ 0.50x raw")
	t.add("64 B one-way, msg/s", fmtRate(raw.smallRate), fmtRate(inproc.smallRate), fmtRatio(inproc.smallRate, raw.smallRate),
		fmtRate(sub.smallRate), fmtRatio(sub.smallRate, raw.smallRate), "")
	t.add("64 B round trip p50", fmtDur(raw.p50), fmtDur(inproc.p50), fmtRatio(float64(inproc.p50), float64(raw.p50)),
		fmtDur(sub.p50), fmtRatio(float64(sub.p50), float64(raw.p50)), "")
	t.add("64 B round trip p99", fmtDur(raw.p99), fmtDur(inproc.p99), fmtRatio(float64(inproc.p99), float64(raw.p99)),
		fmtDur(sub.p99), fmtRatio(float64(sub.p99), float64(raw.p99)), "")
	t.note("quic-go alone: this process and a helper process, one stream, TLS 1.3, the transport's windows (8 MiB); one-way waits for the server's ack of the last byte; 64 B one-way is %d writes of 64 B", sz.small)
	t.note("ferry: node A's app sends to a counting worker on node B over a connected QUIC link; round trip is node.Request to an echo service on B")
	t.note("plugin: each node drives its own quic plugin process over gRPC; %d × 64 B, %d × %d KiB, %d round trips",
		sz.small, sz.large, sz.largeSize>>10, sz.rtt)
	return t, nil
}

// measureRawQUIC runs the same measurements with quic-go alone against a
// helper process serving streams that count bytes (one-way, then acknowledges with one byte) or echoes
// 64-byte messages, on one stream per measurement.
func measureRawQUIC(ctx context.Context, sz tcpSizes, certFile, keyFile, pin string) (tcpResult, error) {
	var res tcpResult
	addr, stopHelper, err := startHelper(ctx, quicHelperEnv+"="+certFile+string(os.PathListSeparator)+keyFile)
	if err != nil {
		return res, err
	}
	defer stopHelper()
	conn, err := quic.DialAddr(ctx, addr, &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{quictransport.ALPN},
		InsecureSkipVerify: true, // checked against the pin below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 || quictransport.Fingerprint(raw[0]) != pin {
				return errors.New("certificate does not match the pin")
			}
			return nil
		},
	}, rawQUICConfig())
	if err != nil {
		return res, err
	}
	defer conn.CloseWithError(0, "")

	// Each stream starts with a mode byte: 'c' counts (the next 8 bytes say
	// how many follow), 'e' echoes 64-byte messages.
	oneWay := func(count, size int) (float64, error) {
		str, err := conn.OpenStreamSync(ctx)
		if err != nil {
			return 0, err
		}
		defer str.Close()
		total := uint64(count) * uint64(size)
		hdr := []byte{'c', 0, 0, 0, 0, 0, 0, 0, 0}
		for i := 0; i < 8; i++ {
			hdr[1+i] = byte(total >> (56 - 8*i))
		}
		payload := make([]byte, size)
		start := time.Now()
		if _, err := str.Write(hdr); err != nil {
			return 0, err
		}
		for i := 0; i < count; i++ {
			if _, err := str.Write(payload); err != nil {
				return 0, err
			}
		}
		var ack [1]byte
		if _, err := io.ReadFull(str, ack[:]); err != nil {
			return 0, err
		}
		return float64(count) / time.Since(start).Seconds(), nil
	}
	if _, err := oneWay(min(sz.small, 20_000), 64); err != nil {
		return res, err
	}
	if res.smallRate, err = oneWay(sz.small, 64); err != nil {
		return res, err
	}
	if res.largeRate, err = oneWay(sz.large, sz.largeSize); err != nil {
		return res, err
	}
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return res, err
	}
	defer str.Close()
	if _, err := str.Write([]byte{'e'}); err != nil {
		return res, err
	}
	msg, buf := make([]byte, 64), make([]byte, 64)
	lat := make([]time.Duration, 0, sz.rtt)
	for i := 0; i < sz.rtt+sz.rtt/10; i++ {
		start := time.Now()
		if _, err := str.Write(msg); err != nil {
			return res, err
		}
		if _, err := io.ReadFull(str, buf); err != nil {
			return res, err
		}
		if i >= sz.rtt/10 {
			lat = append(lat, time.Since(start))
		}
	}
	res.p50, res.p99 = percentiles(lat)
	return res, nil
}

func serveRawQUIC(str *quic.Stream) {
	defer str.Close()
	var mode [1]byte
	if _, err := io.ReadFull(str, mode[:]); err != nil {
		return
	}
	switch mode[0] {
	case 'c':
		var n [8]byte
		if _, err := io.ReadFull(str, n[:]); err != nil {
			return
		}
		var total int64
		for _, b := range n {
			total = total<<8 | int64(b)
		}
		if _, err := io.CopyN(io.Discard, str, total); err != nil {
			return
		}
		_, _ = str.Write([]byte{1})
	case 'e':
		buf := make([]byte, 64)
		for {
			if _, err := io.ReadFull(str, buf); err != nil {
				return
			}
			if _, err := str.Write(buf); err != nil {
				return
			}
		}
	}
}
