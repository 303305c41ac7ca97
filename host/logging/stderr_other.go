//go:build !linux

package logging

import "os"

func redirectStderr(*os.File) {}
