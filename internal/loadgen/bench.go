package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// BenchConfig configures Bench. Floodgate, Self and Memcached are required;
// zero values elsewhere pick the defaults noted.
type BenchConfig struct {
	// Floodgate is the floodgate binary; Self is this benchmark's own
	// binary, run as the no-op server and the upstream app; Memcached and
	// Envoy are those servers' binaries. Without Envoy the Envoy scenarios
	// are skipped with a line saying so.
	Floodgate, Self, Memcached, Envoy string
	// Baseline, when set, is another floodgate binary (an older build) run
	// in every Check scenario right before Floodgate, so that a change is
	// measured against its baseline in the same run (not in the RLS
	// scenarios: an older build may not serve RLS).
	Baseline string
	// EnvoyConfig is envoy/front-proxy.yaml.
	EnvoyConfig string
	// Duration is the measured time of each Check scenario; zero means 5s.
	Duration time.Duration
	// Rounds is how many times the Check scenarios run, each round between
	// two runs of the no-op server, so that every ratio has a ceiling
	// measured right before and right after it; zero means 3. With more
	// than one, a summary gives each ratio's median and every round's.
	Rounds int
	// Concurrency and Conns: calls in flight and gRPC connections; zero
	// means 64 and 4.
	Concurrency, Conns int
	// ServerProcs is GOMAXPROCS of floodgate and the no-op server, and
	// ClientProcs that of the load generator; zero leaves Go's default
	// (the number of CPUs).
	ServerProcs, ClientProcs int
	// Clients lists the distinct-client counts of the memcached scenarios
	// (for RLS, distinct remote_address values); nil means 10,000 and
	// 100,000.
	Clients []int
	// MemoryClients is the number of distinct clients, one request each,
	// sent to floodgate on the in-memory store before its resident memory
	// is read; zero means 1,000,000, negative skips it.
	MemoryClients int
	// HTTPRate and HTTPDuration shape the Envoy runs; zero means 1,000
	// requests/s for 6s.
	HTTPRate     float64
	HTTPDuration time.Duration
	// Wrk is the wrk binary that measures Envoy's throughput with and
	// without the filter; "" skips that part with a line saying so.
	Wrk string
	// MaxFailed is the share of a gRPC scenario's calls that may fail
	// (past their deadline, on a machine busy with other work) or be
	// answered by floodgate's fail mode before the run stops; zero means
	// none may. Failed calls are not in the rates, fail-mode answers are;
	// each round's table counts both.
	MaxFailed float64
	// Only, when not empty, runs only the parts named: "check" (ext_authz
	// over gRPC), "rls" (the rate limit service over gRPC), "memory",
	// "envoy". check and rls run in the same rounds.
	Only []string
}

func (c *BenchConfig) defaults() {
	if c.Duration <= 0 {
		c.Duration = 5 * time.Second
	}
	if c.Rounds <= 0 {
		c.Rounds = 3
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 64
	}
	if c.Conns <= 0 {
		c.Conns = 4
	}
	if c.Clients == nil {
		c.Clients = []int{10_000, 100_000}
	}
	if c.MemoryClients == 0 {
		c.MemoryClients = 1_000_000
	}
	if c.HTTPRate <= 0 {
		c.HTTPRate = 1000
	}
	if c.HTTPDuration <= 0 {
		c.HTTPDuration = 6 * time.Second
	}
}

func (c *BenchConfig) runs(part string) bool {
	if len(c.Only) == 0 {
		return true
	}
	for _, p := range c.Only {
		if p == part {
			return true
		}
	}
	return false
}

// highLimit is the --limit of the allowed-path scenarios: no client gets
// near it, so every decision is an allowed one that counts.
const highLimit = "1000000000"

