package resilient_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/internal/testutil"
	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/memory"
	"github.com/floodgate-rl/floodgate/limiter/resilient"
)

// strategyFunc adapts a function to limiter.Strategy.
type strategyFunc func(context.Context, limiter.Request, time.Time) (limiter.Decision, error)

func (f strategyFunc) Allow(ctx context.Context, req limiter.Request, now time.Time) (limiter.Decision, error) {
	return f(ctx, req, now)
}

// answer returns a strategy that always returns d and err, and counts its
// calls in n.
func answer(d limiter.Decision, err error, n *int) limiter.Strategy {
	return strategyFunc(func(ctx context.Context, _ limiter.Request, _ time.Time) (limiter.Decision, error) {
		*n++
		return d, err
	})
}

var req = limiter.Request{Requestor: "ip:198.51.100.7", Limit: 3, Window: time.Hour}

func TestFallbackChoosesStrategy(t *testing.T) {
	errInvalid := errors.New("limit 0: must be at least 1")
	primaryD := limiter.Decision{Allowed: true, Limit: 3, Remaining: 2}
	localD := limiter.Decision{Allowed: true, Limit: 3, Remaining: 1}
	for _, tt := range []struct {
		name         string
		primaryErr   error
		localErr     error
		want         limiter.Decision
		wantReason   string
		wantErr      []error // all must match with errors.Is
		wantLocalRun bool
	}{
		{name: "primary answers", want: primaryD},
		{name: "store unavailable", primaryErr: errDown, want: localD, wantReason: "memcached-unavailable", wantLocalRun: true},
		{name: "breaker open", primaryErr: resilient.ErrOpen, want: localD, wantReason: "memcached-unavailable", wantLocalRun: true},
		{name: "contention", primaryErr: errors.Join(limiter.ErrContention, limiter.ErrStoreUnavailable), want: localD,
			wantReason: "memcached-unavailable", wantLocalRun: true},
		{name: "other error is returned", primaryErr: errInvalid, wantErr: []error{errInvalid}},
		{name: "both fail", primaryErr: errDown, localErr: context.Canceled, wantLocalRun: true,
			wantErr: []error{errDown, limiter.ErrStoreUnavailable, context.Canceled}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var np, nl int
			f := resilient.NewFallback(answer(primaryD, tt.primaryErr, &np), answer(localD, tt.localErr, &nl),
				resilient.FallbackConfig{Reason: "memcached-unavailable"})
			d, reason, err := f.AllowDegraded(context.Background(), req, t0)
			for _, e := range tt.wantErr {
				if !errors.Is(err, e) {
					t.Errorf("error %v does not wrap %v", err, e)
				}
			}
			if len(tt.wantErr) == 0 && err != nil {
				t.Errorf("error %v", err)
			}
			if err == nil && (d != tt.want || reason != tt.wantReason) {
				t.Errorf("AllowDegraded = %+v, %q; want %+v, %q", d, reason, tt.want, tt.wantReason)
			}
			if np != 1 || (nl == 1) != tt.wantLocalRun {
				t.Errorf("primary called %d times, local %d; want 1 and local %v", np, nl, tt.wantLocalRun)
			}
			// Allow is AllowDegraded without the reason.
			d2, err2 := f.Allow(context.Background(), req, t0)
			if d2 != d || (err2 == nil) != (err == nil) {
				t.Errorf("Allow = %+v, %v; AllowDegraded gave %+v, %v", d2, err2, d, err)
			}
		})
	}
}

func TestFallbackDefaultReason(t *testing.T) {
	var np, nl int
	f := resilient.NewFallback(answer(limiter.Decision{}, errDown, &np), answer(limiter.Decision{}, nil, &nl), resilient.FallbackConfig{})
	if _, reason, err := f.AllowDegraded(context.Background(), req, t0); reason != resilient.DefaultReason || err != nil {
		t.Errorf("AllowDegraded reason %q, error %v; want %q", reason, err, resilient.DefaultReason)
	}
}

// TestFallbackDecidesAfterDeadline: a caller whose context ended while the
// store hung still gets a local decision.
func TestFallbackDecidesAfterDeadline(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	primary := strategyFunc(func(ctx context.Context, _ limiter.Request, _ time.Time) (limiter.Decision, error) {
		cancel() // the deadline passes during the store call
		return limiter.Decision{}, errDown
	})
	mem := memory.New(func() time.Time { return t0 })
	defer mem.Close()
	local := limiter.NewSliding(mem, limiter.SlidingConfig{})
	f := resilient.NewFallback(primary, local, resilient.FallbackConfig{})
	d, reason, err := f.AllowDegraded(ctx, req, t0)
	if err != nil || !d.Allowed || reason == "" {
		t.Fatalf("AllowDegraded = %+v, %q, %v; want a local allow", d, reason, err)
	}
}

