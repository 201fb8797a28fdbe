package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/floodgate-rl/floodgate/limiter"
)

const (
	// MaxFileSize is the largest policy file Load reads.
	MaxFileSize = 1 << 20
	// MaxLimit bounds a limit and a burst, far above any useful value, so
	// that every strategy's arithmetic stays exact.
	MaxLimit = 1_000_000_000
)

// Error is a problem in a policy file. Its message is "line N: reason", or
// only the reason for the few YAML errors that have no place in the text
// (excessive aliasing, nesting deeper than the YAML parser's limit). Parse
// and Load return *Error for every problem with the file's content.
type Error struct {
	// Line is the 1-based line of the problem; 0 when unknown.
	Line int
	// Reason says what is wrong, naming the field by its path, as in
	// `rules[1].window: must be a whole number of seconds from 1s to 24h`.
	Reason string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return "line " + strconv.Itoa(e.Line) + ": " + e.Reason
	}
	return e.Reason
}

func errorf(line int, format string, args ...any) error {
	return &Error{Line: line, Reason: fmt.Sprintf(format, args...)}
}

// Load reads and parses the policy file at path (see Parse). A file that
// cannot be read gives the operating system's reason without the path, as
// in "no such file or directory"; a file over MaxFileSize is refused.
func Load(path string) (*Policy, error) {
	data, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(data)
}

// ReadFile reads the regular file at path (following symbolic links), up
// to MaxFileSize bytes. Its errors omit the path, which callers already
// name.
func ReadFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, pathless(err)
	}
	defer f.Close()
	// Not a FIFO or a device, which could block a reload forever.
	if fi, err := f.Stat(); err != nil {
		return nil, pathless(err)
	} else if !fi.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, pathless(err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("larger than %d bytes", MaxFileSize)
	}
	return data, nil
}

// pathless drops the operation and path of a *fs.PathError.
func pathless(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Parse parses and validates a policy file, YAML:
//
//	blocklist:
//	  cidrs: [192.0.2.66, "2001:db8:bad::/48"]
//	allowlist:
//	  identities: ["header:x-api-key:batch-job-7"]
//	  cidrs: [10.0.0.0/8]
//	rules:
//	- name: login                # required, unique; the default scope
//	  match:                     # every condition optional
//	    scope: login             # the route's floodgate.scope
//	    methods: [POST]
//	    path_prefix: /login
//	    headers:
//	    - {name: x-env, exact: prod}
//	    - {name: x-debug, present: true}
//	  key: source                # source | xff | header:<name>; default: the route's
//	  strategy: sliding          # default: the route's
//	  limit: 5
//	  window: 1m
//	  shadow: false
//	- name: api
//	  key: header:x-api-key
//	  strategy: token-bucket
//	  tiers:
//	    header: x-plan
//	    default: free
//	    limits:
//	      free: {limit: 100, window: 1h, burst: 20}
//	      pro:  {limit: 5000, window: 1h}
//
// Unknown fields, duplicate fields and values of the wrong type are errors.
// Every error is an *Error naming the line. An empty document is an error;
// "rules: []" is a valid policy that matches nothing.
func Parse(data []byte) (*Policy, error) {
	if err := checkText(data); err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errorf(1, "empty policy: want a mapping with rules, allowlist or blocklist")
		}
		return nil, yamlError(data, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, errorf(extra.Line, "a second YAML document: a policy file holds one")
	} else if !errors.Is(err, io.EOF) {
		return nil, yamlError(data, err)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return nil, errorf(1, "empty policy: want a mapping with rules, allowlist or blocklist")
		}
		root = root.Content[0]
	}
	if isNull(root) {
		return nil, errorf(root.Line, "empty policy: want a mapping with rules, allowlist or blocklist")
	}
	p, err := parsePolicy(root)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	p.Digest = hex.EncodeToString(sum[:])
	return p, nil
}

// checkText finds what the YAML parser would reject without a line: bytes
// that are not UTF-8, and control characters.
func checkText(data []byte) error {
	line := 1
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			return errorf(line, "not UTF-8 text (byte 0x%02x)", data[i])
		case r == '\n':
			line++
		case r == '\t' || r == '\r' || (r == '\uFEFF' && i == 0):
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0 && r != 0x85) || r == 0xfffe || r == 0xffff:
			return errorf(line, "control character %U: not allowed in YAML", r)
		}
		i += size
	}
	return nil
}

var yamlLine = regexp.MustCompile(`^yaml: (?:line (\d+): )?(.*)$`)

