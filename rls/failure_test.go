package rls_test

import (
	"context"
	"strings"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	"github.com/floodgate-rl/floodgate/authz"
	"github.com/floodgate-rl/floodgate/internal/testutil"
	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/memory"
	"github.com/floodgate-rl/floodgate/limiter/resilient"
	"github.com/floodgate-rl/floodgate/rls"
)

// failing returns a strategy on a store that always fails, and the store.
func failing(st *failingStore) func(t *testing.T, c *testutil.Clock) limiter.MultiStrategy {
	return func(t *testing.T, _ *testutil.Clock) limiter.MultiStrategy {
		return newStrategy(t, limiter.StrategySliding, st)
	}
}

// fallback returns resilient.Fallback over a failing store, deciding with
// the sliding window on an in-memory store, as --fail-mode local does.
func fallback(t *testing.T, c *testutil.Clock) limiter.MultiStrategy {
	t.Helper()
	mem := memory.New(c.Now)
	t.Cleanup(func() { mem.Close() })
	fb := resilient.NewFallback(newStrategy(t, limiter.StrategySliding, &failingStore{}), newStrategy(t, limiter.StrategySliding, mem),
		resilient.FallbackConfig{Reason: "memcached-unavailable", Now: c.Now})
	t.Cleanup(func() { fb.Close() })
	return fb
}

// decisions returns floodgate_rls_decisions_total{result}.
func (h *harness) decisions(result string) float64 {
	return h.metric("floodgate_rls_decisions_total", "result", result)
}

// TestFailModes: when the store fails, the answer follows the fail mode and
// is never a gRPC error; the per-replica fallback decides instead and says
// so in X-Floodgate-Degraded; an unlimited rule never asks the store.
func TestFailModes(t *testing.T) {
	t.Parallel()
	addr := desc("remote_address=192.0.2.1")
	for _, tc := range []struct {
		name     string
		strategy func(t *testing.T, c *testutil.Clock) limiter.MultiStrategy
		mode     authz.FailMode
		toClient bool
		req      *rlsv3.RateLimitRequest
		want     string
		result   string
	}{
		{name: "open", mode: authz.FailOpen, req: request(0, addr, desc("path=/")),
			want: `OK [OK rem=0] [OK rem=max]`, result: "fail_open"},
		{name: "closed", mode: authz.FailClosed, req: request(0, addr, desc("path=/")),
			want: `OVER_LIMIT [OVER_LIMIT 3/MINUTE rem=0] [OK rem=max] body="Rate limiter unavailable"`, result: "fail_closed"},
		{name: "unlimited never asks the store", mode: authz.FailClosed, req: request(0, desc("api_key=unlimited-key"), desc("path=/")),
			want: `OK [OK rem=max] [OK rem=max]`, result: "unlimited"},
		{name: "local fallback", strategy: fallback, req: request(0, addr),
			want:   `OK [OK 3/MINUTE rem=2 reset=0s] ` + policyAddr + ` resp:RateLimit="test.remote_address";r=2;t=0 req:X-Floodgate-Degraded=memcached-unavailable`,
			result: "fallback_allowed"},
		{name: "local fallback, to the client too", strategy: fallback, toClient: true, req: request(0, addr),
			want:   `OK [OK 3/MINUTE rem=2 reset=0s] ` + policyAddr + ` resp:RateLimit="test.remote_address";r=2;t=0 resp:X-Floodgate-Degraded=memcached-unavailable req:X-Floodgate-Degraded=memcached-unavailable`,
			result: "fallback_allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := &failingStore{}
			if tc.strategy == nil {
				tc.strategy = failing(st)
			}
			h := newHarness(t, setup{strategy: tc.strategy, config: func(c *rls.Config) {
				c.FailMode, c.DegradedHeaderToClient = tc.mode, tc.toClient
			}})
			if got := summary(h.call(t, t0, tc.req)); got != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
			if got := h.decisions(tc.result); got != 1 {
				t.Errorf("floodgate_rls_decisions_total{result=%q} = %v, want 1", tc.result, got)
			}
			if tc.result == "unlimited" && st.calls.Load() != 0 {
				t.Errorf("the store was called %d times for an unlimited rule, want 0", st.calls.Load())
			}
			if strings.HasPrefix(tc.result, "fail_") && !strings.Contains(h.logs.String(), "rate limiter failed, applying fail mode") {
				t.Errorf("no failure logged:\n%s", h.logs)
			}
		})
	}
}

