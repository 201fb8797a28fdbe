package rls

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/floodgate-rl/floodgate/internal/yamldoc"
	"github.com/floodgate-rl/floodgate/policy"
)

const (
	// maxDescriptors bounds the descriptors of one file, aliases expanded,
	// so that a file of aliases cannot make the parser do unbounded work.
	maxDescriptors = 100_000
	// maxDepth bounds the nesting of descriptors.
	maxDepth = 64
	// maxErrors bounds the errors of one file: aliases can repeat one
	// mistake at every place they expand to.
	maxErrors = 1000
)

var (
	topFields        = []string{"domain", "descriptors"}
	descriptorFields = []string{"key", "value", "rate_limit", "descriptors", "shadow_mode", "detailed_metric", "value_to_metric", "share_threshold"}
	rateLimitFields  = []string{"name", "unit", "requests_per_unit", "unlimited", "replaces"}
	replacesFields   = []string{"name"}
	// refusedRateLimitFields are rate_limit fields of recent peer releases
	// that floodgate refuses rather than ignore, since ignoring them would
	// enforce another limit than the one written.
	refusedRateLimitFields = map[string]string{
		"unit_multiplier": "not supported: a rule's window is one unit; write the limit for one second, minute, hour or day",
	}
)

// parser reads one file, collecting every error.
type parser struct {
	file        string
	domain      string
	errs        Errors
	seenErrs    map[lineMsg]bool
	limits      []*Limit
	descriptors int
	children    map[child]*node // every descriptor by parent, key and value
}

// lineMsg identifies an error as its reader sees it, to report once an
// error that aliases repeat.
type lineMsg struct {
	line int
	msg  string
}

// child is a descriptor's place: its parent, key and value.
type child struct {
	parent *node
	e      Entry
}

// domainTree is one file's domain and its descriptor tree.
type domainTree struct {
	name string
	line int
	root *node
}

// oneLine escapes the line breaks that a key or value quoted from the file
// may hold, so that each Error is one line.
var oneLine = strings.NewReplacer("\n", `\n`, "\r", `\r`, "\u0085", `\u0085`, "\u2028", `\u2028`, "\u2029", `\u2029`)

// errorf records an error, once per line and message, and at most
// maxErrors of them.
func (p *parser) errorf(line int, field, format string, args ...any) {
	msg := oneLine.Replace(fmt.Sprintf(format, args...))
	if p.seenErrs[lineMsg{line, msg}] || len(p.errs) > maxErrors {
		return
	}
	if p.seenErrs == nil {
		p.seenErrs = map[lineMsg]bool{}
	}
	p.seenErrs[lineMsg{line, msg}] = true
	if len(p.errs) == maxErrors {
		p.errs = append(p.errs, Error{File: p.file, Line: line, Msg: fmt.Sprintf("more than %d errors: the rest are not listed", maxErrors)})
		return
	}
	p.errs = append(p.errs, Error{File: p.file, Line: line, Field: oneLine.Replace(field), Msg: msg})
}

// parseFile parses one file; nil when it has no usable domain.
func (p *parser) parseFile(data []byte) *domainTree {
	root := p.document(data)
	if root == nil {
		return nil
	}
	f := p.fields(root, "", topFields)
	if f == nil {
		return nil
	}
	d := &domainTree{line: root.Line, root: &node{}}
	if n := f.vals["domain"]; n != nil {
		d.line = n.Line
		d.name, _ = p.scalar(n, "domain")
	}
	if d.name == "" && (f.vals["domain"] == nil || yamldoc.Resolve(f.vals["domain"]).Kind == yaml.ScalarNode) {
		p.errorf(d.line, "domain", "config file cannot have empty domain")
	}
	p.domain = d.name
	p.descriptorList(f.vals["descriptors"], "descriptors", d.root, d.name, nil)
	if d.name == "" {
		return nil
	}
	return d
}

// document decodes data as one YAML document and returns its root; nil
// after an error or for an empty document, reported as a missing domain.
func (p *parser) document(data []byte) *yaml.Node {
	root, second, problems := yamldoc.Decode(data)
	for _, pr := range problems {
		p.errorf(pr.Line, "", "%s", pr.Msg)
	}
	switch {
	case problems != nil:
		return nil
	case second > 0:
		p.errorf(second, "", "a second YAML document: a file holds one domain")
		return nil
	case yamldoc.IsNull(root):
		p.errorf(1, "domain", "config file cannot have empty domain")
		return nil
	}
	return root
}

