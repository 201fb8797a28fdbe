package policy_test

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/policy"
)

func TestParseErrors(t *testing.T) {
	t.Parallel()
	// rule is a valid rule's fields, to which a case adds or changes one.
	const rule = "rules:\n- name: r\n  limit: 5\n  window: 1m\n"
	tests := []struct {
		name string
		src  string
		want string // the whole error
	}{
		{"empty file", "", "line 1: empty policy: want a mapping with rules, allowlist or blocklist"},
		{"only a comment", "# nothing\n", "line 1: empty policy: want a mapping with rules, allowlist or blocklist"},
		{"null document", "---\n~\n", "line 2: empty policy: want a mapping with rules, allowlist or blocklist"},
		{"not a mapping", "- a\n- b\n", "line 1: policy: want a mapping, got a list"},
		{"unknown top-level field", "rules: []\nrule: []\n",
			`line 2: policy: unknown field "rule" (want rules, allowlist, blocklist)`},
		{"duplicate top-level field", "rules: []\nrules: []\n",
			`line 2: policy: duplicate field "rules" (first on line 1)`},
		{"YAML syntax", "rules:\n- name: a\n  limit: [5\n", "line 3: invalid YAML: did not find expected ',' or ']'"},
		{"YAML syntax, bad indentation", "rules:\n  - name: a\n limit: 5\n", "line 3: invalid YAML: did not find expected key"},
		{"tab indentation", "rules:\n\t- name: a\n", "line 2: invalid YAML: found character that cannot start any token"},
		{"YAML syntax at the end", "rules: [\n", "line 2: invalid YAML: did not find expected node content"},
		{"YAML syntax, flow mapping", "rules:\n- {name: a\n", "line 2: invalid YAML: did not find expected ',' or '}'"},
		{"YAML scanner error", "rules:\n- name: a\n  limit: 5: 6\n", "line 3: invalid YAML: mapping values are not allowed in this context"},
		{"unknown alias", "rules: *r\n", "line 1: invalid YAML: unknown anchor 'r' referenced"},
		{"unknown alias later", "rules:\n- name: a\n  limit: *five\n", "line 3: invalid YAML: unknown anchor 'five' referenced"},
		{"bad escape on line 1", "a: \"\\q\"\n", "line 1: invalid YAML: found unknown escape character"},
		{"second document", "rules: []\n---\nrules: []\n", "line 2: a second YAML document: a policy file holds one"},
		{"not UTF-8", "rules: []\n# \xff\n", "line 2: not UTF-8 text (byte 0xff)"},
		{"control character", "rules: []\n\x01\n", "line 2: control character U+0001: not allowed in YAML"},
		{"rules not a list", "rules: {name: a}\n", "line 1: rules: want a list, got a mapping"},
		{"rule not a mapping", "rules:\n- a\n", `line 2: rules[0]: want a mapping, got "a"`},
		{"unknown rule field", rule + "  limt: 5\n",
			`line 5: rules[0]: unknown field "limt" (want name, match, key, strategy, limit, window, burst, tiers, scope, shadow)`},
		{"duplicate rule field", rule + "  limit: 6\n", `line 5: rules[0]: duplicate field "limit" (first on line 3)`},
		{"missing name", "rules:\n- limit: 5\n  window: 1m\n", "line 2: rules[0]: name: must be set"},
		{"null name", "rules:\n- name:\n  limit: 5\n  window: 1m\n", "line 2: rules[0]: name: must be set"},
		{"bad name", "rules:\n- name: a b\n  limit: 5\n  window: 1m\n",
			`line 2: rules[0].name: "a b": invalid character ' ': want [A-Za-z0-9_.-]`},
		{"long name", "rules:\n- name: " + strings.Repeat("n", 65) + "\n  limit: 5\n  window: 1m\n",
			`line 2: rules[0].name: "` + strings.Repeat("n", 65) + `": length 65: must be 1 to 64`},
		{"name a list", "rules:\n- name: [a]\n  limit: 5\n  window: 1m\n", `line 2: rules[0].name: want a string, got a list`},
		{"duplicate rule name", rule + "- name: r\n  limit: 1\n  window: 1s\n",
			`line 5: rules[1].name: duplicate rule name "r" (first on line 2)`},
		{"missing limit", "rules:\n- name: r\n  window: 1m\n", "line 2: rules[0]: limit: must be set (or tiers)"},
		{"missing window", "rules:\n- name: r\n  limit: 5\n", "line 2: rules[0]: window: must be set"},
		{"limit zero", "rules:\n- name: r\n  limit: 0\n  window: 1m\n", "line 3: rules[0].limit: 0: must be at least 1"},
		{"limit negative", "rules:\n- name: r\n  limit: -5\n  window: 1m\n", "line 3: rules[0].limit: -5: must be at least 1"},
		{"limit not an integer", "rules:\n- name: r\n  limit: 1.5\n  window: 1m\n", `line 3: rules[0].limit: want an integer, got "1.5"`},
		{"limit a word", "rules:\n- name: r\n  limit: lots\n  window: 1m\n", `line 3: rules[0].limit: want an integer, got "lots"`},
		{"limit huge", "rules:\n- name: r\n  limit: 1000000001\n  window: 1m\n", "line 3: rules[0].limit: 1000000001: must be at most 1000000000"},
		{"limit overflows", "rules:\n- name: r\n  limit: 99999999999999999999\n  window: 1m\n",
			"line 3: rules[0].limit: 99999999999999999999: must be at most 1000000000"},
		{"limit a mapping", "rules:\n- name: r\n  limit: {n: 1}\n  window: 1m\n", "line 3: rules[0].limit: want an integer, got a mapping"},
		{"window sub-second", "rules:\n- name: r\n  limit: 5\n  window: 500ms\n",
			`line 4: rules[0].window: "500ms": must be a whole number of seconds from 1s to 24h`},
		{"window too long", "rules:\n- name: r\n  limit: 5\n  window: 25h\n",
			`line 4: rules[0].window: "25h": must be a whole number of seconds from 1s to 24h`},
		{"window a number", "rules:\n- name: r\n  limit: 5\n  window: 60\n",
			`line 4: rules[0].window: "60": not a duration such as 60s or 1h`},
		{"unknown strategy", rule + "  strategy: leaky\n",
			`line 5: rules[0].strategy: unknown strategy "leaky": want one of sliding, fixed, token-bucket, sliding-log`},
		{"empty strategy", rule + "  strategy: \"\"\n",
			`line 5: rules[0].strategy: must not be empty (leave it out to use the route's)`},
		{"burst without token-bucket", rule + "  burst: 10\n",
			"line 5: rules[0].burst: only for strategy token-bucket (set strategy: token-bucket)"},
		{"burst zero", rule + "  strategy: token-bucket\n  burst: 0\n", "line 6: rules[0].burst: 0: must be at least 1"},
		{"sliding-log over its maximum", "rules:\n- name: r\n  strategy: sliding-log\n  limit: 1001\n  window: 1m\n",
			"line 4: rules[0].limit: 1001: strategy sliding-log takes at most 1000; use sliding"},
		{"bad key", rule + "  key: cookie:session\n",
			`line 5: rules[0].key: "cookie:session": unknown form: want "source", "xff", "header:<name>", "principal" or "metadata:<filter>:<path>"`},
		{"bad key header", rule + "  key: \"header:x y\"\n",
			`line 5: rules[0].key: "header:x y": header name "x y": invalid character ' ': want letters, digits and !#$%&'*+-.^_` + "`|~"},
		{"bad scope", rule + "  scope: a/b\n", `line 5: rules[0].scope: "a/b": invalid character '/': want [A-Za-z0-9_.-]`},
		{"shadow not a bool", rule + "  shadow: yes\n", `line 5: rules[0].shadow: want true or false, got "yes"`},
		{"match not a mapping", rule + "  match: /api\n", `line 5: rules[0].match: want a mapping, got "/api"`},
		{"unknown match field", rule + "  match:\n    path: /api\n",
			`line 6: rules[0].match: unknown field "path" (want scope, methods, path_prefix, headers)`},
		{"bad match scope", rule + "  match: {scope: \"a b\"}\n", `line 5: rules[0].match.scope: "a b": invalid character ' ': want [A-Za-z0-9_.-]`},
		{"methods not a list", rule + "  match: {methods: GET}\n", `line 5: rules[0].match.methods: want a list, got "GET"`},
		{"bad method", rule + "  match:\n    methods: [GET, \"PO ST\"]\n", `line 6: rules[0].match.methods[1]: "PO ST": not an HTTP method`},
		{"path prefix without slash", rule + "  match: {path_prefix: api}\n", `line 5: rules[0].match.path_prefix: "api": must start with /`},
		{"header without name", rule + "  match:\n    headers:\n    - exact: x\n", "line 7: rules[0].match.headers[0]: name: must be set"},
		{"header without condition", rule + "  match:\n    headers:\n    - name: x\n",
			"line 7: rules[0].match.headers[0]: set exact: <value> or present: true|false"},
		{"header with both conditions", rule + "  match:\n    headers:\n    - name: x\n      exact: a\n      present: true\n",
			"line 9: rules[0].match.headers[0]: exact and present: set one"},
		{"header bad name", rule + "  match:\n    headers:\n    - {name: \"a:b\", present: true}\n",
			`line 7: rules[0].match.headers[0].name: header name "a:b": invalid character ':': want letters, digits and !#$%&'*+-.^_` + "`|~"},
		{"header unknown field", rule + "  match:\n    headers:\n    - {name: x, present: true, regex: a.*}\n",
			`line 7: rules[0].match.headers[0]: unknown field "regex" (want name, exact, present)`},
		{"tiers with limit", "rules:\n- name: r\n  limit: 5\n  tiers: {header: x-plan, default: a, limits: {a: {limit: 1, window: 1s}}}\n",
			"line 3: rules[0].limit: not with tiers: each tier sets its own"},
		{"tiers without header", "rules:\n- name: r\n  tiers:\n    default: a\n    limits: {a: {limit: 1, window: 1s}}\n",
			"line 4: rules[0].tiers: header or metadata: must set one (what names the tier)"},
		{"tiers without limits", "rules:\n- name: r\n  tiers:\n    header: x-plan\n    default: a\n",
			"line 4: rules[0].tiers: limits: must be set"},
		{"tiers with no tier", "rules:\n- name: r\n  tiers:\n    header: x-plan\n    default: a\n    limits: {}\n",
			"line 6: rules[0].tiers.limits: must name at least one tier"},
		{"tiers without default", "rules:\n- name: r\n  tiers:\n    header: x-plan\n    limits: {a: {limit: 1, window: 1s}}\n",
			"line 4: rules[0].tiers: default: must be set (the tier of requests without the header)"},
		{"tiers unknown default", "rules:\n- name: r\n  tiers:\n    header: x-plan\n    default: gold\n    limits:\n      free: {limit: 1, window: 1s}\n      pro: {limit: 2, window: 1s}\n",
			`line 5: rules[0].tiers.default: "gold": not a tier in limits (free, pro)`},
		{"tier without window", "rules:\n- name: r\n  tiers:\n    header: x-plan\n    default: free\n    limits:\n      free: {limit: 1}\n",
			"line 7: rules[0].tiers.limits.free: window: must be set"},
		{"tier bad limit", "rules:\n- name: r\n  tiers:\n    header: x-plan\n    default: free\n    limits:\n      free:\n        limit: 0\n        window: 1s\n",
			"line 8: rules[0].tiers.limits.free.limit: 0: must be at least 1"},
		{"tier burst without token-bucket", "rules:\n- name: r\n  tiers:\n    header: x-plan\n    default: free\n    limits:\n      free: {limit: 1, window: 1s, burst: 5}\n",
			"line 7: rules[0].tiers.limits.free.burst: only for strategy token-bucket (set strategy: token-bucket)"},
		{"tier unknown field", "rules:\n- name: r\n  tiers:\n    header: x-plan\n    default: free\n    limits:\n      free: {limit: 1, window: 1s, rate: 5}\n",
			`line 7: rules[0].tiers.limits.free: unknown field "rate" (want limit, window, burst)`},
		{"tier bad name", "rules:\n- name: r\n  tiers:\n    header: x-plan\n    default: \"free plan\"\n    limits:\n      \"free plan\": {limit: 1, window: 1s}\n",
			`line 7: rules[0].tiers.limits: tier "free plan": invalid character ' ': want letters, digits and !#$%&'*+-.^_` + "`|~"},
		{"tiers unknown field", "rules:\n- name: r\n  tiers:\n    header: x-plan\n    default: free\n    fallback: free\n    limits: {free: {limit: 1, window: 1s}}\n",
			`line 6: rules[0].tiers: unknown field "fallback" (want header, metadata, default, limits)`},
		{"tiers with header and metadata", "rules:\n- name: r\n  tiers:\n    header: x-plan\n    metadata: jwt:payload.plan\n    default: a\n    limits: {a: {limit: 1, window: 1s}}\n",
			"line 5: rules[0].tiers: header and metadata: set one"},
		{"tiers bad metadata", "rules:\n- name: r\n  tiers:\n    metadata: jwt:payload..plan\n    default: a\n    limits: {a: {limit: 1, window: 1s}}\n",
			`line 4: rules[0].tiers.metadata: "jwt:payload..plan": metadata path "payload..plan": name of length 0: must be 1 to 64`},
		{"tiers metadata without path", "rules:\n- name: r\n  tiers:\n    metadata: envoy.filters.http.jwt_authn\n    default: a\n    limits: {a: {limit: 1, window: 1s}}\n",
			`line 4: rules[0].tiers.metadata: "envoy.filters.http.jwt_authn": want <filter>:<path>, as in envoy.filters.http.jwt_authn:payload.sub`},
		{"tiers metadata not a string", "rules:\n- name: r\n  tiers:\n    metadata: [jwt, plan]\n    default: a\n    limits: {a: {limit: 1, window: 1s}}\n",
			"line 4: rules[0].tiers.metadata: want a string, got a list"},
		{"tiers by metadata without default", "rules:\n- name: r\n  tiers:\n    metadata: jwt:payload.plan\n    limits: {a: {limit: 1, window: 1s}}\n",
			"line 4: rules[0].tiers: default: must be set (the tier of requests without the metadata value)"},
		{"bad metadata key", "rules:\n- name: r\n  key: metadata:jwt:payload.a b\n  limit: 1\n  window: 1s\n",
			`line 3: rules[0].key: "metadata:jwt:payload.a b": metadata path "payload.a b": invalid character ' ': want letters, digits and !#$%&'*+-.^_` + "`|~"},
		{"bad principal identity", "blocklist:\n  identities: [\"principal:\"]\n",
			`line 2: blocklist.identities[0]: "principal:": want principal:<identity>, as in principal:spiffe://cluster.local/ns/shop/sa/web`},
		{"bad metadata identity", "blocklist:\n  identities: [\"metadata:jwt:payload.sub\"]\n",
			`line 2: blocklist.identities[0]: "metadata:jwt:payload.sub": want metadata:<filter>:<path>:<value>`},
		{"list unknown field", "allowlist:\n  ips: [10.0.0.1]\n", `line 2: allowlist: unknown field "ips" (want identities, cidrs)`},
		{"bad cidr", "blocklist:\n  cidrs:\n  - 10.0.0.0/8\n  - 10.0.0.0/33\n",
			`line 4: blocklist.cidrs[1]: "10.0.0.0/33": not an address range such as 10.0.0.0/8 or 2001:db8::/32`},
		{"hostname as cidr", "allowlist:\n  cidrs: [example.com]\n",
			`line 2: allowlist.cidrs[0]: "example.com": not an address or an address range such as 10.0.0.0/8`},
		{"bad identity", "allowlist:\n  identities: [\"10.0.0.1\"]\n",
			`line 2: allowlist.identities[0]: "10.0.0.1": want "ip:<address>", "header:<name>:<value>", "principal:<identity>" or "metadata:<filter>:<path>:<value>"`},
		{"identity without value", "blocklist:\n  identities:\n  - \"header:x-api-key:\"\n",
			`line 3: blocklist.identities[0]: "header:x-api-key:": want header:<name>:<value>`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := policy.Parse([]byte(tt.src))
			if err == nil {
				t.Fatalf("Parse accepted:\n%s\nas %q", tt.src, p.Lines())
			}
			if err.Error() != tt.want {
				t.Errorf("Parse error\n got %s\nwant %s", err, tt.want)
			}
			var pe *policy.Error
			if !errors.As(err, &pe) {
				t.Errorf("error %T is not a *policy.Error", err)
			}
		})
	}
}

