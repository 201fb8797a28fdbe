// Command floodgate is a rate limiter for Envoy's ext_authz filter. It serves
// envoy.service.auth.v3.Authorization and grpc.health.v1 on --grpc-addr and
// /healthz, /readyz and /metrics on --admin-addr; run floodgate --help for
// its flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit statuses.
const (
	exitOK     = 0
	exitFailed = 1 // serving failed: a port in use, memcached misconfigured
	exitUsage  = 2 // invalid flags or environment
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	go func() {
		// After the first signal, restore the default handling so that a
		// second one ends a slow drain at once.
		<-ctx.Done()
		stop()
	}()
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is floodgate's command line: it runs a subcommand (check-policy,
// check-rls-config, inspect), or parses the flags and the environment into a
// Config and runs its Main until ctx is cancelled (by SIGTERM or SIGINT in
// main), and returns the process's exit status: exitUsage for a bad
// configuration, exitFailed when serving failed. Errors go to stderr as one
// "floodgate: ..." line.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "check-policy" {
		return checkPolicy(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "check-rls-config" {
		return checkRLSConfig(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "inspect" {
		return inspect(ctx, args[1:], stdout, stderr)
	}
	cfg, err := ParseConfig(args, getenv)
	switch {
	case errors.Is(err, flag.ErrHelp):
		Usage(stdout)
		return exitOK
	case err != nil:
		fmt.Fprintf(stderr, "floodgate: %v\n", err)
		return exitUsage
	case cfg.Version:
		fmt.Fprintf(stdout, "floodgate %s\n", Version())
		return exitOK
	}
	if err := NewMain(cfg, stderr).Run(ctx); err != nil {
		fmt.Fprintf(stderr, "floodgate: %v\n", err)
		return exitFailed
	}
	return exitOK
}
