package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
)

// CheckOptions says how Check drives an Authorization server, and RLS a
// rate limit service. Target is required; every other zero value is usable.
type CheckOptions struct {
	// Target is the server's address, host:port.
	Target string
	// Conns is the number of gRPC connections the calls are spread over;
	// zero means 4.
	Conns int
	// Concurrency is the number of calls in flight at all times (each
	// worker sends its next call when the previous one returns); zero
	// means 64.
	Concurrency int
	// Duration bounds the run in time and Requests in calls; the run stops
	// at whichever comes first. With both zero the run sends one call.
	Duration time.Duration
	Requests int64
	// Clients is the number of distinct requestors: call i comes from the
	// source address ClientAddr(i % Clients) (for RLS, the value of its
	// remote_address descriptor). Zero or one means a single hot client.
	Clients int
	// Timeout is the deadline of each call, sent as grpc-timeout as Envoy
	// sends its ext_authz and ratelimit timeouts; zero means 250ms
	// (envoy/front-proxy.yaml).
	Timeout time.Duration
	// Domain is the domain of RLS's RateLimitRequests; "" means RLSDomain.
	// Check ignores it.
	Domain string
}

// withDefaults returns o with its zero values replaced by the defaults.
func (o CheckOptions) withDefaults() CheckOptions {
	if o.Conns <= 0 {
		o.Conns = 4
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 64
	}
	if o.Timeout <= 0 {
		o.Timeout = 250 * time.Millisecond
	}
	if o.Requests <= 0 && o.Duration <= 0 {
		o.Requests = 1
	}
	if o.Requests > 0 {
		o.Concurrency = int(min(int64(o.Concurrency), o.Requests))
	}
	o.Clients = max(o.Clients, 1)
	if o.Domain == "" {
		o.Domain = RLSDomain
	}
	return o
}

// CheckResult is what one Check or RLS run measured.
type CheckResult struct {
	// Calls that returned a response, by its answer: OK (allowed) or not
	// (denied). Errors are calls that failed at the gRPC level.
	OK, Denied, Errors int64
	// FirstError is the first gRPC error seen, nil when there was none.
	FirstError error
	// Elapsed is the wall time from the first call's start to the last
	// call's end.
	Elapsed time.Duration
	// Latency holds the latency of every call that returned a response.
	Latency Histogram
}

// Calls returns the number of calls that returned a response.
func (r *CheckResult) Calls() int64 { return r.OK + r.Denied }

// Rate returns the calls that returned a response per second.
func (r *CheckResult) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Calls()) / r.Elapsed.Seconds()
}

// merge adds a worker's counts to r.
func (r *CheckResult) merge(w *CheckResult) {
	r.OK += w.OK
	r.Denied += w.Denied
	r.Errors += w.Errors
	if r.FirstError == nil {
		r.FirstError = w.FirstError
	}
	r.Latency.Merge(&w.Latency)
}

// ClientAddr returns the IPv4 source address of client c (0 to 2^24-1):
// 10.x.y.z, with c in the last three bytes.
func ClientAddr(c int) string {
	return netip.AddrFrom4([4]byte{10, byte(c >> 16), byte(c >> 8), byte(c)}).String()
}

// Request returns the CheckRequest the load generator sends, from client
// address src: what Envoy sends for `curl http://api.example.com/v1/items`
// through envoy/front-proxy.yaml's default route, without context
// extensions, so floodgate applies its own --key, --limit and --window.
func Request(src string) *authv3.CheckRequest {
	sock := func(addr string, port uint32) *corev3.Address {
		return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: addr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
		}}}
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: sock(src, 41234)},
		Destination: &authv3.AttributeContext_Peer{Address: sock("127.0.0.1", 10000)},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id:     "6478245398745121234",
			Method: "GET",
			Path:   "/v1/items",
			Host:   "api.example.com",
			Scheme: "http",
			Headers: map[string]string{
				":authority":        "api.example.com",
				":method":           "GET",
				":path":             "/v1/items",
				":scheme":           "http",
				"user-agent":        "curl/8.5.0",
				"accept":            "*/*",
				"x-forwarded-for":   src,
				"x-forwarded-proto": "http",
				"x-request-id":      "0f8c4d2e-6f1a-4b8e-9a51-3c2d7e9b1a40",
			},
			Protocol: "HTTP/1.1",
		}},
	}}
}

// setSource points req, built by Request, at client address src.
func setSource(req *authv3.CheckRequest, src string) {
	a := req.GetAttributes()
	a.GetSource().GetAddress().GetSocketAddress().Address = src
	a.GetRequest().GetHttp().GetHeaders()["x-forwarded-for"] = src
}

// caller sends call number i of a load (from client i % Clients) and
// reports whether the answer allowed it. Each worker has its own caller, so
// a caller may reuse its request: gRPC marshals it before the call returns.
type caller func(ctx context.Context, i int64, opts ...grpc.CallOption) (allowed bool, err error)