// digits is a plain decimal integer, which YAML reads as a float when it
// is beyond int64.
var digits = regexp.MustCompile(`^[0-9]+$`)

// fieldSet is a mapping's values by field name (null values left out) and
// the line of each field name.
type fieldSet struct {
	vals  map[string]*yaml.Node
	lines map[string]int
	line  int
}

// fields reads n as a mapping of known fields, reporting every unknown,
// duplicate or non-scalar field name; nil when n is not a mapping. A null
// n is an empty mapping.
func (p *parser) fields(n *yaml.Node, path string, known []string) *fieldSet {
	return p.fieldsRefusing(n, path, known, nil)
}

// fieldsRefusing is fields, with a reason for each of the refused field
// names.
func (p *parser) fieldsRefusing(n *yaml.Node, path string, known []string, refused map[string]string) *fieldSet {
	n = yamldoc.Resolve(n)
	f := &fieldSet{vals: map[string]*yaml.Node{}, lines: map[string]int{}, line: n.Line}
	if yamldoc.IsNull(n) {
		return f
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(n.Line, path, "want a mapping, got %s", yamldoc.KindOf(n))
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := yamldoc.Resolve(n.Content[i]), n.Content[i+1]
		switch {
		case k.Kind != yaml.ScalarNode:
			p.errorf(k.Line, path, "want a field name, got %s", yamldoc.KindOf(k))
		case k.Tag == "!!merge":
			p.errorf(k.Line, path, "merge keys (<<) are not supported: write the fields out")
		case f.lines[k.Value] != 0:
			p.errorf(k.Line, join(path, k.Value), "duplicate field %q (first on line %d)", k.Value, f.lines[k.Value])
		case refused[k.Value] != "":
			p.errorf(k.Line, join(path, k.Value), "%s", refused[k.Value])
		case !slices.Contains(known, k.Value):
			p.errorf(k.Line, path, "unknown field %q (want %s)", k.Value, strings.Join(known, ", "))
		default:
			f.lines[k.Value] = k.Line
			if !yamldoc.IsNull(v) {
				f.vals[k.Value] = v
			}
		}
	}
	return f
}

// descriptorList reads a list of descriptors into parent, whose key path
// (for Limit.Key) is prefix and whose levels lead to it.
func (p *parser) descriptorList(n *yaml.Node, path string, parent *node, prefix string, levels []level) {
	n, ok := p.list(n, path, "descriptors")
	if !ok {
		return
	}
	if len(levels) >= maxDepth {
		p.errorf(n.Line, path, "descriptors nested deeper than %d levels", maxDepth)
		return
	}
	for i, item := range n.Content {
		if p.descriptors > maxDescriptors {
			return // reported once
		}
		if p.descriptors++; p.descriptors > maxDescriptors {
			p.errorf(item.Line, path, "more than %d descriptors (aliases included)", maxDescriptors)
			return
		}
		p.descriptor(item, path+"["+strconv.Itoa(i)+"]", parent, prefix, levels)
	}
}

// descriptor reads one descriptor and adds it to parent.
func (p *parser) descriptor(n *yaml.Node, path string, parent *node, prefix string, levels []level) {
	f := p.fields(n, path, descriptorFields)
	if f == nil {
		return
	}
	c := &node{}
	if kn := f.vals["key"]; kn != nil {
		c.key, _ = p.scalar(kn, join(path, "key"))
	}
	if c.key == "" && (f.vals["key"] == nil || yamldoc.Resolve(f.vals["key"]).Kind == yaml.ScalarNode) {
		p.errorf(f.line, join(path, "key"), "descriptor has empty key")
	}
	if vn := f.vals["value"]; vn != nil {
		c.value, _ = p.scalar(vn, join(path, "value"))
	}
	lv := level{key: c.key, value: c.value, wildcard: strings.Contains(c.value, "*")}
	c.glob = compileGlob(c.value)
	composite := c.key
	if c.value != "" {
		composite += "_" + c.value
	}
	key := prefix + "." + composite
	shadow := p.flag(f, path, "shadow_mode")
	detailed := p.flag(f, path, "detailed_metric")
	lv.valueToMetric = p.flag(f, path, "value_to_metric")
	lv.shared = p.flag(f, path, "share_threshold")
	if lv.shared && !lv.wildcard {
		p.errorf(f.lines["share_threshold"], join(path, "share_threshold"),
			"share_threshold can only be used with wildcard values (containing '*'), but found key '%s'", composite)
	}
	levels = append(slices.Clip(levels), lv)
	if rn := f.vals["rate_limit"]; rn != nil {
		if l := p.rateLimit(rn, join(path, "rate_limit")); l != nil {
			l.Domain, l.ShadowMode, l.DetailedMetric = p.domain, shadow, detailed
			l.Key, l.File, l.Line, l.levels = key, p.file, f.line, levels
			c.limit = l
			p.limits = append(p.limits, l)
		}
	}
	p.descriptorList(f.vals["descriptors"], join(path, "descriptors"), c, key, levels)
	if c.key != "" {
		p.insert(parent, c, f.line, path, key)
	}
}

