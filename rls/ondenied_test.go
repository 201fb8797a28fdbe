package rls_test

import (
	"context"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/memory"
	rlsconf "github.com/floodgate-rl/floodgate/policy/rls"
	"github.com/floodgate-rl/floodgate/rls"
)

// TestOnDenied: Config.OnDenied hears of each enforced rule that denied,
// with the domain's scope, the rule's key and the counter's identity, and
// of nothing when the request is allowed.
func TestOnDenied(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	limits, err := rlsconf.Parse("limits.yaml", []byte(`
domain: edge
descriptors:
  - key: remote_address
    rate_limit: {unit: minute, requests_per_unit: 1}
`))
	if err != nil {
		t.Fatal(err)
	}
	type call struct {
		scope, rule, identity string
		retry                 time.Duration
	}
	var calls []call
	srv, err := rls.NewServer(rls.Config{
		Limits:   limits,
		Strategy: limiter.NewSliding(memory.New(func() time.Time { return t0 }), limiter.SlidingConfig{MaxClockSkew: -1}),
		Now:      func() time.Time { return t0 },
		OnDenied: func(scope, rule, identity string, retry time.Duration, _ time.Time) {
			calls = append(calls, call{scope, rule, identity, retry})
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	req := &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{{
		Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: "remote_address", Value: "50.0.0.1"}},
	}}}
	for i, want := range []int{0, 1} {
		if _, err := srv.ShouldRateLimit(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		if len(calls) != want {
			t.Fatalf("after call %d: %d OnDenied calls, want %d", i+1, len(calls), want)
		}
	}
	id := rlsconf.CounterKey("edge", []rlsconf.Entry{{Key: "remote_address", Value: "50.0.0.1"}})
	if want := (call{"rls:edge", "edge.remote_address", id, time.Minute}); calls[0] != want {
		t.Errorf("call = %+v, want %+v", calls[0], want)
	}
}
