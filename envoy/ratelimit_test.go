package envoy_test

// End-to-end tests of envoy/ratelimit-filter.yaml: Envoy 1.40's ratelimit
// filter calling floodgate's rate limit service with the limits of
// envoy/ratelimit-config.yaml, as an envoyproxy/ratelimit user would run it.

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/floodgate-rl/floodgate/internal/testutil"
	rlsconf "github.com/floodgate-rl/floodgate/policy/rls"
)

// Files and ports of the ratelimit filter's configuration.
const (
	ratelimitConfig = "ratelimit-filter.yaml"
	ratelimitLimits = "ratelimit-config.yaml"
	grpcAppPort     = 8081 // the gRPC app behind ratelimit-filter.yaml
)

// startRLSStack runs floodgate with the shipped limits and args, and Envoy
// with config (ratelimit-filter.yaml or a rewritten copy) in front of it, an
// HTTP app and a gRPC app. extra maps more ports of config (a second
// floodgate).
func startRLSStack(t *testing.T, config string, extra map[int]int, args ...string) *edge {
	t.Helper()
	fg := testutil.StartFloodgate(t, append([]string{"--rls-config", ratelimitLimits}, args...)...)
	ports := map[int]int{grpcAppPort: grpcApp(t)}
	maps.Copy(ports, extra)
	return startEdgePorts(t, config, fg, ports)
}

// grpcApp serves grpc.health.v1 on a loopback port and returns the port.
func grpcApp(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	healthpb.RegisterHealthServer(g, health.NewServer())
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	return ln.Addr().(*net.TCPAddr).Port
}

// checkRLSDenied checks that r is floodgate's 429 through the ratelimit
// filter, for the rule called policy of limit per windowSeconds: the body
// and Retry-After with the same N, floodgate's RateLimit headers, and
// Envoy's x-envoy-ratelimited.
func checkRLSDenied(t *testing.T, r response, policy string, limit, windowSeconds int) {
	t.Helper()
	check429(t, r, policy, limit, windowSeconds)
	checkHeader(t, r, "X-Envoy-Ratelimited", "true")
}

func TestRatelimitConfigValidates(t *testing.T) {
	t.Parallel()
	if err := testutil.ValidateEnvoyConfig(t, ratelimitConfig); err != nil {
		t.Fatal(err)
	}
	if _, err := rlsconf.Load(ratelimitLimits); err != nil {
		t.Fatalf("%s: %v", ratelimitLimits, err)
	}
}

// TestRatelimitLogin: the sixth login of a client within a minute gets
// floodgate's 429, however the path is spelt; the app got five; Envoy's
// X-RateLimit headers and floodgate's RateLimit headers describe the rule
// closest to its limit.
func TestRatelimitLogin(t *testing.T) {
	setup(t)
	s := startRLSStack(t, ratelimitConfig, nil)
	for i := 1; i <= 5; i++ {
		r := s.get(t, "/login", nil)
		if r.status != http.StatusOK || r.body != upstreamBody {
			t.Fatalf("login %d: got %d %q, want 200 from the app", i, r.status, r.body)
		}
		checkHeader(t, r, "RateLimit-Policy", `"login";q=5;w=60`)
		checkHeader(t, r, "X-RateLimit-Remaining", strconv.Itoa(5-i))
	}
	for _, path := range []string{"/login", "//login", "/login/reset", "/%6Cogin"} {
		checkRLSDenied(t, s.get(t, path, nil), "login", 5, 60)
	}
	s.app.checkCount(t, 5, "")
	checkStat(t, s.envoy, "cluster.app.ratelimit.over_limit", 4, "")
}

