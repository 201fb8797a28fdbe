package faults_test

import (
	"bufio"
	"context"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/floodgate-rl/floodgate/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// envoyDeadline is the ext_authz timeout of the shipped Envoy configs
// (timeout: 0.25s in envoy/*.yaml). A check that floodgate answers later is
// an error for Envoy, so the tests give every Check this deadline: "no gRPC
// error" then also means "answered before Envoy would have given up". It is
// a functional bound, not a performance target: floodgate's own bound is
// --memcache-timeout (100ms) per store round trip, and with the circuit
// breaker open, none.
const envoyDeadline = 250 * time.Millisecond

// degradedHeader is authz.DegradedHeader, as the tests expect it on the wire.
const degradedHeader = "X-Floodgate-Degraded"

// authClient is a gRPC ext_authz client of one floodgate.
type authClient struct {
	authv3.AuthorizationClient
	fg *testutil.Floodgate
}

// dial connects to fg's gRPC server.
func dial(t *testing.T, fg *testutil.Floodgate) *authClient {
	t.Helper()
	conn, err := grpc.NewClient(fg.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &authClient{AuthorizationClient: authv3.NewAuthorizationClient(conn), fg: fg}
}

// outcome is what one Check returned.
type outcome struct {
	err      error
	allowed  bool
	code     codes.Code
	degraded string // the X-Floodgate-Degraded value, "" when absent (see check)
	headers  map[string]string
	took     time.Duration
}

// check sends one Check for ip with Envoy's deadline. The degraded marker
// of an allowed request is the one set on the upstream request; a 429
// carries one only with --degraded-header-to-client.
func (c *authClient) check(ip string) outcome {
	ctx, cancel := context.WithTimeout(context.Background(), envoyDeadline)
	defer cancel()
	start := time.Now()
	resp, err := c.Check(ctx, testutil.CheckRequest(ip))
	o := outcome{err: err, took: time.Since(start)}
	if err != nil {
		return o
	}
	o.code = codes.Code(resp.GetStatus().GetCode())
	o.allowed = o.code == codes.OK
	hs := resp.GetOkResponse().GetResponseHeadersToAdd()
	if !o.allowed {
		hs = resp.GetDeniedResponse().GetHeaders()
	}
	o.headers = make(map[string]string)
	for _, h := range hs {
		o.headers[strings.ToLower(h.GetHeader().GetKey())] = h.GetHeader().GetValue()
	}
	o.degraded = o.headers[strings.ToLower(degradedHeader)]
	if o.allowed {
		o.degraded = upstreamDegraded(resp)
	}
	return o
}

// upstreamDegraded returns the X-Floodgate-Degraded value an allowed
// response sets on the upstream request, "" when none.
func upstreamDegraded(resp *authv3.CheckResponse) string {
	for _, h := range resp.GetOkResponse().GetHeaders() {
		if h.GetHeader().GetKey() == degradedHeader {
			return h.GetHeader().GetValue()
		}
	}
	return ""
}

// mustCheck sends one Check and fails the test on a gRPC error or a result
// other than an allow or a 429.
func (c *authClient) mustCheck(t *testing.T, ip string) outcome {
	t.Helper()
	o := c.check(ip)
	if o.err != nil {
		t.Fatalf("Check for %s: %v", ip, o.err)
	}
	if o.code != codes.OK && o.code != codes.ResourceExhausted {
		t.Fatalf("Check for %s: status %v, want OK or RESOURCE_EXHAUSTED", ip, o.code)
	}
	return o
}

// metrics returns every sample of fg's /metrics as "name{labels}" -> value,
// and for a series of several labels its projection on each (see project).
func metrics(t *testing.T, fg *testutil.Floodgate) map[string]float64 {
	t.Helper()
	resp, err := http.Get(fg.AdminURL() + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	out := make(map[string]float64)
	s := bufio.NewScanner(resp.Body)
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		line := s.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
		project(out, line[:i], v)
	}
	if err := s.Err(); err != nil {
		t.Fatalf("read /metrics: %v", err)
	}
	return out
}

// labelPair is one label="value" of a series as the exposition writes it.
var labelPair = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

// project adds v to the series' projection on each of its labels when it
// has more than one: name{result="allowed"} sums every scope and rule of
// floodgate_decisions_total{result="allowed",rule=...,scope=...}.
func project(out map[string]float64, series string, v float64) {
	name, labels, ok := strings.Cut(series, "{")
	if !ok {
		return
	}
	pairs := labelPair.FindAllString(labels, -1)
	if len(pairs) < 2 {
		return
	}
	for _, p := range pairs {
		out[name+"{"+p+"}"] += v
	}
}

// storeErrors sums floodgate_store_errors_total over all operations (its
// one label, so metrics adds no projections of it to count twice).
func storeErrors(m map[string]float64) float64 {
	var n float64
	for k, v := range m {
		if strings.HasPrefix(k, "floodgate_store_errors_total{") {
			n += v
		}
	}
	return n
}

// tally counts outcomes, safe for concurrent use.
type tally struct {
	mu       sync.Mutex
	n        int
	errs     []error
	allowed  int
	degraded int
	took     []time.Duration
}

func (ta *tally) add(o outcome) {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	ta.n++
	ta.took = append(ta.took, o.took)
	switch {
	case o.err != nil:
		ta.errs = append(ta.errs, o.err)
	case o.code != codes.OK && o.code != codes.ResourceExhausted:
		ta.errs = append(ta.errs, &unexpectedCode{o.code})
	}
	if o.allowed {
		ta.allowed++
	}
	if o.degraded != "" {
		ta.degraded++
	}
}

type unexpectedCode struct{ code codes.Code }

func (e *unexpectedCode) Error() string { return "status " + e.code.String() }

// percentile returns the p-th percentile (0-100) of the latencies seen.
func (ta *tally) percentile(p float64) time.Duration {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	if len(ta.took) == 0 {
		return 0
	}
	s := slices.Clone(ta.took)
	slices.Sort(s)
	return s[int(p/100*float64(len(s)-1))]
}
