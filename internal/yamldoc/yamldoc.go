// Package yamldoc reads one YAML document of a floodgate configuration file
// (the policy file, package policy; the RLS configuration, package
// policy/rls) with go.yaml.in/yaml/v3, and says on which line each problem is.
//
// yaml.v3 reports some problems without a line (bytes that are not UTF-8,
// control characters), the line of a broken construct 0-based for parser
// problems, and omits a line 1. Decode checks the text first, one problem a
// line, and turns the first syntax error into a [Problem] with the line a
// user would look at. The helpers Resolve, IsNull and KindOf are the node
// questions both parsers ask.
package yamldoc

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Problem is one thing wrong in a file, at Line (0 when the problem has no
// place in the text).
type Problem struct {
	Line int
	Msg  string
}

// Error implements error: "line N: msg", or msg alone without a line.
func (p Problem) Error() string {
	if p.Line == 0 {
		return p.Msg
	}
	return fmt.Sprintf("line %d: %s", p.Line, p.Msg)
}

// Decode parses data as one YAML document. It returns the document's root
// node, nil when the document is empty (a null root is returned: see
// IsNull); the line where
// a second document begins, 0 when there is none; and the problems found:
// every line's first problem of text (not UTF-8, a control character), or
// else the YAML parser's first error. With problems, root is nil.
func Decode(data []byte) (root *yaml.Node, second int, problems []Problem) {
	if problems = checkText(data); problems != nil {
		return nil, 0, problems
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, 0, nil
		}
		return nil, 0, []Problem{syntaxError(data, err)}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		second = max(extra.Line, 1)
	} else if !errors.Is(err, io.EOF) {
		return nil, 0, []Problem{syntaxError(data, err)}
	}
	root = &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return nil, second, nil
		}
		root = root.Content[0]
	}
	return root, second, nil
}

// checkText finds what the YAML parser would reject without a line: bytes
// that are not UTF-8, and control characters; the first on each line.
func checkText(data []byte) []Problem {
	var problems []Problem
	line, bad := 1, 0 // bad: the last line with a problem
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		var msg string
		switch {
		case r == utf8.RuneError && size <= 1:
			msg = fmt.Sprintf("not UTF-8 text (byte 0x%02x)", data[i])
		case r == '\n':
			line++
		case r == '\t' || r == '\r' || (r == '\uFEFF' && i == 0):
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0 && r != 0x85) || r == 0xfffe || r == 0xffff:
			msg = fmt.Sprintf("control character %U: not allowed in YAML", r)
		}
		if msg != "" && bad != line {
			problems = append(problems, Problem{Line: line, Msg: msg})
			bad = line
		}
		i += size
	}
	return problems
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

// syntaxError turns a YAML syntax error in data into a Problem "invalid
// YAML: ...". Its line is that of the problem, or for a parser problem that
// of the construct it breaks.
func syntaxError(data []byte, err error) Problem {
	msg := strings.Join(strings.Fields(err.Error()), " ")
	m := yamlLine.FindStringSubmatch(msg)
	if m == nil {
		return Problem{Msg: "invalid YAML: " + msg}
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
	return Problem{Line: n, Msg: "invalid YAML: " + problem}
}

// Resolve follows aliases; a nil n is a null node.
func Resolve(n *yaml.Node) *yaml.Node {
	if n == nil {
		return &yaml.Node{}
	}
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// IsNull reports whether n (after aliases) is absent or null.
func IsNull(n *yaml.Node) bool {
	n = Resolve(n)
	return n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

// KindOf describes a node for an error message: "a mapping", "a list",
// "nothing", or a scalar's quoted value.
func KindOf(n *yaml.Node) string {
	n = Resolve(n)
	switch {
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case IsNull(n):
		return "nothing"
	case n.Kind == yaml.ScalarNode:
		return strconv.Quote(n.Value)
	}
	return "an unsupported node"
}
