package limiter

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// multiBuilder makes one strategy as a MultiStrategy.
type multiBuilder struct {
	name string
	// sharedAcrossLimits: requests of one requestor with different limits
	// share one count (all but TokenBucket, whose bucket is per rate).
	sharedAcrossLimits bool
	build              func(Store) MultiStrategy
}

// multiBuilders makes every strategy NewStrategy knows, on one clock.
var multiBuilders = []multiBuilder{
	{StrategySliding, true, func(st Store) MultiStrategy { return NewSliding(st, SlidingConfig{}) }},
	{StrategyFixed, true, func(st Store) MultiStrategy { return NewFixed(st, StrategyConfig{MaxClockSkew: -1}) }},
	{StrategyTokenBucket, false, func(st Store) MultiStrategy { return NewTokenBucket(st, StrategyConfig{MaxClockSkew: -1}) }},
	{StrategySlidingLog, true, func(st Store) MultiStrategy { return NewSlidingLog(st, StrategyConfig{MaxClockSkew: -1}) }},
}

// hitsReq is a request of who, per minute.
func hitsReq(who string, limit, hits int64) Request {
	return Request{Requestor: who, Limit: limit, Window: time.Minute, Hits: hits}
}

// want is what a test expects of one decision: allowed, and Remaining;
// never marks a request that can never fit (RetryAfter is the window).
type want struct {
	allowed   bool
	remaining int64
	never     bool
}

// multiStep is one AllowAll call and what it must answer.
type multiStep struct {
	reqs    []Request
	want    []want
	wantErr bool
}

// TestAllowAll decides sets of requests with hits on every strategy, all
// at one instant (where the strategies agree), each step after the last.
func TestAllowAll(t *testing.T) {
	a := func(limit, hits int64) Request { return hitsReq("a", limit, hits) }
	b := func(limit, hits int64) Request { return hitsReq("b", limit, hits) }
	cases := []struct {
		name string
		// onlyShared: the case relies on a requestor's limits sharing one count.
		onlyShared bool
		steps      []multiStep
	}{
		{name: "hits fit and count", steps: []multiStep{
			{reqs: []Request{a(5, 3)}, want: []want{{allowed: true, remaining: 2}}},
			{reqs: []Request{a(5, 3)}, want: []want{{}}},
			{reqs: []Request{a(5, 2)}, want: []want{{allowed: true, remaining: 0}}},
			{reqs: []Request{a(5, 1)}, want: []want{{}}},
		}},
		{name: "zero hits is one", steps: []multiStep{
			{reqs: []Request{a(5, 0)}, want: []want{{allowed: true, remaining: 4}}},
		}},
		{name: "hits beyond the limit never fit and count nothing", steps: []multiStep{
			{reqs: []Request{a(5, 6)}, want: []want{{never: true}}},
			{reqs: []Request{a(5, 5)}, want: []want{{allowed: true, remaining: 0}}},
		}},
		{name: "a set counts only when every request has room", steps: []multiStep{
			{reqs: []Request{a(100, 1), b(1, 1)}, want: []want{{allowed: true, remaining: 99}, {allowed: true, remaining: 0}}},
			{reqs: []Request{a(100, 1), b(1, 1)}, want: []want{{allowed: true, remaining: 99}, {}}},
			{reqs: []Request{b(1, 1), a(100, 1)}, want: []want{{}, {allowed: true, remaining: 99}}},
			{reqs: []Request{a(100, 1)}, want: []want{{allowed: true, remaining: 98}}},
		}},
		{name: "a request that never fits makes its set count nothing", steps: []multiStep{
			{reqs: []Request{a(100, 1), b(5, 6)}, want: []want{{allowed: true, remaining: 100}, {never: true}}},
			{reqs: []Request{a(100, 1)}, want: []want{{allowed: true, remaining: 99}}},
			{reqs: []Request{b(5, 5)}, want: []want{{allowed: true, remaining: 0}}},
		}},
		{name: "one requestor twice in a set is counted together", steps: []multiStep{
			{reqs: []Request{a(3, 2), a(3, 2)}, want: []want{{never: true}, {never: true}}},
			{reqs: []Request{a(3, 1), a(3, 2)}, want: []want{{allowed: true, remaining: 0}, {allowed: true, remaining: 0}}},
			{reqs: []Request{a(3, 1)}, want: []want{{}}},
		}},
		{name: "one requestor under two limits", onlyShared: true, steps: []multiStep{
			{reqs: []Request{a(10, 1), a(2, 1)}, want: []want{{allowed: true, remaining: 8}, {allowed: true, remaining: 0}}},
			{reqs: []Request{a(10, 1), a(2, 1)}, want: []want{{allowed: true, remaining: 8}, {}}},
			{reqs: []Request{a(10, 1)}, want: []want{{allowed: true, remaining: 7}}},
		}},
		{name: "an empty set", steps: []multiStep{{}}},
		{name: "an invalid request fails its set and counts nothing", steps: []multiStep{
			{reqs: []Request{a(5, 1), b(0, 1)}, wantErr: true},
			{reqs: []Request{a(5, 1), b(5, -1)}, wantErr: true},
			{reqs: []Request{a(5, 1)}, want: []want{{allowed: true, remaining: 4}}},
		}},
	}
	for _, bl := range multiBuilders {
		for _, tc := range cases {
			if tc.onlyShared && !bl.sharedAcrossLimits {
				continue
			}
			t.Run(bl.name+"/"+tc.name, func(t *testing.T) {
				c := &clock{now: t0}
				mem := newTestStore(c.Now)
				t.Cleanup(func() { mem.Close() })
				s := bl.build(mem)
				now := t0.Add(10 * time.Second)
				c.Set(now)
				for i, st := range tc.steps {
					checkStep(t, i, s, st, now)
				}
			})
		}
	}
}

