package authz_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/floodgate-rl/floodgate/authz"
	"github.com/floodgate-rl/floodgate/internal/testutil"
	"github.com/floodgate-rl/floodgate/limiter"
)

// fakeStrategy is a hand-written limiter.Strategy: AllowFn decides (nil
// allows everything), and every Request is recorded.
type fakeStrategy struct {
	AllowFn func(ctx context.Context, req limiter.Request, now time.Time) (limiter.Decision, error)

	mu   sync.Mutex
	reqs []limiter.Request
	nows []time.Time
}

func (f *fakeStrategy) Allow(ctx context.Context, req limiter.Request, now time.Time) (limiter.Decision, error) {
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	f.nows = append(f.nows, now)
	f.mu.Unlock()
	if f.AllowFn == nil {
		return limiter.Decision{Allowed: true, Limit: req.Limit, Window: req.Window, Remaining: req.Limit - 1}, nil
	}
	return f.AllowFn(ctx, req, now)
}

// requests returns the Requests received so far.
func (f *fakeStrategy) requests() []limiter.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]limiter.Request(nil), f.reqs...)
}

// last returns the last Request received, failing the test when there is none.
func (f *fakeStrategy) last(t testing.TB) limiter.Request {
	t.Helper()
	reqs := f.requests()
	if len(reqs) == 0 {
		t.Fatal("strategy was not called")
	}
	return reqs[len(reqs)-1]
}

// decide returns an AllowFn that always answers d (echoing the request's
// limit and window) or err.
func decide(d limiter.Decision, err error) func(context.Context, limiter.Request, time.Time) (limiter.Decision, error) {
	return func(_ context.Context, req limiter.Request, _ time.Time) (limiter.Decision, error) {
		if err != nil {
			return limiter.Decision{}, err
		}
		out := d // d is shared by concurrent calls
		out.Limit, out.Window = req.Limit, req.Window
		return out, nil
	}
}

// harness is a Server behind a real gRPC listener on 127.0.0.1.
type harness struct {
	srv    *authz.Server
	client authv3.AuthorizationClient
	reg    *prometheus.Registry
	logs   *testutil.Buffer
}

// baseConfig is the configuration most tests start from: 100 requests per
// hour keyed on the source address, headers on, failing open.
func baseConfig() authz.Config {
	return authz.Config{Limit: 100, Window: time.Hour, Headers: true}
}

// newHarness starts a Server for s and cfg (its Logger and Registerer are
// replaced by the harness's) on a real gRPC server, and connects a client.
func newHarness(t testing.TB, s limiter.Strategy, cfg authz.Config) *harness {
	t.Helper()
	h := &harness{reg: prometheus.NewPedanticRegistry(), logs: &testutil.Buffer{}}
	cfg.Logger = slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.Registerer = h.reg
	srv, err := authz.NewServer(s, cfg)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	h.srv = srv

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	g := grpc.NewServer()
	srv.Register(g)
	served := make(chan error, 1)
	go func() { served <- g.Serve(lis) }()
	t.Cleanup(func() {
		g.Stop()
		if err := <-served; err != nil {
			t.Errorf("grpc Serve: %v", err)
		}
	})

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	h.client = authv3.NewAuthorizationClient(conn)
	return h
}

// check calls Check over gRPC and fails the test on an RPC error. It
// returns the response without its dynamic metadata, which the tests of
// metadata_test.go read through checkFull.
func (h *harness) check(t testing.TB, req *authv3.CheckRequest) *authv3.CheckResponse {
	t.Helper()
	return noMetadata(h.checkFull(t, req))
}

// checkFull is check with the response whole.
func (h *harness) checkFull(t testing.TB, req *authv3.CheckRequest) *authv3.CheckResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := h.client.Check(ctx, req)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return resp
}

// noMetadata removes resp's dynamic metadata and returns it.
func noMetadata(resp *authv3.CheckResponse) *authv3.CheckResponse {
	resp.DynamicMetadata = nil
	return resp
}

// expectMetric checks that h.metric(t, name, labels...) is want.
func (h *harness) expectMetric(t testing.TB, want float64, name string, labels ...string) {
	t.Helper()
	if v := h.metric(t, name, labels...); v != want {
		t.Errorf("%s%q = %v, want %v", name, labels, v, want)
	}
}

// metric returns the sum of the values of the counters (or the sample
// counts of the histograms) name whose labels include labels ("k", "v",
// ...); -1 when there is none.
func (h *harness) metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	sum, found := 0.0, false
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !hasLabels(m, labels) {
				continue
			}
			found = true
			if hist := m.GetHistogram(); hist != nil {
				sum += float64(hist.GetSampleCount())
			} else {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	if !found {
		return -1
	}
	return sum
}

