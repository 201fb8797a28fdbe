package resilient_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/internal/testutil"
	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/memcache"
	"github.com/floodgate-rl/floodgate/limiter/resilient"
)

// recoveryDeadline bounds how long an idle breaker may take to close once
// a real memcached is back: its probes come at most every
// DefaultMaxBackoff (500ms), and a probe is one read; the rest is slack for
// a loaded machine.
const recoveryDeadline = 2 * time.Second

// TestBreakerRecoversIdle runs a Breaker with its defaults on a real
// memcached that fails (frozen with SIGSTOP, or killed) and comes back
// while nobody calls: the breaker must close on its own, so that the next
// burst of checks counts in memcached instead of the per-replica fallback.
func TestBreakerRecoversIdle(t *testing.T) {
	for _, tc := range []struct {
		name       string
		fail, back func(*testutil.Memcached)
	}{
		{"frozen", (*testutil.Memcached).Freeze, (*testutil.Memcached).Thaw},
		{"stopped", (*testutil.Memcached).Stop, (*testutil.Memcached).Restart},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mc := testutil.StartMemcached(t)
			mem, err := memcache.New([]string{mc.Addr()}, memcache.Config{Timeout: 100 * time.Millisecond})
			if err != nil {
				t.Fatalf("memcache.New: %v", err)
			}
			t.Cleanup(func() { mem.Close() })
			trs := &transitions{}
			b := resilient.NewBreaker(mem, resilient.BreakerConfig{OnTransition: trs.record})
			t.Cleanup(func() { b.Close() })
			ctx := context.Background()
			if _, err := b.Add(ctx, "fg1:idle:1", 1, time.Minute); err != nil {
				t.Fatalf("Add with memcached up: %v", err)
			}

			tc.fail(mc)
			for i := 0; b.State() == resilient.Closed; i++ {
				if i == 2*resilient.DefaultFailures {
					t.Fatalf("still closed after %d calls to a failed memcached", i)
				}
				if _, err := b.Add(ctx, "fg1:idle:1", 1, time.Minute); !errors.Is(err, limiter.ErrStoreUnavailable) {
					t.Fatalf("Add %d with memcached failed: %v, want ErrStoreUnavailable", i+1, err)
				}
			}
			// A few failed probes, with no calls.
			testutil.WaitFor(t, 5*time.Second, func() error {
				if n, s := countTo(trs, resilient.HalfOpen), b.State(); n < 2 || s != resilient.Open {
					return fmt.Errorf("%d probes and state %v, want a failed probe: 2 or more, and open", n, s)
				}
				return nil
			})

			tc.back(mc)
			back := time.Now()
			testutil.WaitFor(t, recoveryDeadline, func() error {
				if s := b.State(); s != resilient.Closed {
					return fmt.Errorf("state %v after memcached came back, with no call; want closed", s)
				}
				return nil
			})
			t.Logf("closed %v after memcached came back; transitions %s", time.Since(back).Round(time.Millisecond), trs.path())
			if n := b.Rejected(); n != 0 {
				t.Errorf("Rejected = %d, want 0: no call was made while open", n)
			}
			if _, err := b.Add(ctx, "fg1:idle:1", 1, time.Minute); err != nil {
				t.Errorf("Add after the breaker closed: %v", err)
			}
		})
	}
}

// countTo returns how many recorded transitions entered to.
func countTo(trs *transitions, to resilient.State) int {
	n := 0
	for _, tr := range trs.list() {
		if tr.To == to {
			n++
		}
	}
	return n
}
