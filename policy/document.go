package policy

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/floodgate-rl/floodgate/internal/yamldoc"
	"github.com/floodgate-rl/floodgate/limiter"
)

// ErrorList is every problem found in a policy file, in the order of their
// lines; it holds at least one. Parse, Load and [Policy.CheckStrategy]
// return one for a policy they refuse, and [errors.As] finds its first
// [*Error] in it.
type ErrorList []*Error

// Error returns the first problem, and how many more there are, on one
// line for a log or a flag's error:
//
//	line 4: rules[0].window: "500ms": must be a whole number of seconds from 1s to 24h (and 2 more errors)
//
// Range over the list for every problem.
func (l ErrorList) Error() string {
	switch len(l) {
	case 0:
		return "no errors"
	case 1:
		return l[0].Error()
	case 2:
		return l[0].Error() + " (and 1 more error)"
	}
	return l[0].Error() + " (and " + strconv.Itoa(len(l)-1) + " more errors)"
}

// Unwrap returns the problems, for [errors.As].
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// listOf returns err as an ErrorList: err itself, or a list of its one
// *Error.
func listOf(err error) ErrorList {
	var l ErrorList
	if errors.As(err, &l) {
		return l
	}
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Reason: err.Error()}
	}
	return ErrorList{e}
}

// parser walks a policy document and collects every problem in it: a value
// that is wrong is reported, and the walk goes on with the values beside
// it, so that one pass names them all. A value that another depends on and
// that is wrong (a rule's strategy, which its limits are checked against)
// leaves the dependent check out rather than report it twice.
type parser struct{ errs ErrorList }

// ok records err, an error of errorf, and reports whether it was nil.
func (p *parser) ok(err error) bool {
	if err == nil {
		return true
	}
	p.errs = append(p.errs, listOf(err)...)
	return false
}

// err returns the problems in line order, or nil.
func (p *parser) err() error {
	if len(p.errs) == 0 {
		return nil
	}
	slices.SortStableFunc(p.errs, func(a, b *Error) int { return cmp.Compare(a.Line, b.Line) })
	return p.errs
}

// mapping reads n as a mapping with only the known keys (any key when
// known is empty). A null n is an empty mapping; null values count as
// absent. An unknown or duplicate key is reported and left out; a node
// that is not a mapping is reported, and mapping returns nil.
func (p *parser) mapping(n *yaml.Node, path string, known ...string) *fields {
	n = yamldoc.Resolve(n)
	f := &fields{vals: make(map[string]*yaml.Node), line: n.Line}
	if yamldoc.IsNull(n) {
		return f
	}
	if n.Kind != yaml.MappingNode {
		p.ok(errorf(n.Line, "%s: want a mapping, got %s", path, yamldoc.KindOf(n)))
		return nil
	}
	first := make(map[string]int)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := yamldoc.Resolve(n.Content[i]), yamldoc.Resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			p.ok(errorf(k.Line, "%s: want a field name, got %s", path, yamldoc.KindOf(k)))
			continue
		}
		if prev, ok := first[k.Value]; ok {
			p.ok(errorf(k.Line, "%s: duplicate field %q (first on line %d)", path, k.Value, prev))
			continue
		}
		first[k.Value] = k.Line
		if len(known) > 0 && !contains(known, k.Value) {
			p.ok(errorf(k.Line, "%s: unknown field %q (want %s)", path, k.Value, strings.Join(known, ", ")))
			continue
		}
		if yamldoc.IsNull(v) {
			continue
		}
		f.keys = append(f.keys, k.Value)
		f.vals[k.Value] = v
	}
	return f
}

// sequence reads n as a sequence, as the package-level sequence does,
// reporting a node that is not one.
func (p *parser) sequence(n *yaml.Node, path string) []*yaml.Node {
	items, err := sequence(n, path)
	p.ok(err)
	return items
}

// policy reads the document's root mapping.
func (p *parser) policy(root *yaml.Node) *Policy {
	top := p.mapping(root, "policy", "rules", "allowlist", "blocklist")
	if top == nil {
		return nil
	}
	pol := &Policy{}
	if n := top.get("blocklist"); n != nil {
		pol.Blocklist = p.list(n, "blocklist")
	}
	if n := top.get("allowlist"); n != nil {
		pol.Allowlist = p.list(n, "allowlist")
	}
	names := make(map[string]int)
	for i, item := range p.sequence(top.get("rules"), "rules") {
		path := "rules[" + strconv.Itoa(i) + "]"
		r := p.rule(item, path)
		if r == nil {
			continue
		}
		if prev, dup := names[r.Name]; dup && r.Name != "" {
			p.ok(errorf(r.Line, "%s.name: duplicate rule name %q (first on line %d)", path, r.Name, prev))
		} else if r.Name != "" {
			names[r.Name] = r.Line
		}
		pol.Rules = append(pol.Rules, r)
	}
	return pol
}

