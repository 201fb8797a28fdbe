package memcache_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/internal/testutil"
	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/memcache"
)

// slidingReplicas returns n Sliding instances, each on its own memcached
// client of mc, as n replicas would be.
func slidingReplicas(t *testing.T, mc *testutil.Memcached, n int) ([]*limiter.Sliding, *memcache.Store) {
	t.Helper()
	var reps []*limiter.Sliding
	var st *memcache.Store
	for range n {
		var err error
		st, err = memcache.New([]string{mc.Addr()}, memcache.Config{Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		// A loaded CI machine under -race: allow slow answers, as
		// TestSlidingOnMemcachedExactUnderRaces does.
		s := limiter.NewSliding(st, limiter.SlidingConfig{MaxDecisionTime: 3 * time.Second})
		t.Cleanup(func() { s.Close() })
		reps = append(reps, s)
	}
	return reps, st
}

// counted reads what memcached holds for req's requestor in the seconds
// from from to to: the sum of its second counters.
func counted(t *testing.T, st *memcache.Store, req limiter.Request, from, to time.Time) int64 {
	t.Helper()
	id := limiter.RequestorID(req.Scope, int64(req.Window/time.Second), req.Requestor)
	var keys []string
	for sec := from.Unix(); sec <= to.Unix(); sec++ {
		keys = append(keys, limiter.KeyPrefix+id+":"+strconv.FormatInt(sec, 10))
	}
	vals, err := st.Get(context.Background(), keys)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, v := range vals {
		n += v
	}
	return n
}

// allowSets sends sets(i) for i in [0, n) through 600 concurrent callers,
// round robin over reps, and returns how many sets were allowed whole.
func allowSets(t *testing.T, reps []*limiter.Sliding, n int, sets func(i int) []limiter.Request) int64 {
	t.Helper()
	const inFlight = 600
	work := make(chan int)
	var allowed, errs atomic.Int64
	var wg sync.WaitGroup
	for range inFlight {
		wg.Go(func() {
			for i := range work {
				ds, err := reps[i%len(reps)].AllowAll(context.Background(), sets(i), time.Now())
				if err != nil {
					if errs.Add(1) == 1 {
						t.Errorf("set %d: %v", i, err)
					}
					continue
				}
				whole := true
				for _, d := range ds {
					whole = whole && d.Allowed
				}
				if whole {
					allowed.Add(1)
				}
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	if n := errs.Load(); n > 0 {
		t.Fatalf("%d sets failed", n)
	}
	return allowed.Load()
}

// TestSlidingSetsOnMemcachedExact: 600 concurrent sets over 3 replicas,
// each of one descriptor all share (limit 100) and one of the caller's own
// (a limit it never reaches), allow exactly 100 sets, and memcached holds
// exactly 100 for the shared one afterwards: a denied set counts nothing,
// and no set is denied because another was counted and undone.
func TestSlidingSetsOnMemcachedExact(t *testing.T) {
	mc := testutil.StartMemcached(t)
	reps, st := slidingReplicas(t, mc, 3)
	shared := limiter.Request{Scope: "sets", Requestor: "descriptor:shared", Limit: 100, Window: time.Hour}
	from := time.Now().Add(-5 * time.Second)
	n := allowSets(t, reps, 600, func(i int) []limiter.Request {
		own := limiter.Request{Scope: "sets", Requestor: fmt.Sprint("caller:", i), Limit: 1_000_000, Window: time.Hour}
		if i%2 == 0 {
			return []limiter.Request{shared, own}
		}
		return []limiter.Request{own, shared}
	})
	if n != shared.Limit {
		t.Errorf("%d sets allowed, want exactly %d", n, shared.Limit)
	}
	if got := counted(t, st, shared, from, time.Now().Add(5*time.Second)); got != shared.Limit {
		t.Errorf("memcached counts %d for the shared descriptor, want exactly %d", got, shared.Limit)
	}
}

// TestSlidingSetOverItsLimitCountsNothing: sets whose second request is
// always over its limit (exhausted before, or more hits than it allows)
// never count their first, over 3 replicas; afterwards the first alone
// gets exactly its limit.
func TestSlidingSetOverItsLimitCountsNothing(t *testing.T) {
	mc := testutil.StartMemcached(t)
	cases := []struct {
		name string
		full limiter.Request // the request over its limit
		fill int             // requests of it allowed before the sets
	}{
		{name: "exhausted", full: limiter.Request{Scope: "over", Requestor: "full", Limit: 1, Window: time.Hour}, fill: 1},
		{name: "more hits than its limit", full: limiter.Request{Scope: "over", Requestor: "greedy", Limit: 5, Window: time.Hour, Hits: 6}},
	}
	for ci, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reps, st := slidingReplicas(t, mc, 3)
			first := limiter.Request{Scope: "over", Requestor: fmt.Sprint("first-", ci), Limit: 100, Window: time.Hour}
			from := time.Now().Add(-5 * time.Second)
			for range tc.fill {
				if d, err := reps[0].Allow(context.Background(), tc.full, time.Now()); err != nil || !d.Allowed {
					t.Fatalf("filling: %+v, %v", d, err)
				}
			}
			if n := allowSets(t, reps, 300, func(int) []limiter.Request { return []limiter.Request{first, tc.full} }); n != 0 {
				t.Errorf("%d sets allowed, want none", n)
			}
			if got := counted(t, st, first, from, time.Now().Add(5*time.Second)); got != 0 {
				t.Errorf("memcached counts %d for the first request, want 0", got)
			}
			if n := allowSets(t, reps, 150, func(int) []limiter.Request { return []limiter.Request{first} }); n != first.Limit {
				t.Errorf("the first alone: %d allowed, want exactly %d", n, first.Limit)
			}
		})
	}
}
