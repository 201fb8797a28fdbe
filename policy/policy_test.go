package policy_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/floodgate-rl/floodgate/policy"
)

// mustParse parses src, failing the test on an error.
func mustParse(t testing.TB, src string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse([]byte(src))
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, src)
	}
	return p
}

// headers returns an Input.Header over m.
func headers(m map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := m[name]
		return v, ok
	}
}

const matchPolicy = `
rules:
- name: login-trial
  shadow: true
  match: {scope: login, methods: [POST]}
  limit: 3
  window: 1m
- name: login
  match: {scope: login, methods: [post]}
  limit: 5
  window: 1m
- name: unscoped-health
  match: {scope: "", path_prefix: /healthz}
  limit: 1000
  window: 1s
- name: api-debug
  match:
    path_prefix: /api/
    headers:
    - {name: x-debug, present: true}
    - {name: X-Env, exact: prod}
  limit: 1
  window: 1s
- name: api-no-key
  match:
    path_prefix: /api/
    headers: [{name: x-api-key, present: false}]
  limit: 10
  window: 1h
- name: api
  match: {path_prefix: /api/}
  key: header:x-api-key
  strategy: token-bucket
  tiers:
    header: x-plan
    default: free
    limits:
      free: {limit: 100, window: 1h, burst: 20}
      pro: {limit: 5000, window: 1h}
- name: host
  match:
    headers: [{name: ":authority", exact: api.example.com}]
  limit: 7
  window: 1m
- name: trailing-shadow
  shadow: true
  limit: 1
  window: 1s
`

func TestMatch(t *testing.T) {
	t.Parallel()
	p := mustParse(t, matchPolicy)
	tests := []struct {
		name    string
		in      policy.Input
		rule    string   // "" for none
		shadows []string // matching shadow rules before it
	}{
		{"login POST: shadow then login",
			policy.Input{Scope: "login", Method: "POST", Path: "/login"}, "login", []string{"login-trial"}},
		{"login GET: neither login rule",
			policy.Input{Scope: "login", Method: "GET", Path: "/login"}, "", []string{"trailing-shadow"}},
		{"methods compare upper case exactly",
			policy.Input{Scope: "login", Method: "post", Path: "/login"}, "", []string{"trailing-shadow"}},
		{"other scope",
			policy.Input{Scope: "signup", Method: "POST", Path: "/login"}, "", []string{"trailing-shadow"}},
		{"empty scope matches routes without one",
			policy.Input{Method: "GET", Path: "/healthz/live"}, "unscoped-health", nil},
		{"empty scope does not match a scoped route",
			policy.Input{Scope: "x", Method: "GET", Path: "/healthz"}, "", []string{"trailing-shadow"}},
		{"path prefix is a plain string prefix",
			policy.Input{Method: "GET", Path: "/healthzzz?q=1"}, "unscoped-health", nil},
		{"headers present and exact",
			policy.Input{Path: "/api/v1", Header: headers(map[string]string{"x-debug": "", "x-env": "prod", "x-api-key": "k"})}, "api-debug", nil},
		{"exact value is case-sensitive",
			policy.Input{Path: "/api/v1", Header: headers(map[string]string{"x-debug": "1", "x-env": "Prod", "x-api-key": "k"})}, "api", nil},
		{"absent header",
			policy.Input{Path: "/api/v1"}, "api-no-key", nil},
		{"absent header, nil lookup",
			policy.Input{Path: "/api/v1", Header: nil}, "api-no-key", nil},
		{"with key",
			policy.Input{Path: "/api/v1", Header: headers(map[string]string{"x-api-key": "k"})}, "api", nil},
		{"pseudo-header",
			policy.Input{Path: "/", Header: headers(map[string]string{":authority": "api.example.com"})}, "host", nil},
		{"path outside every prefix",
			policy.Input{Path: "/ap", Header: headers(map[string]string{"x-api-key": "k"})}, "", []string{"trailing-shadow"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rule, shadows := p.Match(tt.in)
			got := ""
			if rule != nil {
				got = rule.Name
			}
			if got != tt.rule {
				t.Errorf("rule %q, want %q", got, tt.rule)
			}
			var names []string
			for _, s := range shadows {
				names = append(names, s.Name)
			}
			if strings.Join(names, ",") != strings.Join(tt.shadows, ",") {
				t.Errorf("shadows %q, want %q", names, tt.shadows)
			}
		})
	}
}

func TestMatchNilPolicy(t *testing.T) {
	t.Parallel()
	var p *policy.Policy
	if r, s := p.Match(policy.Input{Path: "/"}); r != nil || s != nil {
		t.Errorf("nil policy matched %v, %v", r, s)
	}
	if p.Allowed("ip:10.0.0.1", netip.MustParseAddr("10.0.0.1")) || p.Blocked("ip:10.0.0.1", netip.MustParseAddr("10.0.0.1")) {
		t.Error("nil policy lists something")
	}
}

