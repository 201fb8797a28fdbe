package rls_test

import (
	"context"
	"testing"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
)

// TestAnswersShareNothingTheyChange checks that the messages answers share
// (a rule's current_limit and RateLimit-Policy, the metadata's strings)
// are never changed by a later answer: every answer, kept as it was
// returned, is the same after the others, of other outcomes, descriptor
// counts and overrides, in process (gRPC would marshal each before the
// next).
func TestAnswersShareNothingTheyChange(t *testing.T) {
	t.Parallel()
	h := newHarness(t, setup{})
	addr := func() *ratelimitv3.RateLimitDescriptor { return desc("remote_address=192.0.2.1") }
	login := func() *ratelimitv3.RateLimitDescriptor { return desc("route=login", "remote_address=192.0.2.1") }
	reqs := []*rlsv3.RateLimitRequest{
		request(0, addr()),
		request(0, addr(), login()),
		request(0, addr(), login(), desc("api_key=unlimited-key")),
		request(0, login()),
		request(0, override(addr(), 1, typev3.RateLimitUnit_MINUTE, 2)),
		request(0, addr(), login(), override(addr(), 1, typev3.RateLimitUnit_MINUTE, 0)),
		request(0, addr()),
		{Domain: "nope", Descriptors: []*ratelimitv3.RateLimitDescriptor{addr()}},
	}
	var got, kept []*rlsv3.RateLimitResponse
	for _, req := range reqs {
		resp, err := h.srv.ShouldRateLimit(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		got, kept = append(got, resp), append(kept, proto.Clone(resp).(*rlsv3.RateLimitResponse))
	}
	for i := range got {
		if !proto.Equal(got[i], kept[i]) {
			t.Errorf("answer %d changed by later answers:\n now %v\nthen %v", i, got[i], kept[i])
		}
	}
	if s := summary(kept[len(kept)-2]); s != `OVER_LIMIT [OVER_LIMIT 3/MINUTE rem=0 reset=60s] body="Rate limit exceeded. Try again in 60 seconds" resp:Retry-After=60 `+policyAddr+` resp:RateLimit="test.remote_address";r=0;t=60` {
		t.Errorf("a client over its limit: %s", s)
	}
}