// TestFallbackLimitHoldsPerReplica runs the stack floodgate runs, a Sliding
// counting through a Breaker with a local Sliding as fallback, on a store
// that goes down and comes back: while it is down the limit still holds,
// counted in memory, and after the breaker opens the store is not called
// again until the probe; once the store is back its counts are used again.
func TestFallbackLimitHoldsPerReplica(t *testing.T) {
	clk := newClock()
	store := newFlakyStore(t, clk.Now)
	brk := resilient.NewBreaker(store, resilient.BreakerConfig{Failures: 2, MinBackoff: time.Second, MaxBackoff: time.Second, Now: clk.Now,
		AfterFunc: neverFires, Rand: func() float64 { return 0.999 }})
	mem := memory.New(clk.Now)
	defer mem.Close()
	logs := &testutil.Buffer{}
	f := resilient.NewFallback(
		limiter.NewSliding(brk, limiter.SlidingConfig{}),
		limiter.NewSliding(mem, limiter.SlidingConfig{}),
		resilient.FallbackConfig{Reason: "memcached-unavailable", Now: clk.Now, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	ctx := context.Background()
	decide := func(wantAllowed bool, wantReason string) limiter.Decision {
		t.Helper()
		d, reason, err := f.AllowDegraded(ctx, req, clk.Now())
		if err != nil {
			t.Fatalf("AllowDegraded: %v", err)
		}
		if d.Allowed != wantAllowed || reason != wantReason {
			t.Fatalf("AllowDegraded = %+v, %q; want allowed %v, reason %q", d, reason, wantAllowed, wantReason)
		}
		return d
	}

	decide(true, "") // counted in the store: 1 of 3
	store.down.Store(true)
	clk.Advance(time.Second)
	// The local decisions start from what the replica knew: 1 of 3 used.
	for i := range 2 {
		d := decide(true, "memcached-unavailable")
		if d.Remaining != int64(1-i) {
			t.Fatalf("local decision %d: remaining %d, want %d", i+1, d.Remaining, 1-i)
		}
	}
	if s := brk.State(); s != resilient.Open {
		t.Fatalf("breaker %v after failures, want open", s)
	}
	calls := store.calls.Load()
	for range 21 {
		d := decide(false, "memcached-unavailable")
		if d.RetryAfter <= 0 || d.RetryAfter > time.Hour {
			t.Fatalf("local denial RetryAfter %v", d.RetryAfter)
		}
	}
	if n := store.calls.Load() - calls; n != 0 {
		t.Errorf("%d store calls with the breaker open, want 0", n)
	}
	if n := f.Locals(); n != 23 {
		t.Errorf("Locals = %d, want 23", n)
	}
	if n := strings.Count(logs.String(), "deciding with the per-replica limiter"); n != 1 {
		t.Errorf("logged %d times, want once (the rest are ErrOpen or within %v):\n%s", n, resilient.LogInterval, logs)
	}

	// Back: the first decision after the backoff starts the probe and is
	// still made locally; once the probe succeeded the store's counts apply
	// again, with the 2 allowed locally charged to it: 3 of 3 used.
	store.down.Store(false)
	clk.Advance(time.Second)
	decide(false, "memcached-unavailable")
	testutil.WaitFor(t, 5*time.Second, func() error {
		if s := brk.State(); s != resilient.Closed {
			return fmt.Errorf("breaker %v after the probe started, want closed", s)
		}
		return nil
	})
	decide(false, "")
	if n, m := f.Reconciled(), f.Unreconciled(); n != 2 || m != 0 {
		t.Errorf("Reconciled, Unreconciled = %d, %d; want 2, 0", n, m)
	}
	// A replica that never saw the outage sees them too.
	other := limiter.NewSliding(store, limiter.SlidingConfig{})
	if d, err := other.Allow(ctx, req, clk.Now()); err != nil || d.Allowed {
		t.Errorf("another replica after recovery: %+v, %v; want denied", d, err)
	}
}

func TestFallbackLogRateLimited(t *testing.T) {
	clk := newClock()
	logs := &testutil.Buffer{}
	var np, nl int
	f := resilient.NewFallback(answer(limiter.Decision{}, errDown, &np), answer(limiter.Decision{Allowed: true}, nil, &nl),
		resilient.FallbackConfig{Now: clk.Now, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	for range 5 {
		f.Allow(context.Background(), req, t0)
	}
	clk.Advance(resilient.LogInterval)
	for range 3 {
		f.Allow(context.Background(), req, t0)
	}
	out := logs.String()
	if n := strings.Count(out, "level=WARN"); n != 2 {
		t.Fatalf("%d log lines, want 2:\n%s", n, out)
	}
	if !strings.Contains(out, "local_decisions_since_last_log=1 ") || !strings.Contains(out, "local_decisions_since_last_log=5 ") {
		t.Errorf("log lines lack the counts 1 and 5:\n%s", out)
	}
	if !strings.Contains(out, "connection refused") || !strings.Contains(out, "reason="+resilient.DefaultReason) {
		t.Errorf("log lines lack the error or the reason:\n%s", out)
	}
}