// Row is one measured scenario of the gRPC rounds (Check or RLS).
type Row struct {
	Name   string
	Result *CheckResult
	// API is the API the load called: APICheck or APIRLS.
	API string
	// Clients is the scenario's number of distinct clients (descriptor
	// values for RLS); 1 for a hot one.
	Clients int
	// ServerCPU and StoreCPU are the CPU time floodgate (or the no-op
	// server) and memcached used during the measured run.
	ServerCPU, StoreCPU time.Duration
	// StoreOps is the change of floodgate_store_operations_total (each a
	// Store call: add, get or a batch of both), Decisions that of the
	// API's decisions (floodgate_decisions_total for Check,
	// floodgate_rls_decisions_total for RLS), and RoundTrips the read
	// system calls of memcached (see Memcached.RoundTrips): the real round
	// trips, whatever the client pipelines.
	StoreOps, Decisions, RoundTrips float64
	// PipeRoundTrips is the change of floodgate's own count of its
	// round trips for counters, floodgate_memcache_round_trips_total
	// (absent from older binaries: then zero).
	PipeRoundTrips float64
	// FailMode is the change of the API's fail_open and fail_closed
	// decisions: answers floodgate made without deciding, its limiter
	// having failed.
	FailMode float64
	// Others is the share of the machine's CPU that processes the
	// benchmark did not start used during the run.
	Others    float64
	Floodgate bool
	Memcached bool
	// Baseline marks a row of BenchConfig.Baseline's binary.
	Baseline bool
}

// Bench runs every scenario and writes the report to w.
func Bench(ctx context.Context, cfg BenchConfig, w io.Writer) error {
	cfg.defaults()
	if cfg.ClientProcs > 0 {
		runtime.GOMAXPROCS(cfg.ClientProcs)
	}
	dir, err := os.MkdirTemp("", "floodgate-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	fmt.Fprintf(w, "machine: %d CPUs (%s), %s\n", runtime.NumCPU(), cpuModel(), runtime.Version())
	fmt.Fprintf(w, "GOMAXPROCS: load generator %s, floodgate and no-op server %s; memcached -t 2; Envoy --concurrency 1\n",
		procsText(cfg.ClientProcs), procsText(cfg.ServerProcs))
	fmt.Fprintf(w, "load: %d calls in flight over %d gRPC connections, %v per scenario, deadline 250ms per call\n\n",
		cfg.Concurrency, cfg.Conns, cfg.Duration)

	if cfg.runs("check") || cfg.runs("rls") {
		if err := benchGRPC(ctx, cfg, dir, w); err != nil {
			return err
		}
	}
	if cfg.runs("memory") && cfg.MemoryClients > 0 {
		if err := benchMemory(ctx, cfg, w); err != nil {
			return err
		}
	}
	if cfg.runs("envoy") {
		if err := benchEnvoy(ctx, cfg, dir, w); err != nil {
			return err
		}
	}
	return nil
}

func procsText(n int) string {
	if n <= 0 {
		return "default (" + strconv.Itoa(runtime.NumCPU()) + ")"
	}
	return strconv.Itoa(n)
}

// cpuModel returns the first "model name" of /proc/cpuinfo.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// benchMemory sends one request from each of cfg.MemoryClients distinct
// clients to floodgate on the in-memory store and reads its resident
// memory.
func benchMemory(ctx context.Context, cfg BenchConfig, w io.Writer) error {
	f, err := StartFloodgate(cfg.Floodgate, cfg.ServerProcs, "--limit", highLimit)
	if err != nil {
		return err
	}
	defer f.Stop()
	rss0, err := procRSS(f.Pid())
	if err != nil {
		return err
	}
	watch := watchCPU(f.Process)
	res, err := Check(ctx, CheckOptions{Target: f.GRPCAddr(), Conns: cfg.Conns, Concurrency: cfg.Concurrency,
		Requests: int64(cfg.MemoryClients), Clients: cfg.MemoryClients})
	if err != nil {
		return err
	}
	if res.Errors > 0 {
		return fmt.Errorf("memory: %d calls failed; first: %w", res.Errors, res.FirstError)
	}
	rss1, err := procRSS(f.Pid())
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "In-memory store, %s distinct clients, one request each: %s; other load %.0f%%\n", fmtCount(cfg.MemoryClients), res.Summary(), 100*watch.others())
	fmt.Fprintf(w, "  floodgate VmRSS: %.1f MiB at start, %.1f MiB after (%.0f bytes per client)\n\n",
		float64(rss0)/(1<<20), float64(rss1)/(1<<20), float64(rss1-rss0)/float64(cfg.MemoryClients))
	return nil
}