func TestParseValid(t *testing.T) {
	t.Parallel()
	p := mustParse(t, `
# comments and anchors are fine
blocklist:
  cidrs: ["2001:db8:bad::/48"]
rules:
- name: login
  match:
    scope: login
    methods: [post, GET]
    path_prefix: /login
    headers:
    - {name: X-Env, exact: prod}
    - {name: x-debug, present: false}
  key: header:X-Api-Key
  strategy: token-bucket
  limit: &five "5"
  window: 90s
  burst: 2
  scope: shared
  shadow: true
- name: rest
  match: ~
  limit: *five
  window: 24h
`)
	if len(p.Rules) != 2 || p.Blocklist.Len() != 1 || p.Allowlist.Len() != 0 || len(p.Digest) != 64 {
		t.Fatalf("parsed %d rules, lists %d/%d, digest %q", len(p.Rules), p.Allowlist.Len(), p.Blocklist.Len(), p.Digest)
	}
	r := p.Rules[0]
	m := r.Match
	if r.Name != "login" || r.Line != 6 || *m.Scope != "login" || strings.Join(m.Methods, ",") != "POST,GET" || m.PathPrefix != "/login" ||
		len(m.Headers) != 2 || m.Headers[0].Name != "x-env" || *m.Headers[0].Exact != "prod" ||
		m.Headers[1].Name != "x-debug" || m.Headers[1].Exact != nil || m.Headers[1].Present ||
		r.Key != "header:x-api-key" || r.Strategy != "token-bucket" ||
		r.Limit != (policy.Limit{Limit: 5, Window: 90 * time.Second, Burst: 2}) || r.Scope != "shared" || !r.Shadow || r.Tiers != nil {
		t.Errorf("rule 0 parsed as %+v, match %+v", r, m)
	}
	r = p.Rules[1]
	if r.Name != "rest" || r.Scope != "rest" || r.Match.Scope != nil || r.Key != "" || r.Strategy != "" ||
		r.Limit != (policy.Limit{Limit: 5, Window: 24 * time.Hour}) || r.Shadow {
		t.Errorf("rule 1 parsed as %+v", r)
	}
	if q := mustParse(t, "rules: []\n"); len(q.Rules) != 0 {
		t.Errorf("rules: [] has %d rules", len(q.Rules))
	}
	if q := mustParse(t, "allowlist:\n  cidrs: [10.0.0.0/8]\n"); len(q.Rules) != 0 || q.Allowlist.Len() != 1 {
		t.Errorf("allowlist only: %+v", q)
	}
}

