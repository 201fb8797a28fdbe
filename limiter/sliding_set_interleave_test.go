package limiter

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// setRace is one scenario of sets racing on replicas with skewed clocks:
// requests allowed one after the other first (to fill some limits), then
// the racing sets, each on a replica at a true time.
type setRace struct {
	name    string
	skew    time.Duration   // SlidingConfig.MaxClockSkew
	offsets []time.Duration // each replica's clock, ahead of true time
	before  []Request       // allowed in turn on replica 0 at true time 9
	racing  []racingSet
	exhaust bool // every schedule (else schedule random ones)
	runs    int
}

type racingSet struct {
	rep     int
	trueSec float64
	reqs    []Request
}

// run runs one schedule and returns, per requestor, how many hits the
// allowed sets (and before) counted, and the store's second counters.
func (sc setRace) run(t *testing.T, c *chooser) (map[string]int64, map[string]map[int64]int64) {
	want := map[string]int64{}
	buckets := map[string]map[int64]int64{}
	synctest.Test(t, func(t *testing.T) {
		store := newSchedStore()
		reps := store.replicas(len(sc.offsets), sc.skew)
		at := skewedAt(sc.offsets)
		grantAll := func() {
			for {
				synctest.Wait()
				r := store.ready()
				if len(r) == 0 {
					return
				}
				for _, st := range r {
					close(st.grant)
				}
			}
		}
		for i, r := range sc.before {
			done := make(chan struct{})
			go func() {
				defer close(done)
				ctx := context.WithValue(context.Background(), decisionKey{}, -1-i)
				if d, err := reps[0].Allow(ctx, r, at(9, 0)); err != nil || !d.Allowed {
					t.Errorf("before %d: %+v %v", i, d, err)
				}
			}()
			grantAll()
			<-done
			want[r.Requestor] += r.HitsOf()
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i, rs := range sc.racing {
			ctx := context.WithValue(context.Background(), decisionKey{}, i)
			wg.Go(func() {
				ds, err := reps[rs.rep].AllowAll(ctx, rs.reqs, at(rs.trueSec, rs.rep))
				if err != nil {
					t.Errorf("set %d: %v", i, err)
					return
				}
				if allAllowedIn(ds) {
					mu.Lock()
					for _, r := range rs.reqs {
						want[r.Requestor] += r.HitsOf()
					}
					mu.Unlock()
				}
			})
		}
		for {
			synctest.Wait()
			r := store.ready()
			if len(r) == 0 {
				break
			}
			i := c.next(len(r))
			close(r[i].grant)
			store.requeue(append(r[:i:i], r[i+1:]...))
		}
		wg.Wait()
		for name := range want {
			buckets[name] = store.seconds(RequestorID("", 5, name))
		}
		for _, rs := range sc.racing {
			for _, r := range rs.reqs {
				buckets[r.Requestor] = store.seconds(RequestorID("", 5, r.Requestor))
			}
		}
	})
	return want, buckets
}

// TestSlidingSetInterleavings explores the orders in which the store steps
// of racing sets (a shared requestor and one of each set's own, some of
// them already at their limit) interleave on replicas with skewed clocks.
// In each, every requestor's counters hold exactly the hits of the sets
// allowed whole (a denied set leaves nothing anywhere), and no window
// of the shared requestor holds more than its limit.
func TestSlidingSetInterleavings(t *testing.T) {
	w := 5 * time.Second
	r := func(name string, limit, hits int64) Request {
		return Request{Requestor: name, Limit: limit, Window: w, Hits: hits}
	}
	cases := []setRace{
		{name: "a set denied by its own request beside one allowed, limit 1", offsets: []time.Duration{0, 0},
			before: []Request{r("own0", 1, 1)},
			racing: []racingSet{{0, 10.2, []Request{r("shared", 1, 1), r("own0", 1, 1)}}, {1, 10.3, []Request{r("own1", 1, 1), r("shared", 1, 1)}}},
			runs:   20000},
		{name: "three sets over a boundary, clocks 0.3s apart, limit 2", offsets: []time.Duration{-300 * time.Millisecond, 0, 300 * time.Millisecond},
			before: []Request{r("own1", 1, 1)},
			racing: []racingSet{
				{0, 9.95, []Request{r("shared", 2, 1), r("own0", 1, 1)}},
				{1, 10.0, []Request{r("shared", 2, 1), r("own1", 1, 1)}},
				{2, 10.05, []Request{r("own2", 1, 1), r("shared", 2, 1)}},
			}, runs: 5000},
		{name: "hits and a requestor twice in a set, a clock 0.9s ahead, limit 2", offsets: []time.Duration{0, 900 * time.Millisecond},
			racing: []racingSet{
				{0, 10.5, []Request{r("shared", 2, 1), r("shared", 2, 1)}},
				{1, 10.5, []Request{r("shared", 2, 1), r("own1", 1, 1)}},
				{0, 10.6, []Request{r("own2", 3, 2), r("shared", 2, 1)}},
			}, runs: 5000},
	}
	for _, sc := range cases {
		t.Run(sc.name, func(t *testing.T) {
			limit := int64(1 << 62) // the shared requestor's smallest limit
			for _, rs := range sc.racing {
				for _, r := range rs.reqs {
					if r.Requestor == "shared" {
						limit = min(limit, r.Limit)
					}
				}
			}
			c := &chooser{}
			if !sc.exhaust {
				c.rng = rand.New(rand.NewPCG(2, uint64(len(sc.name))))
			}
			for runs := 1; ; runs++ {
				want, buckets := sc.run(t, c)
				if t.Failed() {
					t.Fatalf("schedule %v", c.path)
				}
				for name, bs := range buckets {
					var left int64
					for _, n := range bs {
						left += n
					}
					if left != want[name] {
						t.Fatalf("schedule %v: %s: %d hits left counted, want the %d of the sets allowed (buckets %v)", c.path, name, left, want[name], bs)
					}
				}
				for sec := range buckets["shared"] {
					var in int64
					for s, n := range buckets["shared"] {
						if s >= sec && s < sec+int64(w/time.Second) {
							in += n
						}
					}
					if in > limit {
						t.Fatalf("schedule %v: %d in the window from %d, limit %d", c.path, in, sec-t0.Unix(), limit)
					}
				}
				if sc.exhaust && runs > 100000 {
					t.Fatalf("more than %d schedules: not a small case", runs)
				}
				if sc.exhaust && !c.advance() || !sc.exhaust && runs >= sc.runs {
					t.Logf("%d schedules", runs)
					return
				}
				if !sc.exhaust {
					c.path, c.width = c.path[:0], c.width[:0]
				}
			}
		})
	}
}