func hasLabels(m *dto.Metric, kv []string) bool {
	for i := 0; i+1 < len(kv); i += 2 {
		found := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == kv[i] && lp.GetValue() == kv[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// Request builders.

func socket(addr string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       addr,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// checkReq builds a CheckRequest from a source address (nil for none),
// request headers and context extensions.
func checkReq(src *corev3.Address, headers, ext map[string]string) *authv3.CheckRequest {
	attrs := &authv3.AttributeContext{ContextExtensions: ext}
	if src != nil {
		attrs.Source = &authv3.AttributeContext_Peer{Address: src}
	}
	if headers != nil {
		attrs.Request = &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Headers: headers}}
	}
	return &authv3.CheckRequest{Attributes: attrs}
}

// fromIP is a request from 203.0.113.7:41000 with the given extensions.
func fromIP(ext map[string]string) *authv3.CheckRequest {
	return checkReq(socket("203.0.113.7", 41000), map[string]string{":path": "/"}, ext)
}

// Response builders: what a client should see.

func hv(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: k, Value: v},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

func okResp(headers ...*corev3.HeaderValueOption) *authv3.CheckResponse {
	resp := &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.OK)}}
	if len(headers) > 0 {
		resp.HttpResponse = &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{ResponseHeadersToAdd: headers}}
	}
	return resp
}

func okHeaders(limit, remaining, reset, window int, policy string) []*corev3.HeaderValueOption {
	return []*corev3.HeaderValueOption{
		hv("X-RateLimit-Limit", fmt.Sprint(limit)),
		hv("X-RateLimit-Remaining", fmt.Sprint(remaining)),
		hv("X-RateLimit-Reset", fmt.Sprint(reset)),
		hv("RateLimit-Policy", fmt.Sprintf(`"%s";q=%d;w=%d`, policy, limit, window)),
		hv("RateLimit", fmt.Sprintf(`"%s";r=%d;t=%d`, policy, remaining, reset)),
	}
}

func deniedResp(limit, n, window int, policy string) *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(codes.ResourceExhausted), Message: "rate limit exceeded"},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status: &typev3.HttpStatus{Code: typev3.StatusCode_TooManyRequests},
			Headers: []*corev3.HeaderValueOption{
				hv("Retry-After", fmt.Sprint(n)),
				hv("Content-Type", "text/plain"),
				hv("X-RateLimit-Limit", fmt.Sprint(limit)),
				hv("X-RateLimit-Remaining", "0"),
				hv("X-RateLimit-Reset", fmt.Sprint(n)),
				hv("RateLimit-Policy", fmt.Sprintf(`"%s";q=%d;w=%d`, policy, limit, window)),
				hv("RateLimit", fmt.Sprintf(`"%s";r=0;t=%d`, policy, n)),
			},
			Body: fmt.Sprintf("Rate limit exceeded. Try again in %d seconds", n),
		}},
	}
}

func failClosedResp() *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(codes.Unavailable), Message: "rate limiter unavailable"},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
			Headers: []*corev3.HeaderValueOption{hv("Content-Type", "text/plain")},
			Body:    "Rate limiter unavailable",
		}},
	}
}

var errStore = fmt.Errorf("memcache get: %w", limiter.ErrStoreUnavailable)

