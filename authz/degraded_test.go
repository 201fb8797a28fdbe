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
	fallback := func(d limiter.Decision) *degradedStrategy {
		return &degradedStrategy{d: d, reason: "memcached-unavailable"}
	}
	for _, tt := range []struct {
		name     string
		s        *degradedStrategy
		headers  bool
		toClient bool // Config.DegradedHeaderToClient
		want     *authv3.CheckResponse
		result   string
	}{
		{"normal allow", &degradedStrategy{d: allowed}, true, false,
			okResp(okHeaders(100, 4, 0, 3600, "default")...), "allowed"},
		{"normal allow, to client", &degradedStrategy{d: allowed}, true, true,
			okResp(okHeaders(100, 4, 0, 3600, "default")...), "allowed"},
		{"normal deny", &degradedStrategy{d: denied}, true, false,
			deniedResp(100, 30, 3600, "default"), "denied"},
		{"normal deny, to client", &degradedStrategy{d: denied}, true, true,
			deniedResp(100, 30, 3600, "default"), "denied"},

		// By default the marker goes upstream only, never to the client.
		{"fallback allow", fallback(allowed), true, false,
			upstream(okResp(okHeaders(100, 4, 0, 3600, "default")...), degraded), "fallback_allowed"},
		{"fallback allow without rate-limit headers", fallback(allowed), false, false,
			upstream(okResp(), degraded), "fallback_allowed"},
		{"fallback deny", fallback(denied), false, false,
			deniedResp(100, 30, 3600, "default"), "fallback_denied"},
		{"unsafe reason", &degradedStrategy{d: allowed, reason: "bad\r\nvalue"}, false, false,
			upstream(okResp(), hv("X-Floodgate-Degraded", "degraded")), "fallback_allowed"},

		// --degraded-header-to-client: upstream and to the client.
		{"fallback allow, to client", fallback(allowed), true, true,
			upstream(okResp(append(okHeaders(100, 4, 0, 3600, "default"), degraded)...), degraded), "fallback_allowed"},
		{"fallback allow without rate-limit headers, to client", fallback(allowed), false, true,
			upstream(okResp(degraded), degraded), "fallback_allowed"},
		{"fallback deny, to client", fallback(denied), false, true,
			withHeader(deniedResp(100, 30, 3600, "default"), degraded), "fallback_denied"},

		{"failure", &degradedStrategy{err: errStore, reason: "ignored"}, true, false,
			okResp(), "fail_open"},
		{"failure, to client", &degradedStrategy{err: errStore, reason: "ignored"}, true, true,
			okResp(), "fail_open"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := baseConfig()
			cfg.Headers = tt.headers
			cfg.DegradedHeaderToClient = tt.toClient
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
				h.expectMetric(t, want, "floodgate_decisions_total", "result", r)
			}
		})
	}
}

// TestSpoofedDegradedHeader: a client that sends X-Floodgate-Degraded
// itself cannot make the upstream believe a request was decided on the
// degraded path: Check removes the header from every request it allows,
// unless it sets it (overwriting the client's value).
func TestSpoofedDegradedHeader(t *testing.T) {
	spoofed := func() *authv3.CheckRequest {
		return checkReq(socket("203.0.113.7", 41000), map[string]string{":path": "/", "x-floodgate-degraded": "memcached-unavailable"}, nil)
	}
	remove := func(resp *authv3.CheckResponse) *authv3.CheckResponse {
		ok := resp.GetOkResponse()
		if ok == nil {
			ok = &authv3.OkHttpResponse{}
			resp.HttpResponse = &authv3.CheckResponse_OkResponse{OkResponse: ok}
		}
		ok.HeadersToRemove = []string{"x-floodgate-degraded"}
		return resp
	}
	for _, tt := range []struct {
		name    string
		s       *degradedStrategy
		headers bool
		want    *authv3.CheckResponse
	}{
		{"allowed", &degradedStrategy{d: limiter.Decision{Allowed: true, Remaining: 4}}, true,
			remove(okResp(okHeaders(100, 4, 0, 3600, "default")...))},
		{"allowed without rate-limit headers", &degradedStrategy{d: limiter.Decision{Allowed: true, Remaining: 4}}, false,
			remove(okResp())},
		{"failed open", &degradedStrategy{err: errStore}, true, remove(okResp())},
		{"denied: nothing goes upstream", &degradedStrategy{d: limiter.Decision{RetryAfter: 30 * time.Second}}, true,
			deniedResp(100, 30, 3600, "default")},
		{"degraded: overwritten, not removed", &degradedStrategy{d: limiter.Decision{Allowed: true, Remaining: 4}, reason: "other"}, false,
			upstream(okResp(), hv("X-Floodgate-Degraded", "other"))},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := baseConfig()
			cfg.Headers = tt.headers
			h := newHarness(t, tt.s, cfg)
			if got := h.check(t, spoofed()); !proto.Equal(got, tt.want) {
				t.Errorf("Check =\n%v\nwant\n%v", got, tt.want)
			}
		})
	}
}

// upstream adds hs to the headers an allowed response sets on the request
// sent upstream.
func upstream(resp *authv3.CheckResponse, hs ...*corev3.HeaderValueOption) *authv3.CheckResponse {
	ok := resp.GetOkResponse()
	if ok == nil {
		ok = &authv3.OkHttpResponse{}
		resp.HttpResponse = &authv3.CheckResponse_OkResponse{OkResponse: ok}
	}
	ok.Headers = append(ok.Headers, hs...)
	return resp
}

// withHeader appends h to a denied response's headers.
func withHeader(resp *authv3.CheckResponse, h *corev3.HeaderValueOption) *authv3.CheckResponse {
	dr := resp.GetDeniedResponse()
	dr.Headers = append(dr.Headers, h)
	return resp
}

var _ authz.DegradedStrategy = (*degradedStrategy)(nil)