// insert adds c to parent's children, reporting a descriptor with the same
// key and value as envoyproxy/ratelimit does.
func (p *parser) insert(parent, c *node, line int, path, key string) {
	place := child{parent, Entry{c.key, c.value}}
	if prev := p.children[place]; prev != nil {
		p.errorf(line, path, "duplicate descriptor composite key '%s' (first on line %d)", key, prev.line)
		return
	}
	if p.children == nil {
		p.children = map[child]*node{}
	}
	p.children[place] = c
	c.line = line
	switch {
	case c.value == "":
		if parent.bare == nil {
			parent.bare = map[string]*node{}
		}
		parent.bare[c.key] = c
	case strings.Contains(c.value, "*"):
		if parent.wildcard == nil {
			parent.wildcard = map[string][]*node{}
		}
		parent.wildcard[c.key] = append(parent.wildcard[c.key], c)
	default:
		if parent.exact == nil {
			parent.exact = map[Entry]*node{}
		}
		parent.exact[Entry{c.key, c.value}] = c
	}
}

// rateLimit reads a rate_limit block; nil when it is not a mapping.
func (p *parser) rateLimit(n *yaml.Node, path string) *Limit {
	f := p.fieldsRefusing(n, path, rateLimitFields, refusedRateLimitFields)
	if f == nil {
		return nil
	}
	l := &Limit{}
	if nn := f.vals["name"]; nn != nil {
		l.Name, _ = p.scalar(nn, join(path, "name"))
	}
	errs := len(p.errs)
	l.Unlimited = p.flag(f, path, "unlimited")
	if len(p.errs) > errs {
		// Unit and requests_per_unit depend on it: no more errors from them.
		return l
	}
	p.unit(f, path, l)
	rn := f.vals["requests_per_unit"]
	switch {
	case rn != nil && l.Unlimited:
		p.errorf(rn.Line, join(path, "requests_per_unit"), "should not specify requests_per_unit when unlimited")
	case rn != nil:
		l.RequestsPerUnit = p.requests(rn, join(path, "requests_per_unit"))
	case !l.Unlimited:
		p.errorf(f.line, join(path, "requests_per_unit"), "must be set (0 denies every request), or set unlimited: true")
	}
	p.replaces(f.vals["replaces"], join(path, "replaces"), l)
	return l
}

// units are the units floodgate enforces, by the peer's upper-case name.
var units = map[string]Unit{"SECOND": UnitSecond, "MINUTE": UnitMinute, "HOUR": UnitHour, "DAY": UnitDay}

// unit reads rate_limit.unit into l, as the peer does: any case, and none
// when unlimited.
func (p *parser) unit(f *fieldSet, path string, l *Limit) {
	un := f.vals["unit"]
	field := join(path, "unit")
	s := ""
	if un != nil {
		var ok bool
		if s, ok = p.scalar(un, field); !ok {
			return
		}
	}
	u, valid := units[strings.ToUpper(s)]
	switch up := strings.ToUpper(s); {
	case l.Unlimited && s != "":
		if valid || up == "WEEK" || up == "MONTH" || up == "YEAR" {
			p.errorf(un.Line, field, "should not specify rate limit unit when unlimited")
		} else {
			p.errorf(un.Line, field, "invalid rate limit unit '%s' (and none is wanted when unlimited)", s)
		}
	case l.Unlimited:
	case up == "WEEK" || up == "MONTH" || up == "YEAR":
		p.errorf(un.Line, field, "rate limit unit '%s': floodgate's windows are at most a day (want second, minute, hour or day)", s)
	case !valid && un == nil:
		p.errorf(f.line, field, "invalid rate limit unit '' (want second, minute, hour or day)")
	case !valid:
		p.errorf(un.Line, field, "invalid rate limit unit '%s' (want second, minute, hour or day)", s)
	default:
		l.Unit = u
	}
}

