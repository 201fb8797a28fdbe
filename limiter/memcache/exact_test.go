package memcache_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/internal/testutil"
	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/memcache"
)

// TestSlidingOnMemcachedExactUnderRaces sends bursts that straddle a second
// boundary through replicas that share one real memcached, some with
// clocks offset from the others (through the clock Allow takes, as a
// replica with a skewed clock would read it), and checks that every
// requestor gets exactly its limit: never more, whatever second each
// replica counts in, and no less, as the burst outlasts the race.
func TestSlidingOnMemcachedExactUnderRaces(t *testing.T) {
	const (
		identities = 40
		perID      = 300
		inFlight   = 600
		limit      = 100
	)
	ms := time.Millisecond
	cases := []struct {
		name    string
		offsets []time.Duration // each replica's clock, ahead of the true one
		skew    time.Duration   // SlidingConfig.MaxClockSkew; 0 for the default
		before  time.Duration   // the burst starts this long before a boundary
		minute  bool            // the boundary is a minute's, on the replicas' clocks
	}{
		{name: "3 replicas, 40ms before a boundary", offsets: []time.Duration{0, 0, 0}, before: 40 * ms},
		{name: "5 replicas, 20ms before a boundary", offsets: []time.Duration{0, 0, 0, 0, 0}, before: 20 * ms},
		{name: "clocks 0.3s either way", offsets: []time.Duration{-300 * ms, 0, 300 * ms}, before: 60 * ms},
		{name: "a clock 0.9s ahead", offsets: []time.Duration{0, 900 * ms, 0}, before: 30 * ms},
		{name: "a clock 0.9s behind", offsets: []time.Duration{0, -900 * ms, 0}, before: 30 * ms},
		{name: "clocks 0.9s either way, 2s bound", offsets: []time.Duration{-900 * ms, 0, 900 * ms}, skew: 2 * time.Second, before: 50 * ms},
		// A window of an hour keeps minute aggregates, whose counts decide
		// within a minute: at a minute's boundary the fresh seconds of the
		// other minute are read beside them.
		{name: "3 replicas, 40ms before a minute boundary", offsets: []time.Duration{0, 0, 0}, before: 40 * ms, minute: true},
		{name: "clocks 0.9s either way, 2s bound, a minute boundary", offsets: []time.Duration{-900 * ms, 0, 900 * ms}, skew: 2 * time.Second, before: 50 * ms, minute: true},
	}
	mc := testutil.StartMemcached(t)
	for ci, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var reps []*limiter.Sliding
			for range tc.offsets {
				st, err := memcache.New([]string{mc.Addr()}, memcache.Config{Timeout: 5 * time.Second})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { st.Close() })
				// A loaded CI machine under -race: allow slow answers,
				// which only widens the seconds read as unsettled.
				s := limiter.NewSliding(st, limiter.SlidingConfig{MaxClockSkew: tc.skew, MaxDecisionTime: 3 * time.Second})
				t.Cleanup(func() { s.Close() })
				reps = append(reps, s)
			}
			// Start tc.before ahead of the next boundary of the true clock.
			now := time.Now()
			next := now.Truncate(time.Second).Add(time.Second)
			if next.Sub(now) < tc.before+5*ms {
				next = next.Add(time.Second)
			}
			// For a minute's boundary, the replicas' clocks are moved on by
			// the whole seconds that make next one.
			var shift time.Duration
			if tc.minute {
				shift = time.Duration((60-next.Unix()%60)%60) * time.Second
			}
			startAt := time.NewTimer(time.Until(next.Add(-tc.before)))
			defer startAt.Stop()

			type check struct{ id, rep int }
			work := make(chan check)
			var allowed [identities]atomic.Int64
			var errs atomic.Int64
			var wg sync.WaitGroup
			for range inFlight {
				wg.Go(func() {
					for c := range work {
						req := limiter.Request{Scope: fmt.Sprintf("case%d", ci), Requestor: fmt.Sprintf("id-%d", c.id), Limit: limit, Window: time.Hour}
						d, err := reps[c.rep].Allow(context.Background(), req, time.Now().Add(shift+tc.offsets[c.rep]))
						if err != nil {
							if errs.Add(1) == 1 {
								t.Errorf("check of id-%d on replica %d: %v", c.id, c.rep, err)
							}
							continue
						}
						if d.Allowed {
							allowed[c.id].Add(1)
						}
					}
				})
			}
			<-startAt.C
			for i := range identities * perID {
				work <- check{id: i % identities, rep: (i / identities) % len(reps)}
			}
			close(work)
			wg.Wait()
			if n := errs.Load(); n > 0 {
				t.Fatalf("%d checks failed", n)
			}
			for id := range identities {
				if n := allowed[id].Load(); n != limit {
					t.Errorf("id-%d: %d allowed of %d, want exactly %d", id, n, perID, limit)
				}
			}
		})
	}
}
