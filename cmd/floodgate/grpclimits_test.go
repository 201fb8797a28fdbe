package main

// Tests of the bounds on what a client of the gRPC port can hold: open
// connections (against the real binary), calls in flight and message size
// (a real server in process, over loopback), and the flags that set them.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/floodgate-rl/floodgate/authz"
	"github.com/floodgate-rl/floodgate/internal/grpcbound"
	"github.com/floodgate-rl/floodgate/internal/testutil"
	"github.com/floodgate-rl/floodgate/limiter"
)

// configCase is one ParseConfig case: arguments and environment, and
// either the error wanted or a check of the Config parsed.
type configCase struct {
	name string
	args []string
	env  map[string]string
	err  string             // the error wanted; "" for none
	want func(Config) error // with err "": nil if the Config is right
}

// testParseConfig runs ParseConfig on each case, in a subtest.
func testParseConfig(t *testing.T, cases []configCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig(tt.args, envOf(tt.env))
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Errorf("error = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := tt.want(c); err != nil {
				t.Error(err)
			}
		})
	}
}

// grpcLimits checks a Config's --grpc-max-conns, --grpc-max-calls and
// --grpc-max-recv-bytes.
func grpcLimits(conns, calls, recv int) func(Config) error {
	return func(c Config) error {
		if c.GRPCMaxConns != conns || c.GRPCMaxCalls != calls || c.GRPCMaxRecvBytes != recv {
			return fmt.Errorf("conns, calls, recv bytes = %d, %d, %d; want %d, %d, %d",
				c.GRPCMaxConns, c.GRPCMaxCalls, c.GRPCMaxRecvBytes, conns, calls, recv)
		}
		return nil
	}
}

func TestGRPCLimitFlags(t *testing.T) {
	t.Parallel()
	testParseConfig(t, []configCase{
		{name: "defaults", want: grpcLimits(4096, 1024, 1<<20)},
		{name: "flags", args: []string{"--grpc-max-conns", "50", "--grpc-max-calls", "8", "--grpc-max-recv-bytes", "4096"},
			want: grpcLimits(50, 8, 4096)},
		{name: "env", env: map[string]string{"FLOODGATE_GRPC_MAX_CONNS": "10", "FLOODGATE_GRPC_MAX_CALLS": "2", "FLOODGATE_GRPC_MAX_RECV_BYTES": "67108864"},
			want: grpcLimits(10, 2, 64<<20)},
		{name: "conns 0", args: []string{"--grpc-max-conns", "0"},
			err: `invalid value "0" for flag --grpc-max-conns: must be at least 1`},
		{name: "calls not a number", args: []string{"--grpc-max-calls", "many"},
			err: `invalid value "many" for flag --grpc-max-calls: not an integer`},
		{name: "recv too small", args: []string{"--grpc-max-recv-bytes", "4095"},
			err: `invalid value "4095" for flag --grpc-max-recv-bytes: must be from 4096 to 67108864 bytes`},
		{name: "recv too large", env: map[string]string{"FLOODGATE_GRPC_MAX_RECV_BYTES": "67108865"},
			err: `invalid value "67108865" for FLOODGATE_GRPC_MAX_RECV_BYTES: must be from 4096 to 67108864 bytes`},
		{name: "recv with a unit", args: []string{"--grpc-max-recv-bytes", "1MiB"},
			err: `invalid value "1MiB" for flag --grpc-max-recv-bytes: not an integer (bytes)`},
	})
}

func TestGRPCConnBound(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig() // 4096 connections, reserve 256 + 3 (2 memcached connections and a stats one)
	withServers := cfg
	withServers.MemcacheServers = []string{"a:11211", "b:11211"} // reserve 256 + 2×3
	for _, tt := range []struct {
		name    string
		cfg     Config
		nofile  uint64
		bound   int
		lowered bool
		err     string
	}{
		{"container default", cfg, 1 << 20, 4096, false, ""},
		{"infinity", cfg, ^uint64(0), 4096, false, ""},
		{"exactly enough", cfg, 4096 + 259, 4096, false, ""},
		{"one short", cfg, 4096 + 258, 4095, true, ""},
		{"soft limit 1024", cfg, 1024, 1024 - 259, true, ""},
		{"memcached servers reserve more", withServers, 1024, 1024 - 262, true, ""},
		{"no room", cfg, 256, 0, false, "--grpc-max-conns: the open-file limit (RLIMIT_NOFILE) 256 leaves no room"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			bound, lowered, err := grpcConnBound(tt.cfg, tt.nofile)
			if tt.err != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.err) {
					t.Errorf("error = %v, want one starting %q", err, tt.err)
				}
				return
			}
			if err != nil || bound != tt.bound || lowered != tt.lowered {
				t.Errorf("grpcConnBound = %d, %v, %v; want %d, %v", bound, lowered, err, tt.bound, tt.lowered)
			}
		})
	}
}

