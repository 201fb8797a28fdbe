package rls_test

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/floodgate-rl/floodgate/authz"
	"github.com/floodgate-rl/floodgate/internal/testutil"
	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/memory"
	rlsconf "github.com/floodgate-rl/floodgate/policy/rls"
	"github.com/floodgate-rl/floodgate/rls"
)

// testLimits is the configuration of the table tests, in envoyproxy/
// ratelimit's format.
const testLimits = `domain: test
descriptors:
  - key: remote_address
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: api_key
    value: unlimited-key
    rate_limit: {unlimited: true}
  - key: route
    value: login
    descriptors:
      - key: remote_address
        rate_limit: {name: login, unit: hour, requests_per_unit: 2}
  - key: route
    value: trial
    descriptors:
      - key: remote_address
        shadow_mode: true
        rate_limit: {name: trial, unit: minute, requests_per_unit: 1}
  - key: plan
    value: free
    rate_limit: {name: free, unit: minute, requests_per_unit: 5}
  - key: plan
    value: gold
    rate_limit:
      name: gold
      unit: minute
      requests_per_unit: 50
      replaces: [{name: free}]
  - key: closed
    rate_limit: {unit: second, requests_per_unit: 0}
`

// t0 is the first instant of the table tests: a whole minute.
var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// failingStore is a limiter.Store whose every call fails as an unreachable
// memcached does; it counts its calls.
type failingStore struct{ calls atomic.Int64 }

func (f *failingStore) fail() error {
	f.calls.Add(1)
	return fmt.Errorf("memcache: %w", limiter.ErrStoreUnavailable)
}

func (f *failingStore) Add(context.Context, string, int64, time.Duration) (int64, error) {
	return 0, f.fail()
}

func (f *failingStore) Get(context.Context, []string) (map[string]int64, error) {
	return nil, f.fail()
}

func (f *failingStore) Batch(context.Context, []string, []limiter.Increment) (map[string]int64, []int64, error) {
	return nil, nil, f.fail()
}

func (f *failingStore) GetVersioned(context.Context, string) ([]byte, uint64, error) {
	return nil, 0, f.fail()
}

func (f *failingStore) CompareAndSwap(context.Context, string, []byte, uint64, time.Duration) (bool, error) {
	return false, f.fail()
}

// harness is a Server behind a real gRPC listener on 127.0.0.1, with
// floodgate's codec, deciding with a real strategy on a store.
type harness struct {
	srv    *rls.Server
	client rlsv3.RateLimitServiceClient
	reg    *prometheus.Registry
	logs   *testutil.Buffer
	clock  *testutil.Clock
}

// setup is how a test builds its harness.
type setup struct {
	limits   string // YAML; "" for testLimits
	strategy func(t *testing.T, c *testutil.Clock) limiter.MultiStrategy
	config   func(*rls.Config)
}

// memoryStrategy is the sliding window on an in-memory store on c.
func memoryStrategy(t *testing.T, c *testutil.Clock) limiter.MultiStrategy {
	t.Helper()
	st := memory.New(c.Now)
	t.Cleanup(func() { st.Close() })
	return newStrategy(t, limiter.StrategySliding, st)
}

func newStrategy(t *testing.T, name string, st limiter.Store) limiter.MultiStrategy {
	t.Helper()
	s, err := limiter.NewStrategy(name, st, limiter.StrategyConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ms, ok := s.(limiter.MultiStrategy)
	if !ok {
		t.Fatalf("strategy %s is not a limiter.MultiStrategy", name)
	}
	return ms
}

func newHarness(t *testing.T, su setup) *harness {
	t.Helper()
	if su.limits == "" {
		su.limits = testLimits
	}
	if su.strategy == nil {
		su.strategy = memoryStrategy
	}
	limits, err := rlsconf.Parse("limits.yaml", []byte(su.limits))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{reg: prometheus.NewRegistry(), logs: &testutil.Buffer{}, clock: testutil.NewClock(t0)}
	cfg := rls.Config{
		Limits:     limits,
		Strategy:   su.strategy(t, h.clock),
		Headers:    true,
		Logger:     slog.New(slog.NewTextHandler(h.logs, nil)),
		Registerer: h.reg,
		Now:        h.clock.Now,
	}
	if su.config != nil {
		su.config(&cfg)
	}
	h.srv, err = rls.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.client = serve(t, h.srv)
	return h
}

// serve runs srv on a gRPC server on a loopback port, with floodgate's
// codec as cmd/floodgate sets it, and returns a client of it.
func serve(t *testing.T, srv *rls.Server) rlsv3.RateLimitServiceClient {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.ForceServerCodecV2(authz.Codec()))
	srv.Register(g)
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return rlsv3.NewRateLimitServiceClient(conn)
}

