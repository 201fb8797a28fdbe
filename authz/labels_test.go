package authz_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/authz"
	"github.com/floodgate-rl/floodgate/internal/testutil"
)

// labelValues returns the sorted distinct values of label among the
// series of name.
func (h *harness) labelValues(t testing.TB, name, label string) []string {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var out []string
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && !slices.Contains(out, lp.GetValue()) {
					out = append(out, lp.GetValue())
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestDecisionLabels checks the scope and rule labels of
// floodgate_decisions_total: the route's scope (default for none) with
// rule none, a policy rule's scope and name, and every result of the
// default scope exported from the start.
func TestDecisionLabels(t *testing.T) {
	t.Parallel()
	r := newRig(t, authz.Config{Limit: 100, Window: time.Hour, Headers: true}, "")
	for _, res := range []string{"allowed", "denied", "fail_open", "fail_closed", "fallback_allowed", "fallback_denied", "allowlisted", "blocked"} {
		r.expectMetric(t, 0, "floodgate_decisions_total", "result", res, "scope", "default", "rule", "none")
	}
	r.setPolicy(t, e2ePolicy)
	login := map[string]string{"floodgate.scope": "login"}
	other := map[string]string{"floodgate.scope": "checkout"}
	for range 3 {
		r.check(t, httpReq("203.0.113.7", "POST", "/login", nil, login)) // rule login: 2 allowed, 1 denied
	}
	r.check(t, httpReq("203.0.113.7", "GET", "/login", nil, login)) // scope login, no rule
	r.check(t, httpReq("203.0.113.7", "GET", "/", nil, other))
	r.check(t, httpReq("203.0.113.7", "GET", "/", nil, nil))
	r.check(t, httpReq("192.0.2.1", "GET", "/", nil, nil))
	// The policy's rules are exported at 0 from the start (api here).
	testutil.ExpectSeries(t, r.reg, `
floodgate_decisions_total{result="allowed",scope="login",rule="login"} 2
floodgate_decisions_total{result="denied",scope="login",rule="login"} 1
floodgate_decisions_total{result="allowed",scope="login",rule="none"} 1
floodgate_decisions_total{result="allowed",scope="checkout",rule="none"} 1
floodgate_decisions_total{result="allowed",scope="default",rule="none"} 1
floodgate_decisions_total{result="blocked",scope="default",rule="none"} 1
floodgate_decisions_total{result="allowed",scope="api",rule="api"} 0
`)
	// Shadow rules decide nothing: they have floodgate_shadow_denials_total.
	if got := r.labelValues(t, "floodgate_decisions_total", "rule"); !slices.Equal(got, []string{"api", "login", "none", "uploads"}) {
		t.Errorf("rule labels %q, want the enforcing rules and none", got)
	}
}

// TestDecisionLabelsBounded: past MaxLabelValues scopes, or rules, the
// decisions are counted under other; none is lost.
func TestDecisionLabelsBounded(t *testing.T) {
	t.Parallel()
	t.Run("route scopes", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, &fakeStrategy{}, baseConfig())
		const n = authz.MaxLabelValues + 10
		for i := range n {
			h.check(t, fromIP(map[string]string{"floodgate.scope": fmt.Sprintf("s%02d", i)}))
			h.check(t, fromIP(map[string]string{"floodgate.scope": fmt.Sprintf("s%02d", i)})) // seen before: the same series
		}
		scopes := h.labelValues(t, "floodgate_decisions_total", "scope")
		if len(scopes) != authz.MaxLabelValues+1 || !slices.Contains(scopes, "other") || !slices.Contains(scopes, "default") {
			t.Errorf("%d scope labels %q, want %d: default, the first %d scopes, other", len(scopes), scopes, authz.MaxLabelValues+1, authz.MaxLabelValues-1)
		}
		h.expectMetric(t, 2*n, "floodgate_decisions_total", "result", "allowed")
		h.expectMetric(t, 2*(n-authz.MaxLabelValues+1), "floodgate_decisions_total", "scope", "other")
	})
	t.Run("policy rules", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, authz.Config{Limit: 100, Window: time.Hour, Headers: true}, "")
		const n = authz.MaxLabelValues + 5
		var src strings.Builder
		src.WriteString("rules:\n")
		for i := range n {
			fmt.Fprintf(&src, "- name: r%02d\n  scope: shared\n  match: {path_prefix: /r%02d}\n  limit: 10\n  window: 1h\n", i, i)
		}
		r.setPolicy(t, src.String())
		for i := range n {
			r.check(t, httpReq("203.0.113.7", "GET", fmt.Sprintf("/r%02d", i), nil, nil))
		}
		rules := r.labelValues(t, "floodgate_decisions_total", "rule")
		if len(rules) != authz.MaxLabelValues+2 || rules[0] != "none" || rules[1] != "other" {
			t.Errorf("%d rule labels %q, want none, other and %d rules", len(rules), rules, authz.MaxLabelValues)
		}
		r.expectMetric(t, n-authz.MaxLabelValues, "floodgate_decisions_total", "rule", "other")
		r.expectMetric(t, 1, "floodgate_decisions_total", "rule", "r00")
	})
}

