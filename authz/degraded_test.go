package authz_test

import (
	"context"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"

	"github.com/floodgate-rl/floodgate/authz"
	"github.com/floodgate-rl/floodgate/limiter"
)

// degradedStrategy is a hand-written authz.DegradedStrategy: it answers d and
// reason (or err), and panics if Allow is called instead of AllowDegraded.
type degradedStrategy struct {
	d      limiter.Decision
	reason string
	err    error
}

func (s *degradedStrategy) Allow(context.Context, limiter.Request, time.Time) (limiter.Decision, error) {
	panic("Allow called on a DegradedStrategy")
}

func (s *degradedStrategy) AllowDegraded(_ context.Context, req limiter.Request, _ time.Time) (limiter.Decision, string, error) {
	d := s.d
	d.Limit, d.Window = req.Limit, req.Window
	return d, s.reason, s.err
}

func TestDegradedDecisions(t *testing.T) {
	degraded := hv("X-Floodgate-Degraded", "memcached-unavailable")
	allowed := limiter.Decision{Allowed: true, Remaining: 4}
	denied := limiter.Decision{RetryAfter: 30 * time.Second}
	for _, tt := range []struct {
		name    string
		s       *degradedStrategy
		headers bool
		want    *authv3.CheckResponse
		result  string
	}{
		{"normal allow", &degradedStrategy{d: allowed}, true,
			okResp(okHeaders(100, 4, 0, 3600, "default")...), "allowed"},
		{"normal deny", &degradedStrategy{d: denied}, true,
			deniedResp(100, 30, 3600, "default"), "denied"},
		{"fallback allow", &degradedStrategy{d: allowed, reason: "memcached-unavailable"}, true,
			okResp(append(okHeaders(100, 4, 0, 3600, "default"), degraded)...), "fallback_allowed"},
		{"fallback allow without rate-limit headers", &degradedStrategy{d: allowed, reason: "memcached-unavailable"}, false,
			okResp(degraded), "fallback_allowed"},
		{"fallback deny", &degradedStrategy{d: denied, reason: "memcached-unavailable"}, false,
			withHeader(deniedResp(100, 30, 3600, "default"), degraded), "fallback_denied"},
		{"unsafe reason", &degradedStrategy{d: allowed, reason: "bad\r\nvalue"}, false,
			okResp(hv("X-Floodgate-Degraded", "degraded")), "fallback_allowed"},
		{"failure", &degradedStrategy{err: errStore, reason: "ignored"}, true,
			okResp(), "fail_open"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := baseConfig()
			cfg.Headers = tt.headers
			h := newHarness(t, tt.s, cfg)
			got := h.check(t, fromIP(nil))
			if !proto.Equal(got, tt.want) {
				t.Errorf("Check =\n%v\nwant\n%v", got, tt.want)
			}
			for _, r := range []string{"allowed", "denied", "fallback_allowed", "fallback_denied", "fail_open"} {
				want := 0.0
				if r == tt.result {
					want = 1
				}
				if v := h.metric(t, "floodgate_decisions_total", "result", r); v != want {
					t.Errorf("floodgate_decisions_total{result=%q} = %v, want %v", r, v, want)
				}
			}
		})
	}
}

// withHeader appends h to a denied response's headers.
func withHeader(resp *authv3.CheckResponse, h *corev3.HeaderValueOption) *authv3.CheckResponse {
	dr := resp.GetDeniedResponse()
	dr.Headers = append(dr.Headers, h)
	return resp
}

var _ authz.DegradedStrategy = (*degradedStrategy)(nil)