// parserProblems are the problems the YAML parser (not its scanner)
// reports. For those, yaml.v3 gives the 0-based line of the construct that
// is broken (a mapping, a flow sequence), and omits a line 0.
var parserProblems = map[string]bool{
	"did not find expected <stream-start>":   true,
	"did not find expected <document start>": true,
	"found undefined tag handle":             true,
	"did not find expected node content":     true,
	"did not find expected '-' indicator":    true,
	"did not find expected key":              true,
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"found duplicate %YAML directive":        true,
	"found incompatible YAML document":       true,
	"found duplicate %TAG directive":         true,
}

// unplaced matches the YAML errors that are not about a position in the
// text; yaml.v3 omits the line of every other error only on line 1.
var unplaced = regexp.MustCompile(`^(unknown anchor|anchor '.*' value contains itself|document contains excessive aliasing|exceeded max depth|.*UTF-8|control characters|invalid Unicode|input error)`)

var unknownAnchor = regexp.MustCompile(`^unknown anchor '(.*)' referenced$`)

// yamlError turns a YAML syntax error in data into an *Error. Its line is
// that of the problem, or for a parser problem that of the construct it
// breaks.
func yamlError(data []byte, err error) error {
	msg := strings.Join(strings.Fields(err.Error()), " ")
	m := yamlLine.FindStringSubmatch(msg)
	if m == nil {
		return &Error{Reason: "invalid YAML: " + msg}
	}
	problem := m[2]
	n, _ := strconv.Atoi(m[1]) // 0 when absent
	switch {
	case parserProblems[problem]:
		n++
	case n == 0 && !unplaced.MatchString(problem):
		n = 1
	case n == 0:
		if a := unknownAnchor.FindStringSubmatch(problem); a != nil {
			if i := bytes.Index(data, []byte("*"+a[1])); i >= 0 {
				n = 1 + bytes.Count(data[:i], []byte("\n"))
			}
		}
	}
	return &Error{Line: n, Reason: "invalid YAML: " + problem}
}

// fields are the values of a YAML mapping by key, in file order.
type fields struct {
	keys []string
	vals map[string]*yaml.Node
	line int // of the mapping
}

// get returns the value of key, nil when absent or null.
func (f *fields) get(key string) *yaml.Node { return f.vals[key] }

// mapping reads n as a mapping with only the known keys. A null n is an
// empty mapping; null values count as absent.
func mapping(n *yaml.Node, path string, known ...string) (*fields, error) {
	n = resolve(n)
	f := &fields{vals: make(map[string]*yaml.Node), line: n.Line}
	if isNull(n) {
		return f, nil
	}
	if n.Kind != yaml.MappingNode {
		return nil, errorf(n.Line, "%s: want a mapping, got %s", path, kindOf(n))
	}
	first := make(map[string]int)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			return nil, errorf(k.Line, "%s: want a field name, got %s", path, kindOf(k))
		}
		if prev, ok := first[k.Value]; ok {
			return nil, errorf(k.Line, "%s: duplicate field %q (first on line %d)", path, k.Value, prev)
		}
		first[k.Value] = k.Line
		if len(known) > 0 && !contains(known, k.Value) {
			return nil, errorf(k.Line, "%s: unknown field %q (want %s)", path, k.Value, strings.Join(known, ", "))
		}
		if isNull(v) {
			continue
		}
		f.keys = append(f.keys, k.Value)
		f.vals[k.Value] = v
	}
	return f, nil
}

// sequence reads n as a sequence; a null n is empty.
func sequence(n *yaml.Node, path string) ([]*yaml.Node, error) {
	n = resolve(n)
	if isNull(n) {
		return nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, errorf(n.Line, "%s: want a list, got %s", path, kindOf(n))
	}
	out := make([]*yaml.Node, len(n.Content))
	for i, c := range n.Content {
		out[i] = resolve(c)
	}
	return out, nil
}

// scalar reads n as a string: any scalar but null.
func scalar(n *yaml.Node, path string) (string, error) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode || isNull(n) {
		return "", errorf(n.Line, "%s: want a string, got %s", path, kindOf(n))
	}
	return n.Value, nil
}

// integer reads n as a decimal integer from 1 to MaxLimit.
func integer(n *yaml.Node, path string) (int64, error) {
	s, err := scalar(n, path)
	if err != nil {
		return 0, errorf(n.Line, "%s: want an integer, got %s", path, kindOf(n))
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		if ne := (*strconv.NumError)(nil); errors.As(err, &ne) && errors.Is(ne.Err, strconv.ErrRange) {
			return 0, errorf(n.Line, "%s: %s: must be at most %d", path, s, MaxLimit)
		}
		return 0, errorf(n.Line, "%s: want an integer, got %q", path, s)
	}
	if v < 1 {
		return 0, errorf(n.Line, "%s: %d: must be at least 1", path, v)
	}
	if v > MaxLimit {
		return 0, errorf(n.Line, "%s: %d: must be at most %d", path, v, MaxLimit)
	}
	return v, nil
}

