package runtimetune

// The memory limit: Go's soft memory limit from the container's, as
// automemlimit does for Kubernetes: without a limit the garbage collector
// lets the heap grow to twice what is live (GOGC=100), which in a container
// means an OOM kill long before memory is really short.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"

	"github.com/floodgate-rl/floodgate/internal/periodic"
)

const (
	// memoryLimitShare is the part of the cgroup's memory limit, in
	// percent, that the process may use; the rest is headroom for what the
	// Go runtime does not see (the kernel's page cache and socket buffers
	// charged to the cgroup).
	memoryLimitShare = 90

	// memoryLimitFloor is the smallest Go memory limit set, in percent of
	// the cgroup's limit, however much the process holds outside the Go
	// heap.
	memoryLimitFloor = 10

	// memoryLimitEvery is how often the Go memory limit is recomputed as
	// the off-heap bytes grow and shrink.
	memoryLimitEvery = 5 * time.Second

	// memoryLimitStep is the least change of the limit worth the runtime's
	// recomputing its pacing.
	memoryLimitStep = 1 << 20
)

// startMemoryLimit sets Go's soft memory limit from the memory limit of the
// process's cgroup, unless the GOMEMLIMIT environment variable is set (then
// the runtime has applied it, and "off" turns the limit off): to
// memoryLimitShare percent of the cgroup's limit, minus cfg.OffHeap's bytes,
// which the Go limit does not count, and at least memoryLimitFloor percent.
// A goroutine recomputes the limit every few seconds until ctx is done; the
// returned function stops it and waits for it. The outcome is logged once.
func startMemoryLimit(ctx context.Context, cfg Config, log *slog.Logger) (stop func()) {
	nothing := func() {}
	if v, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		log.Info("memory limit from GOMEMLIMIT", "gomemlimit", v)
		return nothing
	}
	readCgroup, offHeap := cfg.CgroupLimit, cfg.OffHeap
	if readCgroup == nil {
		readCgroup = cgroupLimit
	}
	if offHeap == nil {
		offHeap = func() int64 { return 0 }
	}
	cg, err := readCgroup()
	switch {
	case err != nil:
		log.Warn("cannot read the cgroup memory limit; Go's memory limit stays unset", "err", err)
		return nothing
	case cg <= 0:
		log.Debug("no cgroup memory limit; Go's memory limit stays unset")
		return nothing
	}
	want := goMemoryLimit(cg, offHeap())
	set, err := applyLimit(want, log)
	if err != nil {
		log.Warn("cannot set Go's memory limit from the cgroup", "err", err)
		return nothing
	}
	log.Info("memory limit from the cgroup", "cgroup_memory_limit", cg, "go_memory_limit", set, "share_percent", memoryLimitShare)

	return periodic.Start(ctx, memoryLimitEvery, func() {
		if next := goMemoryLimit(cg, offHeap()); next > want+memoryLimitStep || next < want-memoryLimitStep {
			want = next
			if _, err := applyLimit(want, log); err != nil {
				log.Warn("cannot update Go's memory limit", "err", err)
			}
		}
	})
}

// applyLimit sets Go's memory limit to limit through automemlimit, which
// honours its AUTOMEMLIMIT variable ("off", or a ratio applied to limit),
// and returns the limit in force. The library's own lines are logged only
// from warnings up: floodgate logs what it set once.
func applyLimit(limit int64, log *slog.Logger) (int64, error) {
	set, err := memlimit.Set(
		memlimit.WithProvider(memlimit.Limit(uint64(limit))),
		memlimit.WithRatio(1),
		memlimit.WithLogger(slog.New(minLevel{log.Handler(), slog.LevelWarn})),
	)
	if err != nil {
		return 0, fmt.Errorf("set Go's memory limit to %d bytes: %w", limit, err)
	}
	return set, nil
}

// goMemoryLimit returns the Go memory limit for a cgroup memory limit of cg
// bytes of which offHeap are used outside the Go heap: memoryLimitShare
// percent of cg less offHeap, and at least memoryLimitFloor percent of cg.
func goMemoryLimit(cg, offHeap int64) int64 {
	return max(cg/100*memoryLimitShare-offHeap, cg/100*memoryLimitFloor)
}

// cgroupLimit returns the memory limit of this process's cgroup, read by
// automemlimit (cgroup v1, v2 or both, the least of the cgroup's and its
// ancestors' limits), or 0 when there is none or no cgroups (not Linux, or
// no cgroup filesystem).
func cgroupLimit() (int64, error) {
	n, err := memlimit.FromCgroup()
	switch {
	case errors.Is(err, memlimit.ErrNoLimit), errors.Is(err, memlimit.ErrNoCgroup), errors.Is(err, memlimit.ErrCgroupsNotSupported):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("read the cgroup memory limit: %w", err)
	case n >= math.MaxInt64:
		return 0, nil
	}
	return int64(n), nil
}

// minLevel is a slog.Handler that passes on only records of at least min.
type minLevel struct {
	slog.Handler
	min slog.Level
}

// Enabled reports whether l is at least the minimum and the handler takes
// it.
func (m minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= m.min && m.Handler.Enabled(ctx, l)
}

// WithAttrs keeps the minimum.
func (m minLevel) WithAttrs(attrs []slog.Attr) slog.Handler {
	return minLevel{m.Handler.WithAttrs(attrs), m.min}
}

// WithGroup keeps the minimum.
func (m minLevel) WithGroup(name string) slog.Handler {
	return minLevel{m.Handler.WithGroup(name), m.min}
}