func TestCheckResponses(t *testing.T) {
	tests := []struct {
		name     string
		headers  bool
		failMode authz.FailMode
		ext      map[string]string
		decision limiter.Decision
		err      error
		panics   bool
		want     *authv3.CheckResponse
		result   string // floodgate_decisions_total label
	}{
		{
			name:     "allowed with headers",
			headers:  true,
			decision: limiter.Decision{Allowed: true, Remaining: 41},
			want:     okResp(okHeaders(100, 41, 0, 3600, "default")...),
			result:   "allowed",
		},
		{
			name:     "allowed with headers, last of the quota",
			headers:  true,
			decision: limiter.Decision{Allowed: true, Remaining: 0, RetryAfter: 2500 * time.Millisecond},
			want:     okResp(okHeaders(100, 0, 3, 3600, "default")...),
			result:   "allowed",
		},
		{
			name:     "allowed with headers, scope and overrides in policy",
			headers:  true,
			ext:      map[string]string{"floodgate.scope": "login", "floodgate.limit": "5", "floodgate.window": "1m"},
			decision: limiter.Decision{Allowed: true, Remaining: 4},
			want:     okResp(okHeaders(5, 4, 0, 60, "login")...),
			result:   "allowed",
		},
		{
			name:     "allowed with headers, route limit in the default scope",
			headers:  true,
			ext:      map[string]string{"floodgate.limit": "7"},
			decision: limiter.Decision{Allowed: true, Remaining: 6},
			want:     okResp(okHeaders(7, 6, 0, 3600, "default")...),
			result:   "allowed",
		},
		{
			name:     "allowed with headers off",
			decision: limiter.Decision{Allowed: true, Remaining: 41},
			want:     okResp(),
			result:   "allowed",
		},
		{
			name:     "denied",
			headers:  true,
			decision: limiter.Decision{RetryAfter: 1500 * time.Millisecond},
			want:     deniedResp(100, 2, 3600, "default"),
			result:   "denied",
		},
		{
			name:     "denied with headers off still carries headers",
			decision: limiter.Decision{RetryAfter: 17 * time.Second},
			want:     deniedResp(100, 17, 3600, "default"),
			result:   "denied",
		},
		{
			name:     "denied with zero RetryAfter says 1 second",
			decision: limiter.Decision{},
			want:     deniedResp(100, 1, 3600, "default"),
			result:   "denied",
		},
		{
			name:     "denied with a route window in the default scope",
			ext:      map[string]string{"floodgate.window": "2m"},
			decision: limiter.Decision{RetryAfter: 61 * time.Second},
			want:     deniedResp(100, 61, 120, "default"),
			result:   "denied",
		},
		{
			name:     "denied under a scope",
			ext:      map[string]string{"floodgate.scope": "api.v2", "floodgate.limit": "10", "floodgate.window": "30s"},
			decision: limiter.Decision{RetryAfter: 29 * time.Second},
			want:     deniedResp(10, 29, 30, "api.v2"),
			result:   "denied",
		},
		{
			name:    "fail open on store error",
			headers: true,
			err:     errStore,
			want:    okResp(),
			result:  "fail_open",
		},
		{
			name:     "fail open on any strategy error",
			headers:  true,
			failMode: authz.FailOpen,
			err:      errors.New("boom"),
			want:     okResp(),
			result:   "fail_open",
		},
		{
			name:     "fail closed on store error",
			headers:  true,
			failMode: authz.FailClosed,
			err:      errStore,
			want:     failClosedResp(),
			result:   "fail_closed",
		},
		{
			name:     "fail closed on deadline",
			failMode: authz.FailClosed,
			err:      context.DeadlineExceeded,
			want:     failClosedResp(),
			result:   "fail_closed",
		},
		{
			name:     "panic fails closed",
			failMode: authz.FailClosed,
			panics:   true,
			want:     failClosedResp(),
			result:   "fail_closed",
		},
		{
			name:   "panic fails open",
			panics: true,
			want:   okResp(),
			result: "fail_open",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fs := &fakeStrategy{AllowFn: decide(tt.decision, tt.err)}
			if tt.panics {
				fs.AllowFn = func(context.Context, limiter.Request, time.Time) (limiter.Decision, error) {
					panic("strategy bug")
				}
			}
			cfg := baseConfig()
			cfg.Headers, cfg.FailMode = tt.headers, tt.failMode
			h := newHarness(t, fs, cfg)

			got := h.check(t, fromIP(tt.ext))
			if !proto.Equal(got, tt.want) {
				t.Errorf("Check response:\n got %v\nwant %v", got, tt.want)
			}
			h.expectMetric(t, 1, "floodgate_decisions_total", "result", tt.result)
			h.expectMetric(t, 1, "floodgate_check_duration_seconds")
			wantPanics := 0.0
			if tt.panics {
				wantPanics = 1
				if n := h.logs.CountLines(`msg="check panicked"`, "strategy bug"); n != 1 {
					t.Errorf("panic logged %d times, want 1; logs:\n%s", n, h.logs)
				}
			}
			h.expectMetric(t, wantPanics, "floodgate_check_panics_total")
			if tt.err != nil {
				if n := h.logs.CountLines("rate limiter failed", "error="); n != 1 {
					t.Errorf("failure logged %d times, want 1; logs:\n%s", n, h.logs)
				}
			}
		})
	}
}

