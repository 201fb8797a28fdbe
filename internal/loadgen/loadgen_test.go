package loadgen

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/floodgate-rl/floodgate/internal/supervisor"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"sigs.k8s.io/yaml"
)

func TestHistogramExactBelow256ns(t *testing.T) {
	var h Histogram
	for v := range 256 {
		h.Record(time.Duration(v))
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0, 0}, {0.5, 127}, {0.99, 253}, {1, 255}} {
		if got := h.Quantile(tc.q); got != tc.want {
			t.Errorf("Quantile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
}

// TestHistogramMatchesSortedSamples checks every quantile against the exact
// value of sorted samples: never below it, and at most 1/128 above it.
func TestHistogramMatchesSortedSamples(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var samples []time.Duration
	var parts [4]Histogram
	for i := range 100_000 {
		// Log-uniform from 1µs to 10s, as latencies spread.
		d := time.Duration(float64(time.Microsecond) * pow10(rng.Float64()*7))
		samples = append(samples, d)
		parts[i%4].Record(d)
	}
	var h Histogram
	for i := range parts {
		h.Merge(&parts[i])
	}
	slices.Sort(samples)
	if h.Count() != uint64(len(samples)) || h.Max() != samples[len(samples)-1] {
		t.Fatalf("Count %d, Max %v; want %d, %v", h.Count(), h.Max(), len(samples), samples[len(samples)-1])
	}
	for _, q := range []float64{0.001, 0.1, 0.5, 0.9, 0.99, 0.999, 1} {
		rank := int(float64(len(samples))*q+0.999999) - 1
		exact := samples[max(rank, 0)]
		got := h.Quantile(q)
		if got < exact || float64(got-exact) > float64(exact)/128 {
			t.Errorf("Quantile(%v) = %v, exact %v: off by more than 1/128", q, got, exact)
		}
	}
}

func pow10(x float64) float64 {
	r := 1.0
	for x >= 1 {
		r *= 10
		x--
	}
	// 10^x for x in [0,1) by a few terms of exp(x ln 10).
	y, term := 1.0, 1.0
	for n := 1; n < 30; n++ {
		term *= x * 2.302585092994046 / float64(n)
		y += term
	}
	return r * y
}

func TestHistogramEdges(t *testing.T) {
	var h Histogram
	if h.Quantile(0.5) != 0 || h.Max() != 0 {
		t.Fatal("empty histogram is not all zero")
	}
	h.Record(-time.Second)
	h.Record(time.Duration(1<<63 - 1))
	if got := h.Quantile(1); got != time.Duration(1<<63-1) {
		t.Errorf("Quantile(1) = %v, want the largest duration", got)
	}
	if got := h.Quantile(0.5); got != 0 {
		t.Errorf("Quantile(0.5) = %v, want 0 (a negative duration counts as zero)", got)
	}
	for v := uint64(1); v < 1<<62; v = v*3 + 1 {
		i := bucketOf(v)
		if hi := bucketHigh(i); hi < v || (i > 0 && bucketHigh(i-1) >= v) {
			t.Fatalf("value %d in bucket %d, whose range ends at %d (previous: %d)", v, i, hi, bucketHigh(i-1))
		}
	}
}

func TestParseMetrics(t *testing.T) {
	text := `# HELP floodgate_store_operations_total Counter store operations.
# TYPE floodgate_store_operations_total counter
floodgate_store_operations_total{op="add"} 1234
floodgate_store_operations_total{op="get"} 10
floodgate_decisions_total{result="allowed"} 1.5e+06
floodgate_decisions_total{result="odd label } value"} 2
go_goroutines 17
`
	m, err := ParseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]float64{
		"floodgate_store_operations_total":           1244,
		`floodgate_store_operations_total{op="get"}`: 10,
		"floodgate_decisions_total":                  1_500_002,
		"go_goroutines":                              17,
	} {
		if m[k] != want {
			t.Errorf("%s = %v, want %v", k, m[k], want)
		}
	}
	d := m.Sub(Metrics{"go_goroutines": 7})
	if d["go_goroutines"] != 10 || d["floodgate_decisions_total"] != 1_500_002 {
		t.Errorf("Sub = %v", d)
	}
	if _, err := ParseMetrics(strings.NewReader("x{a=\"b\" 1\n")); err == nil {
		t.Error("unbalanced braces parsed")
	}
}

func TestClientAddr(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range []int{0, 1, 255, 256, 65535, 65536, 999_999, 1<<24 - 1} {
		a := ClientAddr(c)
		if seen[a] || net.ParseIP(a).To4() == nil || !strings.HasPrefix(a, "10.") {
			t.Errorf("ClientAddr(%d) = %q", c, a)
		}
		seen[a] = true
	}
	req := Request(ClientAddr(0))
	setSource(req, "10.1.2.3")
	if got := req.GetAttributes().GetSource().GetAddress().GetSocketAddress().GetAddress(); got != "10.1.2.3" {
		t.Errorf("source = %q", got)
	}
	if got := req.GetAttributes().GetRequest().GetHttp().GetHeaders()["x-forwarded-for"]; got != "10.1.2.3" {
		t.Errorf("x-forwarded-for = %q", got)
	}
}

// countingServer allows the first allow calls and denies the rest, and
// records the sources it saw.
type countingServer struct {
	authv3.UnimplementedAuthorizationServer
	allow   int64
	calls   atomic.Int64
	sources chan string
}

func (s *countingServer) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	n := s.calls.Add(1)
	select {
	case s.sources <- req.GetAttributes().GetSource().GetAddress().GetSocketAddress().GetAddress():
	default:
	}
	if n <= s.allow {
		return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.OK)}}, nil
	}
	return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.ResourceExhausted)}}, nil
}

