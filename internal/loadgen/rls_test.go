package loadgen

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"

	"github.com/floodgate-rl/floodgate/internal/testutil"
	rlsconf "github.com/floodgate-rl/floodgate/policy/rls"
	"github.com/floodgate-rl/floodgate/rls"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBuilds()
	os.Exit(code)
}

// countingRLS answers OK to the first allow calls and OVER_LIMIT to the
// rest, and records the requests it saw.
type countingRLS struct {
	rlsv3.UnimplementedRateLimitServiceServer
	allow int64
	calls atomic.Int64
	seen  chan *rlsv3.RateLimitRequest
}

func (s *countingRLS) ShouldRateLimit(_ context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	select {
	case s.seen <- req:
	default:
	}
	if s.calls.Add(1) <= s.allow {
		return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}, nil
	}
	return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OVER_LIMIT}, nil
}

func serveRLS(t *testing.T, srv rlsv3.RateLimitServiceServer) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(ServerOptions()...)
	rlsv3.RegisterRateLimitServiceServer(gs, srv)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	return ln.Addr().String()
}

func TestRLSCountsEveryCall(t *testing.T) {
	for _, tc := range []struct {
		name, domain, wantDomain string
		clients, wantDistinct    int
	}{
		{"hot descriptor", "", RLSDomain, 1, 1},
		{"50 descriptor values", "edge", "edge", 50, 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := &countingRLS{allow: 100 + 4, seen: make(chan *rlsv3.RateLimitRequest, 1000)} // 4: one first call per connection
			addr := serveRLS(t, srv)
			res, err := RLS(context.Background(), CheckOptions{Target: addr, Conns: 4, Concurrency: 8, Requests: 300,
				Clients: tc.clients, Domain: tc.domain, Timeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if res.OK != 100 || res.Denied != 200 || res.Errors != 0 || res.Latency.Count() != 300 {
				t.Fatalf("OK %d, Denied %d, Errors %d, latencies %d; want 100, 200, 0, 300", res.OK, res.Denied, res.Errors, res.Latency.Count())
			}
			close(srv.seen)
			distinct := map[string]bool{}
			for req := range srv.seen {
				ds := req.GetDescriptors()
				if req.GetDomain() != tc.wantDomain || req.GetHitsAddend() != 1 || len(ds) != 1 || len(ds[0].GetEntries()) != 1 ||
					ds[0].GetEntries()[0].GetKey() != "remote_address" {
					t.Fatalf("request %v: want domain %q, one hit, one remote_address descriptor", req, tc.wantDomain)
				}
				distinct[ds[0].GetEntries()[0].GetValue()] = true
			}
			if len(distinct) != tc.wantDistinct {
				t.Errorf("%d distinct remote_address values, want %d", len(distinct), tc.wantDistinct)
			}
		})
	}
}

func TestRLSCountsErrors(t *testing.T) {
	addr := serveRLS(t, struct {
		rlsv3.UnimplementedRateLimitServiceServer
	}{})
	if _, err := RLS(context.Background(), CheckOptions{Target: addr, Requests: 10}); err == nil || !strings.Contains(err.Error(), "Unimplemented") {
		t.Fatalf("RLS against a server without ShouldRateLimit: %v, want the first call's error", err)
	}
}

// TestNoopServesBothAPIs runs ServeNoop and drives each API at it: every
// call allowed.
func TestNoopServesBothAPIs(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeNoop(ctx, ln) }()
	for _, api := range []string{APICheck, APIRLS} {
		res, err := load(api)(context.Background(), CheckOptions{Target: ln.Addr().String(), Requests: 200, Clients: 10, Timeout: 10 * time.Second})
		if err != nil {
			t.Fatalf("%s: %v", api, err)
		}
		if res.OK != 200 || res.Denied != 0 || res.Errors != 0 {
			t.Errorf("%s: %s; want 200 allowed", api, res.Summary())
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("ServeNoop after its context ended: %v", err)
	}
}

// TestRLSConfigLimitsTheLoad checks that floodgate's own parser accepts
// RLSConfig, that its rule limits the descriptor RLS sends (so every call
// is a decision that counts, not an unlimited answer) with the limit asked
// for, and that the sliding window can enforce it.
func TestRLSConfigLimitsTheLoad(t *testing.T) {
	c, err := rlsconf.Parse("bench.yaml", []byte(RLSConfig(RLSBenchLimit)))
	if err != nil {
		t.Fatal(err)
	}
	if err := rls.CheckStrategy(c, "sliding"); err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{ClientAddr(0), ClientAddr(9_999)} {
		var entries []rlsconf.Entry
		for _, e := range RLSRequest(RLSDomain, src).GetDescriptors()[0].GetEntries() {
			entries = append(entries, rlsconf.Entry{Key: e.GetKey(), Value: e.GetValue()})
		}
		l := c.Match(RLSDomain, entries)
		if l == nil || l.Unlimited || l.RequestsPerUnit != RLSBenchLimit || l.Unit.Window() != time.Hour {
			t.Fatalf("rule for %s: %+v; want %d per hour", src, l, RLSBenchLimit)
		}
		if other := c.Match("edge", entries); other != nil {
			t.Errorf("domain edge matched %+v", other)
		}
	}
}

// TestMeasureRLSOnFloodgate measures RLS against the real floodgate on a
// real memcached with RLSConfig: every call an allowed decision counted in
// the store. A load in a domain floodgate has no configuration for is
// answered without the store, and measure refuses it.
func TestMeasureRLSOnFloodgate(t *testing.T) {
	mc := testutil.StartMemcached(t)
	path := filepath.Join(t.TempDir(), "rls.yaml")
	if err := os.WriteFile(path, []byte(RLSConfig(RLSBenchLimit)), 0o600); err != nil {
		t.Fatal(err)
	}
	f := &Floodgate{testutil.StartFloodgate(t, "--log-level", "warn", "--memcache-servers", mc.Addr(), "--rls-config", path)}
	o := CheckOptions{Target: f.GRPCAddr(), Conns: 2, Concurrency: 8, Requests: 400, Clients: 100, Timeout: 10 * time.Second}
	row, err := measure(context.Background(), Row{Name: "rls", API: APIRLS, Clients: 100}, o, f.Process, f, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The decisions include the first call on each connection. A decision
	// may fall back to the per-replica limiter on a busy machine
	// (memcached-overloaded), so the store calls are not exact.
	if row.Result.OK != 400 || row.Decisions != 400+2 || row.StoreOps == 0 {
		t.Errorf("allowed %d, decisions %v, store calls %v; want 400, 402, some", row.Result.OK, row.Decisions, row.StoreOps)
	}
	o.Domain = "elsewhere"
	if _, err := measure(context.Background(), Row{Name: "rls", API: APIRLS, Clients: 100}, o, f.Process, f, nil); err == nil ||
		!strings.Contains(err.Error(), "402 answers without a rule (unlimited, unknown_domain or refused) and 0 denied, of 400 calls") {
		t.Errorf("a load floodgate answers without counting: %v, want an error", err)
	}
}

// TestScenarios checks the order of a round and what --only and a
// baseline change in it.
func TestScenarios(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  BenchConfig
		want []string
	}{
		{"both", BenchConfig{Clients: []int{10_000}, Only: []string{"check", "rls"}}, []string{
			"floodgate + memcached, 1 client", "RLS: floodgate + memcached, 1 hot descriptor",
			"floodgate + memcached, 10,000 clients", "RLS: floodgate + memcached, 10,000 descriptor values",
			"floodgate in memory, 1 client"}},
		{"rls only", BenchConfig{Clients: []int{10_000}, Only: []string{"rls"}}, []string{
			"RLS: floodgate + memcached, 1 hot descriptor", "RLS: floodgate + memcached, 10,000 descriptor values"}},
		{"baseline in check only", BenchConfig{Clients: []int{}, Baseline: "old", Only: []string{"check", "rls"}}, []string{
			"floodgate + memcached, 1 client [baseline]", "floodgate + memcached, 1 client", "RLS: floodgate + memcached, 1 hot descriptor",
			"floodgate in memory, 1 client [baseline]", "floodgate in memory, 1 client"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, sc := range tc.cfg.scenarios() {
				got = append(got, sc.name)
				if sc.baseline != strings.HasSuffix(sc.name, "[baseline]") || (sc.api == APIRLS) != strings.HasPrefix(sc.name, "RLS") {
					t.Errorf("%s: baseline %v, api %s", sc.name, sc.baseline, sc.api)
				}
			}
			if strings.Join(got, "; ") != strings.Join(tc.want, "; ") {
				t.Errorf("scenarios:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

// TestComparison checks that each API's ratios are to its own no-op runs
// of the round, and that RLS / ext_authz is the median of each round's
// quotient, a baseline's Check row left out.
func TestComparison(t *testing.T) {
	row := func(name, api string, floodgate bool, clients int, calls int64) Row {
		res := &CheckResult{OK: calls, Elapsed: time.Second}
		res.Latency.Record(time.Millisecond)
		return Row{Name: name, API: api, Result: res, Floodgate: floodgate, Memcached: floodgate, Clients: clients}
	}
	round := func(checkCeil, rlsCeil, check, rlsHot, checkMany, rlsMany int64) []Row {
		base := row("floodgate + memcached, 1 client [baseline]", APICheck, true, 1, 1)
		base.Baseline = true
		return []Row{
			row("no-op", APICheck, false, 1, checkCeil), row("RLS no-op", APIRLS, false, 1, rlsCeil),
			base,
			row("floodgate + memcached, 1 client", APICheck, true, 1, check),
			row("RLS hot", APIRLS, true, 1, rlsHot),
			row("floodgate + memcached, 10,000 clients", APICheck, true, 10_000, checkMany),
			row("RLS many", APIRLS, true, 10_000, rlsMany),
			row("no-op", APICheck, false, 1, checkCeil), row("RLS no-op", APIRLS, false, 1, rlsCeil),
		}
	}
	rounds := [][]Row{
		// ext_authz 0.60 and 0.50; RLS 0.60 (1.00) and 0.40 (0.80).
		round(10_000, 20_000, 6_000, 12_000, 5_000, 8_000),
		// 0.50 and 0.50; RLS 0.45 (0.90) and 0.50 (1.00).
		round(20_000, 10_000, 10_000, 4_500, 10_000, 5_000),
		// 0.80 and 0.40; RLS 0.76 (0.95) and 0.34 (0.85).
		round(10_000, 10_000, 8_000, 7_600, 4_000, 3_400),
	}
	var b strings.Builder
	writeComparison(&b, rounds)
	var lines []string
	for line := range strings.Lines(b.String()) {
		lines = append(lines, strings.Join(strings.Fields(line), " "))
	}
	out := strings.Join(lines, "\n")
	for _, want := range []string{
		"memcached, 1 client (hot descriptor) 0.60 0.60 0.95 1.00 0.90 0.95 met",
		"memcached, 10,000 clients (descriptor values) 0.40 0.50 0.85 0.80 1.00 0.85 missed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("comparison lacks %q:\n%s", want, out)
		}
	}
	b.Reset()
	writeComparison(&b, [][]Row{{row("no-op", APICheck, false, 1, 1), row("floodgate", APICheck, true, 1, 1)}})
	if b.Len() != 0 {
		t.Errorf("comparison without RLS rows: %q, want nothing", b.String())
	}
}

// Check that the no-op's Authorization server still answers on the
// options ServerOptions gives (the call bound at the tap included).
var _ authv3.AuthorizationServer = NoopServer{}

func TestMaxFailed(t *testing.T) {
	for _, tc := range []struct {
		max              float64
		errors, failMode int64
		wantErr          bool
	}{
		{0, 0, 0, false},
		{0, 1, 0, true},
		{0, 0, 1, true},
		{0.01, 10, 0, false}, // 10 of 1,000
		{0.01, 11, 0, true},
		{0.01, 6, 5, true},
	} {
		b := &grpcBench{cfg: BenchConfig{MaxFailed: tc.max}}
		row := Row{Name: "x", FailMode: float64(tc.failMode),
			Result: &CheckResult{OK: 1000 - tc.errors, Errors: tc.errors, FirstError: context.DeadlineExceeded}}
		if _, err := b.failed(row, nil); (err != nil) != tc.wantErr {
			t.Errorf("%d of 1,000 failed, %d fail-mode answers, --max-failed %g: %v, want error %v", tc.errors, tc.failMode, tc.max, err, tc.wantErr)
		}
	}
	d := Metrics{
		`floodgate_decisions_total{result="fail_open",rule="none",scope="default"}`: 3,
		`floodgate_decisions_total{result="fail_closed",rule="x",scope="api"}`:      2,
		`floodgate_decisions_total{result="allowed",rule="none",scope="default"}`:   100,
		`floodgate_rls_decisions_total{result="fail_open"}`:                         7,
		"floodgate_decisions_total":                                                 105,
	}
	if got := failModeAnswers(d, "floodgate_decisions_total"); got != 5 {
		t.Errorf("Check fail-mode answers = %v, want 5", got)
	}
	if got := failModeAnswers(d, "floodgate_rls_decisions_total"); got != 7 {
		t.Errorf("RLS fail-mode answers = %v, want 7", got)
	}
}
