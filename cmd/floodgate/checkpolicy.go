package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/floodgate-rl/floodgate/policy"
)

// checkPolicyUsage is the help of the check-policy subcommand.
const checkPolicyUsage = `Usage: floodgate check-policy FILE

Validates the policy file FILE (see --policy) and prints it as floodgate
understands it, in the order floodgate evaluates it: the blocklist and the
allowlist, one line per rule, then a summary line starting with "valid:".

Exit status: 0 when FILE is valid; 2 when it is not, with one line on stderr
for each problem, in the order of their lines:
floodgate: FILE: line N: reason
`

// checkPolicy runs `floodgate check-policy FILE`: args are the arguments
// after the subcommand. It returns the exit status.
func checkPolicy(args []string, stdout, stderr io.Writer) int {
	file, code, ok := checkArg(args, checkPolicyUsage, "check-policy takes one argument, the policy file: floodgate check-policy FILE", stdout, stderr)
	if !ok {
		return code
	}
	p, err := policy.Load(file)
	if err != nil {
		for _, e := range problems(err) {
			fmt.Fprintf(stderr, "floodgate: %s: %s\n", file, oneLine(e))
		}
		return exitUsage
	}
	for _, line := range p.Lines() {
		fmt.Fprintln(stdout, line)
	}
	return exitOK
}

// checkArg returns the one argument of a check subcommand (check-policy,
// check-rls-config), or the status the subcommand ends with: exitOK after
// usage on stdout for -h, -help or --help; exitUsage after wrong on stderr
// when args is not one non-empty argument.
func checkArg(args []string, usage, wrong string, stdout, stderr io.Writer) (arg string, code int, ok bool) {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		io.WriteString(stdout, usage)
		return "", exitOK, false
	}
	if len(args) != 1 || args[0] == "" {
		fmt.Fprintf(stderr, "floodgate: %s\n", wrong)
		return "", exitUsage, false
	}
	return args[0], exitOK, true
}

// problems returns every problem err holds: each of a [policy.ErrorList],
// or err itself (a file that cannot be read).
func problems(err error) []error {
	var list policy.ErrorList
	if !errors.As(err, &list) {
		return []error{err}
	}
	errs := make([]error, len(list))
	for i, e := range list {
		errs[i] = e
	}
	return errs
}
