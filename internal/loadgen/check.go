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
	"google.golang.org/protobuf/proto"
)

// CheckOptions says how Check drives an Authorization server. Target is
// required; every other zero value is usable.
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
	// source address ClientAddr(i % Clients). Zero or one means a single
	// hot client.
	Clients int
	// Timeout is the deadline of each call, sent as grpc-timeout as Envoy
	// sends its ext_authz timeout; zero means 250ms (envoy/front-proxy.yaml).
	Timeout time.Duration
}

// CheckResult is what one Check run measured.
type CheckResult struct {
	// Calls that returned a response, by its status: OK (allowed) or not
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

// Check drives the Authorization server at o.Target with o.Concurrency
// calls in flight over o.Conns connections until o.Duration has passed or
// o.Requests calls were sent, and returns what it measured. It fails only
// when it cannot set up its connections or when ctx ends; calls that fail
// are counted in Errors.
func Check(ctx context.Context, o CheckOptions) (*CheckResult, error) {
	if o.Target == "" {
		return nil, errors.New("check load: no target")
	}
	conns, concurrency, timeout := o.Conns, o.Concurrency, o.Timeout
	if conns <= 0 {
		conns = 4
	}
	if concurrency <= 0 {
		concurrency = 64
	}
	if timeout <= 0 {
		timeout = 250 * time.Millisecond
	}
	requests := o.Requests
	if requests <= 0 && o.Duration <= 0 {
		requests = 1
	}
	if requests > 0 {
		concurrency = int(min(int64(concurrency), requests))
	}
	clients := max(o.Clients, 1)

	ccs := make([]*grpc.ClientConn, conns)
	for i := range ccs {
		// Each ClientConn is one HTTP/2 connection to one address.
		cc, err := grpc.NewClient(o.Target,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDisableServiceConfig(),
		)
		if err != nil {
			return nil, fmt.Errorf("check load: dial %s: %w", o.Target, err)
		}
		defer cc.Close()
		ccs[i] = cc
	}
	// Connect every connection before the clock starts.
	for _, cc := range ccs {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := authv3.NewAuthorizationClient(cc).Check(wctx, Request(ClientAddr(0)), grpc.WaitForReady(true))
		cancel()
		if err != nil {
			return nil, fmt.Errorf("check load: first call to %s: %w", o.Target, err)
		}
	}

	var (
		next     atomic.Int64 // the number of the next call
		stop     atomic.Bool
		mu       sync.Mutex
		res      = &CheckResult{}
		wg       sync.WaitGroup
		template = Request(ClientAddr(0))
	)
	start := time.Now()
	if o.Duration > 0 {
		t := time.AfterFunc(o.Duration, func() { stop.Store(true) })
		defer t.Stop()
	}
	for w := range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := authv3.NewAuthorizationClient(ccs[w%conns])
			// The request is marshalled before Check returns, so each
			// worker can reuse one and change only its source.
			req := proto.Clone(template).(*authv3.CheckRequest)
			var (
				h                  Histogram
				ok, denied, failed int64
				firstErr           error
			)
			for !stop.Load() && ctx.Err() == nil {
				i := next.Add(1) - 1
				if requests > 0 && i >= requests {
					break
				}
				if clients > 1 {
					setSource(req, ClientAddr(int(i%int64(clients))))
				}
				cctx, cancel := context.WithTimeout(ctx, timeout)
				t0 := time.Now()
				resp, err := client.Check(cctx, req)
				d := time.Since(t0)
				cancel()
				switch {
				case err != nil:
					failed++
					if firstErr == nil {
						firstErr = err
					}
				case resp.GetStatus().GetCode() == int32(codes.OK):
					ok++
					h.Record(d)
				default:
					denied++
					h.Record(d)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			res.OK += ok
			res.Denied += denied
			res.Errors += failed
			if res.FirstError == nil {
				res.FirstError = firstErr
			}
			res.Latency.Merge(&h)
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("check load: %w", err)
	}
	return res, nil
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
