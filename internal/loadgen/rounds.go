package loadgen

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// The APIs the gRPC rounds drive (Row.API).
const (
	// APICheck is ext_authz: Check, sent by Check.
	APICheck = "check"
	// APIRLS is the rate limit service: ShouldRateLimit, sent by RLS.
	APIRLS = "rls"
)

// load returns the load function of api.
func load(api string) func(context.Context, CheckOptions) (*CheckResult, error) {
	if api == APIRLS {
		return RLS
	}
	return Check
}

// decisionsMetric is the counter of api's decisions in floodgate's
// /metrics.
func decisionsMetric(api string) string {
	if api == APIRLS {
		return "floodgate_rls_decisions_total"
	}
	return "floodgate_decisions_total"
}

// rlsUncounted are the series of floodgate_rls_decisions_total of answers
// no rule decided: the store was not asked.
var rlsUncounted = []string{
	`floodgate_rls_decisions_total{result="unlimited"}`,
	`floodgate_rls_decisions_total{result="unknown_domain"}`,
	`floodgate_rls_decisions_total{result="refused"}`,
}

// checkRLSCounted fails when some of an RLS run's calls (d, the change of
// floodgate's metrics over it) were answered without a rule deciding them,
// or denied: the RLS configuration does not limit the load's descriptors,
// and such answers, made without the store, would pass for fast decisions.
func checkRLSCounted(name string, d Metrics, res *CheckResult) error {
	var n float64
	for _, s := range rlsUncounted {
		n += d[s]
	}
	if n > 0 || res.Denied > 0 {
		return fmt.Errorf("%s: %.0f answers without a rule (unlimited, unknown_domain or refused) and %d denied, of %d calls: the RLS config does not limit the load's descriptors",
			name, n, res.Denied, res.Calls())
	}
	return nil
}

// scenario is one floodgate scenario of a round.
type scenario struct {
	name     string
	api      string
	bin      string // the floodgate binary
	baseline bool   // bin is BenchConfig.Baseline
	mc       bool   // on a fresh memcached, else on the in-memory store
	clients  int
}

// scenarios lists the floodgate scenarios of one round, in order: for each
// store and client count, Check (the baseline's first when there is one)
// and then RLS, so that the two APIs of a pair run a few seconds apart.
// RLS runs on memcached only.
func (c *BenchConfig) scenarios() []scenario {
	type kind struct {
		mc      bool
		clients int
	}
	kinds := []kind{{true, 1}}
	for _, n := range c.Clients {
		kinds = append(kinds, kind{true, n})
	}
	kinds = append(kinds, kind{false, 1})
	var out []scenario
	for _, k := range kinds {
		if c.runs(APICheck) {
			name := checkName(k.mc, k.clients)
			if c.Baseline != "" {
				out = append(out, scenario{name + " [baseline]", APICheck, c.Baseline, true, k.mc, k.clients})
			}
			out = append(out, scenario{name, APICheck, c.Floodgate, false, k.mc, k.clients})
		}
		if c.runs(APIRLS) && k.mc {
			out = append(out, scenario{rlsName(k.clients), APIRLS, c.Floodgate, false, true, k.clients})
		}
	}
	return out
}

// checkName names a Check scenario: "floodgate + memcached, 10,000 clients".
func checkName(mc bool, clients int) string {
	store := "floodgate in memory"
	if mc {
		store = "floodgate + memcached"
	}
	if clients <= 1 {
		return store + ", 1 client"
	}
	return store + ", " + fmtCount(clients) + " clients"
}

// rlsName names an RLS scenario: "RLS: floodgate + memcached, 10,000
// descriptor values".
func rlsName(clients int) string {
	if clients <= 1 {
		return "RLS: floodgate + memcached, 1 hot descriptor"
	}
	return "RLS: floodgate + memcached, " + fmtCount(clients) + " descriptor values"
}

// grpcBench runs the gRPC rounds: what every scenario shares.
type grpcBench struct {
	cfg       BenchConfig
	opts      CheckOptions // the load's shape, without target and clients
	rlsConfig string       // the --rls-config file of the RLS scenarios
	apis      []string     // the APIs measured, in order
	w         io.Writer
}

