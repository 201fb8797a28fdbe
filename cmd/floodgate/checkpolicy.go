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
	return runCheck(args, checkPolicyUsage, "check-policy takes one argument, the policy file: floodgate check-policy FILE", validatePolicy, stdout, stderr)
}

// validatePolicy returns the lines of the policy file as floodgate
// understands it, or every problem it has ("FILE: line N: reason").
func validatePolicy(file string) (listing, problems []string) {
	p, err := policy.Load(file)
	if err == nil {
		return p.Lines(), nil
	}
	var list policy.ErrorList
	if !errors.As(err, &list) {
		return nil, []string{file + ": " + oneLine(err)} // unreadable
	}
	for _, e := range list {
		problems = append(problems, file+": "+oneLine(e))
	}
	return nil, problems
}

// runCheck runs a check subcommand (check-policy, check-rls-config) on its
// one argument: validate gives the listing of a valid configuration, for
// stdout, and exitOK; or the problems of an invalid one, each on a line of
// stderr after "floodgate: ", and exitUsage. For -h, -help or --help it
// writes usage on stdout; when args is not one non-empty argument, wrong
// on stderr.
func runCheck(args []string, usage, wrong string, validate func(path string) (listing, problems []string), stdout, stderr io.Writer) int {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		io.WriteString(stdout, usage)
		return exitOK
	}
	if len(args) != 1 || args[0] == "" {
		fmt.Fprintf(stderr, "floodgate: %s\n", wrong)
		return exitUsage
	}
	listing, problems := validate(args[0])
	for _, p := range problems {
		fmt.Fprintf(stderr, "floodgate: %s\n", p)
	}
	if len(problems) > 0 {
		return exitUsage
	}
	for _, l := range listing {
		fmt.Fprintln(stdout, l)
	}
	return exitOK
}