// waitMetric polls /metrics until series satisfies ok, for at most a
// minute, and returns its last value.
func waitMetric(t *testing.T, s *server, series string, ok func(float64) bool) float64 {
	t.Helper()
	var v float64
	testutil.WaitFor(t, time.Minute, func() error {
		_, m := s.get(t, "/metrics")
		if v = metricValue(t, m, series); !ok(v) {
			return fmt.Errorf("%s = %v", series, v)
		}
		return nil
	})
	return v
}

// http2Preface is an HTTP/2 client's first bytes: the connection preface
// and an empty SETTINGS frame.
const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"

// idleHTTP2Conn opens a TCP connection to addr and sends an HTTP/2 client
// preface and SETTINGS frame, as a client that then sends nothing.
func idleHTTP2Conn(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte(http2Preface)); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestBinaryConnectionBound fills floodgate's --grpc-max-conns with idle
// connections: further ones are closed at once and counted, a Check on a new
// connection fails, the admin listener keeps answering /healthz, /readyz and
// /metrics, and once some idle connections close a Check works again.
func TestBinaryConnectionBound(t *testing.T) {
	t.Parallel()
	const bound, extra = 50, 10
	s := startServer(t, "--grpc-max-conns", strconv.Itoa(bound))
	if !strings.Contains(s.stderr.String(), `"grpc_max_conns":50`) {
		t.Errorf("startup line lacks \"grpc_max_conns\":50")
	}
	addr := s.startup.GRPCAddr
	idle := make([]net.Conn, bound)
	for i := range idle {
		idle[i] = idleHTTP2Conn(t, addr)
	}
	waitMetric(t, s, "floodgate_grpc_connections", func(v float64) bool { return v == bound })

	for i := range extra {
		// The reset may already reach the dial, or the write; else the
		// read sees it.
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			continue
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second)) // only so that a failure ends
		if _, err = c.Write([]byte(http2Preface)); err == nil {
			_, err = io.ReadAll(c)
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection %d past the bound: still open after 30s", bound+i+1)
		}
	}
	if v := waitMetric(t, s, "floodgate_grpc_connections_refused_total", func(v float64) bool { return v >= extra }); v != extra {
		t.Errorf("floodgate_grpc_connections_refused_total = %v, want %d", v, extra)
	}
	for path, want := range map[string]string{"/healthz": "ok", "/readyz": "ready"} {
		if code, body := s.get(t, path); code != http.StatusOK || strings.TrimSpace(body) != want {
			t.Errorf("GET %s with the gRPC listener full = %d %q, want 200 %s", path, code, body, want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_, err := authv3.NewAuthorizationClient(s.dial(t)).Check(ctx, checkRequest("198.51.100.20"), grpc.WaitForReady(false))
	cancel()
	if err == nil {
		t.Error("Check on a new connection succeeded with the gRPC listener full")
	}

	for _, c := range idle[:5] {
		c.Close()
	}
	waitMetric(t, s, "floodgate_grpc_connections", func(v float64) bool { return v <= bound-5 })
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := authv3.NewAuthorizationClient(s.dial(t)).Check(ctx, checkRequest("198.51.100.21")); err != nil {
		t.Errorf("Check after idle connections closed: %v", err)
	}
}

// blockingStrategy allows every request once release is closed, and
// counts the calls waiting for it.
type blockingStrategy struct {
	release chan struct{}
	mu      sync.Mutex
	waiting int
}

func (b *blockingStrategy) Allow(ctx context.Context, req limiter.Request, _ time.Time) (limiter.Decision, error) {
	b.mu.Lock()
	b.waiting++
	b.mu.Unlock()
	select {
	case <-b.release:
	case <-ctx.Done():
		return limiter.Decision{}, ctx.Err()
	}
	return limiter.Decision{Allowed: true, Limit: req.Limit, Window: req.Window, Remaining: 1}, nil
}

func (b *blockingStrategy) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.waiting
}

// waitFor waits with testutil.WaitFor, for at most a minute, until cond
// holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, time.Minute, func() error {
		if !cond() {
			return errors.New(what)
		}
		return nil
	})
}

