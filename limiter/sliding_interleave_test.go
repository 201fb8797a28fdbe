package limiter

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// schedStore is a counter Store whose every step waits for a scheduler
// (Sliding uses no value methods, and they fail if called): a Batch is a
// step for each of its adds and then one for its reads, each applied
// atomically when granted, so that a test decides the order in which the steps of
// concurrent decisions reach the store, as memcached's connections would
// interleave them. Steps are told apart by the decision index that each
// decision's context carries.
type schedStore struct {
	mu      sync.Mutex
	vals    map[string]int64
	waiting []*step
}

type step struct {
	decision int
	seq      int    // steps of the decision so far, for a deterministic order
	key      string // the first key it touches: orders the concurrent steps of one set
	grant    chan struct{}
}

type decisionKey struct{}

// errNoValues is what schedStore's value methods return.
var errNoValues = fmt.Errorf("schedStore: %w: no values here", ErrStoreUnavailable)

func (s *schedStore) GetVersioned(context.Context, string) ([]byte, uint64, error) {
	return nil, 0, errNoValues
}

func (s *schedStore) CompareAndSwap(context.Context, string, []byte, uint64, time.Duration) (bool, error) {
	return false, errNoValues
}

// replicas returns n Sliding replicas on s with the given skew bound,
// which never pause before trying again and never find a decision slow:
// the schedule alone decides what happens.
func (s *schedStore) replicas(n int, skew time.Duration) []*Sliding {
	reps := make([]*Sliding, n)
	for i := range reps {
		reps[i] = NewSliding(s, SlidingConfig{MaxClockSkew: skew})
		reps[i].pause = func(context.Context) bool { return true }
		reps[i].since = func(time.Time) time.Duration { return 0 }
	}
	return reps
}

// skewedAt returns the instant replica rep reads at trueSec seconds after
// t0, its clock offset by offsets[rep].
func skewedAt(offsets []time.Duration) func(trueSec float64, rep int) time.Time {
	return func(trueSec float64, rep int) time.Time {
		return t0.Add(time.Duration(trueSec*float64(time.Second)) + offsets[rep])
	}
}

func newSchedStore() *schedStore { return &schedStore{vals: map[string]int64{}} }

func (s *schedStore) wait(ctx context.Context, seq int, key string) {
	st := &step{decision: ctx.Value(decisionKey{}).(int), seq: seq, key: key, grant: make(chan struct{})}
	s.mu.Lock()
	s.waiting = append(s.waiting, st)
	s.mu.Unlock()
	<-st.grant
}

// ready removes and returns the waiting steps in decision order.
func (s *schedStore) ready() []*step {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.waiting
	s.waiting = nil
	slices.SortFunc(r, func(a, b *step) int {
		if a.decision != b.decision {
			return a.decision - b.decision
		}
		return strings.Compare(a.key, b.key)
	})
	return r
}

func (s *schedStore) requeue(steps []*step) {
	s.mu.Lock()
	s.waiting = append(s.waiting, steps...)
	s.mu.Unlock()
}

func (s *schedStore) add(key string, delta int64) int64 {
	v := max(s.vals[key]+delta, 0)
	if s.vals[key] == 0 && delta <= 0 {
		return 0
	}
	s.vals[key] = v
	return v
}

func (s *schedStore) Add(ctx context.Context, key string, delta int64, _ time.Duration) (int64, error) {
	s.wait(ctx, 0, key)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.add(key, delta), nil
}

func (s *schedStore) Get(ctx context.Context, keys []string) (map[string]int64, error) {
	s.wait(ctx, 0, keys[0])
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int64{}
	for _, k := range keys {
		if v, ok := s.vals[k]; ok && v > 0 {
			out[k] = v
		}
	}
	return out, nil
}

func (s *schedStore) Batch(ctx context.Context, gets []string, adds []Increment) (map[string]int64, []int64, error) {
	// Each increment is a step of its own: memcached runs a connection's
	// commands in order, but other connections' commands may come between
	// them (a decision's second and its minute, say).
	var counts []int64
	for _, a := range adds {
		s.wait(ctx, 0, a.Key)
		s.mu.Lock()
		counts = append(counts, s.add(a.Key, a.Delta))
		s.mu.Unlock()
	}
	var vals map[string]int64
	if len(gets) > 0 {
		var err error
		if vals, err = s.Get(ctx, gets); err != nil {
			return nil, nil, err
		}
	}
	return vals, counts, nil
}

// seconds returns the store's second counters of one requestor id by
// second.
func (s *schedStore) seconds(id string) map[int64]int64 {
	out := map[int64]int64{}
	for k, v := range s.vals {
		rest, ok := strings.CutPrefix(k, KeyPrefix+id+":")
		if !ok || strings.HasPrefix(rest, "m") {
			continue
		}
		sec, err := strconv.ParseInt(rest, 10, 64)
		if err == nil && v > 0 {
			out[sec] = v
		}
	}
	return out
}

