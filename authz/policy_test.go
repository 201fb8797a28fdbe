package authz_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"

	"github.com/floodgate-rl/floodgate/authz"
	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/policy"
)

// mustPolicy parses src, failing the test on an error.
func mustPolicy(t testing.TB, src string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse([]byte(src))
	if err != nil {
		t.Fatalf("policy: %v", err)
	}
	return p
}

// setPolicy installs src in the rig's server.
func (r *rig) setPolicy(t testing.TB, src string) {
	t.Helper()
	if err := r.srv.SetPolicy(mustPolicy(t, src)); err != nil {
		t.Fatalf("SetPolicy: %v", err)
	}
}

// httpReq is what Envoy sends for method path from the peer src (an IP),
// with headers and context extensions.
func httpReq(src, method, path string, headers, ext map[string]string) *authv3.CheckRequest {
	h := map[string]string{":method": method, ":path": path, ":authority": "example.com"}
	for k, v := range headers {
		h[k] = v
	}
	req := checkReq(socket(src, 40000), h, ext)
	req.Attributes.Request.Http.Method = method
	req.Attributes.Request.Http.Path = path
	return req
}

func withShadow(resp *authv3.CheckResponse) *authv3.CheckResponse {
	ok := resp.GetOkResponse()
	if ok == nil {
		resp.HttpResponse = &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}}
		ok = resp.GetOkResponse()
	}
	ok.ResponseHeadersToAdd = append(ok.ResponseHeadersToAdd, hv("X-Floodgate-Shadow", "would-deny"))
	return resp
}

func blockedResp() *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(codes.PermissionDenied), Message: "blocked by policy"},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden},
			Headers: []*corev3.HeaderValueOption{hv("Content-Type", "text/plain")},
			Body:    "Forbidden by rate-limit policy",
		}},
	}
}

const e2ePolicy = `
blocklist:
  cidrs: [192.0.2.0/24, "2001:db8:bad::/48"]
  identities: ["header:x-api-key:revoked"]
allowlist:
  cidrs: [10.0.0.0/8, "fd00::/8"]
  identities: ["header:x-api-key:batch"]
rules:
- name: login-trial
  shadow: true
  match: {scope: login}
  limit: 1
  window: 1m
- name: login
  match: {scope: login, methods: [POST]}
  limit: 2
  window: 1m
- name: api
  match:
    path_prefix: /api/
    headers: [{name: x-api-key, present: true}]
  key: header:x-api-key
  tiers:
    header: x-plan
    default: free
    limits:
      free: {limit: 1, window: 1h}
      pro: {limit: 3, window: 1h}
- name: uploads
  match: {path_prefix: /upload}
  strategy: fixed
  limit: 1
  window: 1m
`