// TestRatelimitRoutes: each route sends its own descriptors. /healthz
// sends none (floodgate is not called); / is limited per client only; an
// API key adds its own limit (X-RateLimit-Limit lists every rule that
// applied, as Envoy words it); writes add theirs; logins do not use up the
// client's general quota beyond their own count.
func TestRatelimitRoutes(t *testing.T) {
	setup(t)
	s := startRLSStack(t, ratelimitConfig, nil)
	for range 3 {
		if r := s.get(t, "/healthz", nil); r.status != http.StatusOK || r.header.Get("X-RateLimit-Limit") != "" {
			t.Fatalf("/healthz: %d, X-RateLimit-Limit %q; want 200 without limits", r.status, r.header.Get("X-RateLimit-Limit"))
		}
	}
	if n := metric(t, s.fg.AdminURL(), `floodgate_rls_decisions_total{result="allowed"}`); n != 0 {
		t.Errorf("floodgate decided %v requests for /healthz, want none", n)
	}
	for _, tc := range []struct {
		method, path string
		h            http.Header
		limit        string // X-RateLimit-Limit
		remaining    string // of the rule closest to its limit
	}{
		{"GET", "/", nil, "100, 100;w=3600", "99"},
		{"GET", "/", http.Header{"X-Api-Key": {"k1"}}, "100, 100;w=3600, 1000;w=3600", "98"},
		{"GET", "/", http.Header{"X-Api-Key": {"partner-7d1c"}}, `100, 100;w=3600, 10000;w=3600;name="partner"`, "97"},
		{"POST", "/orders", nil, "20, 100;w=3600, 20;w=60", "19"},
		{"GET", "/login", nil, `5, 5;w=60;name="login", 100;w=3600`, "4"},
		{"GET", "/", nil, "100, 100;w=3600", "94"},
	} {
		r := s.send(t, tc.method, tc.path, tc.h)
		if r.status != http.StatusOK {
			t.Fatalf("%s %s %v: got %d %q, want 200", tc.method, tc.path, tc.h, r.status, r.body)
		}
		checkHeader(t, r, "X-RateLimit-Limit", tc.limit)
		checkHeader(t, r, "X-RateLimit-Remaining", tc.remaining)
	}
}

// TestRatelimitShadow: the /search rule (10 per minute, shadow_mode) never
// denies; floodgate counts how often it would have.
func TestRatelimitShadow(t *testing.T) {
	setup(t)
	s := startRLSStack(t, ratelimitConfig, nil)
	for i := 1; i <= 12; i++ {
		if r := s.get(t, "/search", nil); r.status != http.StatusOK {
			t.Fatalf("search %d: got %d %q, want 200: a shadow rule never denies", i, r.status, r.body)
		}
	}
	if n := metric(t, s.fg.AdminURL(), `floodgate_rls_shadow_over_limit_total{rule="edge.route_search.remote_address"}`); n != 2 {
		t.Errorf("shadow over limit %v times, want 2 (searches 11 and 12)", n)
	}
}

// TestRatelimitReplicas: two floodgate replicas sharing one memcached,
// both endpoints of Envoy's floodgate cluster, enforce one limit together.
func TestRatelimitReplicas(t *testing.T) {
	setup(t)
	mc := testutil.StartMemcached(t)
	fg2 := testutil.StartFloodgate(t, "--rls-config", ratelimitLimits, "--memcache-servers", mc.Addr())
	s := startRLSStack(t, secondFloodgate(t, ratelimitConfig), map[int]int{secondFloodgatePort: fg2.GRPCPort()}, "--memcache-servers", mc.Addr())
	for i := 1; i <= 5; i++ {
		if r := s.get(t, "/login", nil); r.status != http.StatusOK {
			t.Fatalf("login %d: got %d %q, want 200", i, r.status, r.body)
		}
	}
	for range 3 {
		checkRLSDenied(t, s.get(t, "/login", nil), "login", 5, 60)
	}
	checkReplicasShared(t, "floodgate_rls_decisions_total", 5, s.fg, fg2)
}

