package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/floodgate-rl/floodgate/policy"
)

// checkPolicyFixture exercises every kind of line check-policy prints.
const checkPolicyFixture = `blocklist:
  identities: ["header:x-api-key:revoked"]
  cidrs: [192.0.2.0/24, "2001:db8:bad::/48"]
allowlist:
  cidrs: ["::ffff:10.0.0.0/104"]
rules:
- name: login-trial
  shadow: true
  match: {scope: login, methods: [post]}
  key: xff
  strategy: sliding-log
  limit: 3
  window: 60s
- name: login
  match: {scope: login, methods: [POST]}
  key: xff
  limit: 5
  window: 1m
- name: api
  match:
    path_prefix: /api/
    headers:
    - {name: x-api-key, present: true}
    - {name: x-env, exact: "prod eu"}
  key: header:X-Api-Key
  strategy: token-bucket
  tiers:
    header: x-plan
    default: free
    limits:
      free: {limit: 100, window: 1h, burst: 20}
      pro: {limit: 5000, window: 3600s}
- name: rest
  limit: 1000
  window: 90s
  scope: shared
`

// checkPolicyFixtureOutput is check-policy's exact output for the fixture,
// without the digest of the summary line.
const checkPolicyFixtureOutput = `blocklist: identity="header:x-api-key:revoked" cidr=192.0.2.0/24 cidr=2001:db8:bad::/48
allowlist: cidr=10.0.0.0/8
rules[0] login-trial: when scope=login methods=POST then key=xff strategy=sliding-log limit=3/1m scope=login-trial mode=shadow
rules[1] login: when scope=login methods=POST then key=xff strategy=(route) limit=5/1m scope=login mode=enforce
rules[2] api: when path_prefix="/api/" header.x-api-key=present header.x-env="prod eu" then key=header:x-api-key strategy=token-bucket tier_header=x-plan tier.free=100/1h tier.free.burst=20 tier.pro=5000/1h tier_default=free scope=api mode=enforce
rules[3] rest: when any then key=(route) strategy=(route) limit=1000/1m30s scope=shared mode=enforce
valid: rules=4 shadow=1 allowlist=1 blocklist=3 sha256=`

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestBinaryCheckPolicy(t *testing.T) {
	t.Parallel()
	file := writeFile(t, "policy.yaml", checkPolicyFixture)
	p, err := policy.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runBin(t, nil, "check-policy", file)
	want := checkPolicyFixtureOutput + p.Digest[:12] + "\n"
	if code != exitOK || stdout != want || stderr != "" {
		t.Errorf("check-policy: exit %d, stderr %q, stdout\n%s\nwant exit 0, no stderr, stdout\n%s", code, stderr, stdout, want)
	}
}

func TestBinaryCheckPolicyExample(t *testing.T) {
	t.Parallel()
	example := filepath.Join("..", "..", "policy", "example.yaml")
	p, err := policy.Load(example)
	if err != nil {
		t.Fatalf("policy/example.yaml: %v", err)
	}
	code, stdout, stderr := runBin(t, nil, "check-policy", example)
	if want := strings.Join(p.Lines(), "\n") + "\n"; code != exitOK || stdout != want || stderr != "" {
		t.Errorf("check-policy example.yaml: exit %d, stderr %q, stdout\n%s\nwant\n%s", code, stderr, stdout, want)
	}
}

// severalErrors is a policy file with four errors on four lines.
const severalErrors = `rules:
- name: login
  limit: 0
  window: 500ms
- name: api
  limit: 5
  window: 1m
  stratgy: fixed
- name: login
  limit: 1
  window: 1s
`

