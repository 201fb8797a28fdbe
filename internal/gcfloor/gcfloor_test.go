package gcfloor

import (
	"bytes"
	"context"
	"log/slog"
	"runtime/debug"
	"strings"
	"testing"
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

// TestStart checks that the floor raises GOGC, and that GOGC in the
// environment turns it off.
func TestStart(t *testing.T) {
	// Not parallel: GOGC is process-wide.
	defer debug.SetGCPercent(debug.SetGCPercent(100))

	t.Run("default", func(t *testing.T) {
		var logs bytes.Buffer
		stop := Start(context.Background(), slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
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
		debug.SetGCPercent(150)
		var logs bytes.Buffer
		stop := Start(context.Background(), slog.New(slog.NewTextHandler(&logs, nil)))
		defer stop()
		if got := debug.SetGCPercent(150); got != 150 {
			t.Errorf("GOGC = %d, want 150 as the environment says", got)
		}
		if !strings.Contains(logs.String(), `msg="garbage collector from GOGC" gogc=150`) {
			t.Errorf("log %q lacks the GOGC line", logs.String())
		}
	})
}
