package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/internal/runtimetune"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/floodgate-rl/floodgate/internal/testutil"
)

// rssBytes returns the resident set size of process pid, from /proc.
func rssBytes(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// heapHeld returns the heap bytes the process holds (not returned to the
// operating system), from its /metrics, and a line of the numbers it comes
// from, for a failure message.
func (s *server) heapHeld(t *testing.T) (int64, string) {
	t.Helper()
	_, m := s.get(t, "/metrics")
	v := func(name string) float64 { return metricValue(t, m, name) }
	held := int64(v("go_memstats_heap_sys_bytes") - v("go_memstats_heap_released_bytes"))
	return held, fmt.Sprintf("held %d MiB: in use %.0f MiB, idle %.0f MiB, released %.0f MiB; %.0f collections",
		held>>20, v("go_memstats_heap_inuse_bytes")/(1<<20), v("go_memstats_heap_idle_bytes")/(1<<20),
		v("go_memstats_heap_released_bytes")/(1<<20), v("go_gc_duration_seconds_count"))
}

// TestBinaryMemoryAfterBurst: a burst of Check calls near
// --grpc-max-recv-bytes (400 of 900 KiB over 16 connections) takes the
// process's heap up by the bytes in flight; once the burst is over and the
// process is quiet, the memory goes back to the operating system (gcfloor's
// quiet-heap release), and the server keeps answering. The heap is read
// from /metrics; the resident set too, without the race detector (whose
// shadow memory it would measure).
func TestBinaryMemoryAfterBurst(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	pid := s.cmd.Process.Pid
	baseHeap, _ := s.heapHeld(t)
	baseRSS := rssBytes(t, pid)
	clients := make([]authv3.AuthorizationClient, 16)
	for i := range clients {
		clients[i] = authv3.NewAuthorizationClient(s.dial(t))
	}
	pad := strings.Repeat("a", 900<<10)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for i := range 400 {
		wg.Go(func() {
			req := checkRequest("198.51.100." + strconv.Itoa(i%250))
			req.Attributes.Request.Http.Headers["x-padding"] = pad
			if _, err := clients[i%len(clients)].Check(ctx, req); err != nil {
				t.Errorf("Check of 900 KiB: %v", err)
			}
		})
	}
	wg.Wait()
	heap, _ := s.heapHeld(t)
	rss := rssBytes(t, pid)
	if heap < baseHeap+100<<20 {
		t.Fatalf("heap %d MiB after the burst, %d MiB before: the burst did not hold the memory it should measure", heap>>20, baseHeap>>20)
	}
	// A quiet process may hold up to runtimetune.ReleaseAbove before the
	// quiet-heap release collects and returns the rest; below it, garbage
	// waits for the next collection (at the heap floor), which a quiet
	// process may not reach for long. So the heap comes back under that
	// bound, and the resident set, which counts only pages in use, under
	// back.
	const back = 64 << 20
	afterHeap, afterRSS := heap, rss
	testutil.WaitFor(t, time.Minute, func() error {
		var numbers string
		if heap, numbers = s.heapHeld(t); heap >= baseHeap+runtimetune.ReleaseAbove {
			return fmt.Errorf("heap not back under %d MiB (%d MiB before the burst, %d MiB right after it): %s", (baseHeap+runtimetune.ReleaseAbove)>>20, baseHeap>>20, afterHeap>>20, numbers)
		}
		return nil
	})
	rss = rssBytes(t, pid)
	t.Logf("heap %d → %d → %d MiB, RSS %d → %d → %d MiB (before the burst, right after it, once quiet)",
		baseHeap>>20, afterHeap>>20, heap>>20, baseRSS>>20, afterRSS>>20, rss>>20)
	if !raceEnabled && rss >= baseRSS+back {
		t.Errorf("RSS %d MiB once the heap is back (%d MiB before the burst), want under %d MiB", rss>>20, baseRSS>>20, (baseRSS+back)>>20)
	}
	if _, err := clients[0].Check(ctx, checkRequest("198.51.100.1")); err != nil {
		t.Errorf("Check after the burst: %v", err)
	}
}
