package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/floodgate-rl/floodgate/internal/yamldoc"
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
//	  key: source                # source | xff | header:<name> | principal | metadata:<filter>:<path>; default: the route's
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
//	- name: partners             # per verified token subject, tier from a claim
//	  key: metadata:envoy.filters.http.jwt_authn:payload.sub
//	  tiers:
//	    metadata: envoy.filters.http.jwt_authn:payload.plan  # instead of header
//	    default: free
//	    limits:
//	      free: {limit: 100, window: 1h}
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
	root, second, problems := yamldoc.Decode(data)
	if problems != nil {
		var errs ErrorList
		for _, pr := range problems {
			errs = append(errs, &Error{Line: pr.Line, Reason: pr.Msg})
		}
		return nil, errs
	}
	if second > 0 {
		return nil, errorf(second, "a second YAML document: a policy file holds one")
	}
	if root == nil {
		return nil, errorf(1, "empty policy: want a mapping with rules, allowlist or blocklist")
	}
	if yamldoc.IsNull(root) {
		return nil, errorf(root.Line, "empty policy: want a mapping with rules, allowlist or blocklist")
	}
	return root, nil
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
	n = yamldoc.Resolve(n)
	if yamldoc.IsNull(n) {
		return nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, errorf(n.Line, "%s: want a list, got %s", path, yamldoc.KindOf(n))
	}
	out := make([]*yaml.Node, len(n.Content))
	for i, c := range n.Content {
		out[i] = yamldoc.Resolve(c)
	}
	return out, nil
}

// scalar reads n as a string: any scalar but null.
func scalar(n *yaml.Node, path string) (string, error) {
	n = yamldoc.Resolve(n)
	if n.Kind != yaml.ScalarNode || yamldoc.IsNull(n) {
		return "", errorf(n.Line, "%s: want a string, got %s", path, yamldoc.KindOf(n))
	}
	return n.Value, nil
}

// integer reads n as a decimal integer from 1 to MaxLimit.
func integer(n *yaml.Node, path string) (int64, error) {
	s, err := scalar(n, path)
	if err != nil {
		return 0, errorf(n.Line, "%s: want an integer, got %s", path, yamldoc.KindOf(n))
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
	n = yamldoc.Resolve(n)
	if n.Kind == yaml.ScalarNode && n.Tag == "!!bool" {
		if b, err := strconv.ParseBool(strings.ToLower(n.Value)); err == nil {
			return b, nil
		}
	}
	if n.Kind == yaml.ScalarNode {
		return false, errorf(n.Line, "%s: want true or false, got %q", path, n.Value)
	}
	return false, errorf(n.Line, "%s: want true or false, got %s", path, yamldoc.KindOf(n))
}

// window reads n as a window (see ParseWindow).
func window(n *yaml.Node, path string) (time.Duration, error) {
	s, err := scalar(n, path)
	if err != nil {
		return 0, errorf(n.Line, "%s: want a duration such as 60s or 1h, got %s", path, yamldoc.KindOf(n))
	}
	d, err := ParseWindow(s)
	if err != nil {
		return 0, errorf(n.Line, "%s: %q: %v", path, s, err)
	}
	return d, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