func TestBinaryCheckPolicyErrors(t *testing.T) {
	t.Parallel()
	bad := writeFile(t, "bad.yaml", "rules:\n- name: login\n  limit: 5\n  window: 500ms\n")
	unknown := writeFile(t, "unknown.yaml", "rules:\n- name: login\n  limit: 5\n  window: 1m\n  stratgy: fixed\n")
	syntax := writeFile(t, "syntax.yaml", "rules:\n- name: login\n  limit: [5\n")
	several := writeFile(t, "several.yaml", severalErrors)
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"invalid value", []string{"check-policy", bad},
			"floodgate: " + bad + `: line 4: rules[0].window: "500ms": must be a whole number of seconds from 1s to 24h`},
		{"unknown field", []string{"check-policy", unknown},
			"floodgate: " + unknown + `: line 5: rules[0]: unknown field "stratgy" (want name, match, key, strategy, limit, window, burst, tiers, scope, shadow)`},
		{"YAML syntax", []string{"check-policy", syntax},
			"floodgate: " + syntax + `: line 3: invalid YAML: did not find expected ',' or ']'`},
		{"several errors, each on its line", []string{"check-policy", several},
			"floodgate: " + several + ": line 3: rules[0].limit: 0: must be at least 1\n" +
				"floodgate: " + several + `: line 4: rules[0].window: "500ms": must be a whole number of seconds from 1s to 24h` + "\n" +
				"floodgate: " + several + `: line 8: rules[1]: unknown field "stratgy" (want name, match, key, strategy, limit, window, burst, tiers, scope, shadow)` + "\n" +
				"floodgate: " + several + `: line 9: rules[2].name: duplicate rule name "login" (first on line 2)`},
		{"missing file", []string{"check-policy", missing},
			"floodgate: " + missing + ": no such file or directory"},
		{"no file", []string{"check-policy"},
			"floodgate: check-policy takes one argument, the policy file: floodgate check-policy FILE"},
		{"two files", []string{"check-policy", bad, bad},
			"floodgate: check-policy takes one argument, the policy file: floodgate check-policy FILE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := runBin(t, nil, tt.args...)
			if code != exitUsage || stderr != tt.want+"\n" || stdout != "" {
				t.Errorf("exit %d, stdout %q, stderr\n got %q\nwant %q", code, stdout, stderr, tt.want+"\n")
			}
		})
	}
}

func TestRunCheckPolicyHelp(t *testing.T) {
	t.Parallel()
	var stdout, stderr strings.Builder
	if code := run(t.Context(), []string{"check-policy", "--help"}, envOf(nil), &stdout, &stderr); code != exitOK {
		t.Errorf("check-policy --help = %d", code)
	}
	if !strings.HasPrefix(stdout.String(), "Usage: floodgate check-policy FILE") || stderr.Len() != 0 {
		t.Errorf("check-policy --help: stdout %q, stderr %q", stdout.String(), stderr.String())
	}
}

func TestBinaryPolicyFlagErrors(t *testing.T) {
	t.Parallel()
	bad := writeFile(t, "bad.yaml", "rules:\n- name: login\n  limit: 0\n  window: 1m\n")
	big := writeFile(t, "big.yaml", "rules:\n- name: login\n  limit: 5000\n  window: 1m\n")
	several := writeFile(t, "several.yaml", severalErrors)
	tests := []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"flag", []string{"--policy", bad}, nil,
			`floodgate: invalid value "` + bad + `" for flag --policy: line 3: rules[0].limit: 0: must be at least 1`},
		{"env", nil, []string{"FLOODGATE_POLICY=" + bad},
			`floodgate: invalid value "` + bad + `" for FLOODGATE_POLICY: line 3: rules[0].limit: 0: must be at least 1`},
		{"several errors: the first, and how many more", []string{"--policy", several}, nil,
			`floodgate: invalid value "` + several + `" for flag --policy: line 3: rules[0].limit: 0: must be at least 1 (and 3 more errors)`},
		{"missing", []string{"--policy", "/nonexistent/policy.yaml"}, nil,
			`floodgate: invalid value "/nonexistent/policy.yaml" for flag --policy: no such file or directory`},
		{"beyond the default strategy", []string{"--strategy", "sliding-log", "--policy", big}, nil,
			`floodgate: invalid value "` + big + `" for flag --policy: line 2: rules[0] login: limit 5000: the default strategy sliding-log takes at most 1000; set the rule's strategy`},
		{"strategy", []string{"--strategy", "leaky-bucket"}, nil,
			`floodgate: invalid value "leaky-bucket" for flag --strategy: want one of sliding, fixed, token-bucket, sliding-log`},
		{"strategy env", nil, []string{"FLOODGATE_STRATEGY=Fixed"},
			`floodgate: invalid value "Fixed" for FLOODGATE_STRATEGY: want one of sliding, fixed, token-bucket, sliding-log`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := runBin(t, tt.env, tt.args...)
			if code != exitUsage || stderr != tt.want+"\n" || stdout != "" {
				t.Errorf("exit %d, stdout %q, stderr\n got %q\nwant %q", code, stdout, stderr, tt.want+"\n")
			}
		})
	}
}
