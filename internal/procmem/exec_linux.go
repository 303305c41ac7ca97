package procmem

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"syscall"
)

// ReleaseExecutable drops this process's page-table entries for the
// read-only, file-backed mappings of its own executable (code, read-only
// data, the pc tables) and returns how many resident bytes they held.
// Nothing is lost: the pages stay in the page cache, shared with every
// other process running the same binary, and the next access to one maps
// it again (a minor fault). Only mappings without anonymous
// (copy-on-write) pages are dropped, so a page the dynamic linker wrote
// (RELRO) is never reverted to its file contents.
func ReleaseExecutable() (int64, error) {
	maps, err := readSmaps()
	if err != nil {
		return 0, err
	}
	// The executable is the file this function's code is mapped from.
	pc := uint64(reflect.ValueOf(ReleaseExecutable).Pointer())
	var exe *mapping
	for i := range maps {
		if maps[i].start <= pc && pc < maps[i].end {
			exe = &maps[i]
			break
		}
	}
	if exe == nil || exe.inode == 0 {
		return 0, fmt.Errorf("procmem: no file mapping holds this process's code")
	}
	var released int64
	for _, m := range maps {
		if m.dev != exe.dev || m.inode != exe.inode || !m.readOnlyPrivate() || m.anon != 0 || m.rss == 0 {
			continue
		}
		if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, uintptr(m.start), uintptr(m.end-m.start), syscall.MADV_DONTNEED); errno != 0 {
			return released, fmt.Errorf("procmem: madvise %x-%x: %w", m.start, m.end, errno)
		}
		released += m.rss
	}
	return released, nil
}

// mapping is one entry of /proc/self/smaps; rss and anon are in bytes.
type mapping struct {
	start, end uint64
	perms      string
	dev        string
	inode      uint64
	rss, anon  int64
}

func (m mapping) readOnlyPrivate() bool {
	return len(m.perms) == 4 && m.perms[0] == 'r' && m.perms[1] == '-' && m.perms[3] == 'p'
}

// readSmaps streams /proc/self/smaps rather than reading it whole: it is
// large (tens of KiB per hundred mappings), and the point is to leave
// less resident, not to grow the heap while trimming.
func readSmaps() ([]mapping, error) {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return nil, fmt.Errorf("procmem: %w", err)
	}
	defer f.Close()
	return parseSmaps(f)
}

// parseSmaps reads the header line and the Rss and Anonymous fields of
// each mapping in smaps text.
func parseSmaps(r io.Reader) ([]mapping, error) {
	var maps []mapping
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if key, ok := strings.CutSuffix(f[0], ":"); ok && !strings.Contains(key, "-") {
			if len(maps) == 0 || len(f) < 2 {
				continue
			}
			m := &maps[len(maps)-1]
			switch key {
			case "Rss", "Anonymous":
				kb, err := strconv.ParseInt(f[1], 10, 64)
				if err != nil {
					return nil, fmt.Errorf("procmem: smaps %s: %w", key, err)
				}
				if key == "Rss" {
					m.rss = kb << 10
				} else {
					m.anon = kb << 10
				}
			}
			continue
		}
		// A header: start-end perms offset dev inode [path].
		if len(f) < 5 {
			return nil, fmt.Errorf("procmem: smaps line %q", sc.Text())
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			return nil, fmt.Errorf("procmem: smaps range %q", f[0])
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		inode, err3 := strconv.ParseUint(f[4], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil || end < start {
			return nil, fmt.Errorf("procmem: smaps line %q", sc.Text())
		}
		maps = append(maps, mapping{start: start, end: end, perms: f[1], dev: f[3], inode: inode})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("procmem: smaps: %w", err)
	}
	return maps, nil
}