// TestDecisionLabelsFollowThePolicy: a reload drops the series of rules
// it no longer has and adds the new ones, so that reloads never pile up
// series (or use up the cap); a route scope's series stay.
func TestDecisionLabelsFollowThePolicy(t *testing.T) {
	t.Parallel()
	r := newRig(t, authz.Config{Limit: 100, Window: time.Hour, Headers: true}, "")
	for i := range 3 * authz.MaxLabelValues {
		r.setPolicy(t, fmt.Sprintf("rules:\n- name: gen%d\n  limit: 10\n  window: 1h\n", i))
		r.check(t, httpReq("203.0.113.7", "GET", "/", nil, nil))
	}
	if got, want := r.labelValues(t, "floodgate_decisions_total", "rule"), []string{fmt.Sprintf("gen%d", 3*authz.MaxLabelValues-1), "none"}; !slices.Equal(got, want) {
		t.Errorf("rule labels after reloads %q, want %q", got, want)
	}
	r.expectMetric(t, 1, "floodgate_decisions_total", "result", "allowed", "rule", fmt.Sprintf("gen%d", 3*authz.MaxLabelValues-1))
	last := fmt.Sprintf("gen%d", 3*authz.MaxLabelValues-1)
	if got, want := r.labelValues(t, "floodgate_decisions_total", "scope"), []string{"default", last}; !slices.Equal(got, want) {
		t.Errorf("scope labels after reloads %q, want %q: the policy's scopes are labelled anew", got, want)
	}
	if err := r.srv.SetPolicy(nil); err != nil {
		t.Fatal(err)
	}
	r.check(t, httpReq("203.0.113.7", "GET", "/", nil, map[string]string{"floodgate.scope": "route"}))
	if got, want := r.labelValues(t, "floodgate_decisions_total", "rule"), []string{"none"}; !slices.Equal(got, want) {
		t.Errorf("rule labels without a policy %q, want %q", got, want)
	}
	r.expectMetric(t, 1, "floodgate_decisions_total", "result", "allowed", "scope", "route", "rule", "none")
}

// TestDegradedReasonsExported: Config.DegradedReasons are exported at 0
// before any degraded decision, for both results.
func TestDegradedReasonsExported(t *testing.T) {
	t.Parallel()
	cfg := baseConfig()
	cfg.DegradedReasons = []string{"memcached-unavailable", "memcached-overloaded", "not a token"}
	h := newHarness(t, &fakeStrategy{}, cfg)
	for _, reason := range []string{"memcached-unavailable", "memcached-overloaded"} {
		for _, res := range []string{"allowed", "denied"} {
			h.expectMetric(t, 0, "floodgate_degraded_decisions_total", "reason", reason, "result", res)
		}
	}
	if got := h.labelValues(t, "floodgate_degraded_decisions_total", "reason"); !slices.Equal(got, []string{"memcached-overloaded", "memcached-unavailable"}) {
		t.Errorf("reasons %q, want the two valid ones", got)
	}
}
