package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferryhq/ferry/host/state"
)

// followPoll is how often node logs --follow looks for new lines; a log
// file gives no event to wait on without inotify.
const followPoll = 200 * time.Millisecond

func (a *app) newNodeLogsCmd() *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs NAME [--follow]",
		Short: "Print a node's log (kept across node stop and ferry down; removed by node delete)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			h, err := a.home()
			if err != nil {
				return err
			}
			if err := state.ValidName(name); err != nil {
				return err
			}
			path := h.LogPath(name)
			if _, err := os.Stat(path); err != nil {
				if !h.Exists(name) {
					return errNoNode(name)
				}
				if !follow {
					return fmt.Errorf("node %s has no log yet (%s); it is written once the node starts", name, path)
				}
			}
			// A rotated part first (host/logging keeps one), then the
			// current file.
			if b, err := os.ReadFile(path + ".1"); err == nil {
				a.stdout.Write(b)
			}
			if !follow {
				f, err := os.Open(path)
				if err != nil {
					return fmt.Errorf("read log of node %s: %w", name, err)
				}
				defer f.Close()
				_, err = io.Copy(a.stdout, f)
				return err
			}
			return followFile(cmd.Context(), path, a.stdout)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new lines until Ctrl-C (across restarts and rotation)")
	return cmd
}

// followFile copies path to w and then what is appended, following the
// file when it is rotated (renamed away and created anew) or recreated,
// until ctx ends.
func followFile(ctx context.Context, path string, w io.Writer) error {
	var f *os.File
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	t := time.NewTicker(followPoll)
	defer t.Stop()
	for {
		if f == nil {
			nf, err := os.Open(path)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("follow %s: %w", path, err)
			}
			f = nf
		}
		if f != nil {
			if _, err := io.Copy(w, f); err != nil {
				return fmt.Errorf("follow %s: %w", path, err)
			}
			// Rotated or recreated: finish the old file (done above),
			// then switch to the new one.
			cur, err1 := f.Stat()
			now, err2 := os.Stat(path)
			pos, _ := f.Seek(0, io.SeekCurrent)
			if err1 == nil && (err2 != nil || !os.SameFile(cur, now) || now.Size() < pos) {
				if err2 == nil && os.SameFile(cur, now) {
					// Truncated in place: start again from its start.
					if _, err := f.Seek(0, io.SeekStart); err != nil {
						return err
					}
				} else {
					f.Close()
					f = nil
					continue
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
