package periodic

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// TestStart runs in a synctest bubble: the intervals pass on the bubble's
// clock, and synctest.Wait returns once the goroutine waits for its next
// tick, so the number of calls at each instant is exact.
func TestStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int64
		stop := Start(context.Background(), time.Second, func() { calls.Add(1) })
		steps := []struct {
			after time.Duration // since Start
			want  int64
		}{
			{time.Second - time.Nanosecond, 0}, // the first call comes one interval after Start
			{time.Second, 1},
			{3*time.Second + time.Millisecond, 3},
		}
		start := time.Now()
		for _, st := range steps {
			time.Sleep(time.Until(start.Add(st.after)))
			synctest.Wait()
			if n := calls.Load(); n != st.want {
				t.Fatalf("%d calls %v after Start at a 1s interval, want %d", n, st.after, st.want)
			}
		}
		stop()
		after := calls.Load()
		time.Sleep(20 * time.Second)
		synctest.Wait()
		if n := calls.Load(); n != after {
			t.Fatalf("%d calls after stop returned, want none", n-after)
		}
		stop() // a second stop is harmless
	})
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

// TestRun runs in a synctest bubble: Run calls fn on its caller's
// goroutine once per interval, and returns once ctx is done.
func TestRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		var calls atomic.Int64
		returned := make(chan struct{})
		go func() {
			defer close(returned)
			Run(ctx, time.Second, func() { calls.Add(1) })
		}()
		time.Sleep(2*time.Second + time.Millisecond)
		synctest.Wait()
		if n := calls.Load(); n != 2 {
			t.Fatalf("%d calls 2s after Run at a 1s interval, want 2", n)
		}
		cancel()
		synctest.Wait()
		select {
		case <-returned:
		default:
			t.Fatal("Run did not return when ctx was done")
		}
		if n := calls.Load(); n != 2 {
			t.Fatalf("%d calls after ctx was done, want 2", n)
		}
	})
}
