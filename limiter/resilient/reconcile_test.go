package resilient_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/internal/testutil"
	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/memory"
	"github.com/floodgate-rl/floodgate/limiter/resilient"
)

// fallbackRig is a Fallback whose primary counts in a store that a test
// takes down and brings back, with no breaker in between, and whose local
// strategy counts in memory.
type fallbackRig struct {
	clk   *clock
	store *flakyStore
	f     *resilient.Fallback
}

func newFallbackRig(t *testing.T, cfg resilient.FallbackConfig) *fallbackRig {
	t.Helper()
	clk := newClock()
	store := newFlakyStore(t, clk.Now)
	mem := memory.New(clk.Now)
	t.Cleanup(func() { mem.Close() })
	cfg.Now = clk.Now
	f := resilient.NewFallback(limiter.NewSliding(store, limiter.SlidingConfig{}), limiter.NewSliding(mem, limiter.SlidingConfig{}), cfg)
	t.Cleanup(func() { f.Close() })
	return &fallbackRig{clk: clk, store: store, f: f}
}

func (r *fallbackRig) decide(t *testing.T, req limiter.Request) (limiter.Decision, string) {
	t.Helper()
	d, reason, err := r.f.AllowDegraded(context.Background(), req, r.clk.Now())
	if err != nil {
		t.Fatalf("AllowDegraded: %v", err)
	}
	return d, reason
}

// TestFallbackStartsFromKnowledge: when the store fails, a requestor at its
// limit stays limited, one that used part of it keeps the rest, and one
// this replica never saw gets the limit, whether the requests it knows of
// are settled or still fresh.
func TestFallbackStartsFromKnowledge(t *testing.T) {
	for _, tc := range []struct {
		name      string
		used      int64         // requests allowed through the store first
		gap       time.Duration // between them and the failure
		wantLocal int64         // allowed locally afterwards
	}{
		{name: "at its limit, fresh", used: 5, gap: time.Second, wantLocal: 0},
		{name: "at its limit, settled", used: 5, gap: 20 * time.Second, wantLocal: 0},
		{name: "half used, fresh", used: 2, gap: 0, wantLocal: 3},
		{name: "half used, settled", used: 2, gap: time.Minute, wantLocal: 3},
		{name: "never seen", used: 0, wantLocal: 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newFallbackRig(t, resilient.FallbackConfig{Reason: "memcached-unavailable"})
			req := limiter.Request{Requestor: "client", Limit: 5, Window: time.Hour}
			for i := range tc.used {
				if d, reason := r.decide(t, req); !d.Allowed || reason != "" {
					t.Fatalf("request %d through the store: %+v %q", i, d, reason)
				}
			}
			r.clk.Advance(tc.gap)
			if tc.gap >= 20*time.Second {
				// A decision through the store settles what it knows.
				other := req
				other.Limit = 1000
				r.decide(t, other)
				tc.used++
				tc.wantLocal = max(tc.wantLocal-1, 0)
			}
			r.store.down.Store(true)
			var allowed int64
			for range 10 {
				d, reason := r.decide(t, req)
				if reason != "memcached-unavailable" {
					t.Fatalf("reason %q, want memcached-unavailable", reason)
				}
				if d.Allowed {
					allowed++
				} else if d.RetryAfter < time.Second || d.RetryAfter > req.Window+5*time.Second {
					t.Fatalf("local denial: RetryAfter %v", d.RetryAfter)
				}
			}
			if allowed != tc.wantLocal {
				t.Errorf("%d allowed locally after %d through the store, want %d", allowed, tc.used, tc.wantLocal)
			}
		})
	}
}

// TestFallbackCharges: what was allowed locally is charged to the store when
// it answers again, in the seconds it was allowed in, before the store
// decides; what left the window meanwhile is dropped and counted.
func TestFallbackCharges(t *testing.T) {
	r := newFallbackRig(t, resilient.FallbackConfig{})
	req := limiter.Request{Requestor: "client", Limit: 10, Window: time.Minute}
	r.store.down.Store(true)
	start := r.clk.Now().Unix()
	for i := range 4 {
		if d, _ := r.decide(t, req); !d.Allowed {
			t.Fatalf("local decision %d denied", i)
		}
		r.clk.Advance(10 * time.Second)
	}
	r.store.down.Store(false)
	r.clk.Advance(25 * time.Second) // the first local second has left the minute
	if d, reason := r.decide(t, req); !d.Allowed || reason != "" || d.Remaining != 10-3-1 {
		t.Fatalf("first decision back on the store: %+v %q; want allowed with %d remaining", d, reason, 10-3-1)
	}
	if n, m := r.f.Reconciled(), r.f.Unreconciled(); n != 3 || m != 1 {
		t.Errorf("Reconciled, Unreconciled = %d, %d; want 3, 1", n, m)
	}
	id := limiter.RequestorID("", 60, "client")
	keys := []string{}
	for i := range 4 {
		keys = append(keys, fmt.Sprintf("%s%s:%d", limiter.KeyPrefix, id, start+int64(10*i)))
	}
	vals, err := r.store.Get(context.Background(), keys)
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range keys[1:] {
		if vals[k] != 1 {
			t.Errorf("second %d of the outage: %d counted in the store, want 1", (i+1)*10, vals[k])
		}
	}
	if vals[keys[0]] != 0 {
		t.Errorf("a second out of the window was charged")
	}
}

