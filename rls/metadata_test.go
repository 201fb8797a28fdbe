package rls_test

import (
	"strings"
	"testing"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/floodgate-rl/floodgate/authz"
	"github.com/floodgate-rl/floodgate/internal/testutil"
	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/rls"
)

// rlsMeta is the expected metadata: string fields in kv pairs, and
// remaining when it is not negative.
func rlsMeta(t *testing.T, remaining int, kv ...string) *structpb.Struct {
	return testutil.Metadata(t, authz.MetaRemaining, remaining, kv...)
}

// TestMetadata checks the dynamic_metadata of every kind of answer, over
// gRPC: the domain's scope, the rule the headers describe and its
// remaining, the decision as floodgate_rls_decisions_total counts it, and
// the degraded reason.
func TestMetadata(t *testing.T) {
	t.Parallel()
	addr := desc("remote_address=192.0.2.1")
	login := desc("route=login", "remote_address=192.0.2.1")
	for _, tc := range []struct {
		name     string
		strategy func(t *testing.T, c *testutil.Clock) limiter.MultiStrategy
		mode     authz.FailMode
		reqs     []*rlsv3.RateLimitRequest // the last one's answer is checked
		want     func(t *testing.T) *structpb.Struct
	}{
		{name: "allowed", reqs: []*rlsv3.RateLimitRequest{request(0, addr)},
			want: func(t *testing.T) *structpb.Struct {
				return rlsMeta(t, 2, "scope", "rls:test", "rule", "test.remote_address", "decision", "allowed")
			}},
		{name: "the rule with the least room", reqs: []*rlsv3.RateLimitRequest{request(0, addr, login)},
			want: func(t *testing.T) *structpb.Struct {
				return rlsMeta(t, 1, "scope", "rls:test", "rule", "test.route_login.remote_address", "decision", "allowed")
			}},
		{name: "denied", reqs: []*rlsv3.RateLimitRequest{request(0, login), request(0, login), request(0, login)},
			want: func(t *testing.T) *structpb.Struct {
				return rlsMeta(t, 0, "scope", "rls:test", "rule", "test.route_login.remote_address", "decision", "denied")
			}},
		{name: "unlimited", reqs: []*rlsv3.RateLimitRequest{request(0, desc("api_key=unlimited-key"))},
			want: func(t *testing.T) *structpb.Struct {
				return rlsMeta(t, -1, "scope", "rls:test", "decision", "unlimited")
			}},
		{name: "unknown domain", reqs: []*rlsv3.RateLimitRequest{{Domain: "nope", Descriptors: []*ratelimitv3.RateLimitDescriptor{addr}}},
			want: func(t *testing.T) *structpb.Struct {
				return rlsMeta(t, -1, "scope", "rls:nope", "decision", "unknown_domain")
			}},
		{name: "long domain cut", reqs: []*rlsv3.RateLimitRequest{{Domain: strings.Repeat("d", 200), Descriptors: []*ratelimitv3.RateLimitDescriptor{addr}}},
			want: func(t *testing.T) *structpb.Struct {
				return rlsMeta(t, -1, "scope", "rls:"+strings.Repeat("d", 128)+"...(200 bytes)", "decision", "unknown_domain")
			}},
		{name: "fail open", strategy: failing(&failingStore{}), reqs: []*rlsv3.RateLimitRequest{request(0, addr)},
			want: func(t *testing.T) *structpb.Struct {
				return rlsMeta(t, -1, "scope", "rls:test", "decision", "fail_open")
			}},
		{name: "fail closed", strategy: failing(&failingStore{}), mode: authz.FailClosed, reqs: []*rlsv3.RateLimitRequest{request(0, addr)},
			want: func(t *testing.T) *structpb.Struct {
				return rlsMeta(t, -1, "scope", "rls:test", "decision", "fail_closed")
			}},
		{name: "fallback", strategy: fallback, reqs: []*rlsv3.RateLimitRequest{request(0, addr)},
			want: func(t *testing.T) *structpb.Struct {
				return rlsMeta(t, 2, "scope", "rls:test", "rule", "test.remote_address", "decision", "fallback_allowed", "degraded", "memcached-unavailable")
			}},
		{name: "refused", reqs: []*rlsv3.RateLimitRequest{request(0, manyDescriptors(10000, "remote_address")...)},
			want: func(t *testing.T) *structpb.Struct { return rlsMeta(t, -1, "scope", "rls:test", "decision", "refused") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, setup{strategy: tc.strategy, config: func(c *rls.Config) { c.FailMode = tc.mode }})
			var resp *rlsv3.RateLimitResponse
			for _, req := range tc.reqs {
				resp = h.call(t, t0, req)
			}
			if got, want := resp.GetDynamicMetadata(), tc.want(t); !proto.Equal(got, want) {
				t.Errorf("dynamic_metadata:\n got %v\nwant %v", got, want)
			}
		})
	}
}
