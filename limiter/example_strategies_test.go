package limiter_test

import (
	"context"
	"fmt"
	"time"

	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/memory"
)

// decide prints the decisions of s at instants after start.
func decide(s limiter.Strategy, req limiter.Request, start time.Time, at ...time.Duration) {
	for _, a := range at {
		d, err := s.Allow(context.Background(), req, start.Add(a))
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("+%v allowed=%v remaining=%d retry=%v\n", a, d.Allowed, d.Remaining, d.RetryAfter)
	}
}

func ExampleFixed() {
	store := memory.New(nil)
	defer store.Close()
	f := limiter.NewFixed(store, limiter.StrategyConfig{})

	// Two per minute; windows start on the minute, so the third request is
	// told to come back at 12:01:00, where a new window starts.
	req := limiter.Request{Requestor: "ip:203.0.113.7", Limit: 2, Window: time.Minute}
	start := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	decide(f, req, start, 10*time.Second, 20*time.Second, 45*time.Second, time.Minute)
	// Output:
	// +10s allowed=true remaining=1 retry=0s
	// +20s allowed=true remaining=0 retry=40s
	// +45s allowed=false remaining=0 retry=15s
	// +1m0s allowed=true remaining=1 retry=0s
}

func ExampleTokenBucket() {
	store := memory.New(nil)
	defer store.Close()
	// One process, whose clock agrees with itself: no skew to allow for.
	// Replicas keep the default MaxClockSkew, which costs a bucket that
	// much refill (here one token of the burst); see the package doc.
	b := limiter.NewTokenBucket(store, limiter.StrategyConfig{MaxClockSkew: -1})

	// 60 per minute on average, one per second, in bursts of at most 3.
	req := limiter.Request{Requestor: "api-key:k-42", Limit: 60, Window: time.Minute, Burst: 3}
	start := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	decide(b, req, start, 0, 0, 0, 0, 1500*time.Millisecond, 10*time.Second)
	// Output:
	// +0s allowed=true remaining=2 retry=0s
	// +0s allowed=true remaining=1 retry=0s
	// +0s allowed=true remaining=0 retry=1s
	// +0s allowed=false remaining=0 retry=1s
	// +1.5s allowed=true remaining=0 retry=1s
	// +10s allowed=true remaining=2 retry=0s
}

func ExampleSlidingLog() {
	store := memory.New(nil)
	defer store.Close()
	// One process: no skew to allow for. With the default MaxClockSkew
	// each entry would count one second longer; see the package doc.
	l := limiter.NewSlidingLog(store, limiter.StrategyConfig{MaxClockSkew: -1})

	// Two per 10 seconds, to the millisecond: the third request may come
	// when the first is 10s old.
	req := limiter.Request{Requestor: "user:ann", Limit: 2, Window: 10 * time.Second}
	start := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	decide(l, req, start, 250*time.Millisecond, 3*time.Second, 5*time.Second, 10250*time.Millisecond)
	// Output:
	// +250ms allowed=true remaining=1 retry=0s
	// +3s allowed=true remaining=0 retry=8s
	// +5s allowed=false remaining=0 retry=6s
	// +10.25s allowed=true remaining=0 retry=3s
}

func ExampleNewStrategy() {
	store := memory.New(nil)
	defer store.Close()

	fmt.Println(limiter.Strategies())
	for _, name := range []string{"", "token-bucket", "leaky-bucket"} {
		s, err := limiter.NewStrategy(name, store, limiter.StrategyConfig{})
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Printf("%q: %T\n", name, s)
	}
	// Output:
	// [sliding fixed token-bucket sliding-log]
	// "": *limiter.Sliding
	// "token-bucket": *limiter.TokenBucket
	// unknown strategy "leaky-bucket": want one of sliding, fixed, token-bucket, sliding-log
}
