package authz_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/floodgate-rl/floodgate/authz"
	"github.com/floodgate-rl/floodgate/internal/testutil"
	"github.com/floodgate-rl/floodgate/limiter"
)

// meta builds the expected dynamic metadata: string fields in kv pairs,
// and remaining as a number when it is not negative.
func meta(t testing.TB, remaining int, kv ...string) *structpb.Struct {
	return testutil.Metadata(t, authz.MetaRemaining, remaining, kv...)
}

// TestMetadataOfDecisions checks the dynamic_metadata of every kind of
// answer Check gives, over gRPC: scope, rule (only when one decided),
// decision, remaining (only when counted), degraded and shadow (only when
// so), whatever the headers setting.
func TestMetadataOfDecisions(t *testing.T) {
	t.Parallel()
	allowed := limiter.Decision{Allowed: true, Remaining: 41}
	denied := limiter.Decision{RetryAfter: 3 * time.Second}
	login := map[string]string{"floodgate.scope": "login", "floodgate.limit": "5"}
	for _, tt := range []struct {
		name     string
		s        limiter.Strategy
		headers  bool
		failMode authz.FailMode
		ext      map[string]string
		want     func(testing.TB) *structpb.Struct
	}{
		{name: "allowed", s: &fakeStrategy{AllowFn: decide(allowed, nil)}, headers: true,
			want: func(t testing.TB) *structpb.Struct { return meta(t, 41, "scope", "default", "decision", "allowed") }},
		{name: "allowed without headers", s: &fakeStrategy{AllowFn: decide(allowed, nil)},
			want: func(t testing.TB) *structpb.Struct { return meta(t, 41, "scope", "default", "decision", "allowed") }},
		{name: "allowed, remaining capped at the limit", s: &fakeStrategy{AllowFn: decide(limiter.Decision{Allowed: true, Remaining: 99}, nil)}, headers: true, ext: login,
			want: func(t testing.TB) *structpb.Struct { return meta(t, 5, "scope", "login", "decision", "allowed") }},
		{name: "denied", s: &fakeStrategy{AllowFn: decide(denied, nil)}, headers: true, ext: login,
			want: func(t testing.TB) *structpb.Struct { return meta(t, 0, "scope", "login", "decision", "denied") }},
		{name: "fail open", s: &fakeStrategy{AllowFn: decide(limiter.Decision{}, errStore)}, ext: login,
			want: func(t testing.TB) *structpb.Struct { return meta(t, -1, "scope", "login", "decision", "fail_open") }},
		{name: "fail closed", s: &fakeStrategy{AllowFn: decide(limiter.Decision{}, errStore)}, failMode: authz.FailClosed,
			want: func(t testing.TB) *structpb.Struct { return meta(t, -1, "scope", "default", "decision", "fail_closed") }},
		{name: "fallback allowed", s: &degradedStrategy{d: limiter.Decision{Allowed: true, Remaining: 4}, reason: "memcached-unavailable"}, headers: true,
			want: func(t testing.TB) *structpb.Struct {
				return meta(t, 4, "scope", "default", "decision", "fallback_allowed", "degraded", "memcached-unavailable")
			}},
		{name: "fallback denied", s: &degradedStrategy{d: denied, reason: "memcached-overloaded"}, ext: login,
			want: func(t testing.TB) *structpb.Struct {
				return meta(t, 0, "scope", "login", "decision", "fallback_denied", "degraded", "memcached-overloaded")
			}},
		{name: "degraded reason not a token", s: &degradedStrategy{d: denied, reason: "bad reason\n"},
			want: func(t testing.TB) *structpb.Struct {
				return meta(t, 0, "scope", "default", "decision", "fallback_denied", "degraded", "degraded")
			}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := baseConfig()
			cfg.Headers, cfg.FailMode = tt.headers, tt.failMode
			h := newHarness(t, tt.s, cfg)
			got := h.checkFull(t, fromIP(tt.ext)).GetDynamicMetadata()
			if want := tt.want(t); !proto.Equal(got, want) {
				t.Errorf("dynamic_metadata:\n got %v\nwant %v", got, want)
			}
		})
	}
}

