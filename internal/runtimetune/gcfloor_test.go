package runtimetune

import (
	"bytes"
	"context"
	"log/slog"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	tests := []struct {
		name string
		live uint64
		want int
	}{
		{"nothing live yet", 0, percentMax},
		{"tiny heap: capped", 1 << 10, percentMax},
		{"4 MiB live: the goal is the floor", 4 << 20, 1500},
		{"16 MiB live", 16 << 20, 300},
		{"just under half the floor", HeapFloor/2 - 1<<20, 106},
		{"half the floor: Go's default", HeapFloor / 2, percentDefault},
		{"a large heap keeps Go's default", 1 << 30, percentDefault},
	}
	for _, tc := range tests {
		got := Percent(tc.live)
		if got != tc.want {
			t.Errorf("%s: Percent(%d) = %d, want %d", tc.name, tc.live, got, tc.want)
		}
		// The goal is never below the floor while the live heap is under
		// half of it, nor below twice the live heap.
		goal := tc.live + tc.live*uint64(got)/100
		if tc.live > 0 && got < percentMax && goal < min(uint64(HeapFloor), 2*tc.live) {
			t.Errorf("%s: heap goal %d is under the floor", tc.name, goal)
		}
	}
}

// TestStartGCFloor checks that the floor raises GOGC, and that GOGC in the
// environment leaves the runtime's setting alone.
func TestStartGCFloor(t *testing.T) {
	// Not parallel: GOGC is process-wide.
	defer debug.SetGCPercent(debug.SetGCPercent(100))

	t.Run("default", func(t *testing.T) {
		var logs bytes.Buffer
		stop := startGCFloor(context.Background(), slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
		defer stop()
		// A test binary's live heap is far under the floor.
		if got := debug.SetGCPercent(100); got <= percentDefault {
			t.Errorf("GOGC = %d with the floor, want more than %d", got, percentDefault)
		}
		if !strings.Contains(logs.String(), "garbage collector heap floor") {
			t.Errorf("log %q lacks the floor", logs.String())
		}
	})
	t.Run("GOGC set", func(t *testing.T) {
		t.Setenv("GOGC", "150")
		// What the runtime runs with (77, a value the floor never sets:
		// it sets at least 100) must stay as it is.
		debug.SetGCPercent(77)
		var logs bytes.Buffer
		stop := startGCFloor(context.Background(), slog.New(slog.NewTextHandler(&logs, nil)))
		defer stop()
		if got := debug.SetGCPercent(100); got != 77 {
			t.Errorf("GOGC = %d after startGCFloor with GOGC in the environment, want 77 left alone", got)
		}
		if !strings.Contains(logs.String(), `msg="garbage collector from GOGC" gogc=150`) {
			t.Errorf("log %q lacks the GOGC line", logs.String())
		}
	})
}

// TestNextPercent: GOGC follows the live heap, but only by a tenth or more.
func TestNextPercent(t *testing.T) {
	tests := []struct {
		name  string
		set   int
		live  uint64
		want  int
		apply bool
	}{
		{"the same heap", 1500, 4 << 20, 1500, false},
		{"a little more live: within a tenth", 1500, 4<<20 + 256<<10, 1405, false},
		{"twice as much live", 1500, 8 << 20, 700, true},
		{"the heap shrank", 300, 4 << 20, 1500, true},
		{"past half the floor", 106, HeapFloor, percentDefault, false},
		{"from the start-up cap", percentMax, 16 << 20, 300, true},
	}
	for _, tt := range tests {
		got, apply := nextPercent(tt.set, tt.live)
		if got != tt.want || apply != tt.apply {
			t.Errorf("%s: nextPercent(%d, %d) = %d, %v; want %d, %v", tt.name, tt.set, tt.live, got, apply, tt.want, tt.apply)
		}
	}
}

// TestQuietHeap: a heap is released once it has gone QuietAfter without a
// collection while holding more than ReleaseAbove, and then not again
// before another QuietAfter; any collection restarts the quiet time.
func TestQuietHeap(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	big, small := uint64(ReleaseAbove+1), uint64(ReleaseAbove)
	steps := []struct {
		at     time.Duration
		held   uint64
		cycles uint64
		want   bool
	}{
		{0, big, 5, false},                        // first reading
		{QuietAfter - time.Second, big, 5, false}, // not quiet long enough
		{QuietAfter, big, 5, true},                // quiet and big
		{QuietAfter + time.Second, big, 5, false}, // just released
		{2*QuietAfter - time.Second, big, 6, false},
		{3*QuietAfter - 2*time.Second, big, 6, false}, // a collection restarted the quiet time
		{3*QuietAfter - time.Second, small, 6, false}, // quiet but small
		{3 * QuietAfter, big, 6, true},
	}
	var q quietHeap
	for i, s := range steps {
		if got := q.release(heapStats{held: s.held, cycles: s.cycles}, t0.Add(s.at)); got != s.want {
			t.Errorf("step %d (at %v, %d bytes, %d cycles): release = %v, want %v", i, s.at, s.held, s.cycles, got, s.want)
		}
	}
}

// TestHeapReader reads the runtime's numbers: a collection counts, and the
// heap holds at least what is live.
func TestHeapReader(t *testing.T) {
	var h heapReader
	before := h.read()
	runtime.GC()
	after := h.read()
	if after.cycles <= before.cycles {
		t.Errorf("cycles %d after a collection, %d before", after.cycles, before.cycles)
	}
	if after.held < after.live || after.live == 0 {
		t.Errorf("held %d, live %d: want held >= live > 0", after.held, after.live)
	}
}