var ruleFields = []string{"name", "match", "key", "strategy", "limit", "window", "burst", "tiers", "scope", "shadow"}

// rule reads one rule. Its Name is "" when the name is missing or invalid.
func (p *parser) rule(n *yaml.Node, path string) *Rule {
	f := p.mapping(n, path, ruleFields...)
	if f == nil {
		return nil
	}
	r := &Rule{Line: f.line}
	r.Name = p.ruleName(f, path)
	r.Scope = r.Name
	known := p.ruleStrategy(r, f, path) // first: the limits are checked against it
	for _, k := range f.keys {
		p.ruleField(r, k, f.vals[k], path+"."+k, known)
	}
	if f.get("tiers") == nil {
		r.Limit = p.limit(f, path, path+".", r.Strategy, known)
		return r
	}
	for _, k := range []string{"limit", "window", "burst"} {
		if v := f.get(k); v != nil {
			p.ok(errorf(v.Line, "%s.%s: not with tiers: each tier sets its own", path, k))
		}
	}
	return r
}

// ruleName reads a rule's name; "" when it is missing or invalid.
func (p *parser) ruleName(f *fields, path string) string {
	n := f.get("name")
	if n == nil {
		p.ok(errorf(f.line, "%s: name: must be set", path))
		return ""
	}
	s, err := scalar(n, path+".name")
	if !p.ok(err) {
		return ""
	}
	if err := CheckScope(s); err != nil {
		p.ok(errorf(n.Line, "%s.name: %q: %v", path, s, err))
		return ""
	}
	return s
}

// ruleStrategy reads a rule's strategy into r.Strategy, and reports whether
// the rule's limits can be checked against it: false when it is invalid.
func (p *parser) ruleStrategy(r *Rule, f *fields, path string) bool {
	v := f.get("strategy")
	if v == nil {
		return true
	}
	s, err := scalar(v, path+".strategy")
	if !p.ok(err) {
		return false
	}
	if s == "" {
		p.ok(errorf(v.Line, "%s.strategy: must not be empty (leave it out to use the route's)", path))
		return false
	}
	name, err := limiter.ParseStrategy(s)
	if err != nil {
		p.ok(errorf(v.Line, "%s.strategy: %v", path, err))
		return false
	}
	r.Strategy = name
	return true
}

// ruleField reads the rule field k, at path fp, other than its name,
// strategy and limits.
func (p *parser) ruleField(r *Rule, k string, v *yaml.Node, fp string, known bool) {
	switch k {
	case "match":
		r.Match = p.match(v, fp)
	case "key":
		if s, err := scalar(v, fp); p.ok(err) {
			if r.Key, err = ParseKey(s); err != nil {
				p.ok(errorf(v.Line, "%s: %q: %v", fp, s, err))
			}
		}
	case "scope":
		if s, err := scalar(v, fp); p.ok(err) {
			if err := CheckScope(s); err != nil {
				p.ok(errorf(v.Line, "%s: %q: %v", fp, s, err))
			}
			r.Scope = s
		}
	case "shadow":
		var err error
		r.Shadow, err = boolean(v, fp)
		p.ok(err)
	case "tiers":
		r.Tiers = p.tiers(v, fp, r.Strategy, known)
	}
}

// limit reads limit, window and burst from f, and, when known, checks them
// against strategy (see CheckLimit; only token-bucket takes a burst);
// prefix names them in errors.
func (p *parser) limit(f *fields, path, prefix, strategy string, known bool) Limit {
	var l Limit
	var err error
	ln := f.get("limit")
	limitOK := false
	if ln == nil {
		p.ok(errorf(f.line, "%s: limit: must be set (or tiers)", path))
	} else {
		l.Limit, err = integer(ln, prefix+"limit")
		limitOK = p.ok(err)
	}
	if wn := f.get("window"); wn == nil {
		p.ok(errorf(f.line, "%s: window: must be set", path))
	} else {
		l.Window, err = window(wn, prefix+"window")
		p.ok(err)
	}
	if bn := f.get("burst"); bn != nil {
		if known && strategy != limiter.StrategyTokenBucket {
			p.ok(errorf(bn.Line, "%sburst: only for strategy %s (set strategy: %s)", prefix, limiter.StrategyTokenBucket, limiter.StrategyTokenBucket))
		} else {
			l.Burst, err = integer(bn, prefix+"burst")
			p.ok(err)
		}
	}
	if limitOK && known {
		if err := CheckLimit(strategy, l); err != nil {
			p.ok(errorf(ln.Line, "%slimit: %v", prefix, err))
		}
	}
	return l
}