func TestTiers(t *testing.T) {
	t.Parallel()
	p := mustParse(t, matchPolicy)
	var api *policy.Rule
	for _, r := range p.Rules {
		if r.Name == "api" {
			api = r
		}
	}
	tests := []struct {
		plan       string // "" for no header
		tier       string
		limit      int64
		burst      int64
		windowSecs int64
	}{
		{"pro", "pro", 5000, 0, 3600},
		{"free", "free", 100, 20, 3600},
		{"", "free", 100, 20, 3600},
		{"enterprise", "free", 100, 20, 3600}, // unknown: the default
		{"PRO", "free", 100, 20, 3600},        // tier names are exact
	}
	for _, tt := range tests {
		h := map[string]string{}
		if tt.plan != "" {
			h["x-plan"] = tt.plan
		}
		tier, l := api.LimitFor(policy.Input{Header: headers(h)})
		if tier != tt.tier || l.Limit != tt.limit || l.Burst != tt.burst || int64(l.Window.Seconds()) != tt.windowSecs {
			t.Errorf("x-plan %q: tier %q %+v, want %q limit %d burst %d window %ds", tt.plan, tier, l, tt.tier, tt.limit, tt.burst, tt.windowSecs)
		}
	}
	var login *policy.Rule
	for _, r := range p.Rules {
		if r.Name == "login" {
			login = r
		}
	}
	if tier, l := login.LimitFor(policy.Input{}); tier != "" || l.Limit != 5 {
		t.Errorf("rule without tiers: %q %+v", tier, l)
	}
}

// TestTiersByMetadata chooses tiers by a metadata field (a verified
// token's claim): the header of the same name is not looked at, and a
// request without the value, or without metadata, gets the default.
func TestTiersByMetadata(t *testing.T) {
	t.Parallel()
	p := mustParse(t, `
rules:
- name: partners
  key: metadata:envoy.filters.http.jwt_authn:payload.sub
  tiers:
    metadata: envoy.filters.http.jwt_authn:payload.plan
    default: free
    limits:
      free: {limit: 10, window: 1m}
      pro: {limit: 1000, window: 1m}
      "2": {limit: 2, window: 1m}
`)
	r := p.Rules[0]
	want := policy.MetadataField{Filter: "envoy.filters.http.jwt_authn", Path: "payload.plan"}
	if r.Key != "metadata:envoy.filters.http.jwt_authn:payload.sub" || r.Tiers.Header != "" || r.Tiers.Metadata != want {
		t.Fatalf("parsed key %q, tiers %+v", r.Key, r.Tiers)
	}
	const line = "rules[0] partners: when any then key=metadata:envoy.filters.http.jwt_authn:payload.sub strategy=(route) " +
		"tier_metadata=envoy.filters.http.jwt_authn:payload.plan tier.free=10/1m tier.pro=1000/1m tier.2=2/1m tier_default=free scope=partners mode=enforce"
	if got := p.Lines()[0]; got != line {
		t.Errorf("Lines()[0] = %s\nwant %s", got, line)
	}
	meta := func(vals map[string]string) func(policy.MetadataField) (string, bool) {
		return func(f policy.MetadataField) (string, bool) {
			v, ok := vals[f.String()]
			return v, ok
		}
	}
	plan := want.String()
	tests := []struct {
		name  string
		in    policy.Input
		tier  string
		limit int64
	}{
		{"pro claim", policy.Input{Metadata: meta(map[string]string{plan: "pro"})}, "pro", 1000},
		{"free claim", policy.Input{Metadata: meta(map[string]string{plan: "free"})}, "free", 10},
		{"numeric claim, as authz formats it", policy.Input{Metadata: meta(map[string]string{plan: "2"})}, "2", 2},
		{"unknown claim value", policy.Input{Metadata: meta(map[string]string{plan: "gold"})}, "free", 10},
		{"other field only", policy.Input{Metadata: meta(map[string]string{"envoy.filters.http.jwt_authn:payload.sub": "pro"})}, "free", 10},
		{"no metadata", policy.Input{}, "free", 10},
		{"a header of any name is not the claim", policy.Input{Header: headers(map[string]string{"x-plan": "pro", "plan": "pro", "payload.plan": "pro"})}, "free", 10},
	}
	for _, tt := range tests {
		if tier, l := r.LimitFor(tt.in); tier != tt.tier || l.Limit != tt.limit {
			t.Errorf("%s: tier %q limit %d, want %q %d", tt.name, tier, l.Limit, tt.tier, tt.limit)
		}
	}
}

