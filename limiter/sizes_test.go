package limiter

import (
	"testing"
	"unsafe"
)

// TestSizes pins the sizes the memory figures in the documentation rely on.
func TestSizes(t *testing.T) {
	if s := unsafe.Sizeof(history{}); s > 112 {
		t.Errorf("history is %d bytes, want at most 112 (a size class)", s)
	}
}