// benchGRPC runs the Check and RLS scenarios, cfg.Rounds times: the no-op
// ceiling of each API, the floodgate scenarios (BenchConfig.scenarios),
// and the no-op again, which also starts the next round. Each round's
// ratios are to the mean of its API's no-op runs around it. dir holds the
// RLS configuration.
func benchGRPC(ctx context.Context, cfg BenchConfig, dir string, w io.Writer) error {
	b := &grpcBench{cfg: cfg, w: w,
		opts: CheckOptions{Conns: cfg.Conns, Concurrency: cfg.Concurrency, Duration: cfg.Duration}}
	for _, api := range []string{APICheck, APIRLS} {
		if cfg.runs(api) {
			b.apis = append(b.apis, api)
		}
	}
	if cfg.runs(APIRLS) {
		b.rlsConfig = filepath.Join(dir, "rls-bench.yaml")
		if err := os.WriteFile(b.rlsConfig, []byte(RLSConfig(RLSBenchLimit)), 0o600); err != nil {
			return fmt.Errorf("rls config: %w", err)
		}
	}
	fmt.Fprintf(w, "gRPC scenarios (%s; each on fresh processes), %d round(s), each between two runs of the no-op server:\n",
		strings.Join(b.apis, ", "), cfg.Rounds)
	before, err := b.noops(ctx, noopBefore)
	if err != nil {
		return err
	}
	var all [][]Row
	for round := 1; round <= cfg.Rounds; round++ {
		fmt.Fprintf(w, "\nround %d of %d:\n", round, cfg.Rounds)
		rows := slices.Clone(before)
		for _, sc := range cfg.scenarios() {
			row, err := b.run(ctx, sc)
			if err != nil {
				return err
			}
			rows = append(rows, row)
		}
		after, err := b.noops(ctx, noopAfter)
		if err != nil {
			return err
		}
		rows = append(rows, after...)
		writeCheckTable(w, rows)
		all = append(all, rows)
		before = make([]Row, len(after))
		for i, r := range after {
			r.Name = strings.Replace(r.Name, noopAfter, noopBefore, 1)
			before[i] = r
		}
	}
	fmt.Fprintln(w, "store calls: floodgate_store_operations_total; round trips (floodgate): floodgate_memcache_round_trips_total; memcached round")
	fmt.Fprintln(w, "trips: memcached's read system calls (one per request that arrives, however many commands it pipelines); other load: the")
	fmt.Fprintln(w, "machine's CPU used by processes this benchmark did not start")
	fmt.Fprintln(w)
	if len(all) > 1 {
		writeRoundsSummary(w, all)
	}
	writeComparison(w, all)
	return nil
}

// The ends of the no-op rows' names: before a round's scenarios, and
// after them (which also opens the next round).
const (
	noopBefore = "(ceiling)"
	noopAfter  = "again (drift)"
)

// RLSBenchLimit is the requests_per_unit of the RLS scenarios' rule
// (RLSConfig), per hour: like their --limit for Check, no descriptor value
// gets near it, so every decision is an allowed one that counts.
const RLSBenchLimit = 1_000_000_000