// limitedServer serves authz on strategy and grpc.health.v1 with
// floodgate's options, cfg and calls, on a loopback port, and returns a
// client connection to it.
func limitedServer(t *testing.T, cfg Config, calls *grpcbound.Calls, strategy limiter.Strategy) *grpc.ClientConn {
	t.Helper()
	az, err := authz.NewServer(strategy, authz.Config{Limit: 10, Window: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return serveInProcess(t, cfg, calls, az.Register)
}

// serveInProcess serves what register registers, and grpc.health.v1, with
// floodgate's gRPC server options for cfg and calls, on a loopback port,
// and returns a client connection to it (sending messages of up to 16 MiB,
// past the server's bound). Both end with the test.
func serveInProcess(t *testing.T, cfg Config, calls *grpcbound.Calls, register func(*grpc.Server)) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpcServerOptions(cfg, nil, calls)...)
	register(gs)
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(16<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestCallLimit holds --grpc-max-calls checks in the limiter: the next call
// is refused with RESOURCE_EXHAUSTED and counted, and once they finish calls
// are admitted again. Calls that never reach a unary handler (an unknown
// method, a Watch stream) give their slot back when they end.
func TestCallLimit(t *testing.T) {
	t.Parallel()
	const max = 4
	bs := &blockingStrategy{release: make(chan struct{})}
	calls := grpcbound.NewCalls(max, errTooManyCalls)
	conn := limitedServer(t, DefaultConfig(), calls, bs)
	c := authv3.NewAuthorizationClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var wg sync.WaitGroup
	for i := range max {
		wg.Go(func() {
			if _, err := c.Check(ctx, checkRequest("198.51.100."+strconv.Itoa(30+i))); err != nil {
				t.Errorf("held Check: %v", err)
			}
		})
	}
	waitFor(t, "held checks in the limiter", func() bool { return bs.count() == max })
	_, err := c.Check(ctx, checkRequest("198.51.100.40"))
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--grpc-max-calls") {
		t.Errorf("Check past the bound: %v, want RESOURCE_EXHAUSTED naming --grpc-max-calls", err)
	}
	if calls.Refused() != 1 || calls.InFlight() != max {
		t.Errorf("refused %d, in flight %d; want 1 and %d", calls.Refused(), calls.InFlight(), max)
	}
	close(bs.release)
	wg.Wait()
	waitFor(t, "slots given back", func() bool { return calls.InFlight() == 0 })
	if _, err := c.Check(ctx, checkRequest("198.51.100.41")); err != nil {
		t.Errorf("Check after the held ones finished: %v", err)
	}

	err = conn.Invoke(ctx, "/floodgate.Nothing/Here", &emptypb.Empty{}, &emptypb.Empty{})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("unknown method: %v, want UNIMPLEMENTED", err)
	}
	waitFor(t, "slot of the unknown method given back", func() bool { return calls.InFlight() == 0 })

	wctx, wcancel := context.WithCancel(ctx)
	watch, err := healthpb.NewHealthClient(conn).Watch(wctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatal(err)
	}
	if n := calls.InFlight(); n != 1 {
		t.Errorf("%d calls in flight with a Watch open, want 1", n)
	}
	wcancel()
	waitFor(t, "slot of the Watch given back", func() bool { return calls.InFlight() == 0 })
}

// TestMaxRecvBytes sends CheckRequests around --grpc-max-recv-bytes: those
// over it get RESOURCE_EXHAUSTED, those within it are answered, and the
// connection keeps serving after a refusal.
func TestMaxRecvBytes(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		max     int
		padding int // bytes of one header's value
		ok      bool
	}{
		{"default, 900 KiB", 1 << 20, 900 << 10, true},
		{"default, 1 MiB of padding", 1 << 20, 1 << 20, false},
		{"4096, a plain request", 4096, 0, true},
		{"4096, 5000 bytes of padding", 4096, 5000, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := DefaultConfig()
			cfg.GRPCMaxRecvBytes = tt.max
			calls := grpcbound.NewCalls(16, errTooManyCalls)
			c := authv3.NewAuthorizationClient(limitedServer(t, cfg, calls, allowAll{}))
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			req := checkRequest("198.51.100.50")
			if tt.padding > 0 {
				req.Attributes.Request.Http.Headers["x-padding"] = strings.Repeat("a", tt.padding)
			}
			_, err := c.Check(ctx, req)
			switch {
			case tt.ok && err != nil:
				t.Errorf("Check of %d bytes with a %d-byte bound: %v", tt.padding, tt.max, err)
			case !tt.ok && status.Code(err) != codes.ResourceExhausted:
				t.Errorf("Check of %d bytes with a %d-byte bound: %v, want RESOURCE_EXHAUSTED", tt.padding, tt.max, err)
			}
			if _, err := c.Check(ctx, checkRequest("198.51.100.51")); err != nil {
				t.Errorf("plain Check afterwards: %v", err)
			}
			waitFor(t, "slots given back", func() bool { return calls.InFlight() == 0 })
		})
	}
}

// allowAll is a limiter.Strategy that allows everything.
type allowAll struct{}

func (allowAll) Allow(_ context.Context, req limiter.Request, _ time.Time) (limiter.Decision, error) {
	return limiter.Decision{Allowed: true, Limit: req.Limit, Window: req.Window, Remaining: 1}, nil
}