// chooser walks the tree of schedules depth first: each run replays a
// prefix of choices and extends it with first choices.
type chooser struct {
	path  []int // choices made in this run
	width []int // how many were possible at each
	rng   *rand.Rand
}

func (c *chooser) next(n int) int {
	i := len(c.width)
	c.width = append(c.width, n)
	if i < len(c.path) {
		return c.path[i]
	}
	choice := 0
	if c.rng != nil {
		choice = c.rng.IntN(n)
	}
	c.path = append(c.path, choice)
	return choice
}

// advance moves to the next schedule in depth-first order; false when every
// schedule has been run.
func (c *chooser) advance() bool {
	for i := len(c.path) - 1; i >= 0; i-- {
		if c.path[i]+1 < c.width[i] {
			c.path = append(c.path[:i], c.path[i]+1)
			c.width = c.width[:0]
			return true
		}
	}
	return false
}

// interleaving is one scenario: replicas with their clock offsets, requests
// already counted (sequentially, before the race), and the racing
// decisions.
type interleaving struct {
	name     string
	limit    int64
	window   time.Duration
	skew     time.Duration   // SlidingConfig.MaxClockSkew
	offsets  []time.Duration // each replica's clock, ahead of true time
	before   []float64       // true times of sequential requests on replica 0
	racing   [][2]float64    // replica index and true time of each racing decision
	exhaust  bool            // every schedule (else budget random ones)
	schedule int             // the most schedules to run
}

