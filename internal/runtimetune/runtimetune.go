// Package runtimetune sets the Go runtime's two memory knobs for a floodgate
// process, once at start and then as the process runs:
//
//   - the soft memory limit (runtime/debug.SetMemoryLimit), from the memory
//     limit of the container's cgroup less what the in-memory store holds
//     outside the Go heap (memlimit.go);
//   - a floor under the heap size at which a garbage collection starts, by
//     adjusting GOGC (gcfloor.go).
//
// Start does both; floodgate and the benchmark's no-op ext_authz server
// call it, so that the ceiling floodgate is measured against runs the same
// runtime policy. The GOMEMLIMIT and GOGC environment variables, when set,
// win over each knob.
//
// The cgroup is read by github.com/KimMachineGun/automemlimit, which also
// applies the limit: its parser covers cgroup v1, v2 and hybrid hosts,
// nested cgroups (the least limit of the cgroup and its ancestors) and
// mount points with escaped characters, as floodgate's own parser did, and
// is tested against more layouts than ours was. floodgate gives it a
// custom provider that takes off the off-heap bytes (memory.OffHeapBytes),
// which the library cannot know, and refreshes the limit itself every few
// seconds, so that stop can wait for the goroutine and the limit changes
// only by a MiB or more. The library's AUTOMEMLIMIT variable applies as
// documented there: "off" turns the limit off, a ratio scales floodgate's
// limit further.
package runtimetune

import (
	"context"
	"log/slog"
)

// Config says what Start needs to know about the process. The zero value
// is a process that holds nothing outside the Go heap.
type Config struct {
	// OffHeap returns the bytes the process holds outside the Go heap
	// (e.g. memory.OffHeapBytes), which the Go memory limit must leave
	// room for. nil means none.
	OffHeap func() int64

	// CgroupLimit returns the memory limit of the process's cgroup in
	// bytes, and 0 when there is none. nil means the cgroup's, read with
	// automemlimit; tests give a fake one.
	CgroupLimit func() (int64, error)
}

// Start sets the memory limit and the heap floor and keeps adjusting them
// until ctx is done or the returned stop is called; stop waits for the
// goroutines to exit. What it set is logged once, at start.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (stop func()) {
	stopLimit := startMemoryLimit(ctx, cfg, log)
	stopFloor := startGCFloor(ctx, log)
	return func() {
		stopFloor()
		stopLimit()
	}
}
