package policy_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/floodgate-rl/floodgate/policy"
)

// FuzzParse feeds Parse arbitrary bytes. It must never panic; an error must
// be a *policy.Error of one non-empty line; and a policy it accepts must
// describe itself (Lines) the same way every time, and match a request
// without panicking.
func FuzzParse(f *testing.F) {
	example, err := os.ReadFile("example.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		string(example),
		matchPolicy,
		"",
		"rules: []\n",
		"rules:\n- name: a\n  limit: 5\n  window: 1m\n",
		"rules:\n- name: a\n  tiers: {header: x, default: a, limits: {a: {limit: 1, window: 1s}}}\n",
		"allowlist:\n  cidrs: [\"::ffff:10.0.0.0/104\"]\n  identities: [\"header::authority:x\"]\n",
		"rules:\n- name: a\n  key: metadata:jwt:payload.sub\n  tiers: {metadata: jwt:payload.plan, default: a, limits: {a: {limit: 1, window: 1s}}}\n",
		"blocklist:\n  identities: [\"principal:spiffe://td/ns/a/sa/b\", \"metadata:jwt:payload.sub:x:y\"]\nrules:\n- {name: p, key: principal, limit: 1, window: 1s}\n",
		"rules: &a [*a]\n",
		"a: [\n",
		"rules:\n- name: a\n  limit: 5\n  window: 1m\n  <<: {x: 1}\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := policy.Parse(data)
		if err != nil {
			var pe *policy.Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %T %v is not a *policy.Error", err, err)
			}
			if msg := err.Error(); msg == "" || strings.ContainsAny(msg, "\r\n") || pe.Line < 0 {
				t.Fatalf("error %q (line %d): want one non-empty line", msg, pe.Line)
			}
			return
		}
		lines := p.Lines()
		again, err := policy.Parse(data)
		if err != nil {
			t.Fatalf("accepted once, then: %v", err)
		}
		if strings.Join(again.Lines(), "\n") != strings.Join(lines, "\n") {
			t.Fatalf("Lines differ between two parses:\n%q\n%q", lines, again.Lines())
		}
		for _, l := range lines {
			if strings.ContainsAny(l, "\r\n") {
				t.Fatalf("line %q spans lines", l)
			}
		}
		p.Match(policy.Input{Scope: "x", Method: "GET", Path: "/", Header: func(string) (string, bool) { return "v", true }})
	})
}
