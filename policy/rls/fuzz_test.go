package rls_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/floodgate-rl/floodgate/policy/rls"
)

// FuzzParse feeds Parse arbitrary bytes. It must never panic; an error must
// be Errors of one-line errors of the file; and a configuration it accepts
// must parse the same way twice and match descriptors without panicking.
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) == 0 {
		f.Fatalf("testdata: %v", err)
	}
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, seed := range []string{
		precedence,
		"",
		"domain: d\n",
		"domain: d\ndescriptors: &a [{key: k, descriptors: *a}]\n",
		"domain: d\ndescriptors:\n  - key: \"a\\nb\"\n  - key: \"a\\nb\"\n",
		"domain: d\ndescriptors:\n  - key: k\n    value: \"**\"\n    share_threshold: yes\n    rate_limit: {unit: Day, requests_per_unit: 0}\n",
		"a: [\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := rls.Parse("f.yaml", data)
		if err != nil {
			var es rls.Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error %T %v: want non-empty rls.Errors", err, err)
			}
			for _, e := range es {
				if msg := e.Error(); e.File != "f.yaml" || e.Msg == "" || e.Line < 0 || strings.ContainsAny(msg, "\r\n\u0085\u2028\u2029") {
					t.Fatalf("error %q (line %d): want one line of f.yaml", msg, e.Line)
				}
			}
			return
		}
		again, err := rls.Parse("f.yaml", data)
		if err != nil || again.Digest != c.Digest || strings.Join(again.Domains(), ",") != strings.Join(c.Domains(), ",") {
			t.Fatalf("accepted once, then: %v", err)
		}
		for _, l := range c.Limits() {
			if !strings.HasPrefix(l.Key, l.Domain+".") {
				t.Fatalf("key %q outside domain %q", l.Key, l.Domain)
			}
		}
		for _, d := range c.Domains() {
			for _, entries := range [][]rls.Entry{nil, desc("k", ""), desc("k", "v"), desc("k", "v", "k", "v"), desc("", "*")} {
				if l := c.Match(d, entries); l != nil {
					l.CounterKey(entries)
					l.MetricKey(entries)
				}
			}
		}
	})
}