func TestLines(t *testing.T) {
	t.Parallel()
	p := mustParse(t, matchPolicy+`
allowlist:
  identities: ["header:x-api-key:batch job"]
  cidrs: [10.0.0.0/8, "::ffff:192.0.2.0/120"]
`)
	want := []string{
		`allowlist: identity="header:x-api-key:batch job" cidr=10.0.0.0/8 cidr=192.0.2.0/24`,
		`rules[0] login-trial: when scope=login methods=POST then key=(route) strategy=(route) limit=3/1m scope=login-trial mode=shadow`,
		`rules[1] login: when scope=login methods=POST then key=(route) strategy=(route) limit=5/1m scope=login mode=enforce`,
		`rules[2] unscoped-health: when scope="" path_prefix="/healthz" then key=(route) strategy=(route) limit=1000/1s scope=unscoped-health mode=enforce`,
		`rules[3] api-debug: when path_prefix="/api/" header.x-debug=present header.x-env="prod" then key=(route) strategy=(route) limit=1/1s scope=api-debug mode=enforce`,
		`rules[4] api-no-key: when path_prefix="/api/" header.x-api-key=absent then key=(route) strategy=(route) limit=10/1h scope=api-no-key mode=enforce`,
		`rules[5] api: when path_prefix="/api/" then key=header:x-api-key strategy=token-bucket tier_header=x-plan tier.free=100/1h tier.free.burst=20 tier.pro=5000/1h tier_default=free scope=api mode=enforce`,
		`rules[6] host: when header.:authority="api.example.com" then key=(route) strategy=(route) limit=7/1m scope=host mode=enforce`,
		`rules[7] trailing-shadow: when any then key=(route) strategy=(route) limit=1/1s scope=trailing-shadow mode=shadow`,
		`valid: rules=8 shadow=2 allowlist=3 blocklist=0 sha256=` + p.Digest[:12],
	}
	got := p.Lines()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestExampleFile(t *testing.T) {
	t.Parallel()
	p, err := policy.Load("example.yaml")
	if err != nil {
		t.Fatalf("example.yaml: %v", err)
	}
	if len(p.Rules) == 0 || p.Allowlist.Len() == 0 || p.Blocklist.Len() == 0 {
		t.Errorf("example.yaml should show every part of a policy: %q", p.Lines())
	}
	var shadow, tiers bool
	for _, r := range p.Rules {
		shadow = shadow || r.Shadow
		tiers = tiers || r.Tiers != nil
	}
	if !shadow || !tiers {
		t.Errorf("example.yaml should show a shadow rule and tiers: %q", p.Lines())
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := policy.Load(filepath.Join(dir, "missing.yaml")); err == nil || err.Error() != "no such file or directory" {
		t.Errorf("missing file: %v", err)
	}
	if _, err := policy.Load(dir); err == nil || err.Error() != "not a regular file" {
		t.Errorf("directory: %v", err)
	}
	if _, err := policy.Load(os.DevNull); err == nil || err.Error() != "not a regular file" {
		t.Errorf("device: %v", err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, []byte("rules: []\n"+strings.Repeat("#\n", policy.MaxFileSize/2)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := policy.Load(big); err == nil || err.Error() != "larger than 1048576 bytes" {
		t.Errorf("big file: %v", err)
	}
	ok := filepath.Join(dir, "ok.yaml")
	if err := os.WriteFile(ok, []byte("rules: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if p, err := policy.Load(ok); err != nil || len(p.Rules) != 0 {
		t.Errorf("Load(ok) = %v, %v", p, err)
	}
}

// TestCheckStrategy checks that CheckStrategy reports, in the order of
// their lines, each rule left to the default strategy with a limit the
// strategy cannot take (for tiers, the first such tier, once), and passes
// the rules of their own strategy and a strategy that takes them all.
func TestCheckStrategy(t *testing.T) {
	t.Parallel()
	p := mustParse(t, `
rules:
- name: big
  limit: 2000
  window: 1m
- name: small
  limit: 10
  window: 1m
- name: own-strategy
  strategy: sliding
  limit: 5000
  window: 1m
- name: tiers
  tiers:
    header: x-plan
    default: a
    limits:
      a: {limit: 10, window: 1m}
      b: {limit: 1001, window: 1m}
      c: {limit: 5000, window: 1m}
`)
	if err := p.CheckStrategy("sliding"); err != nil {
		t.Errorf("sliding: %v", err)
	}
	err := p.CheckStrategy("sliding-log")
	want := []string{
		"line 3: rules[0] big: limit 2000: the default strategy sliding-log takes at most 1000; set the rule's strategy",
		"line 13: rules[3] tiers: limit 1001: the default strategy sliding-log takes at most 1000; set the rule's strategy",
	}
	checkErrorList(t, err, want)
}

// checkErrorList checks that err is a policy.ErrorList of the errors want,
// in order, whose Error is the first with the count of the others.
func checkErrorList(t *testing.T, err error, want []string) {
	t.Helper()
	var list policy.ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("error %T %v, want a policy.ErrorList", err, err)
	}
	var got []string
	for _, e := range list {
		got = append(got, e.Error())
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("errors\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
	summary := want[0]
	if n := len(want) - 1; n == 1 {
		summary += " (and 1 more error)"
	} else if n > 1 {
		summary += " (and " + strconv.Itoa(n) + " more errors)"
	}
	if err.Error() != summary {
		t.Errorf("Error() = %q, want %q", err, summary)
	}
}

// TestParseEveryError checks that Parse reports every problem of a file, in
// the order of their lines, and that a wrong value is reported once: what
// depends on it (a rule's limits on its strategy, a tier default on the
// tiers) is not reported again.
func TestParseEveryError(t *testing.T) {
	t.Parallel()
	const token = "want letters, digits and !#$%&'*+-.^_`|~"
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"rules and top level", `rules:
- name: login
  limit: 0
  window: 1m
- name: api
  limit: 5
  window: 500ms
  stratgy: fixed
- name: login
  limit: 1
  window: 1s
rule: []
`, []string{
			"line 3: rules[0].limit: 0: must be at least 1",
			`line 7: rules[1].window: "500ms": must be a whole number of seconds from 1s to 24h`,
			`line 8: rules[1]: unknown field "stratgy" (want name, match, key, strategy, limit, window, burst, tiers, scope, shadow)`,
			`line 9: rules[2].name: duplicate rule name "login" (first on line 2)`,
			`line 12: policy: unknown field "rule" (want rules, allowlist, blocklist)`,
		}},
		{"one rule, every field", `rules:
- name: a b
  key: cookie
  scope: a/b
  shadow: yes
  limit: lots
  window: 60
`, []string{
			`line 2: rules[0].name: "a b": invalid character ' ': want [A-Za-z0-9_.-]`,
			`line 3: rules[0].key: "cookie": unknown form: want "source", "xff", "header:<name>", "principal" or "metadata:<filter>:<path>"`,
			`line 4: rules[0].scope: "a/b": invalid character '/': want [A-Za-z0-9_.-]`,
			`line 5: rules[0].shadow: want true or false, got "yes"`,
			`line 6: rules[0].limit: want an integer, got "lots"`,
			`line 7: rules[0].window: "60": not a duration such as 60s or 1h`,
		}},
		{"a wrong strategy, once", `rules:
- name: r
  strategy: leaky
  limit: 5000
  window: 1m
  burst: 10
`, []string{
			`line 3: rules[0].strategy: unknown strategy "leaky": want one of sliding, fixed, token-bucket, sliding-log`,
		}},
		{"missing fields", "rules:\n- limit: 5\n- name: r\n", []string{
			"line 2: rules[0]: name: must be set",
			"line 2: rules[0]: window: must be set",
			"line 3: rules[1]: limit: must be set (or tiers)",
			"line 3: rules[1]: window: must be set",
		}},
		{"tiers and lists", `blocklist:
  cidrs: [10.0.0.0/33, example.com]
  identities: ["10.0.0.1"]
rules:
- name: r
  tiers:
    header: "x plan"
    default: gold
    limits:
      free: {limit: 0, window: 1m}
      "pro plan": {limit: 1, window: 1s}
`, []string{
			`line 2: blocklist.cidrs[0]: "10.0.0.0/33": not an address range such as 10.0.0.0/8 or 2001:db8::/32`,
			`line 2: blocklist.cidrs[1]: "example.com": not an address or an address range such as 10.0.0.0/8`,
			`line 3: blocklist.identities[0]: "10.0.0.1": want "ip:<address>", "header:<name>:<value>", "principal:<identity>" or "metadata:<filter>:<path>:<value>"`,
			`line 7: rules[0].tiers.header: header name "x plan": invalid character ' ': ` + token,
			`line 8: rules[0].tiers.default: "gold": not a tier in limits (free, pro plan)`,
			"line 10: rules[0].tiers.limits.free.limit: 0: must be at least 1",
			`line 11: rules[0].tiers.limits: tier "pro plan": invalid character ' ': ` + token,
		}},
		{"match", `rules:
- name: r
  limit: 5
  window: 1m
  match:
    methods: ["PO ST", GET, ""]
    path_prefix: api
    headers:
    - {name: "a:b", exact: x, present: true}
    - {name: ok}
`, []string{
			`line 6: rules[0].match.methods[0]: "PO ST": not an HTTP method`,
			`line 6: rules[0].match.methods[2]: "": not an HTTP method`,
			`line 7: rules[0].match.path_prefix: "api": must start with /`,
			`line 9: rules[0].match.headers[0].name: header name "a:b": invalid character ':': ` + token,
			"line 9: rules[0].match.headers[0]: exact and present: set one",
			"line 10: rules[0].match.headers[1]: set exact: <value> or present: true|false",
		}},
		{"text", "rules: []\n# \xff\xfe\n\x01\n", []string{
			"line 2: not UTF-8 text (byte 0xff)",
			"line 3: control character U+0001: not allowed in YAML",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := policy.Parse([]byte(tt.src))
			checkErrorList(t, err, tt.want)
		})
	}
}
