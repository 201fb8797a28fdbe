package limiter_test

import (
	"context"
	"fmt"
	"time"

	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/memory"
)

func ExampleSliding() {
	store := memory.New(nil)
	defer store.Close()
	s := limiter.NewSliding(store, limiter.SlidingConfig{})
	defer s.Close()

	req := limiter.Request{Requestor: "ip:203.0.113.7", Limit: 2, Window: time.Hour}
	start := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	for _, at := range []time.Duration{0, 10 * time.Minute, 20 * time.Minute, time.Hour} {
		d, err := s.Allow(context.Background(), req, start.Add(at))
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("+%v allowed=%v remaining=%d retry=%v\n", at, d.Allowed, d.Remaining, d.RetryAfter)
	}
	// Output:
	// +0s allowed=true remaining=1 retry=0s
	// +10m0s allowed=true remaining=0 retry=50m0s
	// +20m0s allowed=false remaining=0 retry=40m0s
	// +1h0m0s allowed=true remaining=0 retry=10m0s
}