// CheckLimit reports whether strategy (a name of [limiter.Strategies]) can
// enforce l: the sliding-log strategy keeps every timestamp, and takes
// limits up to [limiter.MaxSlidingLogLimit]. An empty strategy is accepted.
func CheckLimit(strategy string, l Limit) error {
	if strategy == limiter.StrategySlidingLog && l.Limit > limiter.MaxSlidingLogLimit {
		return fmt.Errorf("%d: strategy %s takes at most %d; use %s", l.Limit,
			limiter.StrategySlidingLog, limiter.MaxSlidingLogLimit, limiter.StrategySliding)
	}
	return nil
}

// CheckStrategy reports whether the server's default strategy, called name,
// can enforce the limits of every rule that leaves its strategy to the route
// (see [CheckLimit]). The error is an [ErrorList], one [*Error] on the line
// of each rule it cannot enforce.
func (p *Policy) CheckStrategy(name string) error {
	var errs parser
	for i, r := range p.Rules {
		if r.Strategy != "" {
			continue
		}
		limits := []Limit{r.Limit}
		if r.Tiers != nil {
			limits = limits[:0]
			for _, t := range r.Tiers.Names {
				limits = append(limits, r.Tiers.Limits[t])
			}
		}
		for _, l := range limits {
			if CheckLimit(name, l) != nil {
				errs.ok(errorf(r.Line, "rules[%d] %s: limit %d: the default strategy %s takes at most %d; set the rule's strategy",
					i, r.Name, l.Limit, name, limiter.MaxSlidingLogLimit))
				break
			}
		}
	}
	return errs.err()
}

// tiers reads a rule's tiers; strategy and known are the rule's (see
// limit).
func (p *parser) tiers(n *yaml.Node, path, strategy string, known bool) *Tiers {
	f := p.mapping(n, path, "header", "metadata", "default", "limits")
	if f == nil {
		return nil
	}
	t := &Tiers{Limits: make(map[string]Limit)}
	p.tierSource(t, f, path)
	written := p.tierLimits(t, f, path, strategy, known)
	dn := f.get("default")
	if dn == nil {
		without := "the header"
		if f.get("header") == nil && f.get("metadata") != nil {
			without = "the metadata value"
		}
		p.ok(errorf(f.line, "%s: default: must be set (the tier of requests without %s)", path, without))
		return t
	}
	var err error
	if t.Default, err = scalar(dn, path+".default"); p.ok(err) && written != nil && !contains(written, t.Default) {
		p.ok(errorf(dn.Line, "%s.default: %q: not a tier in limits (%s)", path, t.Default, strings.Join(written, ", ")))
	}
	return t
}

// tierSource reads what names a request's tier into t: a header, or a
// metadata field; one of them.
func (p *parser) tierSource(t *Tiers, f *fields, path string) {
	hn, mn := f.get("header"), f.get("metadata")
	switch {
	case hn != nil && mn != nil:
		p.ok(errorf(mn.Line, "%s: header and metadata: set one", path))
	case hn != nil:
		if h, err := scalar(hn, path+".header"); p.ok(err) {
			if t.Header, err = HeaderName(h); err != nil {
				p.ok(errorf(hn.Line, "%s.header: %v", path, err))
			}
		}
	case mn != nil:
		if m, err := scalar(mn, path+".metadata"); p.ok(err) {
			if t.Metadata, err = ParseMetadataField(m); err != nil {
				p.ok(errorf(mn.Line, "%s.metadata: %q: %v", path, m, err))
			}
		}
	default:
		p.ok(errorf(f.line, "%s: header or metadata: must set one (what names the tier)", path))
	}
}