// noops measures the no-op server once per API, each on a fresh process;
// suffix ends the rows' names.
func (b *grpcBench) noops(ctx context.Context, suffix string) ([]Row, error) {
	var rows []Row
	for _, api := range b.apis {
		name := "no-op server " + suffix
		if api == APIRLS {
			name = "RLS: no-op server " + suffix
		}
		row, err := b.noop(ctx, api, name)
		if err != nil {
			return nil, err
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// noop measures api against a fresh no-op server.
func (b *grpcBench) noop(ctx context.Context, api, name string) (Row, error) {
	p, addr, err := StartSelf(b.cfg.Self, b.cfg.ServerProcs, "noop-server")
	if err != nil {
		return Row{}, err
	}
	defer p.Stop()
	o := b.opts
	o.Target = addr
	return b.failed(measure(ctx, Row{Name: name, API: api, Clients: 1}, o, p, nil, nil))
}

// run runs floodgate for sc (on a fresh memcached when sc.mc), warms it
// up and measures it.
func (b *grpcBench) run(ctx context.Context, sc scenario) (Row, error) {
	args := []string{"--limit", highLimit, "--fail-mode", "open"}
	if sc.api == APIRLS {
		args = append(args, "--rls-config", b.rlsConfig)
	}
	var m *Memcached
	if sc.mc {
		var err error
		if m, err = StartMemcached(b.cfg.Memcached, 1024, 2); err != nil {
			return Row{}, err
		}
		defer m.Stop()
		args = append(args, "--memcache-servers", m.Addr())
	}
	f, err := StartFloodgate(sc.bin, b.cfg.ServerProcs, args...)
	if err != nil {
		return Row{}, err
	}
	defer f.Stop()
	o := b.opts
	o.Target, o.Clients = f.GRPCAddr(), sc.clients
	if err := b.warm(ctx, sc, o); err != nil {
		return Row{}, err
	}
	row := Row{Name: sc.name, API: sc.api, Clients: max(sc.clients, 1), Baseline: sc.baseline}
	return b.failed(measure(ctx, row, o, f.Process, f, m))
}

// warm sends the load before the measured run: with many clients one
// request from each (the cold reads, reported but not measured as steady
// state), with one a second of load.
func (b *grpcBench) warm(ctx context.Context, sc scenario, o CheckOptions) error {
	warm := o
	if sc.clients <= 1 {
		warm.Duration = time.Second
		_, err := load(sc.api)(ctx, warm)
		return err
	}
	warm.Duration, warm.Requests = 0, int64(sc.clients)
	r, err := load(sc.api)(ctx, warm)
	if err != nil {
		return err
	}
	fmt.Fprintf(b.w, "  %s, first request of each client (cold): %s\n", sc.name, r.Summary())
	return nil
}

// failed returns measure's row and error, or an error when more of the
// row's calls failed than BenchConfig.MaxFailed allows (none by default):
// calls that failed at the gRPC level, and those floodgate answered by its
// fail mode (its limiter failed: no decision was made, nothing counted).
func (b *grpcBench) failed(row Row, err error) (Row, error) {
	if err != nil {
		return row, err
	}
	res := row.Result
	n := res.Errors + int64(row.FailMode)
	if all := res.Errors + res.Calls(); n > 0 && float64(n) > b.cfg.MaxFailed*float64(all) {
		return row, fmt.Errorf("%s: %d of %d calls failed and %.0f were answered by the fail mode (--max-failed %g); first error: %v",
			row.Name, res.Errors, all, row.FailMode, b.cfg.MaxFailed, res.FirstError)
	}
	return row, nil
}

// failModeAnswers returns the answers of floodgate's fail mode in d (the
// change of its metrics over a run): the series of metric with result
// fail_open or fail_closed, whatever their other labels.
func failModeAnswers(d Metrics, metric string) float64 {
	var n float64
	for series, v := range d {
		if strings.HasPrefix(series, metric+"{") &&
			(strings.Contains(series, `result="fail_open"`) || strings.Contains(series, `result="fail_closed"`)) {
			n += v
		}
	}
	return n
}

// counters are the figures measure reads before and after a run.
type counters struct {
	cpu, storeCPU time.Duration
	roundTrips    int64
	metrics       Metrics
}

// readCounters reads the CPU time of p and m, memcached's round trips
// and floodgate's metrics (f and m may be nil).
func readCounters(p *Proc, f *Floodgate, m *Memcached) (counters, error) {
	var c counters
	var err error
	if f != nil {
		if c.metrics, err = f.Metrics(); err != nil {
			return c, err
		}
	}
	if m != nil {
		if c.roundTrips, err = m.RoundTrips(); err != nil {
			return c, err
		}
		if c.storeCPU, err = procCPU(m.Pid()); err != nil {
			return c, err
		}
	}
	c.cpu, err = procCPU(p.Pid())
	return c, err
}

// measure runs one measured load of row.API against server proc p (f is
// its floodgate when it is one, m its memcached when it has one) and fills
// row with it and the CPU and store counts around it. An RLS row on
// floodgate fails unless a rule decided every call (checkRLSCounted).
// Failed calls are counted in the row's result, not refused: see
// grpcBench.failed.
func measure(ctx context.Context, row Row, o CheckOptions, p *Proc, f *Floodgate, m *Memcached) (Row, error) {
	row.Floodgate, row.Memcached = f != nil, m != nil
	c0, err := readCounters(p, f, m)
	if err != nil {
		return row, err
	}
	watch := watchCPU(p, m.proc())
	res, err := load(row.API)(ctx, o)
	if err != nil {
		return row, err
	}
	row.Result = res
	row.Others = watch.others()
	c1, err := readCounters(p, f, m)
	if err != nil {
		return row, err
	}
	row.ServerCPU, row.StoreCPU = c1.cpu-c0.cpu, c1.storeCPU-c0.storeCPU
	row.RoundTrips = float64(c1.roundTrips - c0.roundTrips)
	if f == nil {
		return row, nil
	}
	d := c1.metrics.Sub(c0.metrics)
	row.StoreOps = d["floodgate_store_operations_total"]
	row.PipeRoundTrips = d["floodgate_memcache_round_trips_total"]
	row.Decisions = d[decisionsMetric(row.API)]
	row.FailMode = failModeAnswers(d, decisionsMetric(row.API))
	if row.API == APIRLS {
		return row, checkRLSCounted(row.Name, d, res)
	}
	return row, nil
}

// ceiling is the mean of the no-op rows of one API in one round.
type ceiling struct {
	rate     float64
	p50, p99 time.Duration
}

// ceilingOf returns the mean of rows' no-op runs of api.
func ceilingOf(rows []Row, api string) ceiling {
	var c ceiling
	n := 0
	for _, r := range rows {
		if !r.Floodgate && r.API == api {
			c.rate += r.Result.Rate()
			c.p50 += r.Result.Latency.Quantile(0.50)
			c.p99 += r.Result.Latency.Quantile(0.99)
			n++
		}
	}
	if n > 0 {
		c.rate /= float64(n)
		c.p50 /= time.Duration(n)
		c.p99 /= time.Duration(n)
	}
	return c
}

// ratios returns r's decisions/s and p99 as ratios to c.
func (c ceiling) ratios(r Row) (rate, p99 float64) {
	if c.rate <= 0 || c.p99 <= 0 {
		return 0, 0
	}
	return r.Result.Rate() / c.rate, float64(r.Result.Latency.Quantile(0.99)) / float64(c.p99)
}

// apisOf returns the APIs of rows, in the order they first appear.
func apisOf(rows []Row) []string {
	var apis []string
	for _, r := range rows {
		if !slices.Contains(apis, r.API) {
			apis = append(apis, r.API)
		}
	}
	return apis
}

// writeCheckTable prints the rows of one round with each floodgate figure
// as a ratio to the mean of the round's no-op runs of the same API.
func writeCheckTable(w io.Writer, rows []Row) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tdecisions/s\tx ceiling\tp50\tp99\tp99 x ceiling\tserver CPU/decision\tmemcached CPU/decision\tstore calls/decision\tround trips/decision (floodgate)\tmemcached round trips/decision\tfailed calls\tfail-mode answers\tother load\t")
	for _, r := range rows {
		res := r.Result
		calls := float64(res.Calls())
		ratio, p99r := "-", "-"
		if ceil := ceilingOf(rows, r.API); r.Floodgate && ceil.rate > 0 {
			rr, pr := ceil.ratios(r)
			ratio, p99r = fmt.Sprintf("%.2f", rr), fmt.Sprintf("%.2f", pr)
		}
		storeCPU, ops, rts, prts := "-", "-", "-", "-"
		if r.Memcached {
			storeCPU = fmtDur(time.Duration(float64(r.StoreCPU) / calls))
			rts = fmt.Sprintf("%.2f", r.RoundTrips/r.Decisions)
			if r.PipeRoundTrips > 0 {
				prts = fmt.Sprintf("%.2f", r.PipeRoundTrips/r.Decisions)
			}
		}
		if r.Floodgate && r.Decisions > 0 {
			ops = fmt.Sprintf("%.2f", r.StoreOps/r.Decisions)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%.0f\t%.0f%%\t\n", r.Name, fmtRate(res.Rate()), ratio,
			fmtDur(res.Latency.Quantile(0.50)), fmtDur(res.Latency.Quantile(0.99)), p99r,
			fmtDur(time.Duration(float64(r.ServerCPU)/calls)), storeCPU, ops, prts, rts, res.Errors, r.FailMode, 100*r.Others)
	}
	tw.Flush()
	for _, api := range apisOf(rows) {
		ceil := ceilingOf(rows, api)
		fmt.Fprintf(w, "%s ceiling: the mean of the no-op runs, %s decisions/s, p50 %s, p99 %s\n", apiLabel(api),
			fmtRate(ceil.rate), fmtDur(ceil.p50), fmtDur(ceil.p99))
	}
}

// apiLabel is api as the report names it.
func apiLabel(api string) string {
	if api == APIRLS {
		return "RLS"
	}
	return "ext_authz"
}

// writeRoundsSummary prints, for every floodgate scenario, the median over
// the rounds of its ratios to the round's ceiling of its API, and each
// round's.
func writeRoundsSummary(w io.Writer, rounds [][]Row) {
	type series struct {
		name       string
		rate, p99  []float64
		cpu, store []time.Duration
	}
	var order []*series
	byName := map[string]*series{}
	for _, rows := range rounds {
		for _, r := range rows {
			if !r.Floodgate {
				continue
			}
			s := byName[r.Name]
			if s == nil {
				s = &series{name: r.Name}
				byName[r.Name] = s
				order = append(order, s)
			}
			rr, pr := ceilingOf(rows, r.API).ratios(r)
			s.rate = append(s.rate, rr)
			s.p99 = append(s.p99, pr)
			calls := float64(r.Result.Calls())
			s.cpu = append(s.cpu, time.Duration(float64(r.ServerCPU)/calls))
			if r.Memcached {
				s.store = append(s.store, time.Duration(float64(r.StoreCPU)/calls))
			}
		}
	}
	fmt.Fprintf(w, "over the %d rounds (median, then every round in order):\n", len(rounds))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tx ceiling\trounds\tp99 x ceiling\trounds\tserver CPU/decision\tmemcached CPU/decision\t")
	for _, s := range order {
		store := "-"
		if len(s.store) > 0 {
			store = fmtDur(median(s.store))
		}
		fmt.Fprintf(tw, "%s\t%.2f\t%s\t%.2f\t%s\t%s\t%s\t\n", s.name, median(s.rate), fmtRatios(s.rate),
			median(s.p99), fmtRatios(s.p99), fmtDur(median(s.cpu)), store)
	}
	tw.Flush()
	fmt.Fprintln(w)
}

// rlsTarget is issue #14's bound: RLS's ratio to its ceiling within 10% of
// ext_authz's ratio to its own.
const rlsTarget = 0.90

// pair is an RLS scenario and the Check scenario of the same store and
// client count: their ratios to their own ceilings, round by round, and
// RLS's over Check's.
type pair struct {
	name                 string
	mc                   bool
	clients              int
	rls, check, quotient []float64
}

// pairs matches every RLS row of the rounds with the Check row of the same
// store and client count in its round (never a baseline row), in the
// order of the first round.
func pairs(rounds [][]Row) []*pair {
	var out []*pair
	find := func(mc bool, clients int) *pair {
		for _, p := range out {
			if p.mc == mc && p.clients == clients {
				return p
			}
		}
		p := &pair{name: pairName(mc, clients), mc: mc, clients: clients}
		out = append(out, p)
		return p
	}
	for _, rows := range rounds {
		for _, r := range rows {
			if r.API != APIRLS || !r.Floodgate {
				continue
			}
			i := slices.IndexFunc(rows, func(c Row) bool {
				return c.API == APICheck && c.Floodgate && !c.Baseline && c.Memcached == r.Memcached && c.Clients == r.Clients
			})
			if i < 0 {
				continue
			}
			rr, _ := ceilingOf(rows, APIRLS).ratios(r)
			cr, _ := ceilingOf(rows, APICheck).ratios(rows[i])
			p := find(r.Memcached, r.Clients)
			p.rls, p.check = append(p.rls, rr), append(p.check, cr)
			if cr > 0 {
				p.quotient = append(p.quotient, rr/cr)
			}
		}
	}
	return out
}

// pairName names a pair: "memcached, 10,000 clients (descriptor values)".
func pairName(mc bool, clients int) string {
	name := strings.TrimPrefix(checkName(mc, clients), "floodgate ")
	name = strings.TrimPrefix(name, "+ ")
	if clients <= 1 {
		return name + " (hot descriptor)"
	}
	return name + " (descriptor values)"
}

// writeComparison prints, for every RLS scenario with a Check scenario of
// the same store and client count, issue #14's comparison: RLS's ratio to
// its own ceiling over ext_authz's ratio to its own, per round (the two
// measured in the same round) and their median, against the target.
// Without such pairs it prints nothing.
func writeComparison(w io.Writer, rounds [][]Row) {
	ps := pairs(rounds)
	if len(ps) == 0 {
		return
	}
	fmt.Fprintf(w, "RLS against ext_authz (issue #14: RLS's ratio to its ceiling at least %.2f of ext_authz's ratio to its own, same round):\n", rlsTarget)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tRLS x ceiling\text_authz x ceiling\tRLS / ext_authz, median\trounds\ttarget\t")
	for _, p := range ps {
		if len(p.quotient) == 0 {
			continue
		}
		q := median(p.quotient)
		verdict := "met"
		if q < rlsTarget {
			verdict = "missed"
		}
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t%s\t%s\t\n", p.name, median(p.rls), median(p.check), q, fmtRatios(p.quotient), verdict)
	}
	tw.Flush()
	fmt.Fprintln(w, "x ceiling: medians over the rounds; RLS / ext_authz: the median of each round's quotient")
	fmt.Fprintln(w)
}

// median returns the median of xs (the mean of the middle two for an even
// count), which must not be empty; xs is left as it was.
func median[T float64 | time.Duration](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// fmtRatios formats ratios as "0.66 0.71 0.69".
func fmtRatios(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(parts, " ")
}