func TestIdentity(t *testing.T) {
	const unit = "k\x00\x01\t\r\n\x7f é ~~~~~" // 16 bytes of valid UTF-8
	big := strings.Repeat(unit, 64<<10/len(unit))
	pipe := &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/run/envoy.sock"}}}
	internal := &corev3.Address{Address: &corev3.Address_EnvoyInternalAddress{EnvoyInternalAddress: &corev3.EnvoyInternalAddress{
		AddressNameSpecifier: &corev3.EnvoyInternalAddress_ServerListenerName{ServerListenerName: "l"},
	}}}
	src := socket("192.0.2.10", 5000)
	xff := func(v string) map[string]string { return map[string]string{"x-forwarded-for": v} }
	rawHeaders := func(hs ...*corev3.HeaderValue) *authv3.CheckRequest {
		r := checkReq(src, nil, nil)
		r.Attributes.Request = &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			HeaderMap: &corev3.HeaderMap{Headers: hs},
		}}
		return r
	}
	tests := []struct {
		name string
		key  string
		hops int
		req  *authv3.CheckRequest
		want string
	}{
		{"source IPv4", "source", 0, checkReq(socket("203.0.113.7", 443), nil, nil), "ip:203.0.113.7"},
		{"source IPv6", "source", 0, checkReq(socket("2001:db8::1", 443), nil, nil), "ip:2001:db8::1"},
		{"source IPv6 not canonical", "source", 0, checkReq(socket("2001:0DB8:0:0:0:0:0:1", 443), nil, nil), "ip:2001:db8::1"},
		{"source IPv4-mapped IPv6", "source", 0, checkReq(socket("::ffff:203.0.113.7", 443), nil, nil), "ip:203.0.113.7"},
		{"source with port in the address", "source", 0, checkReq(socket("203.0.113.7:8080", 0), nil, nil), "ip:203.0.113.7"},
		{"source IPv6 with port in the address", "source", 0, checkReq(socket("[2001:db8::1]:8080", 0), nil, nil), "ip:2001:db8::1"},
		{"source with zone", "source", 0, checkReq(socket("fe80::1%eth0", 1), nil, nil), "ip:fe80::1"},
		{"source host name", "source", 0, checkReq(socket("example.com", 1), nil, nil), authz.FallbackIdentity},
		{"source empty address", "source", 0, checkReq(socket("", 1), nil, nil), authz.FallbackIdentity},
		{"source pipe", "source", 0, checkReq(pipe, nil, nil), authz.FallbackIdentity},
		{"source envoy internal address", "source", 0, checkReq(internal, nil, nil), authz.FallbackIdentity},
		{"no source", "source", 0, checkReq(nil, nil, nil), authz.FallbackIdentity},
		{"no attributes", "source", 0, &authv3.CheckRequest{}, authz.FallbackIdentity},

		{"header present", "header:X-API-Key", 0, checkReq(src, map[string]string{"x-api-key": "abc"}, nil), "header:x-api-key:abc"},
		{"header absent falls back to source", "header:x-api-key", 0, checkReq(src, map[string]string{"x-other": "abc"}, nil), "ip:192.0.2.10"},
		{"header empty falls back to source", "header:x-api-key", 0, checkReq(src, map[string]string{"x-api-key": ""}, nil), "ip:192.0.2.10"},
		{"header absent, no source", "header:x-api-key", 0, checkReq(nil, map[string]string{}, nil), authz.FallbackIdentity},
		{"header 64 KB with control characters", "header:x-api-key", 0, checkReq(src, map[string]string{"x-api-key": big}, nil), "header:x-api-key:" + big},
		{"pseudo-header", "header::authority", 0, checkReq(src, map[string]string{":authority": "api.example.com"}, nil), "header::authority:api.example.com"},
		{"header value looking like an IP stays a header", "header:x-real-ip", 0, checkReq(src, map[string]string{"x-real-ip": "192.0.2.10"}, nil), "header:x-real-ip:192.0.2.10"},
		{"raw header_map, binary value", "header:x-api-key", 0, rawHeaders(&corev3.HeaderValue{Key: "x-api-key", RawValue: []byte{0xff, 0x00, 0xfe}}), "header:x-api-key:\xff\x00\xfe"},
		{"raw header_map, repeated header joined", "header:x-api-key", 0, rawHeaders(
			&corev3.HeaderValue{Key: "x-api-key", RawValue: []byte("a")},
			&corev3.HeaderValue{Key: "x-other", RawValue: []byte("z")},
			&corev3.HeaderValue{Key: "x-api-key", Value: "b"},
		), "header:x-api-key:a"},
		{"raw header_map, absent", "header:x-api-key", 0, rawHeaders(), "ip:192.0.2.10"},

		{"xff hops 0", "xff", 0, checkReq(src, xff("198.51.100.1, 203.0.113.9"), nil), "ip:203.0.113.9"},
		{"xff hops 1", "xff", 1, checkReq(src, xff("198.51.100.1, 203.0.113.9"), nil), "ip:198.51.100.1"},
		{"xff hops 2", "xff", 2, checkReq(src, xff("192.0.2.1,198.51.100.1 ,  203.0.113.9"), nil), "ip:192.0.2.1"},
		{"xff hops 2, too few entries", "xff", 2, checkReq(src, xff("198.51.100.1, 203.0.113.9"), nil), "ip:192.0.2.10"},
		{"xff too few entries, no source", "xff", 1, checkReq(nil, xff("203.0.113.9"), nil), authz.FallbackIdentity},
		{"xff absent", "xff", 0, checkReq(src, map[string]string{}, nil), "ip:192.0.2.10"},
		{"xff empty", "xff", 0, checkReq(src, xff(""), nil), "ip:192.0.2.10"},
		{"xff chosen entry empty", "xff", 1, checkReq(src, xff("198.51.100.1, , 203.0.113.9"), nil), "ip:192.0.2.10"},
		{"xff chosen entry not an IP", "xff", 0, checkReq(src, xff("198.51.100.1, unknown"), nil), "ip:192.0.2.10"},
		{"xff entries normalised", "xff", 1, checkReq(src, xff("[::ffff:198.51.100.1]:999, 203.0.113.9"), nil), "ip:198.51.100.1"},
		{"xff IPv6", "xff", 0, checkReq(src, xff("2001:DB8::2"), nil), "ip:2001:db8::2"},
		{"xff 64 KB of commas", "xff", 3, checkReq(src, xff(strings.Repeat(",", 64<<10)), nil), "ip:192.0.2.10"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			key, err := authz.ParseKey(tt.key, tt.hops)
			if err != nil {
				t.Fatalf("ParseKey(%q, %d): %v", tt.key, tt.hops, err)
			}
			if got := key.Identity(tt.req); got != tt.want {
				t.Errorf("KeySpec.Identity = %.80q, want %.80q", got, tt.want)
			}
			if got := requestorOverGRPC(t, key, tt.req); got != tt.want {
				t.Errorf("Requestor over gRPC = %.80q, want %.80q", got, tt.want)
			}
		})
	}
}

