// Command floodgate-bench measures floodgate against the ceiling of any
// ext_authz or rate limit service (RLS) server on the same machine: it
// drives Check and ShouldRateLimit over gRPC at a fixed concurrency against
// a built-in no-op server of both APIs and against the real floodgate
// binary (on memcached, and for Check in memory), reads floodgate's
// resident memory after a million distinct clients, and measures Envoy with
// and without the ext_authz filter at a fixed request rate. `make bench`
// runs it through scripts/bench.sh; the logic is in internal/loadgen.
//
//	floodgate-bench --floodgate bin/floodgate [flags]
//
// It also runs as the servers it starts, on a loopback address:
//
//	floodgate-bench noop-server --listen 127.0.0.1:PORT   (ext_authz and RLS)
//	floodgate-bench upstream --listen 127.0.0.1:PORT
//
// and drives one Check or ShouldRateLimit load at a server of your own,
// e.g. to profile it:
//
//	floodgate-bench load --target 127.0.0.1:9001 --duration 30s --clients 10000
//	floodgate-bench load --api rls --domain bench --target 127.0.0.1:9001
//
// floodgate-bench rls-config prints the --rls-config of the RLS scenarios
// (domain bench, every remote_address value limited to 10^9 an hour).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/floodgate-rl/floodgate/internal/loadgen"
	"github.com/floodgate-rl/floodgate/internal/runtimetune"
	"github.com/floodgate-rl/floodgate/internal/supervisor"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "floodgate-bench: %v\n", err)
		stop()
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) > 0 && (args[0] == "noop-server" || args[0] == "upstream") {
		return serve(ctx, args[0], args[1:])
	}
	if len(args) > 0 && args[0] == "load" {
		return load(ctx, args[1:])
	}
	if len(args) == 1 && args[0] == "rls-config" {
		fmt.Print(loadgen.RLSConfig(loadgen.RLSBenchLimit))
		return nil
	}
	fs := flag.NewFlagSet("floodgate-bench", flag.ContinueOnError)
	var (
		cfg     loadgen.BenchConfig
		clients = fs.String("clients", "10000,100000", "distinct-client counts of the memcached scenarios, comma-separated")
		only    = fs.String("only", "", "run only these parts, comma-separated: check (ext_authz), rls, memory, envoy; check and rls share their rounds")
	)
	fs.StringVar(&cfg.Floodgate, "floodgate", "bin/floodgate", "floodgate binary")
	fs.StringVar(&cfg.Baseline, "baseline", "", "another floodgate binary to measure in every Check scenario too, for before/after numbers from one run")
	fs.StringVar(&cfg.Memcached, "memcached", supervisor.FindMemcached(), "memcached binary")
	fs.StringVar(&cfg.Envoy, "envoy", "", "envoy binary (default: $FLOODGATE_ENVOY, .tools/bin/envoy, .tools/venv/bin/envoy, PATH)")
	fs.DurationVar(&cfg.Duration, "duration", 5*time.Second, "measured time of each Check scenario")
	fs.IntVar(&cfg.Rounds, "rounds", 3, "rounds of the Check scenarios, each between two runs of the no-op server; the summary gives each ratio's median")
	fs.Float64Var(&cfg.MaxFailed, "max-failed", 0, "share of a Check or RLS scenario's calls that may fail (e.g. past their deadline on a busy machine) before the run stops; the tables count them")
	fs.IntVar(&cfg.Concurrency, "concurrency", 64, "Check (and ShouldRateLimit) calls in flight")
	fs.IntVar(&cfg.Conns, "conns", 4, "gRPC connections")
	fs.IntVar(&cfg.ServerProcs, "server-procs", 0, "GOMAXPROCS of floodgate and the no-op server (0: Go's default)")
	fs.IntVar(&cfg.ClientProcs, "client-procs", 0, "GOMAXPROCS of the load generator (0: Go's default)")
	fs.IntVar(&cfg.MemoryClients, "memory-clients", 1_000_000, "distinct clients for the in-memory resident-memory run (negative: skip)")
	fs.Float64Var(&cfg.HTTPRate, "http-rate", 1000, "requests per second through Envoy")
	fs.DurationVar(&cfg.HTTPDuration, "http-duration", 6*time.Second, "measured time of each Envoy run, in 5 interleaved slices")
	fs.StringVar(&cfg.Wrk, "wrk", loadgen.FindWrk(), "wrk binary for Envoy's throughput (empty: skip it)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if cfg.Rounds < 1 {
		return fmt.Errorf("--rounds: %d: want at least 1", cfg.Rounds)
	}
	cfg.Clients = nil
	for _, s := range strings.Split(*clients, ",") {
		var n int
		if _, err := fmt.Sscan(strings.TrimSpace(s), &n); err != nil || n < 2 {
			return fmt.Errorf("--clients: %q: want counts of at least 2", s)
		}
		cfg.Clients = append(cfg.Clients, n)
	}
	if *only != "" {
		cfg.Only = strings.Split(*only, ",")
	}
	if err := checkParts(cfg); err != nil {
		return err
	}
	if cfg.Memcached == "" {
		return fmt.Errorf("memcached not found: run `make deps` (or apt-get install memcached), or pass --memcached")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cfg.Self = self
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	root, err := supervisor.ModuleRoot(wd)
	if err != nil {
		return err
	}
	cfg.EnvoyConfig = root + "/envoy/front-proxy.yaml"
	if cfg.Envoy == "" {
		if cfg.Envoy, err = supervisor.FindEnvoy(root); err != nil {
			return err
		}
	}
	return loadgen.Bench(ctx, cfg, os.Stdout)
}