// envoyRun is one of the Envoy stacks benchEnvoy measures.
type envoyRun struct {
	name   string
	limit  string // floodgate's --limit; "" without the filter
	memory bool   // floodgate on its in-memory store
	noop   bool   // the no-op Authorization server instead of floodgate
}

// envoyRuns are the stacks benchEnvoy measures. The first, without the
// filter, is the baseline; the second, the no-op server, is the ceiling.
var envoyRuns = []envoyRun{
	{name: "Envoy without ext_authz"},
	{name: "Envoy + no-op ext_authz server (ceiling)", noop: true},
	{name: "Envoy + floodgate (in memory), allowed", limit: highLimit, memory: true},
	{name: "Envoy + floodgate (memcached), allowed", limit: highLimit},
	{name: "Envoy + floodgate (memcached), denied (429)", limit: "1"},
}

// envoyRounds is how many slices of each stack's measurement benchEnvoy
// takes in turn.
const envoyRounds = 5

// benchEnvoy measures Envoy with envoy/front-proxy.yaml at a fixed rate:
// without the ext_authz filter, with floodgate allowing, and with floodgate
// denying the client.
func benchEnvoy(ctx context.Context, cfg BenchConfig, dir string, w io.Writer) error {
	if cfg.Envoy == "" {
		fmt.Fprintln(w, "Envoy: skipped, no envoy binary (run `make deps`, or set FLOODGATE_ENVOY)")
		return nil
	}
	up, upAddr, err := StartSelf(cfg.Self, cfg.ServerProcs, "upstream")
	if err != nil {
		return err
	}
	defer up.Stop()
	m, err := StartMemcached(cfg.Memcached, 256, 2)
	if err != nil {
		return err
	}
	defer m.Stop()

	// All the stacks run at once, idle but for the one being measured, and
	// the measurement goes round them in short slices, so that a burst of
	// other work on a shared machine lands on all three rather than on one.
	slice := max(cfg.HTTPDuration/envoyRounds, time.Second)
	fmt.Fprintf(w, "Envoy (envoy/front-proxy.yaml, --concurrency 1), GET / at %s requests/s, one client, %d rounds of %v per run, runs interleaved;\nlatency from each request's scheduled start:\n",
		fmtRate(cfg.HTTPRate), envoyRounds, slice)
	var procs []*Proc
	defer func() {
		for _, p := range procs {
			p.Stop()
		}
	}()
	urls := make([]string, len(envoyRuns))
	for i, r := range envoyRuns {
		var stack []*Proc
		urls[i], stack, err = startEnvoyStack(ctx, cfg, dir, r, portOf(upAddr), m.Addr())
		procs = append(procs, stack...)
		if err != nil {
			return err
		}
	}
	all := append([]*Proc{up, m.Process()}, procs...)
	results, others, err := measureEnvoy(ctx, cfg, urls, slice, all)
	if err != nil {
		return err
	}
	printEnvoyLatency(w, results, others)
	if err := checkEnvoyAnswers(results); err != nil {
		return err
	}
	names := make([]string, len(envoyRuns))
	for i, r := range envoyRuns {
		names[i] = r.name
	}
	return envoyThroughput(ctx, cfg, names, urls, all, w)
}

