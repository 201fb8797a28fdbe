package rls

import "strings"

// glob is a descriptor value with * wildcards, each matching any run of
// characters, possibly empty. There is no escape: every * is a wildcard.
// The zero glob matches only the empty string.
type glob struct {
	prefix, suffix string
	middle         []string // the literal parts between the first and last *
	minLen         int
	star           bool
}

// compileGlob splits pattern at its wildcards.
func compileGlob(pattern string) glob {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return glob{prefix: pattern, minLen: len(pattern)}
	}
	g := glob{prefix: parts[0], suffix: parts[len(parts)-1], star: true}
	for _, p := range parts[1 : len(parts)-1] {
		if p != "" {
			g.middle = append(g.middle, p)
		}
	}
	g.minLen = len(pattern) - (len(parts) - 1)
	return g
}

// match reports whether s matches the pattern. The prefix and the suffix
// are anchored; each middle part is taken at its leftmost place after the
// one before, which finds a match whenever one exists, since a * before
// it can absorb anything. It does not allocate.
func (g *glob) match(s string) bool {
	if !g.star {
		return s == g.prefix
	}
	if len(s) < g.minLen || !strings.HasPrefix(s, g.prefix) || !strings.HasSuffix(s, g.suffix) {
		return false
	}
	rest := s[len(g.prefix) : len(s)-len(g.suffix)]
	for _, p := range g.middle {
		i := strings.Index(rest, p)
		if i < 0 {
			return false
		}
		rest = rest[i+len(p):]
	}
	return true
}
