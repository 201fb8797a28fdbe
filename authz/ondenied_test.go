package authz_test

import (
	"context"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/floodgate-rl/floodgate/authz"
	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/memory"
)

// TestOnDenied: Config.OnDenied hears of every 429, with the scope, the
// identity, the 429's wait and the decision's instant, and of nothing else.
func TestOnDenied(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	type call struct {
		scope, rule, identity string
		retry                 time.Duration
		now                   time.Time
	}
	var calls []call
	srv, err := authz.NewServer(limiter.NewSliding(memory.New(func() time.Time { return t0 }), limiter.SlidingConfig{MaxClockSkew: -1}), authz.Config{
		Limit: 2, Window: time.Minute, Now: func() time.Time { return t0 },
		OnDenied: func(scope, rule, identity string, retry time.Duration, now time.Time) {
			calls = append(calls, call{scope, rule, identity, retry, now})
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "203.0.113.7"}}}},
		ContextExtensions: map[string]string{authz.ExtScope: "login"},
	}}
	for i, want := range []int{0, 0, 1, 2} {
		if _, err := srv.Check(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		if len(calls) != want {
			t.Fatalf("after check %d: %d calls, want %d", i+1, len(calls), want)
		}
	}
	want := call{scope: "login", identity: "ip:203.0.113.7", retry: time.Minute, now: t0}
	if calls[0] != want {
		t.Errorf("call = %+v, want %+v", calls[0], want)
	}
}