// requestorOverGRPC sends req to a harness keyed on key and returns the
// requestor its strategy was asked about.
func requestorOverGRPC(t *testing.T, key authz.KeySpec, req *authv3.CheckRequest) string {
	t.Helper()
	fs := &fakeStrategy{}
	cfg := baseConfig()
	cfg.Key = key
	newHarness(t, fs, cfg).check(t, req)
	return fs.last(t).Requestor
}

// TestCheckNilRequest calls Check directly: a gRPC client cannot send nil.
func TestCheckNilRequest(t *testing.T) {
	fs := &fakeStrategy{}
	srv, err := authz.NewServer(fs, baseConfig())
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Check(context.Background(), nil)
	resp = noMetadata(resp)
	if err != nil {
		t.Fatalf("Check(nil) error: %v", err)
	}
	if want := okResp(okHeaders(100, 99, 0, 3600, "default")...); !proto.Equal(resp, want) {
		t.Errorf("Check(nil) = %v, want %v", resp, want)
	}
	want := limiter.Request{Requestor: authz.FallbackIdentity, Limit: 100, Window: time.Hour}
	if got := fs.last(t); got != want {
		t.Errorf("Request = %+v, want %+v", got, want)
	}
}

func TestContextExtensions(t *testing.T) {
	const ip = "ip:203.0.113.7"
	def := limiter.Request{Requestor: ip, Limit: 100, Window: time.Hour}
	with := func(f func(*limiter.Request)) limiter.Request {
		r := def
		f(&r)
		return r
	}
	xffReq := func(ext map[string]string) *authv3.CheckRequest {
		return checkReq(socket("203.0.113.7", 1), map[string]string{"x-forwarded-for": "198.51.100.1, 10.0.0.1", "x-user": "ann"}, ext)
	}
	tests := []struct {
		name    string
		req     *authv3.CheckRequest
		want    limiter.Request
		invalid string // extension name counted and logged as invalid
	}{
		{name: "none", req: fromIP(nil), want: def},
		{name: "unrelated extension ignored", req: fromIP(map[string]string{"other": "x", "floodgate.unknown": "1"}), want: def},

		{name: "limit valid", req: fromIP(map[string]string{"floodgate.limit": "5"}), want: with(func(r *limiter.Request) { r.Limit = 5 })},
		{name: "limit 1", req: fromIP(map[string]string{"floodgate.limit": "1"}), want: with(func(r *limiter.Request) { r.Limit = 1 })},
		{name: "limit 0", req: fromIP(map[string]string{"floodgate.limit": "0"}), want: def, invalid: "floodgate.limit"},
		{name: "limit negative", req: fromIP(map[string]string{"floodgate.limit": "-3"}), want: def, invalid: "floodgate.limit"},
		{name: "limit not a number", req: fromIP(map[string]string{"floodgate.limit": "ten"}), want: def, invalid: "floodgate.limit"},
		{name: "limit with space", req: fromIP(map[string]string{"floodgate.limit": " 5"}), want: def, invalid: "floodgate.limit"},
		{name: "limit overflow", req: fromIP(map[string]string{"floodgate.limit": "99999999999999999999"}), want: def, invalid: "floodgate.limit"},
		{name: "limit empty", req: fromIP(map[string]string{"floodgate.limit": ""}), want: def, invalid: "floodgate.limit"},

		{name: "window valid", req: fromIP(map[string]string{"floodgate.window": "90s"}), want: with(func(r *limiter.Request) { r.Window = 90 * time.Second })},
		{name: "window hours", req: fromIP(map[string]string{"floodgate.window": "24h"}), want: with(func(r *limiter.Request) { r.Window = 24 * time.Hour })},
		{name: "window fractional", req: fromIP(map[string]string{"floodgate.window": "1.5s"}), want: def, invalid: "floodgate.window"},
		{name: "window below 1s", req: fromIP(map[string]string{"floodgate.window": "500ms"}), want: def, invalid: "floodgate.window"},
		{name: "window zero", req: fromIP(map[string]string{"floodgate.window": "0s"}), want: def, invalid: "floodgate.window"},
		{name: "window negative", req: fromIP(map[string]string{"floodgate.window": "-1m"}), want: def, invalid: "floodgate.window"},
		{name: "window bare number", req: fromIP(map[string]string{"floodgate.window": "60"}), want: def, invalid: "floodgate.window"},

		{name: "key header", req: xffReq(map[string]string{"floodgate.key": "header:X-User"}), want: with(func(r *limiter.Request) { r.Requestor = "header:x-user:ann" })},
		{name: "key xff uses server hops", req: xffReq(map[string]string{"floodgate.key": "xff"}), want: with(func(r *limiter.Request) { r.Requestor = "ip:198.51.100.1" })},
		{name: "key source", req: xffReq(map[string]string{"floodgate.key": "source"}), want: def},
		{name: "key unknown form", req: xffReq(map[string]string{"floodgate.key": "cookie:session"}), want: def, invalid: "floodgate.key"},
		{name: "key empty header name", req: xffReq(map[string]string{"floodgate.key": "header:"}), want: def, invalid: "floodgate.key"},
		{name: "key bad header name", req: xffReq(map[string]string{"floodgate.key": "header:x user"}), want: def, invalid: "floodgate.key"},

		{name: "scope valid", req: fromIP(map[string]string{"floodgate.scope": "api.v1_login-2"}), want: with(func(r *limiter.Request) { r.Scope = "api.v1_login-2" })},
		{name: "scope 64 chars", req: fromIP(map[string]string{"floodgate.scope": strings.Repeat("s", 64)}), want: with(func(r *limiter.Request) { r.Scope = strings.Repeat("s", 64) })},
		{name: "scope 65 chars", req: fromIP(map[string]string{"floodgate.scope": strings.Repeat("s", 65)}), want: def, invalid: "floodgate.scope"},
		{name: "scope empty", req: fromIP(map[string]string{"floodgate.scope": ""}), want: def, invalid: "floodgate.scope"},
		{name: "scope with space", req: fromIP(map[string]string{"floodgate.scope": "my scope"}), want: def, invalid: "floodgate.scope"},
		{name: "scope with quote", req: fromIP(map[string]string{"floodgate.scope": `a"b`}), want: def, invalid: "floodgate.scope"},
		{name: "scope non-ASCII", req: fromIP(map[string]string{"floodgate.scope": "ünï"}), want: def, invalid: "floodgate.scope"},
		{name: "scope 64 KB", req: fromIP(map[string]string{"floodgate.scope": strings.Repeat("s", 64<<10)}), want: def, invalid: "floodgate.scope"},

		{
			name: "all valid together",
			req:  xffReq(map[string]string{"floodgate.limit": "7", "floodgate.window": "2m", "floodgate.key": "xff", "floodgate.scope": "search"}),
			want: limiter.Request{Scope: "search", Requestor: "ip:198.51.100.1", Limit: 7, Window: 2 * time.Minute},
		},
		{
			name:    "one invalid among valid ones",
			req:     fromIP(map[string]string{"floodgate.limit": "7", "floodgate.window": "forever", "floodgate.scope": "search"}),
			want:    with(func(r *limiter.Request) { r.Limit, r.Scope = 7, "search" }),
			invalid: "floodgate.window",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fs := &fakeStrategy{}
			cfg := baseConfig()
			cfg.Key, _ = authz.ParseKey("source", 1) // one trusted hop for "xff" overrides
			h := newHarness(t, fs, cfg)

			const calls = 3
			for range calls {
				if got := h.check(t, tt.req); got.GetStatus().GetCode() != int32(codes.OK) {
					t.Fatalf("status = %v, want OK: an override never denies", got.GetStatus())
				}
			}
			for i, got := range fs.requests() {
				if got != tt.want {
					t.Errorf("call %d: Request = %+v, want %+v", i, got, tt.want)
				}
			}
			for _, name := range []string{"floodgate.limit", "floodgate.window", "floodgate.key", "floodgate.scope"} {
				want, wantLogs := 0.0, 0
				if name == tt.invalid {
					want, wantLogs = calls, 1
				}
				h.expectMetric(t, want, "floodgate_invalid_overrides_total", "name", name)
				if n := h.logs.CountLines("invalid context extension", "name="+name); n != wantLogs {
					t.Errorf("invalid %s logged %d times, want %d; logs:\n%s", name, n, wantLogs, h.logs)
				}
			}
		})
	}
}

