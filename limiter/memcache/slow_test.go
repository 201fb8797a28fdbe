package memcache_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/internal/testutil"
	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/memcache"
	"github.com/floodgate-rl/floodgate/limiter/memory"
	"github.com/floodgate-rl/floodgate/limiter/resilient"
)

// slowProxy forwards TCP connections to a memcached, holding each chunk
// of its answers for the current delay: a memcached that is slow, not down.
type slowProxy struct {
	ln    net.Listener
	to    string
	delay atomic.Int64 // nanoseconds
	wg    sync.WaitGroup
}

func startSlowProxy(t *testing.T, to string) *slowProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &slowProxy{ln: ln, to: to}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Go(func() { p.serve(c) })
		}
	})
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *slowProxy) serve(c net.Conn) {
	defer c.Close()
	up, err := net.Dial("tcp", p.to)
	if err != nil {
		return
	}
	defer up.Close()
	go func() { io.Copy(up, c); up.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := up.Read(buf)
		if n > 0 {
			if d := time.Duration(p.delay.Load()); d > 0 {
				time.Sleep(d) // the slowness being simulated
			}
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// TestSlowMemcachedKeepsTheLimit: a requestor at its limit stays limited
// on every replica while memcached answers slower than the replicas'
// timeout and their checks fall to the fallback, and the requests the
// fallback allowed new requestors meanwhile are in memcached afterwards.
func TestSlowMemcachedKeepsTheLimit(t *testing.T) {
	mc := testutil.StartMemcached(t)
	proxy := startSlowProxy(t, mc.Addr())
	const limit = 100
	type replica struct {
		f *resilient.Fallback
	}
	var reps []replica
	for range 3 {
		st, err := memcache.New([]string{proxy.ln.Addr().String()}, memcache.Config{Timeout: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		brk := resilient.NewBreaker(st, resilient.BreakerConfig{})
		t.Cleanup(func() { brk.Close() })
		mem := memory.New(time.Now)
		t.Cleanup(func() { mem.Close() })
		f := resilient.NewFallback(limiter.NewSliding(brk, limiter.SlidingConfig{}), limiter.NewSliding(mem, limiter.SlidingConfig{MaxClockSkew: -1, MaxDecisionTime: -1}) /* private, as floodgate builds it */, resilient.FallbackConfig{})
		t.Cleanup(func() { f.Close() })
		reps = append(reps, replica{f: f})
	}
	hot := limiter.Request{Requestor: "hot", Limit: limit, Window: time.Hour}
	allow := func(i int, req limiter.Request) (bool, string) {
		d, reason, err := reps[i%len(reps)].f.AllowDegraded(context.Background(), req, time.Now())
		if err != nil {
			t.Errorf("check: %v", err)
		}
		return d.Allowed, reason
	}
	// The hot requestor uses its limit through every replica while
	// memcached is quick.
	var used int
	for i := range 3 * limit {
		if ok, _ := allow(i, hot); ok {
			used++
		}
	}
	if used != limit {
		t.Fatalf("%d allowed while memcached was quick, want %d", used, limit)
	}

	proxy.delay.Store(int64(30 * time.Millisecond))
	var hotAllowed, degraded, fresh atomic.Int64
	var wg sync.WaitGroup
	work := make(chan int)
	for range 300 {
		wg.Go(func() {
			for i := range work {
				req := hot
				if i%2 == 1 {
					req = limiter.Request{Requestor: fmt.Sprintf("new-%d", i), Limit: limit, Window: time.Hour}
				}
				ok, reason := allow(i, req)
				if reason != "" {
					degraded.Add(1)
				}
				if ok && req.Requestor == "hot" {
					hotAllowed.Add(1)
				}
				if ok && req.Requestor != "hot" && reason != "" {
					fresh.Add(1)
				}
			}
		})
	}
	for i := range 4000 {
		work <- i
	}
	close(work)
	wg.Wait()
	if n := hotAllowed.Load(); n != 0 {
		t.Errorf("hot requestor at its limit: %d allowed while memcached was slow, want 0", n)
	}
	if degraded.Load() == 0 {
		t.Fatalf("no check fell to the fallback: memcached was not slow enough to test anything")
	}

	// memcached quick again: the next decisions charge what the fallback
	// allowed, so the new requestors' counts are in memcached.
	proxy.delay.Store(0)
	st, err := memcache.New([]string{mc.Addr()}, memcache.Config{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	testutil.WaitFor(t, 10*time.Second, func() error { // the breakers' probes find memcached back
		var charged uint64
		for i := range reps {
			allow(i, hot) // a decision that finds memcached back charges first
			charged += reps[i].f.Reconciled()
		}
		if int64(charged) < fresh.Load() {
			return fmt.Errorf("%d of the %d requests allowed by the fallback charged to memcached", charged, fresh.Load())
		}
		return nil
	})
	if ok, _ := allow(0, hot); ok {
		t.Errorf("hot requestor allowed after memcached recovered")
	}
	t.Logf("%d checks decided by the fallback; %d new requestors' requests allowed there and charged", degraded.Load(), fresh.Load())
}