// TestFallbackChargeFailsOver: a store that fails again while the charge
// runs keeps the charges for the next decision, which is made locally.
func TestFallbackChargeFailsOver(t *testing.T) {
	r := newFallbackRig(t, resilient.FallbackConfig{})
	req := limiter.Request{Requestor: "client", Limit: 3, Window: time.Minute}
	r.store.down.Store(true)
	r.decide(t, req)
	r.decide(t, req)
	// Still down: the charge fails, the decision is local (1 left).
	if d, reason := r.decide(t, req); !d.Allowed || reason == "" {
		t.Fatalf("third decision: %+v %q; want allowed locally", d, reason)
	}
	r.store.down.Store(false)
	if d, reason := r.decide(t, req); d.Allowed || reason != "" {
		t.Fatalf("back: %+v %q; want denied by the store, which has the 3 local ones", d, reason)
	}
	if n := r.f.Reconciled(); n != 3 {
		t.Errorf("Reconciled = %d, want 3", n)
	}
}

// TestFallbackOverloadReason: a primary that failed because this process
// waited too long for the store says so.
func TestFallbackOverloadReason(t *testing.T) {
	var np, nl int
	busy := fmt.Errorf("queued too long: %w", limiter.ErrOverloaded)
	f := resilient.NewFallback(answer(limiter.Decision{}, busy, &np), answer(limiter.Decision{Allowed: true}, nil, &nl),
		resilient.FallbackConfig{Reason: "memcached-unavailable", OverloadReason: "memcached-overloaded"})
	_, reason, err := f.AllowDegraded(context.Background(), req, t0)
	if err != nil || reason != "memcached-overloaded" {
		t.Fatalf("AllowDegraded: %q, %v; want memcached-overloaded", reason, err)
	}
	_, reason, _ = resilient.NewFallback(answer(limiter.Decision{}, busy, &np), answer(limiter.Decision{Allowed: true}, nil, &nl),
		resilient.FallbackConfig{}).AllowDegraded(context.Background(), req, t0)
	if reason != resilient.DefaultOverloadReason {
		t.Errorf("default overload reason %q, want %q", reason, resilient.DefaultOverloadReason)
	}
}

// TestFallbackChargesOthersInTheBackground: the first decision back on the
// store charges its own requestor's local decisions before it decides, and
// starts charging the other requestors' in the background.
func TestFallbackChargesOthersInTheBackground(t *testing.T) {
	r := newFallbackRig(t, resilient.FallbackConfig{})
	r.store.down.Store(true)
	for i := range 20 {
		req := limiter.Request{Requestor: fmt.Sprintf("client-%d", i), Limit: 10, Window: time.Minute}
		for range 2 {
			if d, _ := r.decide(t, req); !d.Allowed {
				t.Fatalf("local decision for %s denied", req.Requestor)
			}
		}
	}
	r.store.down.Store(false)
	first := limiter.Request{Requestor: "client-7", Limit: 10, Window: time.Minute}
	if d, reason := r.decide(t, first); !d.Allowed || reason != "" || d.Remaining != 10-2-1 {
		t.Fatalf("first decision back: %+v %q; want allowed by the store with 7 remaining", d, reason)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if n := r.f.Reconciled(); n != 40 {
			return fmt.Errorf("Reconciled = %d, want 40", n)
		}
		return nil
	})
	other := limiter.NewSliding(r.store, limiter.SlidingConfig{})
	d, err := other.Allow(context.Background(), limiter.Request{Requestor: "client-13", Limit: 10, Window: time.Minute}, r.clk.Now())
	if err != nil || d.Remaining != 10-2-1 {
		t.Errorf("another replica for client-13: %+v, %v; want 7 remaining", d, err)
	}
}