// TestPolicyEndToEnd applies a policy through a real gRPC server, with
// real strategies on a memory.Store.
func TestPolicyEndToEnd(t *testing.T) {
	t.Parallel()
	r := newRig(t, baseConfig(), "")
	r.setPolicy(t, e2ePolicy)
	login := map[string]string{"floodgate.scope": "login", "floodgate.limit": "50"}
	const client = "203.0.113.7"

	t.Run("a matching rule wins over the route's extensions", func(t *testing.T) {
		// The login rule says 2 per minute, the route 50 per hour: the rule
		// decides, and its name is the policy name. The shadow rule (1 per
		// minute) would deny the second.
		expect(t, "1st", r.check(t, httpReq(client, "POST", "/login", nil, login)), okResp(okHeaders(2, 1, 0, 60, "login")...))
		expect(t, "2nd", r.check(t, httpReq(client, "POST", "/login", nil, login)), withShadow(okResp(okHeaders(2, 0, 60, 60, "login")...)))
		expect(t, "3rd", r.check(t, httpReq(client, "POST", "/login", nil, login)), deniedResp(2, 60, 60, "login"))
		r.expectMetric(t, 2, "floodgate_shadow_denials_total", "rule", "login-trial")
	})

	t.Run("where no rule matches the route decides", func(t *testing.T) {
		// GET is not the login rule's; the route's 50 per hour, scope login.
		expect(t, "GET", r.check(t, httpReq(client, "GET", "/login", nil, login)), withShadow(okResp(okHeaders(50, 49, 0, 3600, "login")...)))
		expect(t, "no scope", r.check(t, httpReq(client, "GET", "/", nil, nil)), okResp(okHeaders(100, 99, 0, 3600, "default")...))
	})

	t.Run("the route's key applies where the rule sets none", func(t *testing.T) {
		ext := map[string]string{"floodgate.scope": "login", "floodgate.key": "header:x-user"}
		for _, user := range []string{"ann", "bob"} {
			expect(t, user+" 1st", r.check(t, httpReq("203.0.113.8", "POST", "/login", map[string]string{"x-user": user}, ext)), okResp(okHeaders(2, 1, 0, 60, "login")...))
		}
	})

	t.Run("tiers by header", func(t *testing.T) {
		free := map[string]string{"x-api-key": "k-free"}
		expect(t, "free 1st", r.check(t, httpReq(client, "GET", "/api/items", free, nil)), okResp(okHeaders(1, 0, 3600, 3600, "api")...))
		expect(t, "free 2nd", r.check(t, httpReq(client, "GET", "/api/items", free, nil)), deniedResp(1, 3600, 3600, "api"))
		pro := map[string]string{"x-api-key": "k-pro", "x-plan": "pro"}
		for i := 2; i >= 0; i-- {
			expect(t, "pro", r.check(t, httpReq("203.0.113.9", "GET", "/api/items", pro, nil)), okResp(okHeaders(3, i, reset(i, 3600), 3600, "api")...))
		}
		unknown := map[string]string{"x-api-key": "k-gold", "x-plan": "gold"}
		expect(t, "unknown tier: the default", r.check(t, httpReq(client, "GET", "/api/items", unknown, nil)), okResp(okHeaders(1, 0, 3600, 3600, "api")...))
	})

	t.Run("a rule's strategy", func(t *testing.T) {
		expect(t, "fixed 1st", r.check(t, httpReq(client, "PUT", "/upload/a", nil, nil)), okResp(okHeaders(1, 0, 30, 60, "uploads")...))
		expect(t, "fixed 2nd", r.check(t, httpReq(client, "PUT", "/upload/a", nil, nil)), deniedResp(1, 30, 60, "uploads"))
	})

	t.Run("blocklist", func(t *testing.T) {
		for _, src := range []string{"192.0.2.1", "::ffff:192.0.2.200", "2001:db8:bad::1"} {
			expect(t, src, r.check(t, httpReq(src, "GET", "/", nil, nil)), blockedResp())
		}
		expect(t, "identity", r.check(t, httpReq(client, "GET", "/api/x", map[string]string{"x-api-key": "revoked"}, nil)), blockedResp())
		// The blocklist wins over the allowlist.
		expect(t, "on both", r.check(t, httpReq("10.0.0.1", "GET", "/api/x", map[string]string{"x-api-key": "revoked"}, nil)), blockedResp())
		r.expectMetric(t, 5, "floodgate_decisions_total", "result", "blocked")
	})

	t.Run("allowlist", func(t *testing.T) {
		n := 0
		for _, src := range []string{"10.1.2.3", "::ffff:10.9.9.9", "fd00::1"} {
			for range 5 {
				expect(t, src, r.check(t, httpReq(src, "POST", "/login", nil, login)), okResp())
				n++
			}
		}
		for range 5 {
			expect(t, "identity", r.check(t, httpReq(client, "GET", "/api/x", map[string]string{"x-api-key": "batch"}, nil)), okResp())
			n++
		}
		r.expectMetric(t, float64(n), "floodgate_decisions_total", "result", "allowlisted")
	})
}

// reset is the X-RateLimit-Reset of an allowed request with remaining
// requests left: 0, or the window when none is left (all taken at once).
func reset(remaining, window int) int {
	if remaining > 0 {
		return 0
	}
	return window
}

