package runtimetune

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

func TestGoMemoryLimit(t *testing.T) {
	const mib = 1 << 20
	tests := []struct{ cg, offHeap, want int64 }{
		{1000 * mib, 0, 900 * mib},
		{1000 * mib, 300 * mib, 600 * mib},
		{1000 * mib, 950 * mib, 100 * mib}, // the floor
	}
	for _, tt := range tests {
		if got := goMemoryLimit(tt.cg, tt.offHeap); got != tt.want {
			t.Errorf("goMemoryLimit(%d MiB, %d MiB) = %d MiB, want %d MiB", tt.cg/mib, tt.offHeap/mib, got/mib, tt.want/mib)
		}
	}
}

// keepMemoryLimit restores the test process's memory limit after the test,
// and skips it when GOMEMLIMIT or AUTOMEMLIMIT is set in its environment.
func keepMemoryLimit(t *testing.T) int64 {
	t.Helper()
	for _, v := range []string{"GOMEMLIMIT", "AUTOMEMLIMIT"} {
		if _, ok := os.LookupEnv(v); ok {
			t.Skipf("%s is set in the test's environment", v)
		}
	}
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	return before
}

// TestStartMemoryLimit sets the test process's memory limit from a fake
// cgroup, and restores it.
func TestStartMemoryLimit(t *testing.T) {
	before := keepMemoryLimit(t)
	const gib = 1 << 30
	tests := []struct {
		name    string
		cgroup  int64
		err     error
		offHeap int64
		want    int64  // 0: unchanged
		log     string // at info level; "" for nothing
	}{
		{name: "a 1 GiB cgroup", cgroup: gib, want: gib / 100 * memoryLimitShare,
			log: `msg="memory limit from the cgroup" cgroup_memory_limit=1073741824 go_memory_limit=966367620 share_percent=90`},
		{name: "off-heap bytes taken off", cgroup: gib, offHeap: 100 << 20, want: gib/100*memoryLimitShare - 100<<20,
			log: `msg="memory limit from the cgroup" cgroup_memory_limit=1073741824 go_memory_limit=861510020`},
		{name: "no limit", cgroup: 0},
		{name: "unreadable cgroup", err: errors.New("read the cgroup memory limit: permission denied"),
			log: `level=WARN msg="cannot read the cgroup memory limit; Go's memory limit stays unset" err="read the cgroup memory limit: permission denied"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			debug.SetMemoryLimit(before)
			var logs bytes.Buffer
			cfg := Config{
				CgroupLimit: func() (int64, error) { return tt.cgroup, tt.err },
				OffHeap:     func() int64 { return tt.offHeap },
			}
			stop := startMemoryLimit(context.Background(), cfg, slog.New(slog.NewTextHandler(&logs, nil)))
			got := debug.SetMemoryLimit(-1)
			stop()
			if want := cmpOr(tt.want, before); got != want {
				t.Errorf("memory limit = %d, want %d", got, want)
			}
			if tt.log == "" && logs.Len() != 0 || !strings.Contains(logs.String(), tt.log) {
				t.Errorf("logged %q at info level, want %q", logs.String(), tt.log)
			}
		})
	}
}

// cmpOr returns v, or def when v is 0.
func cmpOr(v, def int64) int64 {
	if v == 0 {
		return def
	}
	return v
}

// TestMemoryLimitFollowsOffHeap runs in a synctest bubble: every
// memoryLimitEvery of the bubble's clock the limit follows the off-heap
// bytes, by a MiB or more only.
func TestMemoryLimitFollowsOffHeap(t *testing.T) {
	keepMemoryLimit(t)
	synctest.Test(t, func(t *testing.T) {
		const gib = 1 << 30
		var off atomic.Int64
		cfg := Config{CgroupLimit: func() (int64, error) { return gib, nil }, OffHeap: off.Load}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		stop := startMemoryLimit(ctx, cfg, slog.New(slog.DiscardHandler))
		defer stop()
		steps := []struct {
			off  int64
			want int64
		}{
			{512 << 10, gib / 100 * memoryLimitShare},       // half a MiB: not worth a change
			{200 << 20, gib/100*memoryLimitShare - 200<<20}, // the store grew
			{2 * gib, gib / 100 * memoryLimitFloor},         // past the cgroup: the floor
			{0, gib / 100 * memoryLimitShare},               // the store emptied
		}
		for _, st := range steps {
			off.Store(st.off)
			time.Sleep(memoryLimitEvery)
			synctest.Wait()
			if got := debug.SetMemoryLimit(-1); got != st.want {
				t.Errorf("off-heap %d bytes: memory limit %d, want %d", st.off, got, st.want)
			}
		}
	})
}

// TestCgroupLimit reads this machine's cgroup through automemlimit: no
// limit is 0, never an error.
func TestCgroupLimit(t *testing.T) {
	n, err := cgroupLimit()
	if err != nil || n < 0 {
		t.Fatalf("cgroupLimit() = %d, %v; want a limit or 0, and no error", n, err)
	}
	t.Logf("this machine's cgroup memory limit: %d bytes (0: none)", n)
}

// TestMinLevel: the library's info lines are dropped, its warnings kept.
func TestMinLevel(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(minLevel{slog.NewTextHandler(&logs, nil), slog.LevelWarn}).With("lib", "automemlimit")
	log.Info("GOMEMLIMIT is updated")
	log.Warn("failed to refresh GOMEMLIMIT")
	if s := logs.String(); strings.Contains(s, "updated") || !strings.Contains(s, `msg="failed to refresh GOMEMLIMIT" lib=automemlimit`) {
		t.Errorf("logged %q, want only the warning, with its attributes", s)
	}
}

// TestStart sets both knobs and stops.
func TestStart(t *testing.T) {
	keepMemoryLimit(t)
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	if _, ok := os.LookupEnv("GOGC"); ok {
		t.Skip("GOGC is set in the test's environment")
	}
	var logs bytes.Buffer
	stop := Start(context.Background(), Config{CgroupLimit: func() (int64, error) { return 1 << 30, nil }},
		slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	stop()
	if got := debug.SetMemoryLimit(-1); got != 1<<30/100*memoryLimitShare {
		t.Errorf("memory limit = %d, want %d", got, 1<<30/100*memoryLimitShare)
	}
	if got := debug.SetGCPercent(100); got <= percentDefault {
		t.Errorf("GOGC = %d, want the floor's, over %d", got, percentDefault)
	}
	for _, line := range []string{"memory limit from the cgroup", "garbage collector heap floor"} {
		if !strings.Contains(logs.String(), line) {
			t.Errorf("log %q lacks %q", logs.String(), line)
		}
	}
}

// TestGOMEMLIMITWins: with GOMEMLIMIT set, the runtime has applied it, and
// the cgroup is not read.
func TestGOMEMLIMITWins(t *testing.T) {
	before := keepMemoryLimit(t)
	t.Setenv("GOMEMLIMIT", "off")
	var logs bytes.Buffer
	read := false
	cfg := Config{CgroupLimit: func() (int64, error) { read = true; return 1 << 30, nil }}
	startMemoryLimit(context.Background(), cfg, slog.New(slog.NewTextHandler(&logs, nil)))()
	if got := debug.SetMemoryLimit(-1); got != before || read {
		t.Errorf("memory limit %d (cgroup read: %v), want %d left alone and the cgroup not read", got, read, before)
	}
	if !strings.Contains(logs.String(), `msg="memory limit from GOMEMLIMIT" gomemlimit=off`) {
		t.Errorf("log %q lacks the GOMEMLIMIT line", logs.String())
	}
}