// call sends req at the instant at and returns the answer.
func (h *harness) call(t *testing.T, at time.Time, req *rlsv3.RateLimitRequest) *rlsv3.RateLimitResponse {
	t.Helper()
	h.clock.Set(at)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := h.client.ShouldRateLimit(ctx, req)
	if err != nil {
		t.Fatalf("ShouldRateLimit: %v", err)
	}
	return resp
}

// metric returns the value of the counter name with the label pairs kv
// (name, value, ...) from the harness's registry, 0 when it is absent.
func (h *harness) metric(name string, kv ...string) float64 {
	mfs, err := h.reg.Gather()
	if err != nil {
		panic(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			labels := make(map[string]string)
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(kv); i += 2 {
				if labels[kv[i]] != kv[i+1] {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// desc returns a descriptor of entries written "key=value".
func desc(entries ...string) *ratelimitv3.RateLimitDescriptor {
	d := &ratelimitv3.RateLimitDescriptor{}
	for _, e := range entries {
		k, v, _ := strings.Cut(e, "=")
		d.Entries = append(d.Entries, &ratelimitv3.RateLimitDescriptor_Entry{Key: k, Value: v})
	}
	return d
}

// withHits sets d's own hits_addend.
func withHits(d *ratelimitv3.RateLimitDescriptor, n uint64) *ratelimitv3.RateLimitDescriptor {
	d.HitsAddend = wrapperspb.UInt64(n)
	return d
}

// request is a RateLimitRequest of domain "test".
func request(hits uint32, ds ...*ratelimitv3.RateLimitDescriptor) *rlsv3.RateLimitRequest {
	return &rlsv3.RateLimitRequest{Domain: "test", Descriptors: ds, HitsAddend: hits}
}

// summary writes a response in one line: the overall code, each status in
// brackets (code, name:limit/unit, remaining, reset), the body and the
// headers, as the table tests compare it.
func summary(r *rlsv3.RateLimitResponse) string {
	var b strings.Builder
	b.WriteString(r.GetOverallCode().String())
	for _, st := range r.GetStatuses() {
		b.WriteString(" [" + st.GetCode().String())
		if l := st.GetCurrentLimit(); l != nil {
			b.WriteString(" ")
			if l.GetName() != "" {
				b.WriteString(l.GetName() + ":")
			}
			fmt.Fprintf(&b, "%d/%s", l.GetRequestsPerUnit(), l.GetUnit())
			if m := l.GetUnitMultiplier(); m != nil {
				fmt.Fprintf(&b, "x%d", m.GetValue())
			}
		}
		if st.GetLimitRemaining() == math.MaxUint32 {
			b.WriteString(" rem=max")
		} else {
			fmt.Fprintf(&b, " rem=%d", st.GetLimitRemaining())
		}
		if d := st.GetDurationUntilReset(); d != nil {
			fmt.Fprintf(&b, " reset=%ds", d.GetSeconds())
		}
		b.WriteString("]")
	}
	if len(r.GetRawBody()) > 0 {
		fmt.Fprintf(&b, " body=%q", r.GetRawBody())
	}
	for _, h := range r.GetResponseHeadersToAdd() {
		fmt.Fprintf(&b, " resp:%s=%s", h.GetKey(), h.GetValue())
	}
	for _, h := range r.GetRequestHeadersToAdd() {
		fmt.Fprintf(&b, " req:%s=%s", h.GetKey(), h.GetValue())
	}
	return b.String()
}

// step is one call of a table test: the request, sent sec seconds after
// t0, and the summary of the answer it must get.
type step struct {
	sec  int
	req  *rlsv3.RateLimitRequest
	want string
}

// Policy headers of the rules of testLimits, as the steps expect them.
const (
	policyAddr  = `resp:RateLimit-Policy="test.remote_address";q=3;w=60`
	policyLogin = `resp:RateLimit-Policy="login";q=2;w=3600`
)

func TestShouldRateLimit(t *testing.T) {
	t.Parallel()
	addr := func() *ratelimitv3.RateLimitDescriptor { return desc("remote_address=192.0.2.1") }
	login := func() *ratelimitv3.RateLimitDescriptor { return desc("route=login", "remote_address=192.0.2.1") }
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"a rule counts until its limit, then denies with the truthful wait", []step{
			{0, request(0, addr()), `OK [OK 3/MINUTE rem=2 reset=0s] ` + policyAddr + ` resp:RateLimit="test.remote_address";r=2;t=0`},
			{1, request(0, addr()), `OK [OK 3/MINUTE rem=1 reset=0s] ` + policyAddr + ` resp:RateLimit="test.remote_address";r=1;t=0`},
			{2, request(0, addr()), `OK [OK 3/MINUTE rem=0 reset=58s] ` + policyAddr + ` resp:RateLimit="test.remote_address";r=0;t=58`},
			{2, request(0, addr()), `OVER_LIMIT [OVER_LIMIT 3/MINUTE rem=0 reset=58s] body="Rate limit exceeded. Try again in 58 seconds" resp:Retry-After=58 ` + policyAddr + ` resp:RateLimit="test.remote_address";r=0;t=58`},
			// Denied requests are not counted: the wait holds however often
			// the client retried.
			{59, request(0, addr()), `OVER_LIMIT [OVER_LIMIT 3/MINUTE rem=0 reset=1s] body="Rate limit exceeded. Try again in 1 seconds" resp:Retry-After=1 ` + policyAddr + ` resp:RateLimit="test.remote_address";r=0;t=1`},
			{60, request(0, addr()), `OK [OK 3/MINUTE rem=0 reset=1s] ` + policyAddr + ` resp:RateLimit="test.remote_address";r=0;t=1`},
		}},
		{"an unknown domain is unlimited", []step{
			{0, &rlsv3.RateLimitRequest{Domain: "other", Descriptors: []*ratelimitv3.RateLimitDescriptor{addr()}}, `OK [OK rem=max]`},
		}},
		{"an empty domain is unlimited", []step{
			{0, &rlsv3.RateLimitRequest{Descriptors: []*ratelimitv3.RateLimitDescriptor{addr()}}, `OK [OK rem=max]`},
		}},
		{"no descriptor", []step{
			{0, request(0), `OK`},
		}},
		{"a descriptor without a rule is unlimited", []step{
			{0, request(0, desc("path=/x")), `OK [OK rem=max]`},
			{0, request(0, desc("route=login")), `OK [OK rem=max]`},
			{0, request(0, desc("route=login", "remote_address=192.0.2.1", "extra=1")), `OK [OK rem=max]`},
		}},
		{"an unlimited rule", []step{
			{0, request(0, desc("api_key=unlimited-key")), `OK [OK rem=max]`},
		}},
		{"several rules: all or nothing", []step{
			{0, request(0, addr(), login()), `OK [OK 3/MINUTE rem=2 reset=0s] [OK login:2/HOUR rem=1 reset=0s] ` + policyLogin + ` resp:RateLimit="login";r=1;t=0`},
			{0, request(0, addr(), login()), `OK [OK 3/MINUTE rem=1 reset=0s] [OK login:2/HOUR rem=0 reset=3600s] ` + policyLogin + ` resp:RateLimit="login";r=0;t=3600`},
			// The login rule denies: the address rule had room but counts
			// nothing either.
			{0, request(0, addr(), login()), `OVER_LIMIT [OK 3/MINUTE rem=1 reset=0s] [OVER_LIMIT login:2/HOUR rem=0 reset=3600s] body="Rate limit exceeded. Try again in 3600 seconds" resp:Retry-After=3600 ` + policyLogin + ` resp:RateLimit="login";r=0;t=3600`},
			{0, request(0, addr()), `OK [OK 3/MINUTE rem=0 reset=60s] ` + policyAddr + ` resp:RateLimit="test.remote_address";r=0;t=60`},
		}},
		{"replaces drops the replaced rule", []step{
			{0, request(0, desc("plan=free"), desc("plan=gold")), `OK [OK rem=max] [OK gold:50/MINUTE rem=49 reset=0s] resp:RateLimit-Policy="gold";q=50;w=60 resp:RateLimit="gold";r=49;t=0`},
			{0, request(0, desc("plan=free")), `OK [OK free:5/MINUTE rem=4 reset=0s] resp:RateLimit-Policy="free";q=5;w=60 resp:RateLimit="free";r=4;t=0`},
		}},
		{"hits_addend counts a request as several", []step{
			{0, request(2, addr()), `OK [OK 3/MINUTE rem=1 reset=0s] ` + policyAddr + ` resp:RateLimit="test.remote_address";r=1;t=0`},
			{0, request(2, addr()), `OVER_LIMIT [OVER_LIMIT 3/MINUTE rem=0 reset=60s] body="Rate limit exceeded. Try again in 60 seconds" resp:Retry-After=60 ` + policyAddr + ` resp:RateLimit="test.remote_address";r=0;t=60`},
			{0, request(1, addr()), `OK [OK 3/MINUTE rem=0 reset=60s] ` + policyAddr + ` resp:RateLimit="test.remote_address";r=0;t=60`},
		}},
		{"a descriptor's own hits_addend wins over the request's", []step{
			{0, request(2, withHits(addr(), 1)), `OK [OK 3/MINUTE rem=2 reset=0s] ` + policyAddr + ` resp:RateLimit="test.remote_address";r=2;t=0`},
			{0, request(1, withHits(addr(), 3)), `OVER_LIMIT [OVER_LIMIT 3/MINUTE rem=0 reset=60s] body="Rate limit exceeded. Try again in 60 seconds" resp:Retry-After=60 ` + policyAddr + ` resp:RateLimit="test.remote_address";r=0;t=60`},
		}},
		{"huge hits_addend: denied, nothing counted", []step{
			{0, request(math.MaxUint32, addr()), `OVER_LIMIT [OVER_LIMIT 3/MINUTE rem=0 reset=60s] body="Rate limit exceeded. Try again in 60 seconds" resp:Retry-After=60 ` + policyAddr + ` resp:RateLimit="test.remote_address";r=0;t=60`},
			{0, request(1, withHits(addr(), math.MaxUint64)), `OVER_LIMIT [OVER_LIMIT 3/MINUTE rem=0 reset=60s] body="Rate limit exceeded. Try again in 60 seconds" resp:Retry-After=60 ` + policyAddr + ` resp:RateLimit="test.remote_address";r=0;t=60`},
			{0, request(0, addr()), `OK [OK 3/MINUTE rem=2 reset=0s] ` + policyAddr + ` resp:RateLimit="test.remote_address";r=2;t=0`},
		}},
		{"requests_per_unit 0 denies every request", []step{
			{0, request(0, desc("closed=x")), `OVER_LIMIT [OVER_LIMIT 0/SECOND rem=0 reset=1s] body="Rate limit exceeded. Try again in 1 seconds" resp:Retry-After=1 resp:RateLimit-Policy="test.closed";q=0;w=1 resp:RateLimit="test.closed";r=0;t=1`},
		}},
		{"a shadow rule answers OK over its limit", []step{
			{0, request(0, desc("route=trial", "remote_address=192.0.2.1")), `OK [OK rem=0]`},
			{0, request(0, desc("route=trial", "remote_address=192.0.2.1")), `OK [OK rem=0]`},
		}},
		{"is_negative_hits is ignored", []step{
			{0, request(0, negative(addr())), `OK [OK rem=max]`},
			{0, request(0, addr()), `OK [OK 3/MINUTE rem=2 reset=0s] ` + policyAddr + ` resp:RateLimit="test.remote_address";r=2;t=0`},
		}},
		{"a descriptor's own limit overrides the rule", []step{
			{0, request(0, override(addr(), 1, typev3.RateLimitUnit_MINUTE, 0)), `OK [OK 1/MINUTE rem=0 reset=60s] resp:RateLimit-Policy="test.override";q=1;w=60 resp:RateLimit="test.override";r=0;t=60`},
			{0, request(0, override(addr(), 1, typev3.RateLimitUnit_MINUTE, 0)), `OVER_LIMIT [OVER_LIMIT 1/MINUTE rem=0 reset=60s] body="Rate limit exceeded. Try again in 60 seconds" resp:Retry-After=60 resp:RateLimit-Policy="test.override";q=1;w=60 resp:RateLimit="test.override";r=0;t=60`},
			{0, request(0, override(addr(), 2, typev3.RateLimitUnit_SECOND, 30)), `OK [OK 2/SECONDx30 rem=1 reset=0s] resp:RateLimit-Policy="test.override";q=2;w=30 resp:RateLimit="test.override";r=1;t=0`},
		}},
		{"an override floodgate cannot enforce is ignored", []step{
			{0, request(0, override(addr(), 1, typev3.RateLimitUnit_YEAR, 0)), `OK [OK 3/MINUTE rem=2 reset=0s] ` + policyAddr + ` resp:RateLimit="test.remote_address";r=2;t=0`},
			{0, request(0, override(addr(), 1, typev3.RateLimitUnit_DAY, 2)), `OK [OK 3/MINUTE rem=1 reset=0s] ` + policyAddr + ` resp:RateLimit="test.remote_address";r=1;t=0`},
			{0, request(0, override(addr(), 1, typev3.RateLimitUnit_SECOND, math.MaxUint32)), `OK [OK 3/MINUTE rem=0 reset=60s] ` + policyAddr + ` resp:RateLimit="test.remote_address";r=0;t=60`},
		}},
		{"the same descriptor twice counts twice", []step{
			{0, request(0, addr(), addr()), `OK [OK 3/MINUTE rem=1 reset=0s] [OK 3/MINUTE rem=1 reset=0s] ` + policyAddr + ` resp:RateLimit="test.remote_address";r=1;t=0`},
			{0, request(0, addr(), addr()), `OVER_LIMIT [OVER_LIMIT 3/MINUTE rem=0 reset=60s] [OVER_LIMIT 3/MINUTE rem=0 reset=60s] body="Rate limit exceeded. Try again in 60 seconds" resp:Retry-After=60 ` + policyAddr + ` resp:RateLimit="test.remote_address";r=0;t=60`},
			{0, request(0, addr()), `OK [OK 3/MINUTE rem=0 reset=60s] ` + policyAddr + ` resp:RateLimit="test.remote_address";r=0;t=60`},
		}},
		{"too many descriptors are refused", []step{
			{0, request(0, manyDescriptors(rls.MaxDescriptors+1, "path")...), `OVER_LIMIT` + strings.Repeat(" [OVER_LIMIT rem=0]", rls.MaxDescriptors+1) + ` body="Rate limit request refused: 257 descriptors, at most 256"`},
		}},
		{"too many rules are refused, counting nothing", []step{
			{0, request(0, manyDescriptors(rls.MaxRules+1, "remote_address")...), `OVER_LIMIT` + strings.Repeat(" [OVER_LIMIT rem=0]", rls.MaxRules+1) + ` body="Rate limit request refused: 65 rules to decide, at most 64"`},
			{0, request(0, desc("remote_address=10.0.0.0")), `OK [OK 3/MINUTE rem=2 reset=0s] ` + policyAddr + ` resp:RateLimit="test.remote_address";r=2;t=0`},
		}},
		{"a descriptor of 10,000 entries", []step{
			{0, request(0, desc(manyEntries(10000)...)), `OK [OK rem=max]`},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, setup{})
			for i, st := range tc.steps {
				resp := h.call(t, t0.Add(time.Duration(st.sec)*time.Second), st.req)
				if got := summary(resp); got != st.want {
					t.Fatalf("step %d (t0+%ds):\n got %s\nwant %s", i, st.sec, got, st.want)
				}
			}
		})
	}
}

// negative marks d as Envoy's refund of hits.
func negative(d *ratelimitv3.RateLimitDescriptor) *ratelimitv3.RateLimitDescriptor {
	d.IsNegativeHits = true
	return d
}

// override gives d a limit of its own; mult 0 sets no unit_multiplier.
func override(d *ratelimitv3.RateLimitDescriptor, n uint32, unit typev3.RateLimitUnit, mult uint32) *ratelimitv3.RateLimitDescriptor {
	d.Limit = &ratelimitv3.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: n, Unit: unit}
	if mult > 0 {
		d.Limit.UnitMultiplier = wrapperspb.UInt32(mult)
	}
	return d
}

// manyDescriptors returns n descriptors of key, each with its own value.
func manyDescriptors(n int, key string) []*ratelimitv3.RateLimitDescriptor {
	ds := make([]*ratelimitv3.RateLimitDescriptor, n)
	for i := range ds {
		ds[i] = desc(fmt.Sprintf("%s=10.0.%d.%d", key, i/256, i%256))
	}
	return ds
}

// manyEntries returns n entries "k<i>=v<i>".
func manyEntries(n int) []string {
	es := make([]string, n)
	for i := range es {
		es[i] = fmt.Sprintf("k%d=v%d", i, i)
	}
	return es
}

// TestCodecMarshalsResponses: floodgate's gRPC codec (authz.Codec, which
// marshals with vtprotobuf's generated code under -tags vtprotobuf)
// writes a RateLimitResponse that protobuf-go reads back equal.
func TestCodecMarshalsResponses(t *testing.T) {
	t.Parallel()
	h := newHarness(t, setup{})
	addr := desc("remote_address=192.0.2.1")
	for i := range 4 {
		resp, err := h.srv.ShouldRateLimit(context.Background(), request(0, addr, override(desc("remote_address=x"), 1, typev3.RateLimitUnit_SECOND, 30), desc("path=/")))
		if err != nil {
			t.Fatal(err)
		}
		bs, err := authz.Codec().Marshal(resp)
		if err != nil {
			t.Fatalf("call %d: marshal: %v", i, err)
		}
		var back rlsv3.RateLimitResponse
		if err := proto.Unmarshal(bs.Materialize(), &back); err != nil {
			t.Fatalf("call %d: unmarshal: %v", i, err)
		}
		if !proto.Equal(resp, &back) {
			t.Fatalf("call %d: marshalled and read back\n%v\nwant\n%v", i, &back, resp)
		}
	}
}
