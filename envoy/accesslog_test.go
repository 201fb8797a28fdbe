package envoy_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/internal/testutil"
)

// logFields are the fields of the access log lines the tests check: what
// floodgate answered (the ext_authz filter's dynamic metadata) and what the
// client got. A missing field is null in Envoy's JSON line, as nil here.
var logFields = []string{
	"path", "status", "response_flags", "floodgate_decision", "floodgate_scope", "floodgate_rule",
	"floodgate_remaining", "floodgate_degraded", "floodgate_shadow",
}

// accessLines returns the JSON access log lines Envoy has written to
// stdout so far, in order, decoded and as they are.
func accessLines(t *testing.T, envoy *testutil.Envoy) ([]map[string]any, []string) {
	t.Helper()
	var out []map[string]any
	var raw []string
	for line := range strings.Lines(envoy.Process.Output()) {
		if !strings.HasPrefix(line, "{") {
			continue // Envoy's own log
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("access log line %q: %v", line, err)
		}
		out = append(out, m)
		raw = append(raw, strings.TrimSpace(line))
	}
	return out, raw
}

// waitAccessLines waits until Envoy has logged n requests (it writes its
// access log in the background) and returns the lines.
func waitAccessLines(t *testing.T, envoy *testutil.Envoy, n int) ([]map[string]any, []string) {
	t.Helper()
	var lines []map[string]any
	var raw []string
	testutil.WaitFor(t, 10*time.Second, func() error {
		if lines, raw = accessLines(t, envoy); len(lines) < n {
			return fmt.Errorf("%d access log lines, want %d; Envoy's output:\n%s", len(lines), n, envoy.Process.Tail())
		}
		return nil
	})
	return lines, raw
}

// logged is a request to send and the fields its access log line must
// have (logFields; a field left out must be null, response_flags "-").
type logged struct {
	path string
	want map[string]any
}

// checkAccessLog sends each request through e's Envoy, in order, and checks
// the access log line of each.
func checkAccessLog(t *testing.T, e *edge, steps []logged) {
	t.Helper()
	for _, s := range steps {
		e.get(t, s.path, nil)
	}
	lines, raw := waitAccessLines(t, e.envoy, len(steps))
	if len(lines) != len(steps) {
		t.Fatalf("%d access log lines for %d requests:\n%v", len(lines), len(steps), lines)
	}
	for i, s := range steps {
		for _, f := range logFields {
			want, got := s.want[f], lines[i][f]
			switch _, set := s.want[f]; {
			case f == "path":
				want = s.path
			case f == "response_flags" && !set:
				want = "-"
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("request %d (%s): %s = %v, want %v\nline: %v", i+1, s.path, f, got, want, lines[i])
			}
		}
	}
	for i := range steps {
		t.Logf("access log line %d: %s", i+1, raw[i])
	}
}

// accessPolicy is a policy file with a rule for /api and a shadow rule
// before it that allows one request.
const accessPolicy = `
rules:
- name: api-trial
  shadow: true
  match: {path_prefix: /api/}
  limit: 1
  window: 1h
- name: api
  match: {path_prefix: /api/}
  limit: 2
  window: 1h
`

// TestFrontProxyAccessLog drives front-proxy.yaml with floodgate deciding
// (with a policy file): allowed and denied requests in the default scope,
// the login route's scope, a policy rule with a shadow rule that would
// deny, and /healthz, which floodgate never sees; each access log line
// says what floodgate answered.
func TestFrontProxyAccessLog(t *testing.T) {
	setup(t)
	pol := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(pol, []byte(accessPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	e := startEdge(t, "front-proxy.yaml", testutil.StartFloodgate(t, "--limit", "1", "--window", "1h", "--policy", pol))
	checkAccessLog(t, e, []logged{
		{"/", map[string]any{"status": 200, "floodgate_decision": "allowed", "floodgate_scope": "default", "floodgate_remaining": 0}},
		{"/", map[string]any{"status": 429, "response_flags": "UAEX", "floodgate_decision": "denied", "floodgate_scope": "default", "floodgate_remaining": 0}},
		{"/login", map[string]any{"status": 200, "floodgate_decision": "allowed", "floodgate_scope": "login", "floodgate_remaining": 4}},
		{"/api/items", map[string]any{"status": 200, "floodgate_decision": "allowed", "floodgate_scope": "api", "floodgate_rule": "api", "floodgate_remaining": 1}},
		{"/api/items", map[string]any{"status": 200, "floodgate_decision": "allowed", "floodgate_scope": "api", "floodgate_rule": "api", "floodgate_remaining": 0, "floodgate_shadow": "would-deny"}},
		{"/api/items", map[string]any{"status": 429, "response_flags": "UAEX", "floodgate_decision": "denied", "floodgate_scope": "api", "floodgate_rule": "api", "floodgate_remaining": 0}},
		{"/healthz", map[string]any{"status": 200}},
	})
}

// TestSidecarAccessLog drives sidecar.yaml: an allowed and a denied
// request in the service's scope, and the probes floodgate never sees.
func TestSidecarAccessLog(t *testing.T) {
	setup(t)
	e := startEdge(t, "sidecar.yaml", testutil.StartFloodgate(t, "--limit", "1", "--window", "1h"))
	checkAccessLog(t, e, []logged{
		{"/orders", map[string]any{"status": 200, "floodgate_decision": "allowed", "floodgate_scope": "my-app", "floodgate_remaining": 0}},
		{"/orders", map[string]any{"status": http.StatusTooManyRequests, "response_flags": "UAEX", "floodgate_decision": "denied", "floodgate_scope": "my-app", "floodgate_remaining": 0}},
		{"/healthz", map[string]any{"status": 200}},
		{"/readyz", map[string]any{"status": 200}},
	})
}

// TestSidecarAccessLogDegraded: with memcached down, floodgate's default
// --fail-mode local decides in the replica's memory, and the access log
// says so and why.
func TestSidecarAccessLogDegraded(t *testing.T) {
	setup(t)
	mc := testutil.StartMemcached(t)
	e := startEdge(t, "sidecar.yaml", testutil.StartFloodgate(t, "--memcache-servers", mc.Addr(), "--limit", "1", "--window", "1h"))
	mc.Stop()
	checkAccessLog(t, e, []logged{
		{"/orders", map[string]any{"status": 200, "floodgate_decision": "fallback_allowed", "floodgate_scope": "my-app",
			"floodgate_remaining": 0, "floodgate_degraded": "memcached-unavailable"}},
		{"/orders", map[string]any{"status": 429, "response_flags": "UAEX", "floodgate_decision": "fallback_denied", "floodgate_scope": "my-app",
			"floodgate_remaining": 0, "floodgate_degraded": "memcached-unavailable"}},
	})
}