func TestAllowlistedRequestsAreNotCounted(t *testing.T) {
	t.Parallel()
	r := newRig(t, authz.Config{Limit: 2, Window: time.Minute, Headers: true}, "")
	r.setPolicy(t, "allowlist:\n  cidrs: [198.51.100.0/24]\n")
	for range 10 {
		expect(t, "allowlisted", r.check(t, httpReq("198.51.100.1", "GET", "/", nil, nil)), okResp())
	}
	// Off the allowlist, the requestor has its whole quota: nothing was
	// counted while it was on it.
	if err := r.srv.SetPolicy(nil); err != nil {
		t.Fatal(err)
	}
	expect(t, "after", r.check(t, httpReq("198.51.100.1", "GET", "/", nil, nil)), okResp(okHeaders(2, 1, 0, 60, "default")...))
}

func TestListsUseTheXFFClientAddress(t *testing.T) {
	t.Parallel()
	k, err := authz.ParseKey("source", 1)
	if err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig()
	cfg.Key = k
	r := newRig(t, cfg, "")
	r.setPolicy(t, `
blocklist:
  cidrs: [192.0.2.0/24]
allowlist:
  cidrs: [10.0.0.0/8]
rules:
- name: by-client
  match: {path_prefix: /xff}
  key: xff
  limit: 1
  window: 1m
`)
	xff := map[string]string{"x-forwarded-for": "192.0.2.9, 10.0.0.1"}
	// Under the xff key, the client is the entry one trusted hop from the
	// right: blocked, though the peer is on the allowlist.
	expect(t, "xff key", r.check(t, httpReq("10.0.0.1", "GET", "/xff", xff, nil)), blockedResp())
	// Under the source key, the client is the peer.
	expect(t, "source key", r.check(t, httpReq("10.0.0.1", "GET", "/", xff, nil)), okResp())
	// A route's xff key counts as well.
	expect(t, "route xff key", r.check(t, httpReq("10.0.0.1", "GET", "/", xff, map[string]string{"floodgate.key": "xff"})), blockedResp())
}

func TestShadowRulesNeverDeny(t *testing.T) {
	t.Parallel()
	for _, headers := range []bool{true, false} {
		t.Run(fmt.Sprintf("headers=%v", headers), func(t *testing.T) {
			t.Parallel()
			r := newRig(t, authz.Config{Limit: 1000, Window: time.Hour, Headers: headers}, "")
			r.setPolicy(t, `
rules:
- name: strict
  shadow: true
  limit: 1
  window: 1h
- name: stricter
  shadow: true
  strategy: token-bucket
  limit: 2
  window: 1h
`)
			for i := range 20 {
				resp := r.check(t, httpReq("203.0.113.7", "GET", "/", nil, nil))
				want := okResp()
				if headers {
					want = okResp(okHeaders(1000, 999-i, 0, 3600, "default")...)
				}
				if i > 0 {
					want = withShadow(want)
				}
				expect(t, fmt.Sprintf("request %d", i+1), resp, want)
			}
			for rule, want := range map[string]float64{"strict": 19, "stricter": 18} {
				r.expectMetric(t, want, "floodgate_shadow_denials_total", "rule", rule)
			}
			r.expectMetric(t, 20, "floodgate_decisions_total", "result", "allowed")
			r.expectMetric(t, 0, "floodgate_decisions_total", "result", "denied")
		})
	}
}

// shadowTrialPolicy enforces 3 a minute, with a shadow rule of 1 a
// minute on /a before the enforcing rule and one after it.
const shadowTrialPolicy = `
rules:
- name: trial
  shadow: true
  match: {path_prefix: /a}
  limit: 1
  window: 1m
- name: enforced
  limit: 3
  window: 1m
- name: after
  shadow: true
  limit: 1
  window: 1m
`

func TestShadowRuleBeforeTheEnforcingOne(t *testing.T) {
	t.Parallel()
	r := newRig(t, authz.Config{Limit: 1000, Window: time.Hour, Headers: true}, "")
	r.setPolicy(t, shadowTrialPolicy)
	// The shadow rule after the deciding one never runs; the one before
	// does, in its own scope.
	expect(t, "1", r.check(t, httpReq("203.0.113.7", "GET", "/a", nil, nil)), okResp(okHeaders(3, 2, 0, 60, "enforced")...))
	expect(t, "2", r.check(t, httpReq("203.0.113.7", "GET", "/a", nil, nil)), withShadow(okResp(okHeaders(3, 1, 0, 60, "enforced")...)))
	expect(t, "3", r.check(t, httpReq("203.0.113.7", "GET", "/b", nil, nil)), okResp(okHeaders(3, 0, 60, 60, "enforced")...))
	expect(t, "4", r.check(t, httpReq("203.0.113.7", "GET", "/a", nil, nil)), deniedResp(3, 60, 60, "enforced"))
	r.expectMetric(t, 2, "floodgate_shadow_denials_total", "rule", "trial")
	r.expectMetric(t, 0, "floodgate_shadow_denials_total", "rule", "after")
}