// TestDeadlinePassed: a call whose deadline has passed before the limiter
// is asked follows the fail mode, counting nothing.
func TestDeadlinePassed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, setup{config: func(c *rls.Config) { c.FailMode = authz.FailClosed }})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	resp, err := h.srv.ShouldRateLimit(ctx, request(0, desc("remote_address=192.0.2.1")))
	if err != nil {
		t.Fatalf("ShouldRateLimit returned an error: %v", err)
	}
	if got, want := summary(resp), `OVER_LIMIT [OVER_LIMIT 3/MINUTE rem=0] body="Rate limiter unavailable"`; got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	got := summary(h.call(t, t0, request(0, desc("remote_address=192.0.2.1"))))
	if want := `OK [OK 3/MINUTE rem=2 reset=0s] ` + policyAddr + ` resp:RateLimit="test.remote_address";r=2;t=0`; got != want {
		t.Fatalf("after the expired call: got %s\nwant %s", got, want)
	}
}

// panicking is a strategy that panics.
type panicking struct{ limiter.MultiStrategy }

func (panicking) AllowAll(context.Context, []limiter.Request, time.Time) ([]limiter.Decision, error) {
	panic("boom")
}

func (panicking) Allow(context.Context, limiter.Request, time.Time) (limiter.Decision, error) {
	panic("boom")
}

// TestPanicIsAFailure: a panic while deciding is recovered, counted and
// answered by the fail mode, with one status per descriptor.
func TestPanicIsAFailure(t *testing.T) {
	t.Parallel()
	h := newHarness(t, setup{strategy: func(t *testing.T, c *testutil.Clock) limiter.MultiStrategy {
		return panicking{memoryStrategy(t, c)}
	}})
	resp, err := h.srv.ShouldRateLimit(context.Background(), request(0, desc("remote_address=192.0.2.1"), desc("path=/")))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := summary(resp), `OK [OK rem=0] [OK rem=max]`; got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if got := h.metric("floodgate_rls_panics_total"); got != 1 {
		t.Errorf("floodgate_rls_panics_total = %v, want 1", got)
	}
	if !strings.Contains(h.logs.String(), "should rate limit panicked") {
		t.Errorf("panic not logged:\n%s", h.logs)
	}
}

// TestNilRequest: a nil request is answered, not a crash.
func TestNilRequest(t *testing.T) {
	t.Parallel()
	h := newHarness(t, setup{})
	resp, err := h.srv.ShouldRateLimit(context.Background(), nil)
	if err != nil || summary(resp) != "OK" {
		t.Fatalf("got %v, %v; want OK and no error", summary(resp), err)
	}
	resp, err = h.srv.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: "test", Descriptors: []*ratelimitv3.RateLimitDescriptor{nil}})
	if err != nil || summary(resp) != "OK [OK rem=max]" {
		t.Fatalf("got %v, %v; want OK [OK rem=max] and no error", summary(resp), err)
	}
}

// TestMetrics: every answer is counted by result, every descriptor by what
// it came to, a shadow rule over its limit by its key; an unknown domain
// is logged once.
func TestMetrics(t *testing.T) {
	t.Parallel()
	h := newHarness(t, setup{})
	trial := desc("route=trial", "remote_address=192.0.2.1")
	for _, req := range []*rlsv3.RateLimitRequest{
		request(0, desc("remote_address=192.0.2.1"), desc("path=/"), desc("api_key=unlimited-key"), negative(desc("remote_address=192.0.2.1"))),
		request(0, desc("plan=free"), desc("plan=gold")),
		request(0, trial), request(0, trial),
		request(0, desc("closed=x")),
		request(0, manyDescriptors(rls.MaxRules+1, "remote_address")...),
		{Domain: "other", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("a=b")}},
		{Domain: "other", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("a=b")}},
		request(0, desc("path=/")),
	} {
		h.call(t, t0, req)
	}
	testutil.ExpectSeries(t, h.reg, `
floodgate_rls_decisions_total{result="allowed"} 4
floodgate_rls_decisions_total{result="denied"} 1
floodgate_rls_decisions_total{result="refused"} 1
floodgate_rls_decisions_total{result="unknown_domain"} 2
floodgate_rls_decisions_total{result="unlimited"} 1
floodgate_rls_descriptors_total{result="ok"} 2
floodgate_rls_descriptors_total{result="over_limit"} 1
floodgate_rls_descriptors_total{result="no_rule"} 4
floodgate_rls_descriptors_total{result="unlimited"} 1
floodgate_rls_descriptors_total{result="negative_hits"} 1
floodgate_rls_descriptors_total{result="replaced"} 1
floodgate_rls_descriptors_total{result="shadow"} 2
floodgate_rls_shadow_over_limit_total{rule="test.route_trial.remote_address"} 1
`)
	if n := strings.Count(h.logs.String(), "rls request for a domain without configuration"); n != 1 {
		t.Errorf("the unknown domain logged %d times, want once:\n%s", n, h.logs)
	}
}
