package rls

import (
	"testing"
)

// reference matches s against pattern by dynamic programming over bytes:
// each * any run of bytes, every other byte itself. ok[j] is whether the
// pattern read so far matches s[:j].
func reference(pattern, s string) bool {
	ok := make([]bool, len(s)+1)
	ok[0] = true
	for i := 0; i < len(pattern); i++ {
		next := make([]bool, len(s)+1)
		for j := 0; j <= len(s); j++ {
			if pattern[i] == '*' {
				next[j] = ok[j] || (j > 0 && next[j-1])
			} else {
				next[j] = j > 0 && ok[j-1] && s[j-1] == pattern[i]
			}
		}
		ok = next
	}
	return ok[len(s)]
}

func TestGlob(t *testing.T) {
	for _, tc := range []struct {
		pattern, s string
		want       bool
	}{
		{"*", "", true},
		{"*", "anything", true},
		{"**", "", true},
		{"a*", "a", true},
		{"a*", "abc", true},
		{"a*", "ba", false},
		{"*a", "a", true},
		{"*a", "cba", true},
		{"*a", "ab", false},
		{"a*b", "ab", true},
		{"a*b", "axxb", true},
		{"a*b", "axxbx", false},
		{"a*b", "b", false},
		{"a*a", "a", false}, // the prefix and the suffix do not overlap
		{"a*a", "aa", true},
		{"ab*ba", "aba", false},
		{"ab*ba", "abba", true},
		{"a*b*c", "abc", true},
		{"a*b*c", "aXbYc", true},
		{"a*b*c", "acb", false},
		{"a*b*c", "abcbc", true},
		{"*b*b*", "bb", true},
		{"*b*b*", "b", false},
		{"a**b", "ab", true},
		{"/api*v1", "/api/users/v1", true},
		{"/api*v1", "/api/users/v2", false},
		{"svc*ep*rpc", "svc-a.ep-b.rpc", true},
		{"svc*ep*rpc", "svc.rpc", false},
		{"x*", "x\n", true},
		{"é*", "éa", true},
		{"\xc3*", "\xc3\xa9", true}, // bytes, not runes
		{"*\xa9", "é", true},
		{"files/*", "files/*", true},
		{"plain", "plain", true},
		{"plain", "plainer", false},
		{"", "", true},
		{"", "a", false},
	} {
		g := compileGlob(tc.pattern)
		if got := g.match(tc.s); got != tc.want {
			t.Errorf("%q matches %q: %v, want %v", tc.pattern, tc.s, got, tc.want)
		}
		if ref := reference(tc.pattern, tc.s); ref != tc.want {
			t.Errorf("reference: %q matches %q: %v, want %v", tc.pattern, tc.s, ref, tc.want)
		}
	}
}

// FuzzGlob: the matcher agrees with the regular expression.
func FuzzGlob(f *testing.F) {
	for _, s := range [][2]string{{"a*b", "axb"}, {"*", ""}, {"ab*ba", "aba"}, {"*b*b*", "bb"}, {"a*a*a", "aaaa"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, s string) {
		g := compileGlob(pattern)
		if got, want := g.match(s), reference(pattern, s); got != want {
			t.Fatalf("%q matches %q: %v, reference %v", pattern, s, got, want)
		}
	})
}
