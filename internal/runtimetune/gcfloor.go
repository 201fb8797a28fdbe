package runtimetune

// The heap floor: keep Go's garbage collector from running while the heap
// is small.
//
// With GOGC=100 Go collects when the heap reaches twice what was live after
// the last collection. floodgate's live heap is a few MiB unless it caches
// hundreds of thousands of requestors, while every Check allocates a few
// KiB (most of it decoding the CheckRequest's header map), so with the
// default a busy replica collects many times a second and spends a tenth of
// its CPU on it. startGCFloor lets the heap grow to at least HeapFloor before
// collecting: while the live heap is under half of it, GOGC is raised so
// that the next collection starts at the floor. A live heap of half the
// floor or more gets GOGC=100, as without the floor, so a large heap never
// grows past twice its live size because of it. Go's memory limit
// (GOMEMLIMIT, or one set with runtime/debug.SetMemoryLimit) still applies
// on top and wins.
//
// A burst of large messages leaves the opposite problem: a heap of
// garbage that no collection frees while the process is quiet, since
// collections start only from allocation (or, after two minutes, from the
// runtime's forced collection, and even then the runtime returns the freed
// memory to the operating system slowly). So startGCFloor also watches for a
// quiet heap: when no collection has run for QuietAfter and the heap holds
// more than ReleaseAbove bytes (objects, dead or alive, and free spans not
// yet returned), it collects twice (the first collection only moves what a
// [sync.Pool] holds, gRPC's message buffers among it, to the pool's victim
// cache) and returns the free memory at once with [debug.FreeOSMemory]. A busy replica collects far more often than that and
// never meets the condition; a quiet one with a large live heap pays at
// most one collection per QuietAfter.

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"

	"github.com/floodgate-rl/floodgate/internal/periodic"
)

const (
	// HeapFloor is the smallest heap size at which a collection starts.
	HeapFloor = 64 << 20

	// floorEvery is how often the live heap is read and GOGC adjusted.
	floorEvery = time.Second

	// percentDefault is Go's default GOGC, used once the live heap is
	// half the floor or more.
	percentDefault = 100

	// percentMax bounds GOGC while the live heap is tiny, at start-up.
	percentMax = 10_000

	// QuietAfter is how long without a collection makes the heap quiet.
	QuietAfter = 10 * time.Second

	// ReleaseAbove is how many heap bytes a quiet process may hold before
	// startGCFloor collects and returns the free memory to the operating system.
	ReleaseAbove = 2 * HeapFloor
)

// liveHeapMetric is the runtime metric of the heap that the last
// collection found live.
const liveHeapMetric = "/gc/heap/live:bytes"

// startGCFloor adjusts GOGC every second so that the garbage collector
// lets the heap grow to HeapFloor, unless the GOGC environment variable is
// set (then the runtime applies it as given, and startGCFloor logs so), and
// returns a quiet heap's free memory to the operating system either way.
// The returned function stops the goroutine and waits for it.
func startGCFloor(ctx context.Context, log *slog.Logger) (stop func()) {
	var h heapReader
	floor := true
	set := Percent(h.read().live)
	if v, ok := os.LookupEnv("GOGC"); ok {
		log.Info("garbage collector from GOGC", "gogc", v)
		floor = false
	} else {
		debug.SetGCPercent(set)
		log.Debug("garbage collector heap floor", "heap_floor", HeapFloor, "gogc", set)
	}
	var quiet quietHeap
	return periodic.Start(ctx, floorEvery, func() {
		st := h.read()
		if next, ok := nextPercent(set, st.live); floor && ok {
			set = next
			debug.SetGCPercent(set)
		}
		if quiet.release(st, time.Now()) {
			// Two collections: the first only moves what sync.Pools hold
			// (gRPC's buffers among them) to their victim caches.
			runtime.GC()
			debug.FreeOSMemory()
			log.Debug("returned a quiet heap's free memory", "heap_bytes", st.held)
		}
	})
}

// heapStats is what startGCFloor reads from the runtime each tick.
type heapStats struct {
	live   uint64 // bytes the last collection found live
	held   uint64 // heap bytes not returned to the operating system
	cycles uint64 // collections since the process started
}

// heapReader reads heapStats from runtime/metrics.
type heapReader struct{ samples []metrics.Sample }

// heapHeldMetrics are the heap's memory classes that hold memory: objects
// (live or dead), unused parts of spans in use, and free spans not yet
// returned to the operating system.
var heapHeldMetrics = []string{"/memory/classes/heap/objects:bytes", "/memory/classes/heap/unused:bytes", "/memory/classes/heap/free:bytes"}

func (h *heapReader) read() heapStats {
	if h.samples == nil {
		h.samples = []metrics.Sample{{Name: liveHeapMetric}, {Name: "/gc/cycles/total:gc-cycles"}}
		for _, name := range heapHeldMetrics {
			h.samples = append(h.samples, metrics.Sample{Name: name})
		}
	}
	metrics.Read(h.samples)
	u := func(i int) uint64 {
		if h.samples[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return h.samples[i].Value.Uint64()
	}
	st := heapStats{live: u(0), cycles: u(1)}
	for i := range heapHeldMetrics {
		st.held += u(2 + i)
	}
	return st
}

// quietHeap tells when a heap has been quiet for QuietAfter while holding
// more than ReleaseAbove.
type quietHeap struct {
	cycles uint64    // collections at the last tick
	since  time.Time // when cycles last changed
}

// release reports whether the heap, as st at now, should be collected and
// its free memory returned.
func (q *quietHeap) release(st heapStats, now time.Time) bool {
	if q.since.IsZero() || st.cycles != q.cycles {
		q.cycles, q.since = st.cycles, now
		return false
	}
	if now.Sub(q.since) < QuietAfter || st.held <= ReleaseAbove {
		return false
	}
	q.since = now // at most once per QuietAfter, whatever the collection does
	return true
}

// nextPercent returns the GOGC for a live heap of live bytes, and whether
// it differs enough from set, the one in force, to apply: only a change of
// a tenth or more is worth the runtime's recomputing its pacing.
func nextPercent(set int, live uint64) (int, bool) {
	next := Percent(live)
	return next, next*10 > set*11 || next*10 < set*9
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