func TestShadowFailureIgnored(t *testing.T) {
	t.Parallel()
	failing := &fakeStrategy{AllowFn: decide(limiter.Decision{}, errStore)}
	cfg := baseConfig()
	cfg.Strategies = map[string]limiter.Strategy{"fixed": failing}
	h := newHarness(t, &fakeStrategy{}, cfg)
	if err := h.srv.SetPolicy(mustPolicy(t, "rules:\n- name: s\n  shadow: true\n  strategy: fixed\n  limit: 1\n  window: 1s\n")); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		expect(t, "answer", h.check(t, fromIP(nil)), okResp(okHeaders(100, 99, 0, 3600, "default")...))
	}
	if n := h.logs.CountLines("shadow rule failed to decide, ignored", "rule=s"); n != 1 {
		t.Errorf("%d log lines about the failing shadow rule, want 1:\n%s", n, h.logs)
	}
	h.expectMetric(t, 0, "floodgate_decisions_total", "result", "fail_open")
}

func TestRulesHaveTheirOwnCounters(t *testing.T) {
	t.Parallel()
	r := newRig(t, authz.Config{Limit: 1000, Window: time.Hour, Headers: true}, "")
	r.setPolicy(t, `
rules:
- {name: a, match: {path_prefix: /a}, limit: 1, window: 1m}
- {name: b, match: {path_prefix: /b}, limit: 1, window: 1m}
- {name: c, match: {path_prefix: /c}, scope: shared, limit: 1, window: 1m}
- {name: d, match: {path_prefix: /d}, scope: shared, limit: 1, window: 1m}
`)
	expect(t, "a", r.check(t, httpReq("203.0.113.7", "GET", "/a", nil, nil)), okResp(okHeaders(1, 0, 60, 60, "a")...))
	expect(t, "b: its own counter", r.check(t, httpReq("203.0.113.7", "GET", "/b", nil, nil)), okResp(okHeaders(1, 0, 60, 60, "b")...))
	expect(t, "c", r.check(t, httpReq("203.0.113.7", "GET", "/c", nil, nil)), okResp(okHeaders(1, 0, 60, 60, "shared")...))
	expect(t, "d: c's counter", r.check(t, httpReq("203.0.113.7", "GET", "/d", nil, nil)), deniedResp(1, 60, 60, "shared"))
}

func TestSetPolicy(t *testing.T) {
	t.Parallel()
	h := newHarness(t, &fakeStrategy{}, baseConfig())
	good := mustPolicy(t, "rules:\n- name: r\n  limit: 5\n  window: 1m\n")
	if err := h.srv.SetPolicy(good); err != nil {
		t.Fatal(err)
	}
	// A strategy the server lacks is refused, and the policy stays.
	err := h.srv.SetPolicy(mustPolicy(t, "rules:\n- name: r\n  strategy: fixed\n  limit: 5\n  window: 1m\n"))
	if err == nil || !strings.Contains(err.Error(), "rule r: strategy fixed: not available on this server (have sliding)") {
		t.Errorf("SetPolicy with an unavailable strategy: %v", err)
	}
	if h.srv.Policy() != good {
		t.Error("policy replaced by a refused one")
	}
	if err := h.srv.SetPolicy(nil); err != nil || h.srv.Policy() != nil {
		t.Errorf("SetPolicy(nil): %v, policy %v", err, h.srv.Policy())
	}

	// A default strategy that cannot enforce a rule's limit.
	cfg := baseConfig()
	cfg.Strategy = "sliding-log"
	h2 := newHarness(t, &fakeStrategy{}, cfg)
	err = h2.srv.SetPolicy(mustPolicy(t, "rules:\n- name: big\n  limit: 5000\n  window: 1m\n"))
	if err == nil || !strings.Contains(err.Error(), "line 2: rules[0] big: limit 5000: the default strategy sliding-log takes at most 1000") {
		t.Errorf("SetPolicy beyond sliding-log: %v", err)
	}
}

