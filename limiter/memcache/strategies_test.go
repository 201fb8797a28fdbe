package memcache_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/internal/testutil"
	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/memcache"
	"github.com/floodgate-rl/floodgate/limiter/memory"
)

// swapStrategies are the strategies that keep a value per requestor with
// compare-and-swap, and fixed, which counts; all run on memcached.
var swapStrategies = []string{limiter.StrategyFixed, limiter.StrategyTokenBucket, limiter.StrategySlidingLog}

// instances returns n strategies called name, each with its own memcached
// client, as n floodgate processes would have.
func instances(t *testing.T, name string, n int, servers ...string) []limiter.Strategy {
	t.Helper()
	var out []limiter.Strategy
	for range n {
		st, err := memcache.New(servers, memcache.Config{Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		// One clock for all: no skew to allow for (which would cost the
		// value strategies a second of refill; see limiter's doc.go).
		s, err := limiter.NewStrategy(name, st, limiter.StrategyConfig{MaxClockSkew: -1})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// burstOf300 makes 300 simultaneous checks of one requestor, limit 100
// an hour, at base(), spread over rs in turn, and fails t unless exactly
// 100 are allowed. It returns the request and the instant.
func burstOf300(t *testing.T, rs ...limiter.Strategy) (limiter.Request, time.Time) {
	t.Helper()
	req := limiter.Request{Requestor: "ip:192.0.2.99", Limit: 100, Window: time.Hour}
	now := base()
	allowed := testutil.Burst(t, 300, func(i int) (bool, error) {
		d, err := rs[i%len(rs)].Allow(context.Background(), req, now)
		return d.Allowed, err
	})
	if n := allowed; n != 100 {
		t.Fatalf("%d allowed, want exactly 100", n)
	}
	return req, now
}

// TestStrategiesOnMemcachedConcurrentReplicas: 300 simultaneous checks over
// 3 instances, each with its own client, sharing one memcached allow exactly
// the limit.
func TestStrategiesOnMemcachedConcurrentReplicas(t *testing.T) {
	mc := testutil.StartMemcached(t)
	for _, name := range swapStrategies {
		t.Run(name, func(t *testing.T) {
			req, now := burstOf300(t, instances(t, name, 3, mc.Addr())...)
			late := instances(t, name, 1, mc.Addr())[0]
			if d, err := late.Allow(context.Background(), req, now.Add(time.Second)); err != nil || d.Allowed {
				t.Fatalf("a new instance a second later: %+v %v, want denied", d, err)
			}
		})
	}
}

// TestStrategiesOnMemcachedScenarios: a burst past the limit is denied with
// the strategy's retry time, another instance agrees, and the promise holds.
func TestStrategiesOnMemcachedScenarios(t *testing.T) {
	mc := testutil.StartMemcached(t)
	retry := map[string]time.Duration{
		limiter.StrategyFixed:       time.Minute,      // the next minute boundary
		limiter.StrategyTokenBucket: 12 * time.Second, // one token: Window/Limit
		limiter.StrategySlidingLog:  time.Minute,      // the first request leaves
	}
	for _, name := range swapStrategies {
		t.Run(name, func(t *testing.T) {
			rs := instances(t, name, 2, mc.Addr())
			req := limiter.Request{Requestor: "ip:" + t.Name(), Limit: 5, Window: time.Minute}
			now := base() // on a minute boundary
			for i := range 5 {
				if d, err := rs[i%2].Allow(context.Background(), req, now); err != nil || !d.Allowed || d.Remaining != int64(4-i) {
					t.Fatalf("request %d: %+v %v", i, d, err)
				}
			}
			for i, s := range rs {
				d, err := s.Allow(context.Background(), req, now.Add(time.Millisecond))
				if err != nil || d.Allowed || d.RetryAfter != retry[name] {
					t.Fatalf("instance %d, 6th request: %+v %v; want denied, retry %v", i, d, err, retry[name])
				}
			}
			if d, err := rs[1].Allow(context.Background(), req, now.Add(retry[name])); err != nil || !d.Allowed {
				t.Fatalf("after the promised %v: %+v %v, want allowed", retry[name], d, err)
			}
		})
	}
}

// TestStrategiesOnMemcachedMatchInMemory: for random request sequences, the
// strategies decide on memcached exactly as on the in-memory store (whose
// tests check them against their definitions).
func TestStrategiesOnMemcachedMatchInMemory(t *testing.T) {
	mc := testutil.StartMemcached(t)
	for _, name := range swapStrategies {
		t.Run(name, func(t *testing.T) {
			onMC := instances(t, name, 2, mc.Addr())
			var mu sync.Mutex
			start := base()
			clock := start
			mem := memory.New(func() time.Time { mu.Lock(); defer mu.Unlock(); return clock })
			t.Cleanup(func() { mem.Close() })
			ref, err := limiter.NewStrategy(name, mem, limiter.StrategyConfig{MaxClockSkew: -1})
			if err != nil {
				t.Fatal(err)
			}
			req := limiter.Request{Requestor: "diff", Limit: 4, Window: 10 * time.Second, Burst: 6}
			rng := rand.New(rand.NewPCG(1, 2))
			now := start
			allowed := 0
			for i := range 400 {
				now = now.Add(time.Duration(rng.IntN(2000)) * time.Millisecond)
				mu.Lock()
				clock = now
				mu.Unlock()
				want, err := ref.Allow(context.Background(), req, now)
				if err != nil {
					t.Fatal(err)
				}
				got, err := onMC[i%2].Allow(context.Background(), req, now)
				if err != nil {
					t.Fatal(err)
				}
				if got != want {
					t.Fatalf("request %d at +%v: memcached %+v, in memory %+v", i, now.Sub(start), got, want)
				}
				if got.Allowed {
					allowed++
				}
			}
			if allowed == 0 || allowed == 400 {
				t.Fatalf("%d of 400 allowed: the sequence tests nothing", allowed)
			}
		})
	}
}

// TestStrategiesOnMemcachedDown: a stopped memcached is an
// ErrStoreUnavailable for every strategy.
func TestStrategiesOnMemcachedDown(t *testing.T) {
	mc := testutil.StartMemcached(t)
	ss := map[string]limiter.Strategy{}
	for _, name := range swapStrategies {
		ss[name] = instances(t, name, 1, mc.Addr())[0]
	}
	mc.Stop()
	for name, s := range ss {
		_, err := s.Allow(context.Background(), limiter.Request{Requestor: "down", Limit: 1, Window: time.Minute}, base())
		if !errors.Is(err, limiter.ErrStoreUnavailable) {
			t.Errorf("%s with memcached stopped: err=%v, want ErrStoreUnavailable", name, err)
		}
	}
}

// benchStrategy returns the strategy called name on a client of the
// memcached at addr with cfg, closed at the end of the benchmark.
func benchStrategy(b *testing.B, name, addr string, cfg memcache.Config) limiter.Strategy {
	b.Helper()
	st, err := memcache.New([]string{addr}, cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	s, err := limiter.NewStrategy(name, st, limiter.StrategyConfig{})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func BenchmarkStrategiesOnMemcached(b *testing.B) {
	mc := testutil.StartMemcached(b)
	for _, name := range swapStrategies {
		b.Run(name, func(b *testing.B) {
			s := benchStrategy(b, name, mc.Addr(), memcache.Config{})
			var n atomic.Uint64
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				req := limiter.Request{Limit: 100, Window: time.Minute}
				for pb.Next() {
					req.Requestor = fmt.Sprint("ip:10.0.0.", n.Add(1)%1000)
					if _, err := s.Allow(context.Background(), req, time.Now()); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// BenchmarkValueStrategiesOnMemcached is decisions of the strategies that
// keep a value, each of which reads and swaps it in memcached (a new
// requestor every time, far from its limit), 16 × GOMAXPROCS at once: what
// the values' round trips cost. (BenchmarkStrategiesOnMemcached cycles over
// 1,000 requestors, most of them soon denied from what the strategy
// remembers.)
func BenchmarkValueStrategiesOnMemcached(b *testing.B) {
	mc := testutil.StartMemcached(b)
	for _, name := range []string{limiter.StrategyTokenBucket, limiter.StrategySlidingLog} {
		b.Run(name, func(b *testing.B) {
			s := benchStrategy(b, name, mc.Addr(), memcache.Config{Timeout: 10 * time.Second})
			var n atomic.Uint64
			b.ReportAllocs()
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				req := limiter.Request{Limit: 1000, Window: time.Hour}
				for pb.Next() {
					req.Requestor = fmt.Sprint("ip:", n.Add(1))
					if _, err := s.Allow(context.Background(), req, time.Now()); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