// tierLimits reads the tiers' limits into t, and returns the tier names
// the file writes, valid or not; nil when limits is missing or empty.
func (p *parser) tierLimits(t *Tiers, f *fields, path, strategy string, known bool) []string {
	ln := f.get("limits")
	if ln == nil {
		p.ok(errorf(f.line, "%s: limits: must be set", path))
		return nil
	}
	lf := p.mapping(ln, path+".limits")
	if lf == nil {
		return nil
	}
	if len(lf.keys) == 0 {
		p.ok(errorf(lf.line, "%s.limits: must name at least one tier", path))
		return nil
	}
	for _, name := range lf.keys {
		tp := path + ".limits." + name
		if err := checkTier(name); err != nil {
			p.ok(errorf(lf.vals[name].Line, "%s.limits: tier %q: %v", path, name, err))
			continue
		}
		if tf := p.mapping(lf.vals[name], tp, "limit", "window", "burst"); tf != nil {
			t.Names = append(t.Names, name)
			t.Limits[name] = p.limit(tf, tp, tp+".", strategy, known)
		}
	}
	return lf.keys
}

// match reads a rule's match conditions.
func (p *parser) match(n *yaml.Node, path string) Match {
	var m Match
	f := p.mapping(n, path, "scope", "methods", "path_prefix", "headers")
	if f == nil {
		return m
	}
	if v := f.get("scope"); v != nil {
		if s, err := scalar(v, path+".scope"); p.ok(err) {
			if s != "" {
				if err := CheckScope(s); err != nil {
					p.ok(errorf(v.Line, "%s.scope: %q: %v", path, s, err))
				}
			}
			m.Scope = &s
		}
	}
	m.Methods = scalars(p, f.get("methods"), path+".methods", parseMethod)
	if v := f.get("path_prefix"); v != nil {
		s, err := scalar(v, path+".path_prefix")
		switch {
		case !p.ok(err):
		case !strings.HasPrefix(s, "/"):
			p.ok(errorf(v.Line, "%s.path_prefix: %q: must start with /", path, s))
		default:
			m.PathPrefix = s
		}
	}
	for i, hn := range p.sequence(f.get("headers"), path+".headers") {
		if h, ok := p.header(hn, path+".headers["+strconv.Itoa(i)+"]"); ok {
			m.Headers = append(m.Headers, h)
		}
	}
	return m
}

// header reads one header condition of a match; false when it is invalid.
func (p *parser) header(n *yaml.Node, path string) (HeaderMatch, bool) {
	var h HeaderMatch
	before := len(p.errs)
	f := p.mapping(n, path, "name", "exact", "present")
	if f == nil {
		return h, false
	}
	if nn := f.get("name"); nn == nil {
		p.ok(errorf(f.line, "%s: name: must be set", path))
	} else if s, err := scalar(nn, path+".name"); p.ok(err) {
		if h.Name, err = HeaderName(s); err != nil {
			p.ok(errorf(nn.Line, "%s.name: %v", path, err))
		}
	}
	en, pn := f.get("exact"), f.get("present")
	switch {
	case en != nil && pn != nil:
		p.ok(errorf(pn.Line, "%s: exact and present: set one", path))
	case en != nil:
		if v, err := scalar(en, path+".exact"); p.ok(err) {
			h.Exact = &v
		}
	case pn != nil:
		var err error
		h.Present, err = boolean(pn, path+".present")
		p.ok(err)
	default:
		p.ok(errorf(f.line, "%s: set exact: <value> or present: true|false", path))
	}
	return h, len(p.errs) == before
}

// list reads an allowlist or a blocklist.
func (p *parser) list(n *yaml.Node, path string) List {
	l := List{ids: make(map[string]struct{})}
	f := p.mapping(n, path, "identities", "cidrs")
	if f == nil {
		return l
	}
	for _, id := range scalars(p, f.get("identities"), path+".identities", ParseIdentity) {
		if _, dup := l.ids[id]; !dup {
			l.ids[id] = struct{}{}
			l.Identities = append(l.Identities, id)
		}
	}
	l.Prefixes = scalars(p, f.get("cidrs"), path+".cidrs", ParsePrefix)
	return l
}

// scalars reads the list n at path, each item a scalar that parse reads.
// An item that is not a scalar, or that parse refuses
// (`path[i]: "value": reason`), is reported and left out.
func scalars[T any](p *parser, n *yaml.Node, path string, parse func(string) (T, error)) []T {
	var out []T
	for i, item := range p.sequence(n, path) {
		ip := path + "[" + strconv.Itoa(i) + "]"
		s, err := scalar(item, ip)
		if !p.ok(err) {
			continue
		}
		v, err := parse(s)
		if err != nil {
			p.ok(errorf(item.Line, "%s: %q: %v", ip, s, err))
			continue
		}
		out = append(out, v)
	}
	return out
}

// parseMethod reads an HTTP method of a match, upper-cased.
func parseMethod(s string) (string, error) {
	if s == "" || !isToken(s) {
		return "", errors.New("not an HTTP method")
	}
	return strings.ToUpper(s), nil
}
