package limiter_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/memory"
)

// benchClients returns n client names, as Check would build them.
func benchClients(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprint("ip:10.0.", i/256, ".", i%256)
	}
	return names
}

// runParallel decides req for names in turn, from GOMAXPROCS goroutines.
func runParallel(b *testing.B, s limiter.Strategy, req limiter.Request, names []string) {
	var n atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req := req
		for pb.Next() {
			req.Requestor = names[n.Add(1)%uint64(len(names))]
			if _, err := s.Allow(context.Background(), req, time.Now()); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// newMemory returns an in-memory store closed at the end of b.
func newMemory(b *testing.B) *memory.Store {
	mem := memory.New(nil)
	b.Cleanup(func() { mem.Close() })
	return mem
}

// BenchmarkSlidingAllow decides on the in-memory store, as floodgate
// --memory does: with a limit of 100 an hour, after the first 100 calls
// one client is denied every time (denied); with a limit no client
// reaches, every call is an allowed one that counts (allowed), as in the
// load benchmark; 10,000 clients are each known beforehand, so the result
// does not depend on how many iterations there are.
func BenchmarkSlidingAllow(b *testing.B) {
	for _, bc := range []struct {
		name    string
		limit   int64
		clients int
	}{
		{"denied/clients=1", 100, 1},
		{"allowed/clients=1", 1_000_000_000, 1},
		{"clients=10000", 100, 10_000},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := limiter.NewSliding(newMemory(b), limiter.SlidingConfig(limiter.StrategyConfig{}.Private()))
			defer s.Close()
			names := benchClients(bc.clients)
			req := limiter.Request{Limit: bc.limit, Window: time.Hour}
			for _, name := range names {
				req.Requestor = name
				if _, err := s.Allow(context.Background(), req, time.Now()); err != nil {
					b.Fatal(err)
				}
			}
			runParallel(b, s, req, names)
		})
	}
}

// BenchmarkSlidingNewRequestors is a stream of requestors never seen
// before, past the history cache's capacity, so that every decision needs
// room in the cache.
func BenchmarkSlidingNewRequestors(b *testing.B) {
	s := limiter.NewSliding(newMemory(b), limiter.SlidingConfig{MaxRequestors: 1 << 16})
	defer s.Close()
	req := limiter.Request{Limit: 100, Window: time.Hour}
	now := time.Now()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		req.Requestor = fmt.Sprint("ip:", i)
		i++
		if _, err := s.Allow(context.Background(), req, now); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStrategyAllow decides with each strategy on the in-memory
// store, for one client and for 10,000.
func BenchmarkStrategyAllow(b *testing.B) {
	for _, name := range limiter.Strategies() {
		for _, clients := range []int{1, 10_000} {
			b.Run(fmt.Sprintf("%s/clients=%d", name, clients), func(b *testing.B) {
				s, err := limiter.NewStrategy(name, newMemory(b), limiter.StrategyConfig{}.Private())
				if err != nil {
					b.Fatal(err)
				}
				runParallel(b, s, limiter.Request{Limit: 100, Window: time.Minute}, benchClients(clients))
			})
		}
	}
}
