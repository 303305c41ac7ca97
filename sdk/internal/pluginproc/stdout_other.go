//go:build !unix

package pluginproc

// ReserveStdout does nothing where descriptors cannot be duplicated the
// Unix way; go-plugin still redirects os.Stdout once serving.
func ReserveStdout() {}
