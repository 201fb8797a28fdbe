package resilient_test

import (
	"context"
	"fmt"
	"time"

	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/memory"
	"github.com/floodgate-rl/floodgate/limiter/resilient"
	"github.com/floodgate-rl/floodgate/limiter/storetest"
)

// downStore is a shared store that is down: every call fails.
var downStore = storetest.Failing(func(context.Context) error {
	return fmt.Errorf("memcache: %w: connection refused", limiter.ErrStoreUnavailable)
})

// The stack floodgate runs with memcached: the shared store behind a circuit
// breaker, and a per-replica limiter in memory for when it is
// unavailable. Here the shared store is down: after two failures the breaker
// opens and stops calling it, and the local limiter keeps the limit.
func Example() {
	brk := resilient.NewBreaker(downStore, resilient.BreakerConfig{Failures: 2})
	defer brk.Close() // ends its probing
	local := memory.New(time.Now)
	defer local.Close()
	s := resilient.NewFallback(
		limiter.NewSliding(brk, limiter.SlidingConfig{}),
		limiter.NewSliding(local, limiter.SlidingConfig{}),
		resilient.FallbackConfig{Reason: "memcached-unavailable"})

	req := limiter.Request{Requestor: "ip:203.0.113.7", Limit: 2, Window: time.Minute}
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	for range 3 {
		d, reason, err := s.AllowDegraded(context.Background(), req, now)
		fmt.Println(d.Allowed, reason, err)
	}
	fmt.Println("breaker:", brk.State())
	// Output:
	// true memcached-unavailable <nil>
	// true memcached-unavailable <nil>
	// false memcached-unavailable <nil>
	// breaker: open
}