// TestInvalidOverridesLoggedOnce checks that invalid values are logged once
// per distinct value, that the remembered set is bounded, and that values
// beyond it are still counted and logged only now and then.
func TestInvalidOverridesLoggedOnce(t *testing.T) {
	fs := &fakeStrategy{}
	h := newHarness(t, fs, baseConfig())
	ctx := context.Background()
	const distinct = 1100 // more than the 1024 remembered
	for round := range 2 {
		for i := range distinct {
			req := fromIP(map[string]string{"floodgate.scope": fmt.Sprintf("bad scope %d", i)})
			var resp *authv3.CheckResponse
			if i%100 == 0 { // a sample goes over gRPC; the rest directly, for speed
				resp = h.check(t, req)
			} else {
				var err error
				if resp, err = h.srv.Check(ctx, req); err != nil {
					t.Fatal(err)
				}
			}
			if resp.GetStatus().GetCode() != int32(codes.OK) {
				t.Fatalf("round %d value %d: status %v, want OK", round, i, resp.GetStatus())
			}
		}
	}
	h.expectMetric(t, 2*distinct, "floodgate_invalid_overrides_total", "name", "floodgate.scope")
	// 1024 values logged when first seen, plus at most one line for the
	// values beyond the remembered set (logged at most once per 10s).
	if n := h.logs.CountLines("invalid context extension"); n != 1024+1 {
		t.Errorf("logged %d lines, want %d", n, 1024+1)
	}
	if n := h.logs.CountLines("invalid context extension", `"bad scope 7"`); n != 1 {
		t.Errorf(`"bad scope 7" logged %d times, want 1`, n)
	}
	for _, r := range fs.requests() {
		if r.Scope != "" {
			t.Fatalf("Request scope %q, want the default", r.Scope)
		}
	}
}