// run runs one schedule and returns the decisions' results and the
// store's counters.
func (sc interleaving) run(t *testing.T, c *chooser) (allowed int64, buckets map[int64]int64) {
	synctest.Test(t, func(t *testing.T) {
		store := newSchedStore()
		reps := store.replicas(len(sc.offsets), sc.skew)
		req := Request{Requestor: "r", Limit: sc.limit, Window: sc.window}
		at := skewedAt(sc.offsets)
		drive := func() {
			for {
				synctest.Wait()
				r := store.ready()
				if len(r) == 0 {
					return
				}
				i := c.next(len(r))
				close(r[i].grant)
				store.requeue(append(r[:i:i], r[i+1:]...))
			}
		}
		for i, ts := range sc.before {
			ctx := context.WithValue(context.Background(), decisionKey{}, -1-i)
			done := make(chan struct{})
			go func() {
				defer close(done)
				if _, err := reps[0].Allow(ctx, req, at(ts, 0)); err != nil {
					t.Errorf("before %d: %v", i, err)
				}
			}()
			for {
				synctest.Wait()
				r := store.ready()
				if len(r) == 0 {
					break
				}
				for _, st := range r {
					close(st.grant)
				}
			}
			<-done
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i, d := range sc.racing {
			rep := int(d[0])
			ctx := context.WithValue(context.Background(), decisionKey{}, i)
			wg.Go(func() {
				dec, err := reps[rep].Allow(ctx, req, at(d[1], rep))
				if err != nil {
					t.Errorf("decision %d: %v", i, err)
					return
				}
				if dec.Allowed {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			})
		}
		drive()
		wg.Wait()
		buckets = store.seconds(RequestorID("", int64(sc.window/time.Second), "r"))
	})
	return allowed, buckets
}

// TestSlidingInterleavings explores the orders in which the store steps of
// concurrent decisions on replicas with skewed clocks can interleave: every
// order for small cases, many random ones for larger. In each, no run of
// Window consecutive seconds may hold more than Limit requests once all
// decisions are done (denied ones are undone, so what is left is what was
// allowed), and the decisions must have allowed exactly what is left.
func TestSlidingInterleavings(t *testing.T) {
	cases := []interleaving{
		{name: "two replicas straddle a second, limit 1", limit: 1, window: 5 * time.Second, offsets: []time.Duration{0, 0},
			racing: [][2]float64{{0, 9.99}, {1, 10.01}}, exhaust: true},
		{name: "three replicas straddle a second, limit 2", limit: 2, window: 5 * time.Second, offsets: []time.Duration{0, 0, 0},
			racing: [][2]float64{{0, 9.99}, {1, 10.01}, {2, 10.02}}, schedule: 4000},
		{name: "clocks 0.9s apart, settled history, limit 2", limit: 2, window: 6 * time.Second, offsets: []time.Duration{0, 900 * time.Millisecond},
			before: []float64{4.5}, racing: [][2]float64{{0, 10.5}, {1, 10.5}, {1, 10.6}}, schedule: 4000},
		{name: "clocks 0.3s apart either way, limit 2", limit: 2, window: 4 * time.Second, offsets: []time.Duration{-300 * time.Millisecond, 0, 300 * time.Millisecond},
			racing: [][2]float64{{0, 10.1}, {1, 10.1}, {2, 10.8}, {2, 10.9}}, schedule: 4000},
		{name: "clocks 1.8s apart with a 2s bound, limit 2", limit: 2, window: 5 * time.Second, skew: 2 * time.Second,
			offsets: []time.Duration{-900 * time.Millisecond, 900 * time.Millisecond},
			before:  []float64{8.5}, racing: [][2]float64{{0, 10.5}, {1, 10.5}, {0, 10.6}, {1, 10.7}}, schedule: 4000},
		{name: "one minute window, limit 3, a burst over a boundary", limit: 3, window: time.Minute, offsets: []time.Duration{0, 200 * time.Millisecond, -500 * time.Millisecond},
			before: []float64{20, 50}, racing: [][2]float64{{0, 59.9}, {1, 59.9}, {2, 60.1}, {0, 60.2}}, schedule: 4000},
		// Windows of three minutes and more keep minute aggregates beside
		// the seconds: every decision changes both. Requests before, in
		// the same minute and in the one before it.
		{name: "three-minute window with minute aggregates, limit 5", limit: 5, window: 3 * time.Minute,
			offsets: []time.Duration{0, 300 * time.Millisecond, -300 * time.Millisecond},
			before:  []float64{70, 95}, racing: [][2]float64{{0, 100.1}, {1, 100.2}, {2, 100.3}, {0, 100.4}, {1, 100.5}}, schedule: 4000},
		{name: "three-minute window with minute aggregates, clocks 0.9s apart, limit 3", limit: 3, window: 3 * time.Minute,
			offsets: []time.Duration{-900 * time.Millisecond, 0},
			before:  []float64{90}, racing: [][2]float64{{0, 110.5}, {1, 110.5}, {0, 110.6}, {1, 110.7}}, schedule: 4000},
		{name: "three-minute window, two replicas, limit 2, every schedule", limit: 2, window: 3 * time.Minute,
			offsets: []time.Duration{0, 0}, before: []float64{75}, racing: [][2]float64{{0, 100.1}, {1, 100.2}}, exhaust: true},
		// At a minute's boundary a count reads the fresh seconds outside its
		// minute beside the minute's own count, and replicas on either side
		// of the boundary count in different aggregates.
		{name: "three-minute window, a burst over a minute boundary, limit 1", limit: 1, window: 3 * time.Minute,
			offsets: []time.Duration{0, 0}, racing: [][2]float64{{0, 119.99}, {1, 120.01}, {0, 120.02}}, schedule: 20000},
		{name: "three-minute window, two in a minute and one in the next, limit 2", limit: 2, window: 3 * time.Minute,
			offsets: []time.Duration{0, 0, 0}, racing: [][2]float64{{0, 119.5}, {1, 119.6}, {2, 120.2}}, schedule: 20000},
		{name: "three-minute window, a minute boundary, clocks 0.9s either way, limit 3", limit: 3, window: 3 * time.Minute,
			offsets: []time.Duration{0, 900 * time.Millisecond, -900 * time.Millisecond},
			before:  []float64{70, 100}, racing: [][2]float64{{0, 119.8}, {1, 119.9}, {2, 120.1}, {0, 120.3}, {1, 120.5}}, schedule: 4000},
		{name: "three-minute window, a minute boundary, clocks 1.8s apart with a 2s bound, limit 2", limit: 2, window: 3 * time.Minute, skew: 2 * time.Second,
			offsets: []time.Duration{-900 * time.Millisecond, 900 * time.Millisecond},
			before:  []float64{117.5}, racing: [][2]float64{{0, 119.5}, {1, 119.5}, {0, 120.6}, {1, 120.7}}, schedule: 4000},
	}
	for _, sc := range cases {
		t.Run(sc.name, func(t *testing.T) {
			c := &chooser{}
			if !sc.exhaust {
				c.rng = rand.New(rand.NewPCG(1, uint64(len(sc.name))))
			}
			w := int64(sc.window / time.Second)
			runs, minAllowed := 0, int64(1<<62)
			for {
				runs++
				allowed, buckets := sc.run(t, c)
				if t.Failed() {
					t.Fatalf("schedule %v", c.path)
				}
				var left int64
				for sec, n := range buckets {
					left += n
					var in int64
					for s, m := range buckets {
						if s >= sec && s < sec+w {
							in += m
						}
					}
					if in > sc.limit {
						t.Fatalf("schedule %v: %d requests in the %ds from second %d, limit %d (buckets %v)", c.path, in, w, sec-t0.Unix(), sc.limit, buckets)
					}
				}
				if want := allowed + int64(len(sc.before)); left != want {
					t.Fatalf("schedule %v: %d requests left counted, want %d allowed (buckets %v)", c.path, left, want, buckets)
				}
				minAllowed = min(minAllowed, allowed)
				if sc.exhaust {
					if !c.advance() {
						break
					}
					if runs > 200000 {
						t.Fatalf("more than %d schedules: not a small case", runs)
					}
				} else {
					if runs >= sc.schedule {
						break
					}
					c.path, c.width = c.path[:0], c.width[:0]
				}
			}
			t.Logf("%d schedules; fewest allowed in one: %d", runs, minAllowed)
		})
	}
}
