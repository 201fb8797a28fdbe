package rls_test

import (
	"testing"

	"github.com/floodgate-rl/floodgate/policy/rls"
)

// precedence is a configuration where one key has an exact value, two
// wildcards and a rule for the key alone, at the top and nested.
const precedence = `domain: d
descriptors:
  - key: path
    rate_limit: {name: bare, unit: second, requests_per_unit: 1}
  - key: path
    value: /api/*
    rate_limit: {name: api, unit: second, requests_per_unit: 2}
  - key: path
    value: /api/v1*
    rate_limit: {name: v1, unit: second, requests_per_unit: 3}
  - key: path
    value: /api/v1/users
    rate_limit: {name: users, unit: second, requests_per_unit: 4}
  - key: other
    value: "*"
    rate_limit: {name: any, unit: second, requests_per_unit: 5}
  - key: tenant
    value: t-*
    descriptors:
      - key: user
        value: "*-admin"
        rate_limit: {name: admin, unit: minute, requests_per_unit: 6}
      - key: user
        rate_limit: {name: user, unit: minute, requests_per_unit: 7}
  - key: tenant
    descriptors:
      - key: user
        rate_limit: {name: other-tenant, unit: minute, requests_per_unit: 8}
`

// TestMatchPrecedence: the exact value, then the first matching wildcard in
// file order, then the key alone, at every level.
func TestMatchPrecedence(t *testing.T) {
	c, err := rls.Parse("precedence.yaml", []byte(precedence))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		entries []rls.Entry
		want    string // the rule's name; "" for no rule
	}{
		{"exact before wildcards", desc("path", "/api/v1/users"), "users"},
		{"first wildcard in file order", desc("path", "/api/v1/orders"), "api"},
		{"wildcard before key alone", desc("path", "/api/"), "api"},
		{"key alone", desc("path", "/static/x"), "bare"},
		{"empty value, key alone", desc("path", ""), "bare"},
		{"a lone * matches the empty value", desc("other", ""), "any"},
		{"a wildcard of another key", desc("unknown", "/api/x"), ""},
		{"nested wildcard under wildcard", desc("tenant", "t-1", "user", "root-admin"), "admin"},
		{"nested key alone under wildcard", desc("tenant", "t-1", "user", "bob"), "user"},
		{"key alone at the top, then nested", desc("tenant", "acme", "user", "root-admin"), "other-tenant"},
		{"no rule at the top of a nested tree", desc("tenant", "t-1"), ""},
		{"deeper than the tree", desc("path", "/api/v1/users", "user", "x"), ""},
		{"no entries", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := c.Match("d", tc.entries)
			switch {
			case tc.want == "" && l != nil:
				t.Fatalf("matched %s, want no rule", l.Name)
			case tc.want != "" && (l == nil || l.Name != tc.want):
				t.Fatalf("matched %v, want %s", l, tc.want)
			}
		})
	}
}

// TestMetricKeys: the peer's stats key for wildcard, value_to_metric,
// detailed_metric and share_threshold descriptors.
func TestMetricKeys(t *testing.T) {
	c, err := rls.Parse("metrics.yaml", []byte(`domain: m
descriptors:
  - key: wild
    value: foo*
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: wildv
    value: foo*
    value_to_metric: true
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: files
    value: files/*
    share_threshold: true
    value_to_metric: true
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: service
    value: svc/*
    share_threshold: true
    descriptors:
      - key: endpoint
        detailed_metric: true
        rate_limit: {unit: minute, requests_per_unit: 1}
  - key: bare
    detailed_metric: true
    rate_limit: {unit: minute, requests_per_unit: 1}
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		entries []rls.Entry
		want    string
	}{
		{desc("wild", "foobar"), "m.wild_foo*"},
		{desc("wildv", "foobar"), "m.wildv_foobar"},
		{desc("files", "files/a.pdf"), "m.files_files/*"},
		{desc("service", "svc/a", "endpoint", "get"), "m.service_svc/*.endpoint_get"},
		{desc("service", "svc/a", "endpoint", ""), "m.service_svc/*.endpoint"},
		{desc("bare", ""), "m.bare_"},
	} {
		l := c.Match("m", tc.entries)
		if l == nil {
			t.Fatalf("%v: no rule", tc.entries)
		}
		if got := l.MetricKey(tc.entries); got != tc.want {
			t.Errorf("%v: MetricKey = %q, want %q", tc.entries, got, tc.want)
		}
	}
}