// startEnvoyStack starts the Envoy of run r, in front of the upstream on
// upPort, and the Authorization server it calls (floodgate on the
// memcached at memcached, or the no-op server), and warms it up with a
// second of requests. It returns Envoy's URL and the processes it started,
// which the caller stops, even with an error.
func startEnvoyStack(ctx context.Context, cfg BenchConfig, dir string, r envoyRun, upPort int, memcached string) (string, []*Proc, error) {
	var procs []*Proc
	ports := map[int]int{8080: upPort, 9001: 1} // 9001 is unused without the filter
	if r.noop {
		p, addr, err := StartSelf(cfg.Self, cfg.ServerProcs, "noop-server")
		if err != nil {
			return "", procs, err
		}
		procs = append(procs, p)
		ports[9001] = portOf(addr)
	}
	if r.limit != "" {
		args := []string{"--limit", r.limit}
		if !r.memory {
			args = append(args, "--memcache-servers", memcached)
		}
		f, err := StartFloodgate(cfg.Floodgate, cfg.ServerProcs, args...)
		if err != nil {
			return "", procs, err
		}
		procs = append(procs, f.Process)
		ports[9001] = f.GRPCPort()
	}
	e, err := StartEnvoy(cfg.Envoy, cfg.EnvoyConfig, dir, ports, r.limit != "" || r.noop)
	if err != nil {
		return "", procs, err
	}
	procs = append(procs, e.Process)
	url := e.URL + "/"
	// A second at the same rate opens the connections and warms caches.
	if _, err := HTTP(ctx, HTTPOptions{URL: url, Rate: cfg.HTTPRate, Duration: time.Second}); err != nil {
		return "", procs, err
	}
	return url, procs, nil
}

// measureEnvoy measures the stack at each of urls for envoyRounds slices of
// length slice, the stacks taken in turn, and returns each one's results
// and the share of the CPU that processes other than procs took meanwhile.
func measureEnvoy(ctx context.Context, cfg BenchConfig, urls []string, slice time.Duration, procs []*Proc) ([]*HTTPResult, []float64, error) {
	results := make([]*HTTPResult, len(urls))
	others := make([]float64, len(urls))
	for i := range results {
		results[i] = &HTTPResult{}
	}
	for range envoyRounds {
		for i, url := range urls {
			// A quarter second at the rate, not measured, wakes the stack
			// up after its idle slices.
			if _, err := HTTP(ctx, HTTPOptions{URL: url, Rate: cfg.HTTPRate, Duration: time.Second / 4}); err != nil {
				return nil, nil, err
			}
			watch := watchCPU(procs...)
			res, err := HTTP(ctx, HTTPOptions{URL: url, Rate: cfg.HTTPRate, Duration: slice})
			if err != nil {
				return nil, nil, err
			}
			others[i] += watch.others() / envoyRounds
			results[i].add(res)
		}
	}
	return results, others, nil
}

// printEnvoyLatency prints the results of each of envoyRuns, the latency
// each adds to Envoy without the filter, and what floodgate adds to the
// no-op server.
func printEnvoyLatency(w io.Writer, results []*HTTPResult, others []float64) {
	for i, r := range envoyRuns {
		fmt.Fprintf(w, "  %s: %s; other load %.0f%%\n", r.name, results[i].Summary(), 100*others[i])
	}
	base := results[0]
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\nrun\trequests/s\tp50\tp99\tadded p50\tadded p99\t")
	for i, r := range envoyRuns {
		res := results[i]
		added50, added99 := "-", "-"
		if i > 0 {
			added50 = fmtSignedDur(res.Latency.Quantile(0.50) - base.Latency.Quantile(0.50))
			added99 = fmtSignedDur(res.Latency.Quantile(0.99) - base.Latency.Quantile(0.99))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", r.name, fmtRate(res.Rate()),
			fmtDur(res.Latency.Quantile(0.50)), fmtDur(res.Latency.Quantile(0.99)), added50, added99)
	}
	tw.Flush()
	fmt.Fprintln(w, "added: compared with Envoy without ext_authz. A denied request is answered by Envoy without the upstream hop.")
	noop := results[1]
	for i := 2; i < 4; i++ {
		fmt.Fprintf(w, "%s over the no-op ext_authz server: p50 %s, p99 %s\n", envoyRuns[i].name,
			fmtSignedDur(results[i].Latency.Quantile(0.50)-noop.Latency.Quantile(0.50)),
			fmtSignedDur(results[i].Latency.Quantile(0.99)-noop.Latency.Quantile(0.99)))
	}
	fmt.Fprintln(w)
}