// checkStep runs one step and checks its answer.
func checkStep(t *testing.T, i int, s MultiStrategy, st multiStep, now time.Time) {
	t.Helper()
	ds, err := s.AllowAll(context.Background(), st.reqs, now)
	if st.wantErr {
		if err == nil {
			t.Fatalf("step %d: no error, want one", i)
		}
		return
	}
	if err != nil {
		t.Fatalf("step %d: %v", i, err)
	}
	if len(ds) != len(st.want) {
		t.Fatalf("step %d: %d decisions, want %d", i, len(ds), len(st.want))
	}
	for j, d := range ds {
		w, r := st.want[j], st.reqs[j]
		switch {
		case d.Allowed != w.allowed || d.Limit != r.Limit || d.Window != r.Window:
			t.Errorf("step %d request %d: %+v, want allowed=%v", i, j, d, w.allowed)
		case w.allowed && d.Remaining != w.remaining:
			t.Errorf("step %d request %d: remaining %d, want %d", i, j, d.Remaining, w.remaining)
		case !w.allowed && (d.Remaining != 0 || d.RetryAfter < time.Second):
			t.Errorf("step %d request %d: denied with %+v, want remaining 0 and a retry time", i, j, d)
		case w.never && d.RetryAfter != r.Window:
			t.Errorf("step %d request %d: retry %v, want the window for hits that never fit", i, j, d.RetryAfter)
		}
	}
}

// TestAllowIsAllowAllOfOne: Allow answers as AllowAll of the one request,
// step by step, on every strategy.
func TestAllowIsAllowAllOfOne(t *testing.T) {
	for _, bl := range multiBuilders {
		t.Run(bl.name, func(t *testing.T) {
			c := &clock{now: t0}
			mem1, mem2 := newTestStore(c.Now), newTestStore(c.Now)
			t.Cleanup(func() { mem1.Close(); mem2.Close() })
			one, all := bl.build(mem1), bl.build(mem2)
			req := hitsReq("a", 7, 2)
			for i := range 12 {
				now := t0.Add(time.Duration(i) * 1700 * time.Millisecond)
				c.Set(now)
				d1, err1 := one.Allow(context.Background(), req, now)
				ds, err2 := all.AllowAll(context.Background(), []Request{req}, now)
				if err1 != nil || err2 != nil || len(ds) != 1 || d1 != ds[0] {
					t.Fatalf("at %v: Allow %+v (%v), AllowAll %+v (%v)", now.Sub(t0), d1, err1, ds, err2)
				}
			}
		})
	}
}