func TestFailureLogRateLimited(t *testing.T) {
	fs := &fakeStrategy{AllowFn: decide(limiter.Decision{}, errStore)}
	h := newHarness(t, fs, baseConfig())
	for range 20 {
		if got := h.check(t, fromIP(nil)); !proto.Equal(got, okResp()) {
			t.Fatalf("Check = %v, want fail-open OK", got)
		}
	}
	h.expectMetric(t, 20, "floodgate_decisions_total", "result", "fail_open")
	if n := h.logs.CountLines("rate limiter failed", "store_unavailable=true", "counter store unavailable"); n != 1 {
		t.Errorf("failure logged %d times, want 1; logs:\n%s", n, h.logs)
	}
}

// TestExpiredDeadline calls Check directly with an expired context, as a gRPC
// handler sees it when Envoy's grpc-timeout has passed: it still answers, by
// the fail mode, without asking the strategy.
func TestExpiredDeadline(t *testing.T) {
	for _, tt := range []struct {
		mode authz.FailMode
		want *authv3.CheckResponse
	}{
		{authz.FailOpen, okResp()},
		{authz.FailClosed, failClosedResp()},
	} {
		t.Run(tt.mode.String(), func(t *testing.T) {
			fs := &fakeStrategy{}
			cfg := baseConfig()
			cfg.FailMode = tt.mode
			srv, err := authz.NewServer(fs, cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Millisecond))
			defer cancel()
			resp, err := srv.Check(ctx, fromIP(nil))
			if err != nil {
				t.Fatalf("Check error: %v", err)
			}
			resp = noMetadata(resp)
			if !proto.Equal(resp, tt.want) {
				t.Errorf("Check = %v, want %v", resp, tt.want)
			}
			if n := len(fs.requests()); n != 0 {
				t.Errorf("strategy called %d times, want 0", n)
			}
		})
	}
}

func TestNowPassedToStrategy(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	fs := &fakeStrategy{}
	cfg := baseConfig()
	cfg.Now = func() time.Time { return t0 }
	h := newHarness(t, fs, cfg)
	h.check(t, fromIP(nil))
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if len(fs.nows) != 1 || !fs.nows[0].Equal(t0) {
		t.Errorf("strategy now = %v, want [%v]", fs.nows, t0)
	}
}

func TestMetricsPreinitialised(t *testing.T) {
	h := newHarness(t, &fakeStrategy{}, baseConfig())
	for _, r := range []string{"allowed", "denied", "fail_open", "fail_closed"} {
		h.expectMetric(t, 0, "floodgate_decisions_total", "result", r)
	}
	for _, n := range []string{"floodgate.limit", "floodgate.window", "floodgate.key", "floodgate.scope"} {
		h.expectMetric(t, 0, "floodgate_invalid_overrides_total", "name", n)
	}
	h.expectMetric(t, 0, "floodgate_check_panics_total")
	h.expectMetric(t, 0, "floodgate_check_duration_seconds")
}

