package periodic

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

func TestStart(t *testing.T) {
	var calls atomic.Int64
	stop := Start(context.Background(), time.Millisecond, func() { calls.Add(1) })
	deadline := time.Now().Add(10 * time.Second)
	for calls.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls after 10s at a 1ms interval, want 3 or more", calls.Load())
		}
		time.Sleep(time.Millisecond)
	}
	stop()
	after := calls.Load()
	time.Sleep(20 * time.Millisecond)
	if n := calls.Load(); n != after {
		t.Fatalf("%d calls after stop returned, want none", n-after)
	}
	stop() // a second stop is harmless
}

func TestStartStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var calls atomic.Int64
	stop := Start(ctx, time.Hour, func() { calls.Add(1) })
	cancel()
	stop() // returns once the goroutine has seen ctx end
	if n := calls.Load(); n != 0 {
		t.Fatalf("%d calls, want none before the first interval", n)
	}
}