// newCaller returns a caller that sends its calls on cc.
type newCaller func(cc *grpc.ClientConn) caller

// checkCaller is the newCaller of Check.
func checkCaller(o CheckOptions) newCaller {
	return func(cc *grpc.ClientConn) caller {
		client := authv3.NewAuthorizationClient(cc)
		req := Request(ClientAddr(0))
		return func(ctx context.Context, i int64, opts ...grpc.CallOption) (bool, error) {
			if o.Clients > 1 {
				setSource(req, ClientAddr(int(i%int64(o.Clients))))
			}
			resp, err := client.Check(ctx, req, opts...)
			return err == nil && resp.GetStatus().GetCode() == int32(codes.OK), err
		}
	}
}

// Check drives the Authorization server at o.Target with o.Concurrency
// calls in flight over o.Conns connections until o.Duration has passed or
// o.Requests calls were sent, and returns what it measured. It fails only
// when it cannot set up its connections or when ctx ends; calls that fail
// are counted in Errors.
func Check(ctx context.Context, o CheckOptions) (*CheckResult, error) {
	o = o.withDefaults()
	return drive(ctx, "check load", o, checkCaller(o))
}

// drive runs a load of o's shape, each call sent by a caller from mk, and
// returns what it measured; name starts its errors.
func drive(ctx context.Context, name string, o CheckOptions, mk newCaller) (*CheckResult, error) {
	if o.Target == "" {
		return nil, errors.New(name + ": no target")
	}
	ccs, err := connect(ctx, name, o, mk)
	defer func() {
		for _, cc := range ccs {
			cc.Close()
		}
	}()
	if err != nil {
		return nil, err
	}
	var (
		next atomic.Int64 // the number of the next call
		stop atomic.Bool
		mu   sync.Mutex
		res  = &CheckResult{}
		wg   sync.WaitGroup
	)
	start := time.Now()
	if o.Duration > 0 {
		t := time.AfterFunc(o.Duration, func() { stop.Store(true) })
		defer t.Stop()
	}
	for w := range o.Concurrency {
		call := mk(ccs[w%len(ccs)])
		wg.Go(func() {
			var mine CheckResult
			for !stop.Load() && ctx.Err() == nil {
				i := next.Add(1) - 1
				if o.Requests > 0 && i >= o.Requests {
					break
				}
				mine.record(ctx, call, i, o.Timeout)
			}
			mu.Lock()
			defer mu.Unlock()
			res.merge(&mine)
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("%s: %w", name, err)
	}
	return res, nil
}

// record sends call i with deadline timeout and counts its outcome in r.
func (r *CheckResult) record(ctx context.Context, call caller, i int64, timeout time.Duration) {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t0 := time.Now()
	allowed, err := call(cctx, i)
	d := time.Since(t0)
	switch {
	case err != nil:
		r.Errors++
		if r.FirstError == nil {
			r.FirstError = err
		}
	case allowed:
		r.OK++
		r.Latency.Record(d)
	default:
		r.Denied++
		r.Latency.Record(d)
	}
}

// connect opens o.Conns connections to o.Target and sends one call on
// each, so that every connection is up before the clock starts. It returns
// the connections it opened, for the caller to close, even on error.
func connect(ctx context.Context, name string, o CheckOptions, mk newCaller) ([]*grpc.ClientConn, error) {
	ccs := make([]*grpc.ClientConn, 0, o.Conns)
	for range o.Conns {
		// Each ClientConn is one HTTP/2 connection to one address.
		cc, err := grpc.NewClient(o.Target,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDisableServiceConfig(),
		)
		if err != nil {
			return ccs, fmt.Errorf("%s: dial %s: %w", name, o.Target, err)
		}
		ccs = append(ccs, cc)
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = mk(cc)(wctx, 0, grpc.WaitForReady(true))
		cancel()
		if err != nil {
			return ccs, fmt.Errorf("%s: first call to %s: %w", name, o.Target, err)
		}
	}
	return ccs, nil
}

// Summary is one line: calls, rate, p50, p99 and the outcome counts.
func (r *CheckResult) Summary() string {
	s := strconv.FormatInt(r.Calls(), 10) + " calls, " + fmtRate(r.Rate()) + "/s, p50 " +
		fmtDur(r.Latency.Quantile(0.50)) + ", p99 " + fmtDur(r.Latency.Quantile(0.99)) +
		", " + strconv.FormatInt(r.OK, 10) + " allowed, " + strconv.FormatInt(r.Denied, 10) + " denied"
	if r.Errors > 0 {
		s += ", " + strconv.FormatInt(r.Errors, 10) + " errors (first: " + r.FirstError.Error() + ")"
	}
	return s
}