func serveGRPC(t *testing.T, srv authv3.AuthorizationServer) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(ServerOptions()...)
	authv3.RegisterAuthorizationServer(gs, srv)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	return ln.Addr().String()
}

func TestCheckCountsEveryCall(t *testing.T) {
	srv := &countingServer{allow: 100 + 4, sources: make(chan string, 1000)} // 4: one first call per connection
	addr := serveGRPC(t, srv)
	res, err := Check(context.Background(), CheckOptions{Target: addr, Conns: 4, Concurrency: 8, Requests: 300, Clients: 50, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 100 || res.Denied != 200 || res.Errors != 0 || res.Latency.Count() != 300 {
		t.Fatalf("OK %d, Denied %d, Errors %d, latencies %d; want 100, 200, 0, 300", res.OK, res.Denied, res.Errors, res.Latency.Count())
	}
	if res.Rate() <= 0 || !strings.Contains(res.Summary(), "300 calls") {
		t.Errorf("Rate %v, Summary %q", res.Rate(), res.Summary())
	}
	close(srv.sources)
	distinct := map[string]bool{}
	for s := range srv.sources {
		distinct[s] = true
	}
	if len(distinct) != 50 {
		t.Errorf("%d distinct sources, want 50", len(distinct))
	}
}

func TestCheckStopsAfterDuration(t *testing.T) {
	addr := serveGRPC(t, NoopServer{})
	res, err := Check(context.Background(), CheckOptions{Target: addr, Conns: 2, Concurrency: 4, Duration: 200 * time.Millisecond, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK == 0 || res.Denied != 0 || res.Errors != 0 {
		t.Fatalf("OK %d, Denied %d, Errors %d; want some allowed, nothing else", res.OK, res.Denied, res.Errors)
	}
}

func TestCheckCountsErrors(t *testing.T) {
	addr := serveGRPC(t, struct {
		authv3.UnimplementedAuthorizationServer
	}{})
	if _, err := Check(context.Background(), CheckOptions{Target: addr, Requests: 10}); err == nil || !strings.Contains(err.Error(), "Unimplemented") {
		t.Fatalf("Check against a server without Check: %v, want the first call's error", err)
	}
}

func TestHTTPFixedRate(t *testing.T) {
	var n atomic.Int64
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if n.Add(1)%2 == 0 {
			w.WriteHeader(http.StatusTooManyRequests)
		}
		fmt.Fprint(w, "ok")
	}))
	t.Cleanup(ts.Close)
	res, err := HTTP(context.Background(), HTTPOptions{URL: ts.URL, Rate: 200, Duration: 500 * time.Millisecond, Workers: 4})
	if err != nil {
		t.Fatal(err)
	}
	if res.Answered() != 100 || res.Status2xx != 50 || res.Status429 != 50 || res.Errors != 0 {
		t.Fatalf("%s; want 100 requests, 50 2xx, 50 429", res.Summary())
	}
	if _, err := HTTP(context.Background(), HTTPOptions{URL: ts.URL}); err == nil {
		t.Error("HTTP without a rate ran")
	}
}

// TestRenderEnvoyConfig renders envoy/front-proxy.yaml as StartEnvoy does,
// with the filter and without it.
func TestRenderEnvoyConfig(t *testing.T) {
	src, err := os.ReadFile("../../envoy/front-proxy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ports := map[int]int{10000: 20000, 9901: 20001, 9001: 20002, 8080: 20003}
	with, err := supervisor.RenderEnvoyConfig(src, ports)
	if err != nil {
		t.Fatal(err)
	}
	stripped, err := withoutFilter(src, ExtAuthzFilter)
	if err != nil {
		t.Fatal(err)
	}
	without, err := supervisor.RenderEnvoyConfig(stripped, ports)
	if err != nil {
		t.Fatal(err)
	}
	// Counted as filters, not as text: the access log may name the
	// filter's dynamic metadata, which is simply absent without it.
	filters := func(cfg []byte) int {
		var doc any
		if err := yaml.Unmarshal(cfg, &doc); err != nil {
			t.Fatal(err)
		}
		return dropFilter(doc, ExtAuthzFilter)
	}
	if filters(with) == 0 || filters(without) != 0 {
		t.Fatalf("%d ext_authz filters with it, %d without; want some, none", filters(with), filters(without))
	}
	for _, cfg := range [][]byte{with, without} {
		s := string(cfg)
		if strings.Contains(s, "address: 0.0.0.0") || strings.Contains(s, "port_value: 10000") || !strings.Contains(s, "port_value: 20000") {
			t.Errorf("addresses or ports not rendered:\n%s", s)
		}
		var doc map[string]any
		if err := yaml.Unmarshal(cfg, &doc); err != nil {
			t.Fatal(err)
		}
	}
	if !strings.Contains(string(without), "envoy.filters.http.router") || !strings.Contains(string(without), "/login") {
		t.Error("rendering without the filter lost the router or the routes")
	}
	if _, err := supervisor.RenderEnvoyConfig(stripped, map[int]int{10000: 1}); err == nil {
		t.Error("rendered with ports missing")
	}
	if _, err := withoutFilter([]byte("static_resources: {}\n"), ExtAuthzFilter); err == nil {
		t.Error("removed an ext_authz filter from a config without one")
	}
}

func TestProcFiles(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	pid := os.Getpid()
	if _, err := procCPU(pid); err != nil {
		t.Error(err)
	}
	if rss, err := procRSS(pid); err != nil || rss < 1<<20 {
		t.Errorf("procRSS = %d, %v; want at least 1 MiB", rss, err)
	}
	if n, err := parseVmRSS([]byte("Name:\tx\nVmRSS:\t  2048 kB\n")); err != nil || n != 2<<20 {
		t.Errorf("parseVmRSS = %d, %v", n, err)
	}
	if n, err := parseSyscr([]byte("rchar: 1\nsyscr: 42\nsyscw: 7\n")); err != nil || n != 42 {
		t.Errorf("parseSyscr = %d, %v", n, err)
	}
	if _, err := parseVmRSS([]byte("Name:\tx\n")); err == nil {
		t.Error("parseVmRSS without VmRSS succeeded")
	}
}

func TestFormat(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{fmtCount(1234567), "1,234,567"},
		{fmtCount(-1000), "-1,000"},
		{fmtCount(999), "999"},
		{fmtRate(12345.6), "12,346"},
		{fmtDur(1500 * time.Nanosecond), "1.50µs"},
		{fmtDur(250 * time.Microsecond), "250µs"},
		{fmtDur(12300 * time.Microsecond), "12.3ms"},
		{fmtSignedDur(-3 * time.Microsecond), "-3.00µs"},
		{fmtSignedDur(120 * time.Microsecond), "+120µs"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestHTTPResultAdd(t *testing.T) {
	a := &HTTPResult{Status2xx: 3, Status429: 1, Elapsed: time.Second}
	a.Latency.Record(time.Millisecond)
	b := &HTTPResult{Status2xx: 1, Errors: 1, FirstError: context.Canceled, Elapsed: time.Second}
	b.Latency.Record(3 * time.Millisecond)
	a.add(b)
	if a.Answered() != 5 || a.Errors != 1 || a.FirstError != context.Canceled || a.Elapsed != 2*time.Second || a.Latency.Count() != 2 {
		t.Fatalf("merged: %+v", a)
	}
	if a.Rate() != 2.5 {
		t.Errorf("Rate = %v, want 2.5", a.Rate())
	}
}

func TestCPUWatch(t *testing.T) {
	if _, err := os.Stat("/proc/stat"); err != nil {
		t.Skip("no /proc")
	}
	w := watchCPU()
	if o := w.others(); o < 0 || o > 1 {
		t.Fatalf("others = %v, want a share from 0 to 1", o)
	}
	if _, err := machineBusy(); err != nil {
		t.Fatal(err)
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		xs   []float64
		want float64
	}{
		{[]float64{0.7}, 0.7},
		{[]float64{0.9, 0.5, 0.7}, 0.7},
		{[]float64{0.4, 0.8, 0.6, 0.5}, 0.55},
	} {
		in := slices.Clone(tc.xs)
		if got := median(tc.xs); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("median(%v) = %v, want %v", tc.xs, got, tc.want)
		}
		if !slices.Equal(in, tc.xs) {
			t.Errorf("median reordered its argument: %v, was %v", tc.xs, in)
		}
	}
	if got := median([]time.Duration{3, 1, 2}); got != 2 {
		t.Errorf("median of durations = %v, want 2ns", got)
	}
}

// TestRoundsSummary checks that each round's ratios are to that round's
// own no-op runs, and that the summary gives their median and every one.
func TestRoundsSummary(t *testing.T) {
	row := func(name string, floodgate bool, calls int64, p99 time.Duration) Row {
		res := &CheckResult{OK: calls, Elapsed: time.Second}
		for range 100 {
			res.Latency.Record(p99)
		}
		return Row{Name: name, Result: res, Floodgate: floodgate, ServerCPU: time.Duration(calls) * 40 * time.Microsecond}
	}
	const hot = "floodgate + memcached, 1 client"
	rounds := [][]Row{
		// Ceiling 10,000/s and 2ms: 0.60 and 1.50.
		{row("no-op", false, 9_000, 2*time.Millisecond), row(hot, true, 6_000, 3*time.Millisecond), row("no-op", false, 11_000, 2*time.Millisecond)},
		// Ceiling 20,000/s and 4ms (the machine got faster, the ratio did not move): 0.70 and 1.00.
		{row("no-op", false, 20_000, 4*time.Millisecond), row(hot, true, 14_000, 4*time.Millisecond), row("no-op", false, 20_000, 4*time.Millisecond)},
		// 0.80 and 0.50.
		{row("no-op", false, 10_000, 2*time.Millisecond), row(hot, true, 8_000, time.Millisecond), row("no-op", false, 10_000, 2*time.Millisecond)},
	}
	var b strings.Builder
	writeRoundsSummary(&b, rounds)
	out := b.String()
	for _, want := range []string{"0.70  0.60 0.70 0.80", "1.00  1.50 1.00 0.50", "40.0µs"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
}
