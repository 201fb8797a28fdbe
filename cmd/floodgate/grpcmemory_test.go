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

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
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
// operating system), from its /metrics.
func (s *server) heapHeld(t *testing.T) int64 {
	t.Helper()
	_, m := s.get(t, "/metrics")
	return int64(metricValue(t, m, "go_memstats_heap_sys_bytes") - metricValue(t, m, "go_memstats_heap_released_bytes"))
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
	baseHeap, baseRSS := s.heapHeld(t), rssBytes(t, pid)
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
	heap, rss := s.heapHeld(t), rssBytes(t, pid)
	if heap < baseHeap+100<<20 {
		t.Fatalf("heap %d MiB after the burst, %d MiB before: the burst did not hold the memory it should measure", heap>>20, baseHeap>>20)
	}
	const back = 64 << 20
	afterHeap, afterRSS := heap, rss
	waitFor(t, fmt.Sprintf("heap back under %d MiB (%d MiB before the burst, %d MiB right after it)", (baseHeap+back)>>20, baseHeap>>20, afterHeap>>20), func() bool {
		heap = s.heapHeld(t)
		return heap < baseHeap+back
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