func TestNewServerErrors(t *testing.T) {
	ok := baseConfig()
	tests := []struct {
		name string
		s    limiter.Strategy
		cfg  func(*authz.Config)
		want string
	}{
		{"nil strategy", nil, func(*authz.Config) {}, "nil strategy"},
		{"zero limit", &fakeStrategy{}, func(c *authz.Config) { c.Limit = 0 }, "limit 0"},
		{"zero window", &fakeStrategy{}, func(c *authz.Config) { c.Window = 0 }, "window 0s"},
		{"fractional window", &fakeStrategy{}, func(c *authz.Config) { c.Window = 1500 * time.Millisecond }, "window 1.5s"},
		{"invalid fail mode", &fakeStrategy{}, func(c *authz.Config) { c.FailMode = 7 }, "fail mode FailMode(7)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok
			tt.cfg(&cfg)
			_, err := authz.NewServer(tt.s, cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewServer error = %v, want one containing %q", err, tt.want)
			}
		})
	}
	t.Run("metrics registered twice", func(t *testing.T) {
		cfg := ok
		cfg.Registerer = prometheus.NewRegistry()
		if _, err := authz.NewServer(&fakeStrategy{}, cfg); err != nil {
			t.Fatal(err)
		}
		if _, err := authz.NewServer(&fakeStrategy{}, cfg); err == nil || !strings.Contains(err.Error(), "register metrics") {
			t.Errorf("second NewServer on one registry: error %v, want a registration error", err)
		}
	})
}

func TestParseFailMode(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    authz.FailMode
		wantErr bool
	}{
		{"open", authz.FailOpen, false},
		{"closed", authz.FailClosed, false},
		{"", 0, true},
		{"Open", 0, true},
		{"allow", 0, true},
	} {
		t.Run(tt.in, func(t *testing.T) {
			got, err := authz.ParseFailMode(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("ParseFailMode(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
			if err == nil && got.String() != tt.in {
				t.Errorf("String() = %q, want %q", got.String(), tt.in)
			}
		})
	}
}

func TestFailModeStringInvalid(t *testing.T) {
	for m, want := range map[authz.FailMode]string{-1: "FailMode(-1)", 2: "FailMode(2)"} {
		if got := m.String(); got != want {
			t.Errorf("FailMode(%d).String() = %q, want %q", int(m), got, want)
		}
	}
}

func TestParseKey(t *testing.T) {
	for _, tt := range []struct {
		in      string
		hops    int
		want    string // String() of the result
		wantErr string
	}{
		{in: "source", want: "source"},
		{in: "xff", hops: 2, want: "xff"},
		{in: "header:x-api-key", want: "header:x-api-key"},
		{in: "header:X-API-Key", want: "header:x-api-key"},
		{in: "header::authority", want: "header::authority"},
		{in: "", wantErr: "unknown form"},
		{in: "Source", wantErr: "unknown form"},
		{in: "ip", wantErr: "unknown form"},
		{in: "xff:1", wantErr: "unknown form"},
		{in: "header", wantErr: "unknown form"},
		{in: "header:", wantErr: "empty header name"},
		{in: "header::", wantErr: "empty header name"},
		{in: "header:x api", wantErr: "invalid character"},
		{in: "header:x:y", wantErr: "invalid character"},
		{in: "source", hops: -1, wantErr: "must not be negative"},
		{in: "xff", hops: -1, wantErr: "must not be negative"},
	} {
		t.Run(fmt.Sprintf("%s/%d", tt.in, tt.hops), func(t *testing.T) {
			k, err := authz.ParseKey(tt.in, tt.hops)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("ParseKey(%q, %d) error = %v, want one containing %q", tt.in, tt.hops, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseKey(%q, %d): %v", tt.in, tt.hops, err)
			}
			if k.String() != tt.want || k.TrustedHops() != tt.hops {
				t.Errorf("ParseKey(%q, %d) = %s with %d hops, want %s with %d", tt.in, tt.hops, k, k.TrustedHops(), tt.want, tt.hops)
			}
		})
	}
	var zero authz.KeySpec
	if zero.String() != "source" {
		t.Errorf("zero KeySpec = %s, want source", zero)
	}
}

// TestConcurrentChecks hammers one Server over gRPC with overrides, to let the
// race detector look at the override cache and metrics.
func TestConcurrentChecks(t *testing.T) {
	fs := &fakeStrategy{}
	h := newHarness(t, fs, baseConfig())
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				ext := map[string]string{"floodgate.scope": fmt.Sprintf("s%d", i%5), "floodgate.limit": fmt.Sprint(g + 1)}
				resp, err := h.client.Check(context.Background(), fromIP(ext))
				if err != nil || resp.GetStatus().GetCode() != 0 {
					t.Errorf("Check = %v, %v", resp, err)
					return
				}
			}
		})
	}
	wg.Wait()
	h.expectMetric(t, 400, "floodgate_decisions_total", "result", "allowed")
}

func TestRetryAfterSeconds(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		d    time.Duration
		want int64
	}{
		{-time.Second, 1}, // a wait already over: the client is told 1s, never 0
		{0, 1},
		{time.Millisecond, 1},
		{time.Second, 1},
		{time.Second + time.Millisecond, 2},
		{time.Hour, 3600},
	} {
		if got := authz.RetryAfterSeconds(tt.d); got != tt.want {
			t.Errorf("RetryAfterSeconds(%v) = %d, want %d", tt.d, got, tt.want)
		}
	}
}