func TestShadowSeriesFollowThePolicy(t *testing.T) {
	t.Parallel()
	h := newHarness(t, &fakeStrategy{}, baseConfig())
	set := func(src string) {
		t.Helper()
		if err := h.srv.SetPolicy(mustPolicy(t, src)); err != nil {
			t.Fatal(err)
		}
	}
	set("rules:\n- name: s1\n  shadow: true\n  limit: 1\n  window: 1s\n- name: s2\n  shadow: true\n  limit: 1\n  window: 1s\n")
	if h.metric(t, "floodgate_shadow_denials_total", "rule", "s1") != 0 || h.metric(t, "floodgate_shadow_denials_total", "rule", "s2") != 0 {
		t.Error("shadow series not exported at 0")
	}
	set("rules:\n- name: s2\n  shadow: true\n  limit: 1\n  window: 1s\n")
	if h.metric(t, "floodgate_shadow_denials_total", "rule", "s1") != -1 || h.metric(t, "floodgate_shadow_denials_total", "rule", "s2") != 0 {
		t.Error("series of a removed shadow rule still exported, or s2's dropped")
	}
}

// TestSetPolicyWhileChecking swaps policies while checks run: every answer
// follows one policy or the other, whole (run with -race).
func TestSetPolicyWhileChecking(t *testing.T) {
	t.Parallel()
	fs := &fakeStrategy{}
	h := newHarness(t, fs, baseConfig())
	a := mustPolicy(t, "rules:\n- name: a\n  limit: 5\n  window: 1m\n")
	b := mustPolicy(t, "rules:\n- name: b\n  limit: 7\n  window: 2m\n")
	// The swapping goroutine runs from before the first check until after
	// the last, so every check overlaps it.
	ctx, cancel := context.WithCancel(context.Background())
	swapped := make(chan struct{})
	swapperDone := make(chan struct{})
	go func() {
		defer close(swapperDone)
		for i := 0; ctx.Err() == nil; i++ {
			p := a
			if i%2 == 1 {
				p = b
			}
			if err := h.srv.SetPolicy(p); err != nil {
				t.Error(err)
				close(swapped)
				return
			}
			if i == 1 {
				close(swapped) // both policies have been set once
			}
		}
	}()
	<-swapped
	var checkers sync.WaitGroup
	for range 4 {
		checkers.Go(func() {
			for range 100 {
				h.check(t, fromIP(nil))
			}
		})
	}
	checkers.Wait()
	cancel()
	<-swapperDone
	for _, req := range fs.requests() {
		ok := req.Scope == "a" && req.Limit == 5 && req.Window == time.Minute ||
			req.Scope == "b" && req.Limit == 7 && req.Window == 2*time.Minute
		if !ok {
			t.Fatalf("request %+v mixes policies", req)
		}
	}
}

func TestPolicyInputFromHeaders(t *testing.T) {
	t.Parallel()
	// Method and path come from http.method and http.path, or else from
	// the pseudo-headers; headers may come in header_map, repeated.
	fs := &fakeStrategy{}
	h := newHarness(t, fs, baseConfig())
	if err := h.srv.SetPolicy(mustPolicy(t, `
rules:
- name: hit
  match:
    methods: [DELETE]
    path_prefix: /v1/
    headers: [{name: x-tags, exact: "a,b"}, {name: x-empty, present: true}]
  limit: 1
  window: 1s
`)); err != nil {
		t.Fatal(err)
	}
	req := checkReq(socket("203.0.113.7", 1), map[string]string{":method": "DELETE", ":path": "/v1/x"}, nil)
	req.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: "x-tags", Value: "a"}, {Key: "X-Tags", RawValue: []byte("b")}, {Key: "x-empty"},
	}}
	h.check(t, req)
	if got := fs.last(t); got.Scope != "hit" {
		t.Errorf("request %+v did not match the rule", got)
	}
}
