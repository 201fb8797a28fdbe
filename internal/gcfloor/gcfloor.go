// Package gcfloor keeps Go's garbage collector from running while the heap
// is small: a floor under the heap size at which a collection starts.
//
// With GOGC=100 Go collects when the heap reaches twice what was live after
// the last collection. floodgate's live heap is a few MiB unless it caches
// hundreds of thousands of requestors, while every Check allocates a few
// KiB (most of it decoding the CheckRequest's header map), so with the
// default a busy replica collects many times a second and spends a tenth of
// its CPU on it. Start lets the heap grow to at least HeapFloor before
// collecting: while the live heap is under half of it, GOGC is raised so
// that the next collection starts at the floor. A live heap of half the
// floor or more gets GOGC=100, as without the floor, so a large heap never
// grows past twice its live size because of it. Go's memory limit
// (GOMEMLIMIT, or one set with runtime/debug.SetMemoryLimit) still applies
// on top and wins.
//
// floodgate and the benchmark's no-op ext_authz server both use it, so that
// the ceiling floodgate is measured against runs the same runtime policy.
package gcfloor

import (
	"context"
	"log/slog"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"

	"github.com/floodgate-rl/floodgate/internal/periodic"
)

const (
	// HeapFloor is the smallest heap size at which a collection starts.
	HeapFloor = 64 << 20

	// every is how often the live heap is read and GOGC adjusted.
	every = time.Second

	// percentDefault is Go's default GOGC, used once the live heap is
	// half the floor or more.
	percentDefault = 100

	// percentMax bounds GOGC while the live heap is tiny, at start-up.
	percentMax = 10_000
)

// liveHeapMetric is the runtime metric of the heap that the last
// collection found live.
const liveHeapMetric = "/gc/heap/live:bytes"

// Start adjusts GOGC every second so that the garbage collector lets the
// heap grow to HeapFloor, unless the GOGC environment variable is set (then
// the runtime applies it as given, and Start logs so). The returned function
// stops the adjusting goroutine and waits for it.
func Start(ctx context.Context, log *slog.Logger) (stop func()) {
	if v, ok := os.LookupEnv("GOGC"); ok {
		log.Info("garbage collector from GOGC", "gogc", v)
		return func() {}
	}
	sample := []metrics.Sample{{Name: liveHeapMetric}}
	live := func() uint64 {
		metrics.Read(sample)
		if sample[0].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return sample[0].Value.Uint64()
	}
	set := Percent(live())
	debug.SetGCPercent(set)
	log.Debug("garbage collector heap floor", "heap_floor", HeapFloor, "gogc", set)

	return periodic.Start(ctx, every, func() {
		// Only a change of a tenth or more is worth the runtime's
		// recomputing its pacing.
		if next := Percent(live()); next*10 > set*11 || next*10 < set*9 {
			set = next
			debug.SetGCPercent(set)
		}
	})
}

// Percent returns the GOGC that starts the next collection at HeapFloor
// for a live heap of live bytes, and at least Go's default, 100: the heap
// goal is live × (1 + GOGC/100).
func Percent(live uint64) int {
	if live == 0 {
		return percentMax
	}
	if live >= HeapFloor/2 {
		return percentDefault
	}
	p := (HeapFloor - live) * 100 / live
	return int(min(max(p, percentDefault), percentMax))
}