// TestRatelimitMemcachedDown: with memcached stopped, floodgate keeps
// answering (Envoy counts no error): --fail-mode local enforces the limit
// per replica and marks what it let through with X-Floodgate-Degraded,
// which a client cannot forge; --fail-mode open lets everything through.
func TestRatelimitMemcachedDown(t *testing.T) {
	setup(t)
	for _, mode := range []string{"local", "open"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			mc := testutil.StartMemcached(t)
			s := startRLSStack(t, ratelimitConfig, nil, "--memcache-servers", mc.Addr(), "--fail-mode", mode)
			spoof := http.Header{"X-Floodgate-Degraded": {"forged"}}
			if r := s.get(t, "/", spoof); r.status != http.StatusOK || s.app.lastHeader("X-Floodgate-Degraded") != "" {
				t.Fatalf("memcached up: got %d, the app saw X-Floodgate-Degraded %q; want 200 and none", r.status, s.app.lastHeader("X-Floodgate-Degraded"))
			}
			mc.Stop()
			for i := 1; i <= 6; i++ {
				r := s.get(t, "/login", spoof)
				switch {
				case mode == "local" && i == 6:
					checkRLSDenied(t, r, "login", 5, 60)
				case r.status != http.StatusOK:
					t.Fatalf("memcached stopped, login %d: got %d %q, want 200", i, r.status, r.body)
				case mode == "local" && s.app.lastHeader("X-Floodgate-Degraded") != "memcached-unavailable":
					t.Fatalf("login %d: the app saw X-Floodgate-Degraded %q, want memcached-unavailable", i, s.app.lastHeader("X-Floodgate-Degraded"))
				case mode == "open" && s.app.lastHeader("X-Floodgate-Degraded") != "":
					t.Fatalf("login %d: the app saw X-Floodgate-Degraded %q, want none", i, s.app.lastHeader("X-Floodgate-Degraded"))
				}
			}
			checkStat(t, s.envoy, "cluster.app.ratelimit.error", 0, "floodgate itself must answer")
		})
	}
}

// TestRatelimitFloodgateDown: with floodgate stopped, requests go through
// (failure_mode_deny: false), counted by Envoy as failure_mode_allowed.
func TestRatelimitFloodgateDown(t *testing.T) {
	setup(t)
	s := startRLSStack(t, ratelimitConfig, nil)
	if r := s.get(t, "/login", nil); r.status != http.StatusOK || r.header.Get("RateLimit-Policy") == "" {
		t.Fatalf("floodgate up: got %d, RateLimit-Policy %q; want 200 with it", r.status, r.header.Get("RateLimit-Policy"))
	}
	s.fg.Stop()
	for i := 1; i <= 7; i++ { // more than the login limit
		r := s.get(t, "/login", nil)
		if r.status != http.StatusOK || r.header.Get("RateLimit-Policy") != "" {
			t.Fatalf("floodgate stopped, login %d: got %d %q, RateLimit-Policy %q; want 200 without it", i, r.status, r.body, r.header.Get("RateLimit-Policy"))
		}
	}
	s.app.checkCount(t, 8, "")
	checkStat(t, s.envoy, "cluster.app.ratelimit.failure_mode_allowed", 7, "")
}

// TestRatelimitGRPC: a gRPC client of the gRPC app through Envoy gets its
// 60 calls a minute, then RESOURCE_EXHAUSTED with floodgate's message.
func TestRatelimitGRPC(t *testing.T) {
	setup(t)
	s := startRLSStack(t, ratelimitConfig, nil)
	conn, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", s.envoy.Port(edgePort)), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := healthpb.NewHealthClient(conn)
	call := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	for i := 1; i <= 60; i++ {
		if err := call(); err != nil {
			t.Fatalf("call %d: %v, want OK", i, err)
		}
	}
	err = call()
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("call 61: %v, want RESOURCE_EXHAUSTED", err)
	}
	if !strings.HasPrefix(status.Convert(err).Message(), "Rate limit exceeded. Try again in ") {
		t.Errorf("call 61: message %q, want floodgate's body", status.Convert(err).Message())
	}
}
