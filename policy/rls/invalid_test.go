package rls_test

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/floodgate-rl/floodgate/policy"
	"github.com/floodgate-rl/floodgate/policy/rls"
)

// bad is one expected error: its line, its field and a part of its message.
type bad struct {
	line  int
	field string
	msg   string
}

// checkErrors asserts that err is rls.Errors holding exactly the expected
// errors, in order, all in file.
func checkErrors(t *testing.T, err error, file string, want []bad) {
	t.Helper()
	var es rls.Errors
	if !errors.As(err, &es) {
		t.Fatalf("error %T %v, want rls.Errors", err, err)
	}
	if len(es) != len(want) {
		t.Fatalf("%d errors, want %d:\n%v", len(es), len(want), err)
	}
	for i, w := range want {
		e := es[i]
		if e.File != file || e.Line != w.line || e.Field != w.field || !strings.Contains(e.Msg, w.msg) {
			t.Errorf("error %d: %q\nwant %s:%d: %s: ...%s...", i, e.Error(), file, w.line, w.field, w.msg)
		}
	}
	if lines := strings.Split(err.Error(), "\n"); len(lines) != len(want) {
		t.Errorf("Error() has %d lines, want one per error:\n%s", len(lines), err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		want []bad
	}{
		{"empty file", "", []bad{{1, "domain", "config file cannot have empty domain"}}},
		{"null document", "~\n", []bad{{1, "domain", "config file cannot have empty domain"}}},
		{"no domain", "descriptors: []\n", []bad{{1, "domain", "config file cannot have empty domain"}}},
		{"empty domain", "domain: \"\"\n", []bad{{1, "domain", "config file cannot have empty domain"}}},
		{"domain a list", "domain: [a]\n", []bad{{1, "domain", `want a string, got a list`}}},
		{"top a list", "- domain: a\n", []bad{{1, "", "want a mapping, got a list"}}},
		{"unknown top field", "domain: a\ndescriptor: []\n", []bad{{2, "", `unknown field "descriptor" (want domain, descriptors)`}}},
		{"duplicate field", "domain: a\ndomain: b\n", []bad{{2, "domain", `duplicate field "domain" (first on line 1)`}}},
		{"two documents", "domain: a\n---\ndomain: b\n", []bad{{2, "", "a second YAML document"}}},
		{"syntax", "domain: a\ndescriptors:\n  - key: [\n", []bad{{4, "", "invalid YAML: did not find expected node content"}}},
		{"merge key", "domain: a\ndescriptors:\n  - <<: {key: a}\n", []bad{{3, "descriptors[0]", "merge keys (<<) are not supported"}, {3, "descriptors[0].key", "descriptor has empty key"}}},
		{"descriptors a mapping", "domain: a\ndescriptors: {key: a}\n", []bad{{2, "descriptors", "want a list of descriptors, got a mapping"}}},
		{"descriptor a string", "domain: a\ndescriptors: [a]\n", []bad{{2, "descriptors[0]", `want a mapping, got "a"`}}},
		{"misspelled key", "domain: a\ndescriptors:\n  - key: k\n    ratelimit: {unit: second, requests_per_unit: 1}\n",
			[]bad{{4, "descriptors[0]", `unknown field "ratelimit" (want key, value, rate_limit, descriptors, shadow_mode, detailed_metric, value_to_metric, share_threshold)`}}},
		{"misspelled rate_limit field", "domain: a\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requestsperunit: 1}\n",
			[]bad{{4, "descriptors[0].rate_limit", `unknown field "requestsperunit" (want name, unit, requests_per_unit, unlimited, replaces)`},
				{4, "descriptors[0].rate_limit.requests_per_unit", "must be set"}}},
		{"shadow_mode in rate_limit", "domain: a\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1, shadow_mode: true}\n",
			[]bad{{4, "descriptors[0].rate_limit", `unknown field "shadow_mode"`}}},
		{"empty key", "domain: a\ndescriptors:\n  - value: v\n", []bad{{3, "descriptors[0].key", "descriptor has empty key"}}},
		{"key a mapping", "domain: a\ndescriptors:\n  - key: {a: b}\n", []bad{{3, "descriptors[0].key", "want a string, got a mapping"}}},
		{"bad unit", "domain: a\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: fortnight\n      requests_per_unit: 1\n",
			[]bad{{5, "descriptors[0].rate_limit.unit", "invalid rate limit unit 'fortnight' (want second, minute, hour or day)"}}},
		{"unknown unit", "domain: a\ndescriptors:\n  - key: k\n    rate_limit: {unit: unknown, requests_per_unit: 1}\n",
			[]bad{{4, "descriptors[0].rate_limit.unit", "invalid rate limit unit 'unknown'"}}},
		{"no unit", "domain: a\ndescriptors:\n  - key: k\n    rate_limit:\n      requests_per_unit: 1\n",
			[]bad{{5, "descriptors[0].rate_limit.unit", "invalid rate limit unit ''"}}},
		{"week", "domain: a\ndescriptors:\n  - key: k\n    rate_limit: {unit: WEEK, requests_per_unit: 1}\n",
			[]bad{{4, "descriptors[0].rate_limit.unit", "rate limit unit 'WEEK': floodgate's windows are at most a day"}}},
		{"year", "domain: a\ndescriptors:\n  - key: k\n    rate_limit: {unit: year, requests_per_unit: 1}\n",
			[]bad{{4, "descriptors[0].rate_limit.unit", "at most a day"}}},
		{"unit with unlimited", "domain: a\ndescriptors:\n  - key: k\n    rate_limit: {unlimited: true, unit: second}\n",
			[]bad{{4, "descriptors[0].rate_limit.unit", "should not specify rate limit unit when unlimited"}}},
		{"requests with unlimited", "domain: a\ndescriptors:\n  - key: k\n    rate_limit: {unlimited: true, requests_per_unit: 5}\n",
			[]bad{{4, "descriptors[0].rate_limit.requests_per_unit", "should not specify requests_per_unit when unlimited"}}},
		{"negative requests", "domain: a\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: -1}\n",
			[]bad{{4, "descriptors[0].rate_limit.requests_per_unit", "-1: must be at least 0"}}},
		{"too many requests", "domain: a\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 4294967295}\n",
			[]bad{{4, "descriptors[0].rate_limit.requests_per_unit", "4294967295: must be at most 1000000000"}}},
		{"huge requests", "domain: a\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 99999999999999999999}\n",
			[]bad{{4, "descriptors[0].rate_limit.requests_per_unit", "must be at most 1000000000"}}},
		{"quoted requests", "domain: a\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: \"5\"}\n",
			[]bad{{4, "descriptors[0].rate_limit.requests_per_unit", `want an integer, got "5"`}}},
		{"float requests", "domain: a\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1.5}\n",
			[]bad{{4, "descriptors[0].rate_limit.requests_per_unit", `want an integer, got "1.5"`}}},
		{"bad bool", "domain: a\ndescriptors:\n  - key: k\n    shadow_mode: maybe\n", []bad{{4, "descriptors[0].shadow_mode", `want true or false, got "maybe"`}}},
		{"quoted bool", "domain: a\ndescriptors:\n  - key: k\n    detailed_metric: \"yes\"\n", []bad{{4, "descriptors[0].detailed_metric", `want true or false, got "yes"`}}},
		{"bool a list", "domain: a\ndescriptors:\n  - key: k\n    rate_limit: {unlimited: [true]}\n", []bad{{4, "descriptors[0].rate_limit.unlimited", "want true or false, got a list"}}},
		{"share_threshold without wildcard", "domain: a\ndescriptors:\n  - key: k\n    value: v\n    share_threshold: true\n",
			[]bad{{5, "descriptors[0].share_threshold", "share_threshold can only be used with wildcard values (containing '*'), but found key 'k_v'"}}},
		{"share_threshold without value", "domain: a\ndescriptors:\n  - key: k\n    share_threshold: true\n",
			[]bad{{4, "descriptors[0].share_threshold", "but found key 'k'"}}},
		{"replaces self", "domain: a\ndescriptors:\n  - key: k\n    rate_limit:\n      name: n\n      unit: second\n      requests_per_unit: 1\n      replaces: [{name: n}]\n",
			[]bad{{8, "descriptors[0].rate_limit.replaces[0].name", "replaces should not contain name of same descriptor"}}},
		{"replaces empty", "domain: a\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      requests_per_unit: 1\n      replaces:\n        - name: \"\"\n        - {}\n",
			[]bad{{8, "descriptors[0].rate_limit.replaces[0].name", "should not have an empty replaces entry"},
				{9, "descriptors[0].rate_limit.replaces[1].name", "should not have an empty replaces entry"}}},
		{"replaces a string", "domain: a\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1, replaces: n}\n",
			[]bad{{4, "descriptors[0].rate_limit.replaces", `want a list of {name: ...}, got "n"`}}},
		{"replaces unknown field", "domain: a\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1, replaces: [{nam: x}]}\n",
			[]bad{{4, "descriptors[0].rate_limit.replaces[0]", `unknown field "nam" (want name)`}, {4, "descriptors[0].rate_limit.replaces[0].name", "should not have an empty replaces entry"}}},
		{"duplicate key and value", "domain: a\ndescriptors:\n  - key: k\n    value: v\n  - key: k\n    value: v\n",
			[]bad{{5, "descriptors[1]", "duplicate descriptor composite key 'a.k_v' (first on line 3)"}}},
		{"duplicate key alone", "domain: a\ndescriptors:\n  - key: k\n  - key: k\n    value: \"\"\n",
			[]bad{{4, "descriptors[1]", "duplicate descriptor composite key 'a.k' (first on line 3)"}}},
		{"duplicate wildcard", "domain: a\ndescriptors:\n  - key: k\n    value: v*\n  - key: k\n    value: v*\n",
			[]bad{{5, "descriptors[1]", "duplicate descriptor composite key 'a.k_v*' (first on line 3)"}}},
		{"duplicate nested", "domain: a\ndescriptors:\n  - key: k\n    descriptors:\n      - key: s\n      - key: s\n",
			[]bad{{6, "descriptors[0].descriptors[1]", "duplicate descriptor composite key 'a.k.s' (first on line 5)"}}},
		{"unit_multiplier", "domain: a\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: minute\n      requests_per_unit: 20\n      unit_multiplier: 5\n",
			[]bad{{7, "descriptors[0].rate_limit.unit_multiplier", "not supported: a rule's window is one unit"}}},
		{"rate_limit a list", "domain: a\ndescriptors:\n  - key: k\n    rate_limit: [1]\n", []bad{{4, "descriptors[0].rate_limit", "want a mapping, got a list"}}},
		{"missing requests", "domain: a\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n",
			[]bad{{5, "descriptors[0].rate_limit.requests_per_unit", "must be set (0 denies every request)"}}},
		{"several errors in one file", `domain: edge
descriptors:
  - key: remote_address
    ratelimit:
      unit: second
  - key: remote_address
    rate_limit:
      unit: fortnight
      requests_per_unit: -1
  - value: x
    shadow_mode: maybe
    descriptors:
      - key: user
        rate_limit: {unit: week, requests_per_unit: "10"}
`, []bad{
			{4, "descriptors[0]", `unknown field "ratelimit"`},
			{6, "descriptors[1]", "duplicate descriptor composite key 'edge.remote_address' (first on line 3)"},
			{8, "descriptors[1].rate_limit.unit", "invalid rate limit unit 'fortnight'"},
			{9, "descriptors[1].rate_limit.requests_per_unit", "-1: must be at least 0"},
			{10, "descriptors[2].key", "descriptor has empty key"},
			{11, "descriptors[2].shadow_mode", `want true or false, got "maybe"`},
			{14, "descriptors[2].descriptors[0].rate_limit.unit", "rate limit unit 'week'"},
			{14, "descriptors[2].descriptors[0].rate_limit.requests_per_unit", `want an integer, got "10"`},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := rls.Parse("f.yaml", []byte(tc.yaml))
			if c != nil {
				t.Errorf("a Config with errors")
			}
			checkErrors(t, err, "f.yaml", tc.want)
		})
	}
}

// TestParseAccepts: what the peer (yaml.v2) accepts is accepted.
func TestParseAccepts(t *testing.T) {
	k := desc("k", "x")
	for _, tc := range []struct {
		name    string
		yaml    string
		entries []rls.Entry
		want    *want
	}{
		{"unit in capitals", "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: SECOND, requests_per_unit: 1}\n", k, &want{rpu: 1, unit: rls.UnitSecond, key: "d.k"}},
		{"unit mixed case", "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: Hour, requests_per_unit: 1}\n", k, &want{rpu: 1, unit: rls.UnitHour, key: "d.k"}},
		{"YAML 1.1 bool", "domain: d\ndescriptors:\n  - key: k\n    shadow_mode: yes\n    rate_limit: {unit: day, requests_per_unit: 1}\n", k, &want{rpu: 1, unit: rls.UnitDay, shadow: true, key: "d.k"}},
		{"off", "domain: d\ndescriptors:\n  - key: k\n    shadow_mode: off\n    rate_limit: {unit: day, requests_per_unit: 1}\n", k, &want{rpu: 1, unit: rls.UnitDay, key: "d.k"}},
		{"hex requests", "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: day, requests_per_unit: 0x10}\n", k, &want{rpu: 16, unit: rls.UnitDay, key: "d.k"}},
		{"max requests", "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: day, requests_per_unit: 1000000000}\n", k, &want{rpu: policy.MaxLimit, unit: rls.UnitDay, key: "d.k"}},
		{"unlimited false is a limit", "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unlimited: false, unit: day, requests_per_unit: 3}\n", k, &want{rpu: 3, unit: rls.UnitDay, key: "d.k"}},
		{"null fields are absent", "domain: d\ndescriptors:\n  - key: k\n    value: ~\n    descriptors: ~\n    shadow_mode: ~\n    rate_limit: {unit: day, requests_per_unit: 3, replaces: ~, name: ~}\n", k, &want{rpu: 3, unit: rls.UnitDay, key: "d.k"}},
		{"numeric key and value", "domain: d\ndescriptors:\n  - key: 1\n    value: 2\n    rate_limit: {unit: minute, requests_per_unit: 4}\n", desc("1", "2"), &want{rpu: 4, unit: rls.UnitMinute, key: "d.1_2"}},
		{"comments and a BOM", "\ufeff# limits\ndomain: d # the domain\ndescriptors:\n  - key: k\n    rate_limit: {unit: minute, requests_per_unit: 4}\n", k, &want{rpu: 4, unit: rls.UnitMinute, key: "d.k"}},
		{"no descriptors", "domain: d\n", k, nil},
		{"a descriptor without rule", "domain: d\ndescriptors:\n  - key: k\n", k, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := rls.Parse("f.yaml", []byte(tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			checkLimit(t, c.Match("d", tc.entries), tc.entries, tc.want)
		})
	}
}

// aliased is a configuration of domain d with a descriptor for each of
// keys, all sharing the rate_limit block: anchored (&lim) at the first
// key's line 4, aliased (*lim) at the others'.
func aliased(block string, keys ...string) []byte {
	var b strings.Builder
	b.WriteString("domain: d\ndescriptors:\n")
	for i, k := range keys {
		limit := "*lim"
		if i == 0 {
			limit = "&lim " + block
		}
		b.WriteString("  - key: " + k + "\n    rate_limit: " + limit + "\n")
	}
	return []byte(b.String())
}

// TestAliasedRateLimit: an anchor and alias share a rate_limit block, as
// YAML users of the peer write them.
func TestAliasedRateLimit(t *testing.T) {
	c, err := rls.Parse("f.yaml", aliased("{unit: minute, requests_per_unit: 7}", "a", "b"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "b"} {
		l := c.Match("d", desc(k, "v"))
		if l == nil || l.RequestsPerUnit != 7 || l.Key != "d."+k {
			t.Fatalf("%s: %+v", k, l)
		}
	}
}

// TestAliasBomb: aliases that expand to more descriptors than the bound
// are an error, not unbounded work.
func TestAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("domain: d\nx0: &a0 [{key: k}]\n")
	for i := 1; i < 20; i++ {
		b.WriteString("x" + strconv.Itoa(i) + ": &a" + strconv.Itoa(i) + " [{key: k, descriptors: *a" + strconv.Itoa(i-1) + "}, {key: j, descriptors: *a" + strconv.Itoa(i-1) + "}]\n")
	}
	b.WriteString("descriptors: *a19\n")
	_, err := rls.Parse("f.yaml", []byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "more than 100000 descriptors") {
		t.Fatalf("got %v", err)
	}
}

// TestDeepNesting: descriptors nested beyond the bound are an error.
func TestDeepNesting(t *testing.T) {
	var b strings.Builder
	b.WriteString("domain: d\ndescriptors:\n")
	for i := 0; i < 70; i++ {
		b.WriteString(strings.Repeat("  ", 2*i) + "  - key: k\n" + strings.Repeat("  ", 2*i) + "    descriptors:\n")
	}
	_, err := rls.Parse("f.yaml", []byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "nested deeper than 64 levels") {
		t.Fatalf("got %v", err)
	}
}

func write(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLoadErrors: every error of every file of a directory is reported,
// with a duplicate domain named as the peer names it.
func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	a := write(t, dir, "a.yaml", "domain: shared\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1}\n")
	b := write(t, dir, "b.yaml", "# another team\ndomain: shared\n")
	c := write(t, dir, "c.yml", "domain: other\ndescriptors:\n  - key: k\n    rate_limit: {unit: minute}\n  - key: j\n    rate_limit: {unit: nope, requests_per_unit: 1}\n")
	_, err := rls.Load(dir)
	var es rls.Errors
	if !errors.As(err, &es) || len(es) != 3 {
		t.Fatalf("got %v", err)
	}
	wantErrs := []rls.Error{
		{File: b, Line: 2, Field: "domain", Msg: "duplicate domain 'shared' in config file (first in " + a + ":1)"},
		{File: c, Line: 4, Field: "descriptors[0].rate_limit.requests_per_unit", Msg: "must be set (0 denies every request), or set unlimited: true"},
		{File: c, Line: 6, Field: "descriptors[1].rate_limit.unit", Msg: "invalid rate limit unit 'nope' (want second, minute, hour or day)"},
	}
	for i, w := range wantErrs {
		if es[i] != w {
			t.Errorf("error %d: %q\nwant        %q", i, es[i].Error(), w.Error())
		}
	}
	if err := rls.Check(dir); err == nil || err.Error() != es.Error() {
		t.Fatalf("Check = %v, want the errors of Load", err)
	}
}

func TestLoadFileErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, empty, "README.md", "not a config")
	big := write(t, dir, "big.yaml", "domain: d\n"+strings.Repeat("#\n", policy.MaxFileSize/2))
	if err := os.Symlink(filepath.Join(dir, "gone.yaml"), filepath.Join(empty, "dangling.yaml")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, want string
	}{
		{"missing", filepath.Join(dir, "nope.yaml"), filepath.Join(dir, "nope.yaml") + ": no such file or directory"},
		{"no yaml files", empty, empty + ": no *.yaml or *.yml files in the directory"},
		{"too big", big, big + ": larger than 1048576 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := rls.Check(tc.path)
			var es rls.Errors
			if !errors.As(err, &es) || err.Error() != tc.want {
				t.Fatalf("got %v (%T), want %s", err, err, tc.want)
			}
		})
	}
}