// boolean reads n as true or false.
func boolean(n *yaml.Node, path string) (bool, error) {
	n = resolve(n)
	if n.Kind == yaml.ScalarNode && n.Tag == "!!bool" {
		if b, err := strconv.ParseBool(strings.ToLower(n.Value)); err == nil {
			return b, nil
		}
	}
	if n.Kind == yaml.ScalarNode {
		return false, errorf(n.Line, "%s: want true or false, got %q", path, n.Value)
	}
	return false, errorf(n.Line, "%s: want true or false, got %s", path, kindOf(n))
}

// window reads n as a window (see ParseWindow).
func window(n *yaml.Node, path string) (time.Duration, error) {
	s, err := scalar(n, path)
	if err != nil {
		return 0, errorf(n.Line, "%s: want a duration such as 60s or 1h, got %s", path, kindOf(n))
	}
	d, err := ParseWindow(s)
	if err != nil {
		return 0, errorf(n.Line, "%s: %q: %v", path, s, err)
	}
	return d, nil
}

// resolve follows aliases.
func resolve(n *yaml.Node) *yaml.Node {
	if n == nil {
		return &yaml.Node{}
	}
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	n = resolve(n)
	return n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

// kindOf describes a node for an error message.
func kindOf(n *yaml.Node) string {
	n = resolve(n)
	switch {
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case isNull(n):
		return "nothing"
	case n.Kind == yaml.ScalarNode:
		return strconv.Quote(n.Value)
	}
	return "an unsupported node"
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func parsePolicy(root *yaml.Node) (*Policy, error) {
	top, err := mapping(root, "policy", "rules", "allowlist", "blocklist")
	if err != nil {
		return nil, err
	}
	p := &Policy{}
	if n := top.get("blocklist"); n != nil {
		if p.Blocklist, err = parseList(n, "blocklist"); err != nil {
			return nil, err
		}
	}
	if n := top.get("allowlist"); n != nil {
		if p.Allowlist, err = parseList(n, "allowlist"); err != nil {
			return nil, err
		}
	}
	items, err := sequence(top.vals["rules"], "rules")
	if err != nil {
		return nil, err
	}
	names := make(map[string]int)
	for i, item := range items {
		path := "rules[" + strconv.Itoa(i) + "]"
		r, err := parseRule(item, path)
		if err != nil {
			return nil, err
		}
		if prev, ok := names[r.Name]; ok {
			return nil, errorf(r.Line, "%s.name: duplicate rule name %q (first on line %d)", path, r.Name, prev)
		}
		names[r.Name] = r.Line
		p.Rules = append(p.Rules, r)
	}
	return p, nil
}

var ruleFields = []string{"name", "match", "key", "strategy", "limit", "window", "burst", "tiers", "scope", "shadow"}

func parseRule(n *yaml.Node, path string) (*Rule, error) {
	f, err := mapping(n, path, ruleFields...)
	if err != nil {
		return nil, err
	}
	r := &Rule{Line: f.line}
	nameNode := f.get("name")
	if nameNode == nil {
		return nil, errorf(f.line, "%s: name: must be set", path)
	}
	if r.Name, err = scalar(nameNode, path+".name"); err != nil {
		return nil, err
	}
	if err := CheckScope(r.Name); err != nil {
		return nil, errorf(nameNode.Line, "%s.name: %q: %v", path, r.Name, err)
	}
	r.Scope = r.Name
	if v := f.get("strategy"); v != nil {
		// First: the limits are checked against it.
		s, err := scalar(v, path+".strategy")
		if err != nil {
			return nil, err
		}
		if s == "" {
			return nil, errorf(v.Line, "%s.strategy: must not be empty (leave it out to use the route's)", path)
		}
		if r.Strategy, err = limiter.ParseStrategy(s); err != nil {
			return nil, errorf(v.Line, "%s.strategy: %v", path, err)
		}
	}
	for _, k := range f.keys {
		v := f.vals[k]
		fp := path + "." + k
		switch k {
		case "match":
			if r.Match, err = parseMatch(v, fp); err != nil {
				return nil, err
			}
		case "key":
			s, err := scalar(v, fp)
			if err != nil {
				return nil, err
			}
			if r.Key, err = ParseKey(s); err != nil {
				return nil, errorf(v.Line, "%s: %q: %v", fp, s, err)
			}
		case "scope":
			s, err := scalar(v, fp)
			if err != nil {
				return nil, err
			}
			if err := CheckScope(s); err != nil {
				return nil, errorf(v.Line, "%s: %q: %v", fp, s, err)
			}
			r.Scope = s
		case "shadow":
			if r.Shadow, err = boolean(v, fp); err != nil {
				return nil, err
			}
		case "tiers":
			if r.Tiers, err = parseTiers(v, fp, r.Strategy); err != nil {
				return nil, err
			}
		}
	}
	if r.Tiers != nil {
		for _, k := range []string{"limit", "window", "burst"} {
			if v := f.get(k); v != nil {
				return nil, errorf(v.Line, "%s.%s: not with tiers: each tier sets its own", path, k)
			}
		}
	} else {
		if r.Limit, err = parseLimit(f, path, path+".", r.Strategy); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// parseLimit reads limit, window and burst from f, and checks them against
// strategy (see CheckLimit; only token-bucket takes a burst); prefix names
// them in errors.
func parseLimit(f *fields, path, prefix, strategy string) (Limit, error) {
	var l Limit
	var err error
	ln := f.get("limit")
	if ln == nil {
		return l, errorf(f.line, "%s: limit: must be set (or tiers)", path)
	}
	if l.Limit, err = integer(ln, prefix+"limit"); err != nil {
		return l, err
	}
	wn := f.get("window")
	if wn == nil {
		return l, errorf(f.line, "%s: window: must be set", path)
	}
	if l.Window, err = window(wn, prefix+"window"); err != nil {
		return l, err
	}
	if bn := f.get("burst"); bn != nil {
		if strategy != limiter.StrategyTokenBucket {
			return l, errorf(bn.Line, "%sburst: only for strategy %s (set strategy: %s)", prefix, limiter.StrategyTokenBucket, limiter.StrategyTokenBucket)
		}
		if l.Burst, err = integer(bn, prefix+"burst"); err != nil {
			return l, err
		}
	}
	if err := CheckLimit(strategy, l); err != nil {
		return l, errorf(ln.Line, "%slimit: %v", prefix, err)
	}
	return l, nil
}

// CheckLimit reports whether strategy (a name of limiter.Strategies) can
// enforce l: the sliding-log strategy keeps every timestamp, and takes
// limits up to limiter.MaxSlidingLogLimit. An empty strategy is accepted.
func CheckLimit(strategy string, l Limit) error {
	if strategy == limiter.StrategySlidingLog && l.Limit > limiter.MaxSlidingLogLimit {
		return fmt.Errorf("%d: strategy %s takes at most %d; use %s", l.Limit,
			limiter.StrategySlidingLog, limiter.MaxSlidingLogLimit, limiter.StrategySliding)
	}
	return nil
}

// CheckStrategy reports whether the server's default strategy, called name,
// can enforce the limits of every rule that leaves its strategy to the route
// (see CheckLimit). The error is an *Error on the rule's line.
func (p *Policy) CheckStrategy(name string) error {
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
				return errorf(r.Line, "rules[%d] %s: limit %d: the default strategy %s takes at most %d; set the rule's strategy",
					i, r.Name, l.Limit, name, limiter.MaxSlidingLogLimit)
			}
		}
	}
	return nil
}

func parseTiers(n *yaml.Node, path, strategy string) (*Tiers, error) {
	f, err := mapping(n, path, "header", "default", "limits")
	if err != nil {
		return nil, err
	}
	t := &Tiers{Limits: make(map[string]Limit)}
	hn := f.get("header")
	if hn == nil {
		return nil, errorf(f.line, "%s: header: must be set", path)
	}
	h, err := scalar(hn, path+".header")
	if err != nil {
		return nil, err
	}
	if t.Header, err = HeaderName(h); err != nil {
		return nil, errorf(hn.Line, "%s.header: %v", path, err)
	}
	ln := f.get("limits")
	if ln == nil {
		return nil, errorf(f.line, "%s: limits: must be set", path)
	}
	lf, err := mapping(ln, path+".limits")
	if err != nil {
		return nil, err
	}
	if len(lf.keys) == 0 {
		return nil, errorf(lf.line, "%s.limits: must name at least one tier", path)
	}
	for _, name := range lf.keys {
		tp := path + ".limits." + name
		if err := checkTier(name); err != nil {
			return nil, errorf(lf.vals[name].Line, "%s.limits: tier %q: %v", path, name, err)
		}
		tf, err := mapping(lf.vals[name], tp, "limit", "window", "burst")
		if err != nil {
			return nil, err
		}
		l, err := parseLimit(tf, tp, tp+".", strategy)
		if err != nil {
			return nil, err
		}
		t.Names = append(t.Names, name)
		t.Limits[name] = l
	}
	dn := f.get("default")
	if dn == nil {
		return nil, errorf(f.line, "%s: default: must be set (the tier of requests without the header)", path)
	}
	if t.Default, err = scalar(dn, path+".default"); err != nil {
		return nil, err
	}
	if _, ok := t.Limits[t.Default]; !ok {
		return nil, errorf(dn.Line, "%s.default: %q: not a tier in limits (%s)", path, t.Default, strings.Join(t.Names, ", "))
	}
	return t, nil
}

func parseMatch(n *yaml.Node, path string) (Match, error) {
	var m Match
	f, err := mapping(n, path, "scope", "methods", "path_prefix", "headers")
	if err != nil {
		return m, err
	}
	if v, ok := f.vals["scope"]; ok {
		s, err := scalar(v, path+".scope")
		if err != nil {
			return m, err
		}
		if s != "" {
			if err := CheckScope(s); err != nil {
				return m, errorf(v.Line, "%s.scope: %q: %v", path, s, err)
			}
		}
		m.Scope = &s
	}
	methods, err := sequence(f.vals["methods"], path+".methods")
	if err != nil {
		return m, err
	}
	for i, mn := range methods {
		mp := path + ".methods[" + strconv.Itoa(i) + "]"
		s, err := scalar(mn, mp)
		if err != nil {
			return m, err
		}
		if s == "" || !isToken(s) {
			return m, errorf(mn.Line, "%s: %q: not an HTTP method", mp, s)
		}
		m.Methods = append(m.Methods, strings.ToUpper(s))
	}
	if v, ok := f.vals["path_prefix"]; ok {
		s, err := scalar(v, path+".path_prefix")
		if err != nil {
			return m, err
		}
		if !strings.HasPrefix(s, "/") {
			return m, errorf(v.Line, "%s.path_prefix: %q: must start with /", path, s)
		}
		m.PathPrefix = s
	}
	headers, err := sequence(f.vals["headers"], path+".headers")
	if err != nil {
		return m, err
	}
	for i, hn := range headers {
		hp := path + ".headers[" + strconv.Itoa(i) + "]"
		hf, err := mapping(hn, hp, "name", "exact", "present")
		if err != nil {
			return m, err
		}
		var h HeaderMatch
		nn := hf.get("name")
		if nn == nil {
			return m, errorf(hf.line, "%s: name: must be set", hp)
		}
		s, err := scalar(nn, hp+".name")
		if err != nil {
			return m, err
		}
		if h.Name, err = HeaderName(s); err != nil {
			return m, errorf(nn.Line, "%s.name: %v", hp, err)
		}
		en, pn := hf.get("exact"), hf.get("present")
		switch {
		case en != nil && pn != nil:
			return m, errorf(pn.Line, "%s: exact and present: set one", hp)
		case en != nil:
			v, err := scalar(en, hp+".exact")
			if err != nil {
				return m, err
			}
			h.Exact = &v
		case pn != nil:
			if h.Present, err = boolean(pn, hp+".present"); err != nil {
				return m, err
			}
		default:
			return m, errorf(hf.line, "%s: set exact: <value> or present: true|false", hp)
		}
		m.Headers = append(m.Headers, h)
	}
	return m, nil
}

func parseList(n *yaml.Node, path string) (List, error) {
	l := List{ids: make(map[string]struct{})}
	f, err := mapping(n, path, "identities", "cidrs")
	if err != nil {
		return l, err
	}
	ids, err := sequence(f.vals["identities"], path+".identities")
	if err != nil {
		return l, err
	}
	for i, in := range ids {
		ip := path + ".identities[" + strconv.Itoa(i) + "]"
		s, err := scalar(in, ip)
		if err != nil {
			return l, err
		}
		id, err := ParseIdentity(s)
		if err != nil {
			return l, errorf(in.Line, "%s: %q: %v", ip, s, err)
		}
		if _, dup := l.ids[id]; !dup {
			l.ids[id] = struct{}{}
			l.Identities = append(l.Identities, id)
		}
	}
	cidrs, err := sequence(f.vals["cidrs"], path+".cidrs")
	if err != nil {
		return l, err
	}
	for i, cn := range cidrs {
		cp := path + ".cidrs[" + strconv.Itoa(i) + "]"
		s, err := scalar(cn, cp)
		if err != nil {
			return l, err
		}
		p, err := ParsePrefix(s)
		if err != nil {
			return l, errorf(cn.Line, "%s: %q: %v", cp, s, err)
		}
		l.Prefixes = append(l.Prefixes, p)
	}
	return l, nil
}
