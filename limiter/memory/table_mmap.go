//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package memory

import (
	"fmt"
	"syscall"
)

// mapAnon maps size bytes of zeroed, private, anonymous memory outside the Go
// heap.
func mapAnon(size int) ([]byte, error) {
	b, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return nil, fmt.Errorf("mmap %d bytes: %w", size, err)
	}
	return b, nil
}

// munmap unmaps memory that mapAnon returned.
func munmap(b []byte) error {
	if err := syscall.Munmap(b); err != nil {
		return fmt.Errorf("munmap %d bytes: %w", len(b), err)
	}
	return nil
}
