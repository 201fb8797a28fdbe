package rls

import (
	"strconv"
	"strings"
)

// Error is one problem in a configuration file.
type Error struct {
	// File is the file's path as Load was given it (joined to the
	// directory), or the name given to Parse.
	File string
	// Line is the 1-based line of the problem; 0 when it has none (a file
	// that cannot be read).
	Line int
	// Field is the path of the field at fault, as in
	// "descriptors[0].rate_limit.unit"; "" for the file as a whole.
	Field string
	// Msg says what is wrong.
	Msg string
}

// Error formats e as "file:line: field: msg", leaving out what is unknown.
func (e Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in a configuration, in file order and
// within a file by line. Load, Parse and Check return it (never empty) for
// every problem with the configuration's content or its files.
type Errors []Error

// Error lists the errors, one per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}
