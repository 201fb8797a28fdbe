package testutil

import (
	"sync"
	"testing"
	"time"
)

func TestClock(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	c := NewClock(t0)
	if got := c.Now(); !got.Equal(t0) {
		t.Fatalf("Now() = %v, want %v", got, t0)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { c.Add(time.Second) })
		wg.Go(func() { _ = c.Now() })
	}
	wg.Wait()
	if got, want := c.Now(), t0.Add(4*time.Second); !got.Equal(want) {
		t.Errorf("after four Add(1s): %v, want %v", got, want)
	}
	c.Set(t0)
	if got := c.Now(); !got.Equal(t0) {
		t.Errorf("after Set: %v, want %v", got, t0)
	}
}