// checkEnvoyAnswers returns an error naming each of envoyRuns whose
// answers were not all what it expects: 429s where floodgate denies, 200s
// elsewhere.
func checkEnvoyAnswers(results []*HTTPResult) error {
	var bad []string
	for i, r := range envoyRuns {
		res := results[i]
		if res.Errors > 0 || res.OtherStatus > 0 || (r.limit == "1" && res.Status429 == 0) || (r.limit != "1" && res.Status429 > 0) {
			bad = append(bad, r.name+": "+res.Summary())
		}
	}
	if len(bad) > 0 {
		return errors.New("envoy: unexpected answers: " + strings.Join(bad, "; "))
	}
	return nil
}

// wrkConns and wrkRounds shape the throughput runs through Envoy: wrk with
// one thread keeps wrkConns requests in flight, in wrkRounds rounds of
// wrkSlice per stack, the stacks taken in turn.
const (
	wrkConns  = 32
	wrkRounds = 3
	wrkSlice  = 2 * time.Second
)

// envoyThroughput drives each Envoy stack (names[i] at urls[i], the first
// without the filter) as fast as it answers, with wrk, and prints the
// requests per second, its ratio to Envoy without the filter, and wrk's p50
// and p99 (the mean over the rounds). procs are the benchmark's processes,
// for the other-load figure.
func envoyThroughput(ctx context.Context, cfg BenchConfig, names, urls []string, procs []*Proc, w io.Writer) error {
	if cfg.Wrk == "" {
		fmt.Fprintln(w, "Envoy throughput: skipped, no wrk (make bench installs it: apt-get install wrk)")
		return nil
	}
	fmt.Fprintf(w, "Envoy throughput: wrk -t1 -c%d --latency, %d rounds of %v per run, runs interleaved (a closed loop: each connection sends when answered)\n",
		wrkConns, wrkRounds, wrkSlice)
	type sum struct {
		requests, non2xx, errors int64
		elapsed                  time.Duration
		p50, p99                 time.Duration
		others                   float64
	}
	sums := make([]sum, len(urls))
	for range wrkRounds {
		for i, u := range urls {
			watch := watchCPU(procs...)
			r, err := Wrk(ctx, cfg.Wrk, u, wrkConns, wrkSlice)
			if err != nil {
				return err
			}
			s := &sums[i]
			s.requests += r.Requests
			s.elapsed += r.Elapsed
			s.non2xx += r.Non2xx
			s.errors += r.Errors
			s.p50 += r.P50 / wrkRounds
			s.p99 += r.P99 / wrkRounds
			s.others += watch.othersBut(r.CPU) / wrkRounds
		}
	}
	rate := func(s sum) float64 { return float64(s.requests) / s.elapsed.Seconds() }
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "run\trequests/s\tx without ext_authz\tp50\tp99\tnon-2xx\tsocket errors\tother load\t")
	for i, s := range sums {
		fmt.Fprintf(tw, "%s\t%s\t%.2f\t%s\t%s\t%d\t%d\t%.0f%%\t\n", names[i], fmtRate(rate(s)), rate(s)/rate(sums[0]),
			fmtDur(s.p50), fmtDur(s.p99), s.non2xx, s.errors, 100*s.others)
	}
	tw.Flush()
	fmt.Fprintln(w)
	return nil
}

// proc returns m's process, or nil when m is nil.
func (m *Memcached) proc() *Proc {
	if m == nil {
		return nil
	}
	return m.Process()
}

// portOf returns the port of "host:port".
func portOf(addr string) int {
	i := strings.LastIndexByte(addr, ':')
	p, _ := strconv.Atoi(addr[i+1:])
	return p
}
