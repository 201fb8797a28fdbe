//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package memory

import "errors"

// mapAnon always fails here: this platform's slot arrays come from the Go
// heap.
func mapAnon(size int) ([]byte, error) {
	return nil, errors.New("no anonymous mappings on this platform")
}

// munmap is never called here, as mapAnon never succeeds.
func munmap(b []byte) error { return nil }