// checkParts checks --only's parts and --max-failed.
func checkParts(cfg loadgen.BenchConfig) error {
	for _, part := range cfg.Only {
		if !slices.Contains([]string{"check", "rls", "memory", "envoy"}, part) {
			return fmt.Errorf("--only: %q: want check, rls, memory or envoy", part)
		}
	}
	if cfg.MaxFailed < 0 || cfg.MaxFailed >= 1 {
		return fmt.Errorf("--max-failed: %g: want a share from 0 to below 1", cfg.MaxFailed)
	}
	return nil
}

// serve runs this binary as one of the servers the benchmark starts, until
// it is killed.
func serve(ctx context.Context, mode string, args []string) error {
	fs := flag.NewFlagSet(mode, flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	if mode == "upstream" {
		return loadgen.ServeUpstream(ln)
	}
	// The ceiling runs the same runtime tuning (memory limit, heap floor) as
	// floodgate.
	stop := runtimetune.Start(ctx, runtimetune.Config{}, slog.New(slog.DiscardHandler))
	defer stop()
	return loadgen.ServeNoop(ctx, ln)
}

// load drives one Check or ShouldRateLimit load at --target and prints
// what it measured.
func load(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	var o loadgen.CheckOptions
	api := fs.String("api", loadgen.APICheck, "API to call: check (ext_authz Check) or rls (ShouldRateLimit, one remote_address descriptor)")
	fs.StringVar(&o.Target, "target", "127.0.0.1:9001", "floodgate or another server, host:port (loopback only)")
	fs.StringVar(&o.Domain, "domain", loadgen.RLSDomain, "domain of the RateLimitRequests (--api rls)")
	fs.IntVar(&o.Conns, "conns", 4, "gRPC connections")
	fs.IntVar(&o.Concurrency, "concurrency", 64, "calls in flight")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "how long to send")
	fs.Int64Var(&o.Requests, "requests", 0, "stop after this many calls (0: only --duration bounds the run)")
	fs.IntVar(&o.Clients, "clients", 1, "distinct client addresses, 10.x.y.z (--api rls: remote_address values)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if host, _, err := net.SplitHostPort(o.Target); err != nil || !isLoopback(host) {
		return fmt.Errorf("--target %q: want a loopback host:port", o.Target)
	}
	run := loadgen.Check
	switch *api {
	case loadgen.APICheck:
	case loadgen.APIRLS:
		run = loadgen.RLS
	default:
		return fmt.Errorf("--api %q: want %s or %s", *api, loadgen.APICheck, loadgen.APIRLS)
	}
	res, err := run(ctx, o)
	if err != nil {
		return err
	}
	fmt.Println(res.Summary())
	return nil
}

// isLoopback reports whether host is localhost or a loopback IP.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