func TestLists(t *testing.T) {
	t.Parallel()
	p := mustParse(t, `
allowlist:
  identities: ["header:X-Api-Key:batch-7", "ip:::ffff:198.51.100.7"]
  cidrs: [10.0.0.0/8, "2001:db8::/32", "::ffff:172.16.0.0/108", 192.0.2.1, "2001:db8:ffff::1"]
blocklist:
  identities: ["header:x-api-key:revoked"]
  cidrs: ["2001:db8:bad::/48", 203.0.113.0/24]
`)
	tests := []struct {
		name     string
		identity string
		addr     string // "" for none
		allowed  bool
		blocked  bool
	}{
		{"IPv4 in range", "ip:10.1.2.3", "10.1.2.3", true, false},
		{"IPv4 outside", "ip:11.0.0.1", "11.0.0.1", false, false},
		{"IPv4-mapped address in an IPv4 range", "ip:10.1.2.3", "::ffff:10.1.2.3", true, false},
		{"IPv4-mapped range stored as IPv4", "ip:172.16.5.5", "172.16.5.5", true, false},
		{"IPv4-mapped range, edge", "ip:172.31.255.255", "172.31.255.255", true, false},
		{"IPv4-mapped range, outside", "ip:172.32.0.0", "172.32.0.0", false, false},
		{"single IPv4 address", "ip:192.0.2.1", "192.0.2.1", true, false},
		{"next to the single address", "ip:192.0.2.2", "192.0.2.2", false, false},
		{"IPv6 in range", "ip:2001:db8:1::1", "2001:db8:1::1", true, false},
		{"IPv6 with a zone", "ip:2001:db8:1::1", "2001:db8:1::1%eth0", true, false},
		{"single IPv6 address", "", "2001:db8:ffff::1", true, false},
		{"IPv6 outside", "ip:2001:db9::1", "2001:db9::1", false, false},
		{"blocked IPv6 range also allowlisted", "", "2001:db8:bad::5", true, true},
		{"blocked IPv4", "", "203.0.113.9", false, true},
		{"identity, header name lower-cased", "header:x-api-key:batch-7", "", true, false},
		{"identity values are exact", "header:x-api-key:Batch-7", "", false, false},
		{"identity, normalised address", "ip:198.51.100.7", "", true, false},
		{"blocked identity", "header:x-api-key:revoked", "203.0.112.1", false, true},
		{"no identity, no address", "", "", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var addr netip.Addr
			if tt.addr != "" {
				addr = netip.MustParseAddr(tt.addr)
			}
			if got := p.Allowed(tt.identity, addr); got != tt.allowed {
				t.Errorf("Allowed = %v, want %v", got, tt.allowed)
			}
			if got := p.Blocked(tt.identity, addr); got != tt.blocked {
				t.Errorf("Blocked = %v, want %v", got, tt.blocked)
			}
		})
	}
}

func TestParseKeyAndIdentity(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"source":            "source",
		"xff":               "xff",
		"header:X-Api-Key":  "header:x-api-key",
		"header::authority": "header::authority",
	} {
		if got, err := policy.ParseKey(in); err != nil || got != want {
			t.Errorf("ParseKey(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "Source", "header:", "header:a b", "ip"} {
		if got, err := policy.ParseKey(in); err == nil {
			t.Errorf("ParseKey(%q) = %q, want an error", in, got)
		}
	}
	for in, want := range map[string]string{
		"ip:::ffff:192.0.2.1":                                     "ip:192.0.2.1",
		"ip:2001:DB8::1":                                          "ip:2001:db8::1",
		"ip:fe80::1%eth0":                                         "ip:fe80::1",
		"header:X-Key:a:b c":                                      "header:x-key:a:b c",
		"header::authority:api.test":                              "header::authority:api.test",
		"principal:spiffe://cluster.local/ns/shop/sa/web":         "principal:spiffe://cluster.local/ns/shop/sa/web",
		"principal:CN=Ann, O=Example":                             "principal:CN=Ann, O=Example",
		"metadata:envoy.filters.http.jwt_authn:payload.sub:ann":   "metadata:envoy.filters.http.jwt_authn:payload.sub:ann",
		"metadata:envoy.filters.http.jwt_authn:payload.sub:a:b c": "metadata:envoy.filters.http.jwt_authn:payload.sub:a:b c",
	} {
		if got, err := policy.ParseIdentity(in); err != nil || got != want {
			t.Errorf("ParseIdentity(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "10.0.0.1", "ip:10.0.0.0/8", "header:x-key", "header:x-key:", "header::", "unknown",
		"principal:", "principal", "metadata:", "metadata:f", "metadata:f:sub", "metadata:f:sub:", "metadata::sub:v", "metadata:f::v", "metadata:f:a..b:v"} {
		if got, err := policy.ParseIdentity(in); err == nil {
			t.Errorf("ParseIdentity(%q) = %q, want an error", in, got)
		}
	}
}

func TestParsePrefix(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"10.1.2.3/8":           "10.0.0.0/8",
		"192.0.2.1":            "192.0.2.1/32",
		"2001:db8::1":          "2001:db8::1/128",
		"2001:db8::1/32":       "2001:db8::/32",
		"::ffff:10.0.0.0/104":  "10.0.0.0/8",
		"::ffff:192.0.2.1":     "192.0.2.1/32",
		"::ffff:192.0.2.1/128": "192.0.2.1/32",
		"0.0.0.0/0":            "0.0.0.0/0",
		"::/0":                 "::/0",
	} {
		got, err := policy.ParsePrefix(in)
		if err != nil || got.String() != want {
			t.Errorf("ParsePrefix(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"", "10.0.0.0/33", "::ffff:0.0.0.0/64", "fe80::1%eth0", "example.com", "10.0.0.0/8/8"} {
		if got, err := policy.ParsePrefix(in); err == nil {
			t.Errorf("ParsePrefix(%q) = %v, want an error", in, got)
		}
	}
}
