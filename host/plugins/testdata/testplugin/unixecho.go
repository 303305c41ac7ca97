package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

// unixEcho serves the benchmark baseline: a Unix socket that echoes
// uvarint-length-prefixed packets back unchanged, batching writes the way
// the plugin protocol does.
func unixEcho(path string) error {
	ln, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	parent := os.Getppid()
	go func() {
		for range time.Tick(250 * time.Millisecond) {
			if os.Getppid() != parent {
				os.Exit(3)
			}
		}
	}()
	fmt.Println("ready")
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			r := bufio.NewReaderSize(c, 256<<10)
			w := bufio.NewWriterSize(c, 256<<10)
			var buf []byte
			for {
				n, err := binary.ReadUvarint(r)
				if err != nil {
					return
				}
				if n > 64<<20 {
					return
				}
				if uint64(cap(buf)) < n {
					buf = make([]byte, n)
				}
				buf = buf[:n]
				if _, err := io.ReadFull(r, buf); err != nil {
					return
				}
				var hdr [binary.MaxVarintLen64]byte
				w.Write(hdr[:binary.PutUvarint(hdr[:], n)])
				w.Write(buf)
				// Flush once the input we already have is used up, so a
				// batch in costs one write out.
				if r.Buffered() == 0 {
					if err := w.Flush(); err != nil {
						return
					}
				}
			}
		}()
	}
}
