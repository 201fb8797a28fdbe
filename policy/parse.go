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
)

const (
	// MaxFileSize is the largest policy file [Load] reads.
	MaxFileSize = 1 << 20
	// MaxLimit bounds a limit and a burst, far above any useful value, so
	// that every strategy's arithmetic stays exact.
	MaxLimit = 1_000_000_000
)

// Error is a problem in a policy file. Its message is "line N: reason", or
// only the reason for the few YAML errors that have no place in the text
// (excessive aliasing, nesting deeper than the YAML parser's limit). Parse
// and Load return every problem with the file's content as an [ErrorList]
// of them.
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

// Load reads and parses the policy file at path (see [Parse]). A file that
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
// The error is an [ErrorList] of every problem in the file, each an
// [*Error] naming its line: all of them in a file that is YAML, the first
// in one that is not (the YAML parser stops there). An empty document is
// an error; "rules: []" is a valid policy that matches nothing.
func Parse(data []byte) (*Policy, error) {
	root, err := document(data)
	if err != nil {
		return nil, listOf(err)
	}
	var ps parser
	p := ps.policy(root)
	if err := ps.err(); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	p.Digest = hex.EncodeToString(sum[:])
	return p, nil
}

// document parses data as one YAML document and returns its root node,
// which is not null.
func document(data []byte) (*yaml.Node, error) {
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
	return root, nil
}

// checkText finds what the YAML parser would reject without a line: bytes
// that are not UTF-8, and control characters; the first on each line.
func checkText(data []byte) error {
	var errs parser
	line, bad := 1, 0 // bad: the last line with a problem
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		var err error
		switch {
		case r == utf8.RuneError && size <= 1:
			err = errorf(line, "not UTF-8 text (byte 0x%02x)", data[i])
		case r == '\n':
			line++
		case r == '\t' || r == '\r' || (r == '\uFEFF' && i == 0):
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0 && r != 0x85) || r == 0xfffe || r == 0xffff:
			err = errorf(line, "control character %U: not allowed in YAML", r)
		}
		if err != nil && bad != line {
			errs.ok(err)
			bad = line
		}
		i += size
	}
	return errs.err()
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