// TestConcurrentReplicasAllowWhatOneWould: 300 concurrent decisions at one
// instant over 3 instances sharing a testStore, alone and in sets beside
// a request of the caller's own, allow exactly what one instance allows
// deciding them one after the other. (A decision whose swap lost a race
// once had given back a token it never took: 100 of 99.)
func TestConcurrentReplicasAllowWhatOneWould(t *testing.T) {
	shared := Request{Requestor: "shared", Limit: 100, Window: time.Hour}
	builders := append(slices.Clone(multiBuilders),
		// and the value strategies with the default skew
		multiBuilder{name: StrategyTokenBucket + "/default-skew", build: func(st Store) MultiStrategy { return NewTokenBucket(st, StrategyConfig{}) }},
		multiBuilder{name: StrategySlidingLog + "/default-skew", build: func(st Store) MultiStrategy { return NewSlidingLog(st, StrategyConfig{}) }},
	)
	for _, bl := range builders {
		for _, inSets := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/sets=%v", bl.name, inSets), func(t *testing.T) {
				set := func(i int) []Request {
					if !inSets {
						return []Request{shared}
					}
					return []Request{{Requestor: fmt.Sprint("own-", i), Limit: 1000, Window: time.Hour}, shared}
				}
				now := t0.Add(10 * time.Second)
				mem := newTestStore(nil)
				t.Cleanup(func() { mem.Close() })
				alone := bl.build(mem)
				want := 0
				for i := range 300 {
					if ds, err := alone.AllowAll(context.Background(), set(i), now); err == nil && ds[len(ds)-1].Allowed {
						want++
					}
				}
				for round := range 20 {
					mem := newTestStore(nil)
					insts := []MultiStrategy{bl.build(mem), bl.build(mem), bl.build(mem)}
					var allowed atomic.Int64
					var wg sync.WaitGroup
					for i := range 300 {
						wg.Go(func() {
							ds, err := insts[i%3].AllowAll(context.Background(), set(i), now)
							if err != nil {
								t.Error(err)
								return
							}
							if allAllowedIn(ds) {
								allowed.Add(1)
							}
						})
					}
					wg.Wait()
					mem.Close()
					if n := allowed.Load(); n != int64(want) {
						t.Fatalf("round %d: %d allowed, want exactly %d", round, n, want)
					}
				}
			})
		}
	}
}

func allAllowedIn(ds []Decision) bool {
	for _, d := range ds {
		if !d.Allowed {
			return false
		}
	}
	return true
}

// TestRememberedDenialsTrustedASecond: a remembered denial saves store
// round trips for a second after the store said so, and no longer (a set's
// counts that made it may be taken back); a denial from the memory does not
// renew it.
func TestRememberedDenialsTrustedASecond(t *testing.T) {
	for _, b := range builders {
		t.Run(b.name, func(t *testing.T) {
			r, req := usedUpRig(t, b.build)
			for _, step := range []struct {
				at    time.Duration // after the third request
				calls bool          // whether the store is asked
			}{
				{0, false}, {500 * time.Millisecond, false}, {999 * time.Millisecond, false},
				{time.Second, true}, {1500 * time.Millisecond, false}, {2100 * time.Millisecond, true},
			} {
				calls := r.store.calls()
				if d := r.at(t, 0, req, sec(1).Add(step.at)); d.Allowed {
					t.Fatalf("at +%v: allowed past the limit", step.at)
				}
				if asked := r.store.calls() > calls; asked != step.calls {
					t.Errorf("at +%v: store asked %v, want %v", step.at, asked, step.calls)
				}
			}
		})
	}
}
