package limiter

import (
	"context"
	"testing"
	"time"
)

// skewRun hammers one requestor through two instances of a strategy that
// share a testStore, their clocks offset from the true one, a request on
// each every 10ms of true time for 20s, and returns the true instants (in
// ms after t0) of the allowed requests.
func skewRun(t *testing.T, build func(Store, StrategyConfig) Strategy, skew time.Duration, offsets [2]time.Duration, req Request) []int64 {
	t.Helper()
	c := &clock{now: t0}
	mem := newTestStore(c.Now)
	t.Cleanup(func() { mem.Close() })
	insts := [2]Strategy{build(mem, StrategyConfig{MaxClockSkew: skew}), build(mem, StrategyConfig{MaxClockSkew: skew})}
	var allowed []int64
	for trueMs := int64(0); trueMs < 20_000; trueMs += 10 {
		for i, s := range insts {
			c.Set(ms(trueMs)) // the store's expiry runs on true time
			d, err := s.Allow(context.Background(), req, ms(trueMs).Add(offsets[i]))
			if err != nil {
				t.Fatalf("at %dms on instance %d: %v", trueMs, i, err)
			}
			if d.Allowed {
				allowed = append(allowed, trueMs)
			}
		}
	}
	return allowed
}

// skewCase is one pair of clocks and the skew bound the instances are
// given; over marks a control whose bound is too small for its clocks, which
// must over-admit (so that the check can fail).
type skewCase struct {
	name    string
	offsets [2]time.Duration
	skew    time.Duration // StrategyConfig.MaxClockSkew
	over    bool
}

var skewCases = []skewCase{
	{name: "clocks 0.3s either way", offsets: [2]time.Duration{300 * time.Millisecond, -300 * time.Millisecond}},
	{name: "a clock 0.9s ahead", offsets: [2]time.Duration{0, 900 * time.Millisecond}},
	{name: "a clock 0.9s behind", offsets: [2]time.Duration{0, -900 * time.Millisecond}},
	{name: "clocks 0.9s either way, 2s bound", offsets: [2]time.Duration{-900 * time.Millisecond, 900 * time.Millisecond}, skew: 2 * time.Second},
	{name: "control: a clock 0.9s ahead, no bound", offsets: [2]time.Duration{0, 900 * time.Millisecond}, skew: -1, over: true},
}

// forSkewCases runs req through build on each of skewCases' two clocks
// (skewRun), in a subtest, and hands check the instants allowed.
func forSkewCases(t *testing.T, build func(Store, StrategyConfig) Strategy, req Request, check func(t *testing.T, tc skewCase, allowed []int64)) {
	t.Helper()
	for _, tc := range skewCases {
		t.Run(tc.name, func(t *testing.T) {
			allowed := skewRun(t, build, tc.skew, tc.offsets, req)
			t.Logf("%d allowed in 20s", len(allowed))
			check(t, tc, allowed)
		})
	}
}

// TestTokenBucketSkewedClocks: however the two clocks differ within the
// bound, no interval of true time [a, b] holds more allowed requests than
// one bucket on one clock allows, floor((b-a)/step) + Burst, and the burst
// lost to the bound is at most the skew's refill (doc.go).
func TestTokenBucketSkewedClocks(t *testing.T) {
	const limit, windowMs = 40, 4000 // a token every 100ms, a burst of 40
	const stepMs = windowMs / limit
	build := func(st Store, cfg StrategyConfig) Strategy { return NewTokenBucket(st, cfg) }
	req := Request{Requestor: "a", Limit: limit, Window: windowMs * time.Millisecond}
	forSkewCases(t, build, req, func(t *testing.T, tc skewCase, allowed []int64) {
		worst := int64(0) // the most by which an interval exceeds its bound
		for i := range allowed {
			for j := i; j < len(allowed); j++ {
				n := int64(j - i + 1)
				worst = max(worst, n-((allowed[j]-allowed[i])/stepMs+limit))
			}
		}
		if tc.over {
			if worst <= 0 {
				t.Fatalf("the control allowed no more than one bucket: the check cannot fail")
			}
			return
		}
		if worst > 0 {
			t.Fatalf("an interval held %d requests more than one bucket allows", worst)
		}
		skewMs := StrategyConfig{MaxClockSkew: tc.skew}.skewMs()
		ideal := int64(allowed[len(allowed)-1]/stepMs + limit) // one bucket on one clock, to the last
		if lost := ideal - int64(len(allowed)); lost > skewMs/stepMs+1 {
			t.Errorf("%d allowed, %d fewer than one bucket would: more than the skew's refill (%d)", len(allowed), lost, skewMs/stepMs)
		}
	})
}

// TestSlidingLogSkewedClocks: no true window of Window holds more than
// Limit allowed requests, and entries count for at most Window+skew.
func TestSlidingLogSkewedClocks(t *testing.T) {
	const limit, windowMs = 40, 4000
	build := func(st Store, cfg StrategyConfig) Strategy { return NewSlidingLog(st, cfg) }
	req := Request{Requestor: "a", Limit: limit, Window: windowMs * time.Millisecond}
	forSkewCases(t, build, req, func(t *testing.T, tc skewCase, allowed []int64) {
		most := 0 // the most allowed in one window (t-Window, t]
		for j := range allowed {
			n := 0
			for i := j; i >= 0 && allowed[i] > allowed[j]-windowMs; i-- {
				n++
			}
			most = max(most, n)
		}
		if tc.over {
			if most <= limit {
				t.Fatalf("the control allowed at most %d in a window: the check cannot fail", most)
			}
			return
		}
		if most > limit {
			t.Fatalf("a window of %dms held %d requests, limit %d", windowMs, most, limit)
		}
		skewMs := StrategyConfig{MaxClockSkew: tc.skew}.skewMs()
		if least := limit * (20_000 / (windowMs + skewMs + 1000)); len(allowed) < int(least) {
			t.Errorf("%d allowed in 20s, want at least %d (a limit per window and skew, and a second of offset)", len(allowed), least)
		}
	})
}