// TestCheckValid: a valid configuration checks clean.
func TestCheckValid(t *testing.T) {
	for _, p := range []string{"testdata/dir", "testdata/example1.yaml", "testdata/example11.yaml"} {
		if err := rls.Check(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

// TestAliasedErrorOnce: an error in an aliased block is reported once, at
// its line, not at every place the alias expands to.
func TestAliasedErrorOnce(t *testing.T) {
	_, err := rls.Parse("f.yaml", aliased("{unit: fortnight, requests_per_unit: 1}", "a", "b", "c"))
	checkErrors(t, err, "f.yaml", []bad{{4, "descriptors[0].rate_limit.unit", "invalid rate limit unit 'fortnight'"}})
}

// TestTooManyErrors: past 1000 errors in a file, one line says the rest
// are not listed.
func TestTooManyErrors(t *testing.T) {
	var b strings.Builder
	b.WriteString("domain: d\ndescriptors:\n")
	for i := 0; i < 1500; i++ {
		b.WriteString("  - {key: k" + strconv.Itoa(i) + ", rate_limit: {unit: x, requests_per_unit: 1}}\n")
	}
	_, err := rls.Parse("f.yaml", []byte(b.String()))
	var es rls.Errors
	if !errors.As(err, &es) || len(es) != 1001 || es[1000].Msg != "more than 1000 errors: the rest are not listed" || es[999].Line != 1002 {
		t.Fatalf("%d errors, last %v", len(es), es[len(es)-1])
	}
}

// TestParseText: bytes the YAML parser rejects without a line are reported
// with theirs, one per line, as in the policy file.
func TestParseText(t *testing.T) {
	_, err := rls.Parse("f.yaml", []byte("domain: a\ndescriptors:\n  - key: \x01k\n  - key: \xff\n"))
	want := "f.yaml:3: control character U+0001: not allowed in YAML\nf.yaml:4: not UTF-8 text (byte 0xff)"
	if err == nil || err.Error() != want {
		t.Errorf("Parse: %v\nwant:\n%s", err, want)
	}
}
