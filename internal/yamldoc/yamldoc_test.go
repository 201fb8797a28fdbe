package yamldoc

import (
	"slices"
	"testing"
)

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		name     string
		data     string
		root     bool // a root node, null or not
		null     bool
		second   int
		problems []Problem
	}{
		{name: "empty", data: ""},
		{name: "comment only", data: "# nothing\n"},
		{name: "null root", data: "~\n", root: true, null: true},
		{name: "a mapping", data: "a: 1\n", root: true},
		{name: "two documents", data: "a: 1\n---\nb: 2\n", root: true, second: 2},
		{name: "text problems, first per line", data: "a: \x01\x02\nb: \xff\nc: 1\n\x7f",
			problems: []Problem{{1, "control character U+0001: not allowed in YAML"}, {2, "not UTF-8 text (byte 0xff)"}, {4, "control character U+007F: not allowed in YAML"}}},
		{name: "tab, CR and a leading BOM are text", data: "\uFEFFa: \"x\ty\"\r\n", root: true},
		{name: "syntax, parser problem: the line after the construct", data: "a: [\n", problems: []Problem{{2, "invalid YAML: did not find expected node content"}}},
		{name: "syntax on line 1", data: "a: b: c\n", problems: []Problem{{1, "invalid YAML: mapping values are not allowed in this context"}}},
		{name: "unknown anchor", data: "a: 1\nb: *x\n", problems: []Problem{{2, "invalid YAML: unknown anchor 'x' referenced"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, second, problems := Decode([]byte(tc.data))
			if (root != nil) != tc.root || (root != nil && IsNull(root) != tc.null) {
				t.Errorf("root %v (null %v), want a root %v, null %v", root, root != nil && IsNull(root), tc.root, tc.null)
			}
			if second != tc.second {
				t.Errorf("second document at %d, want %d", second, tc.second)
			}
			if !slices.Equal(problems, tc.problems) {
				t.Errorf("problems %q\nwant     %q", problems, tc.problems)
			}
		})
	}
}

func TestKindOf(t *testing.T) {
	for data, want := range map[string]string{"{a: 1}": "a mapping", "[1]": "a list", "~": "nothing", "x": `"x"`} {
		root, _, _ := Decode([]byte(data))
		if got := KindOf(root); got != want {
			t.Errorf("KindOf(%s) = %s, want %s", data, got, want)
		}
	}
	if got := KindOf(nil); got != "nothing" {
		t.Errorf("KindOf(nil) = %s, want nothing", got)
	}
}

func TestProblemError(t *testing.T) {
	if got := (Problem{Line: 3, Msg: "bad"}).Error(); got != "line 3: bad" {
		t.Errorf("%q", got)
	}
	if got := (Problem{Msg: "bad"}).Error(); got != "bad" {
		t.Errorf("%q", got)
	}
}
