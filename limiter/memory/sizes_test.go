package memory

import (
	"testing"
	"unsafe"
)

// TestSizes pins the sizes the memory figures in the documentation rely on.
func TestSizes(t *testing.T) {
	if s := unsafe.Sizeof(memSlot{}); s != 32 {
		t.Errorf("memSlot is %d bytes, want 32", s)
	}
	if s := unsafe.Sizeof(memShard{}); s%64 != 0 {
		t.Errorf("memShard is %d bytes, want a multiple of a cache line", s)
	}
}