// requests reads requests_per_unit: an integer from 0 to policy.MaxLimit.
func (p *parser) requests(n *yaml.Node, field string) uint32 {
	n = yamldoc.Resolve(n)
	var v int64
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Decode(&v) != nil {
		if n.Kind == yaml.ScalarNode && (n.Tag == "!!int" || n.Tag == "!!float" && digits.MatchString(n.Value)) { // beyond int64
			p.errorf(n.Line, field, "%s: must be at most %d", n.Value, policy.MaxLimit)
		} else {
			p.errorf(n.Line, field, "want an integer, got %s", yamldoc.KindOf(n))
		}
		return 0
	}
	switch {
	case v < 0:
		p.errorf(n.Line, field, "%d: must be at least 0", v)
		return 0
	case v > policy.MaxLimit:
		p.errorf(n.Line, field, "%d: must be at most %d", v, policy.MaxLimit)
		return 0
	}
	return uint32(v)
}

// list returns n resolved, and whether it is a list with items to read:
// false for null (no items), and for a node that is not a list, reported as
// not the list of what (such as "descriptors") that path wants.
func (p *parser) list(n *yaml.Node, path, what string) (*yaml.Node, bool) {
	n = yamldoc.Resolve(n)
	if yamldoc.IsNull(n) {
		return n, false
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n.Line, path, "want a list of %s, got %s", what, yamldoc.KindOf(n))
		return n, false
	}
	return n, true
}

// replaces reads rate_limit.replaces into l.
func (p *parser) replaces(n *yaml.Node, path string, l *Limit) {
	n, ok := p.list(n, path, "{name: ...}")
	if !ok {
		return
	}
	for i, item := range n.Content {
		ip := path + "[" + strconv.Itoa(i) + "]"
		f := p.fields(item, ip, replacesFields)
		if f == nil {
			continue
		}
		name := ""
		if nn := f.vals["name"]; nn != nil {
			var ok bool
			if name, ok = p.scalar(nn, join(ip, "name")); !ok {
				continue
			}
		}
		switch {
		case name == "":
			p.errorf(yamldoc.Resolve(item).Line, join(ip, "name"), "should not have an empty replaces entry")
		case name == l.Name:
			p.errorf(f.lines["name"], join(ip, "name"), "replaces should not contain name of same descriptor ('%s')", name)
		default:
			l.Replaces = append(l.Replaces, name)
		}
	}
}

// yaml11Bools are the YAML 1.1 booleans that envoyproxy/ratelimit's YAML
// library (yaml.v2) accepts besides true and false.
var yaml11Bools = map[string]bool{
	"y": true, "Y": true, "yes": true, "Yes": true, "YES": true, "on": true, "On": true, "ON": true,
	"n": false, "N": false, "no": false, "No": false, "NO": false, "off": false, "Off": false, "OFF": false,
}

// flag reads the boolean field name of f; false when absent or invalid.
func (p *parser) flag(f *fieldSet, path, name string) bool {
	n := yamldoc.Resolve(f.vals[name])
	if yamldoc.IsNull(n) {
		return false
	}
	if n.Kind == yaml.ScalarNode {
		var b bool
		if n.Tag == "!!bool" && n.Decode(&b) == nil {
			return b
		}
		if b, ok := yaml11Bools[n.Value]; ok && n.Style&(yaml.SingleQuotedStyle|yaml.DoubleQuotedStyle) == 0 {
			return b
		}
	}
	p.errorf(n.Line, join(path, name), "want true or false, got %s", yamldoc.KindOf(n))
	return false
}

// scalar reads n as a string: any scalar but null.
func (p *parser) scalar(n *yaml.Node, field string) (string, bool) {
	n = yamldoc.Resolve(n)
	if n.Kind != yaml.ScalarNode || yamldoc.IsNull(n) {
		p.errorf(n.Line, field, "want a string, got %s", yamldoc.KindOf(n))
		return "", false
	}
	return n.Value, true
}

// join appends a field name to a path.
func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}
