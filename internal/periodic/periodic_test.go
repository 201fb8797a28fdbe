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

// TestLoop runs in a synctest bubble: each pause is the one next returns,
// asked before the first pause and after each call, and Loop returns once
// ctx is done.
func TestLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		pauses := []time.Duration{time.Second, 3 * time.Second, 2 * time.Second}
		var calls, asked atomic.Int64
		next := func() time.Duration {
			n := asked.Add(1)
			if int(n) > len(pauses) {
				return time.Hour
			}
			return pauses[n-1]
		}
		returned := make(chan struct{})
		go func() {
			defer close(returned)
			Loop(ctx, next, func() { calls.Add(1) })
		}()
		start := time.Now()
		steps := []struct {
			after       time.Duration // since Loop
			calls, asks int64
		}{
			{0, 0, 1},
			{time.Second - time.Nanosecond, 0, 1},
			{time.Second, 1, 2},
			{4*time.Second - time.Nanosecond, 1, 2},
			{4 * time.Second, 2, 3},
			{6 * time.Second, 3, 4},
			{time.Hour, 3, 4},
		}
		for _, st := range steps {
			time.Sleep(time.Until(start.Add(st.after)))
			synctest.Wait()
			if c, a := calls.Load(), asked.Load(); c != st.calls || a != st.asks {
				t.Fatalf("%v after Loop: %d calls and %d pauses asked, want %d and %d", st.after, c, a, st.calls, st.asks)
			}
		}
		cancel()
		synctest.Wait()
		select {
		case <-returned:
		default:
			t.Fatal("Loop did not return when ctx was done")
		}
	})
}