// TestMetadataOfPolicyDecisions checks the metadata of answers decided by
// a policy file: the rule that decided, the blocklist and the allowlist,
// and a shadow rule that would have denied.
func TestMetadataOfPolicyDecisions(t *testing.T) {
	t.Parallel()
	r := newRig(t, authz.Config{Limit: 100, Window: time.Hour, Headers: true}, "")
	r.setPolicy(t, e2ePolicy)
	login := map[string]string{"floodgate.scope": "login"}
	check := func(req *authv3.CheckRequest) *structpb.Struct {
		t.Helper()
		return r.checkFull(t, req).GetDynamicMetadata()
	}
	for _, step := range []struct {
		name string
		req  *authv3.CheckRequest
		want *structpb.Struct
	}{
		{"no rule", httpReq("203.0.113.7", "GET", "/", nil, nil),
			meta(t, 99, "scope", "default", "decision", "allowed")},
		{"login 1", httpReq("203.0.113.7", "POST", "/login", nil, login),
			meta(t, 1, "scope", "login", "rule", "login", "decision", "allowed")},
		{"login 2: the shadow rule would deny", httpReq("203.0.113.7", "POST", "/login", nil, login),
			meta(t, 0, "scope", "login", "rule", "login", "decision", "allowed", "shadow", "would-deny")},
		{"login 3", httpReq("203.0.113.7", "POST", "/login", nil, login),
			meta(t, 0, "scope", "login", "rule", "login", "decision", "denied")},
		{"blocked", httpReq("192.0.2.9", "POST", "/login", nil, login),
			meta(t, -1, "scope", "login", "rule", "login", "decision", "blocked")},
		{"allowlisted", httpReq("10.1.2.3", "GET", "/", nil, nil),
			meta(t, -1, "scope", "default", "decision", "allowlisted")},
	} {
		if got := check(step.req); !proto.Equal(got, step.want) {
			t.Errorf("%s: dynamic_metadata:\n got %v\nwant %v", step.name, got, step.want)
		}
	}
}

// TestMetadataOfPanic: a panicking translation answers by the fail mode,
// with the metadata of a failure.
func TestMetadataOfPanic(t *testing.T) {
	t.Parallel()
	fs := &fakeStrategy{AllowFn: func(context.Context, limiter.Request, time.Time) (limiter.Decision, error) {
		panic("strategy bug")
	}}
	h := newHarness(t, fs, baseConfig())
	got := h.checkFull(t, fromIP(map[string]string{"floodgate.scope": "login"})).GetDynamicMetadata()
	if want := meta(t, -1, "scope", "default", "decision", "fail_open"); !proto.Equal(got, want) {
		t.Errorf("dynamic_metadata:\n got %v\nwant %v", got, want)
	}
}

// TestMetadataOfSharedSeries: denials share their metadata per scope and
// rule, yet every response names its own scope, past the label cap (where
// scopes share a series) too, under concurrent checks.
func TestMetadataOfSharedSeries(t *testing.T) {
	t.Parallel()
	h := newHarness(t, &fakeStrategy{AllowFn: decide(limiter.Decision{RetryAfter: time.Second}, nil)}, baseConfig())
	const scopes = authz.MaxLabelValues + 6
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 2 * scopes {
				scope := fmt.Sprintf("s%02d", (i+g)%scopes)
				resp, err := h.client.Check(context.Background(), fromIP(map[string]string{"floodgate.scope": scope}))
				if err != nil {
					t.Errorf("Check: %v", err)
					return
				}
				if want := meta(t, 0, "scope", scope, "decision", "denied"); !proto.Equal(resp.GetDynamicMetadata(), want) {
					t.Errorf("dynamic_metadata %v, want %v", resp.GetDynamicMetadata(), want)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestMetadataShadowNotShared: an allowed answer's metadata is shared by
// the answers of its scope, rule and remaining count, so a shadow rule's
// would-deny must go on a copy, never on the shared one.
func TestMetadataShadowNotShared(t *testing.T) {
	t.Parallel()
	r := newRig(t, authz.Config{Limit: 100, Window: time.Hour}, "")
	r.setPolicy(t, shadowTrialPolicy)
	for _, step := range []struct {
		ip, path string
		want     *structpb.Struct
	}{
		{"203.0.113.1", "/a", meta(t, 2, "scope", "enforced", "rule", "enforced", "decision", "allowed")},
		{"203.0.113.1", "/a", meta(t, 1, "scope", "enforced", "rule", "enforced", "decision", "allowed", "shadow", "would-deny")},
		{"203.0.113.2", "/b", meta(t, 2, "scope", "enforced", "rule", "enforced", "decision", "allowed")},
		{"203.0.113.2", "/b", meta(t, 1, "scope", "enforced", "rule", "enforced", "decision", "allowed")},
		{"203.0.113.1", "/a", meta(t, 0, "scope", "enforced", "rule", "enforced", "decision", "allowed", "shadow", "would-deny")},
		{"203.0.113.2", "/b", meta(t, 0, "scope", "enforced", "rule", "enforced", "decision", "allowed")},
	} {
		if got := r.checkFull(t, httpReq(step.ip, "GET", step.path, nil, nil)).GetDynamicMetadata(); !proto.Equal(got, step.want) {
			t.Errorf("%s %s: dynamic_metadata:\n got %v\nwant %v", step.ip, step.path, got, step.want)
		}
	}
}
