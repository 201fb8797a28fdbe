// End-to-end tests of the envoy/*.yaml files users copy: a real Envoy, real
// floodgate processes (and memcached where replicas share counters), and an
// upstream in the test process, all on free loopback ports. Every request
// goes through Envoy over HTTP, as a client's would.
//
// Without an Envoy binary (`make deps` installs one into .tools/) the tests
// skip with one line, and fail under CI=true.
package envoy_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/internal/testutil"
)

// Ports written in the envoy/*.yaml files.
const (
	edgePort      = 10000 // listener of front-proxy.yaml and sidecar.yaml
	egressPort    = 10001 // listener of egress.yaml
	floodgatePort = 9001  // floodgate's gRPC address in every file
	appPort       = 8080  // the app behind front-proxy.yaml and sidecar.yaml
)

// upstreamBody is what the test upstream answers.
const upstreamBody = "hello from upstream\n"

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBuilds()
	os.Exit(code)
}

// setup marks an end-to-end test parallel and skips it (fails it under CI)
// at once when there is no Envoy, before it builds and starts anything.
func setup(t *testing.T) {
	t.Helper()
	t.Parallel()
	testutil.EnvoyPath(t)
}

// TestConfigsValidate runs `envoy --mode validate` on every shipped config.
func TestConfigsValidate(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"front-proxy.yaml", "sidecar.yaml", "egress.yaml"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if err := testutil.ValidateEnvoyConfig(t, name); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestFrontProxyLimit sends 101 requests through front-proxy.yaml with
// floodgate counting in memcached: 100 reach the app with rate-limit
// headers, the 101st is floodgate's 429 with its exact body and headers.
func TestFrontProxyLimit(t *testing.T) {
	setup(t)
	mc := testutil.StartMemcached(t)
	fg := testutil.StartFloodgate(t, "--memcache-servers", mc.Addr(), "--limit", "100", "--window", "1h")
	app := newUpstream(t)
	envoy := startEnvoy(t, "front-proxy.yaml", fg, app)
	c := newClient(t, "")
	target := envoy.URL(edgePort) + "/"

	for i := 1; i <= 100; i++ {
		r := c.get(t, target, nil)
		if r.status != http.StatusOK || r.body != upstreamBody {
			t.Fatalf("request %d: got %d %q, want 200 from the app", i, r.status, r.body)
		}
		checkAllowedHeaders(t, r, "default", 100, 3600, 100-i)
	}

	for _, n := range []int{101, 102} { // denied requests are not counted: still denied
		r := c.get(t, target, nil)
		checkDenied(t, r, "default", 100, 3600)
		if n == 101 {
			t.Logf("request 101: %d %q, Retry-After %s", r.status, r.body, r.header.Get("Retry-After"))
		}
	}
	if got := app.count(); got != 100 {
		t.Errorf("the app got %d requests, want 100: denied requests must not reach it", got)
	}
}

// TestFrontProxyRoutes checks the per-route settings of front-proxy.yaml:
// /login has its own limit of 5 per 60s in scope "login", other routes use
// floodgate's defaults in the default scope, and /healthz is never checked.
func TestFrontProxyRoutes(t *testing.T) {
	setup(t)
	fg := testutil.StartFloodgate(t, "--limit", "10", "--window", "1h")
	app := newUpstream(t)
	envoy := startEnvoy(t, "front-proxy.yaml", fg, app)
	c := newClient(t, "")
	base := envoy.URL(edgePort)

	for i := 1; i <= 5; i++ {
		r := c.get(t, base+"/login", nil)
		if r.status != http.StatusOK {
			t.Fatalf("login %d: got %d %q, want 200", i, r.status, r.body)
		}
		checkAllowedHeaders(t, r, "login", 5, 60, 5-i)
	}
	// The 6th login is denied, however the path is spelled: Envoy
	// normalizes it before routing.
	for _, path := range []string{"/login", "//login", "/login/", "/login/reset", "/x/../login", "/%6Cogin"} {
		r := c.get(t, base+path, nil)
		checkDenied(t, r, "login", 5, 60)
	}

	// Logins did not use up the default scope.
	r := c.get(t, base+"/", nil)
	if r.status != http.StatusOK {
		t.Fatalf("/ after the login limit: got %d %q, want 200", r.status, r.body)
	}
	checkAllowedHeaders(t, r, "default", 10, 3600, 9)
	// /loginfoo is not the login route.
	r = c.get(t, base+"/loginfoo", nil)
	if r.status != http.StatusOK {
		t.Fatalf("/loginfoo: got %d %q, want 200", r.status, r.body)
	}
	checkAllowedHeaders(t, r, "default", 10, 3600, 8)

	checkHealthz := func() {
		t.Helper()
		for range 20 {
			r := c.get(t, base+"/healthz", nil)
			if r.status != http.StatusOK || r.body != upstreamBody {
				t.Fatalf("/healthz: got %d %q, want 200 from the app", r.status, r.body)
			}
			if h := r.header.Get("X-RateLimit-Limit"); h != "" {
				t.Fatalf("/healthz: X-RateLimit-Limit %q: the check must be disabled on this route", h)
			}
		}
	}
	checkHealthz()

	for i := 3; i <= 10; i++ {
		if r := c.get(t, base+"/", nil); r.status != http.StatusOK {
			t.Fatalf("/ request %d: got %d %q, want 200", i, r.status, r.body)
		}
	}
	checkDenied(t, c.get(t, base+"/", nil), "default", 10, 3600)
	checkHealthz() // still not limited with the default scope used up
}

// TestFrontProxyForgedXFF: under front-proxy.yaml a client cannot get a
// fresh quota by sending its own X-Forwarded-For; Envoy appends the address
// it sees and floodgate keys on that entry.
func TestFrontProxyForgedXFF(t *testing.T) {
	setup(t)
	fg := testutil.StartFloodgate(t, "--limit", "3")
	app := newUpstream(t)
	envoy := startEnvoy(t, "front-proxy.yaml", fg, app)
	c := newClient(t, "")
	target := envoy.URL(edgePort) + "/"

	for i := 1; i <= 3; i++ {
		if r := c.get(t, target, nil); r.status != http.StatusOK {
			t.Fatalf("request %d: got %d %q, want 200", i, r.status, r.body)
		}
	}
	for i, xff := range []string{
		"203.0.113.1",
		"203.0.113.2",
		"198.51.100.7, 203.0.113.3",
		"2001:db8::1",
		"unknown",
		"",
	} {
		h := http.Header{}
		if xff != "" {
			h.Set("X-Forwarded-For", xff)
		}
		r := c.get(t, target, h)
		if r.status != http.StatusTooManyRequests {
			t.Errorf("request with X-Forwarded-For %q (#%d): got %d %q, want 429: a forged header must not give a fresh quota",
				xff, i, r.status, r.body)
		}
	}
	if got := app.count(); got != 3 {
		t.Errorf("the app got %d requests, want 3", got)
	}
}

// TestFrontProxyBehindLoadBalancer runs front-proxy.yaml as its comments say
// to behind one load balancer (xff_num_trusted_hops: 1, floodgate
// --xff-trusted-hops 1): the clients the balancer names in X-Forwarded-For
// are limited separately, though all connections come from one address.
func TestFrontProxyBehindLoadBalancer(t *testing.T) {
	setup(t)
	fg := testutil.StartFloodgate(t, "--limit", "2", "--xff-trusted-hops", "1")
	app := newUpstream(t)
	cfg := rewriteConfig(t, "front-proxy.yaml", "xff_num_trusted_hops: 0", "xff_num_trusted_hops: 1")
	envoy := startEnvoy(t, cfg, fg, app)
	c := newClient(t, "")
	target := envoy.URL(edgePort) + "/"

	// As appended by the load balancer: what the client sent, then the client.
	alice := http.Header{"X-Forwarded-For": {"198.51.100.1"}}
	bob := http.Header{"X-Forwarded-For": {"203.0.113.99, 198.51.100.2"}}
	for i := 1; i <= 2; i++ {
		if r := c.get(t, target, alice); r.status != http.StatusOK {
			t.Fatalf("alice %d: got %d %q, want 200", i, r.status, r.body)
		}
	}
	checkDenied(t, c.get(t, target, alice), "default", 2, 3600)
	for i := 1; i <= 2; i++ {
		if r := c.get(t, target, bob); r.status != http.StatusOK {
			t.Fatalf("bob %d: got %d %q, want 200: clients behind the balancer have their own quotas", i, r.status, r.body)
		}
	}
	checkDenied(t, c.get(t, target, bob), "default", 2, 3600)
}

// TestSidecar checks sidecar.yaml: the limit applies in the service's scope,
// and the probe routes are never limited.
func TestSidecar(t *testing.T) {
	setup(t)
	fg := testutil.StartFloodgate(t, "--limit", "3")
	app := newUpstream(t)
	envoy := startEnvoy(t, "sidecar.yaml", fg, app)
	c := newClient(t, "")
	base := envoy.URL(edgePort)

	for i := 1; i <= 3; i++ {
		r := c.get(t, base+"/orders", nil)
		if r.status != http.StatusOK {
			t.Fatalf("request %d: got %d %q, want 200", i, r.status, r.body)
		}
		checkAllowedHeaders(t, r, "my-app", 3, 3600, 3-i)
	}
	checkDenied(t, c.get(t, base+"/orders", nil), "my-app", 3, 3600)
	for _, path := range []string{"/healthz", "/readyz"} {
		for range 5 {
			if r := c.get(t, base+path, nil); r.status != http.StatusOK {
				t.Fatalf("%s: got %d %q, want 200: probes must never be limited", path, r.status, r.body)
			}
		}
	}
}

// TestEgressPerHost: through egress.yaml, calls to two hosts are limited
// separately, each by the :authority of its requests.
func TestEgressPerHost(t *testing.T) {
	setup(t)
	fg := testutil.StartFloodgate(t, "--limit", "3")
	hostA, hostB := newUpstream(t), newUpstream(t)
	envoy := testutil.StartEnvoy(t, "egress.yaml", map[int]int{floodgatePort: fg.GRPCPort()})
	c := newClient(t, envoy.URL(egressPort)) // Envoy as the HTTP proxy

	for _, host := range []*upstream{hostA, hostB} {
		for i := 1; i <= 3; i++ {
			r := c.get(t, host.URL+"/v1/things", nil)
			if r.status != http.StatusOK || r.body != upstreamBody {
				t.Fatalf("%s request %d: got %d %q, want 200 from the host", host.URL, i, r.status, r.body)
			}
			checkAllowedHeaders(t, r, "egress", 3, 3600, 3-i)
		}
		checkDenied(t, c.get(t, host.URL+"/v1/things", nil), "egress", 3, 3600)
	}
	if a, b := hostA.count(), hostB.count(); a != 3 || b != 3 {
		t.Errorf("the hosts got %d and %d requests, want 3 each", a, b)
	}
}

// TestReplicasShareLimit: two floodgate replicas sharing one memcached,
// both endpoints of Envoy's floodgate cluster, enforce one limit together.
func TestReplicasShareLimit(t *testing.T) {
	setup(t)
	mc := testutil.StartMemcached(t)
	fg1 := testutil.StartFloodgate(t, "--memcache-servers", mc.Addr(), "--limit", "10")
	fg2 := testutil.StartFloodgate(t, "--memcache-servers", mc.Addr(), "--limit", "10")
	app := newUpstream(t)

	// A second endpoint in the floodgate cluster, port 9002 in the copy.
	const endpoint = "        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 9001}}}\n"
	cfg := rewriteConfig(t, "front-proxy.yaml", endpoint, endpoint+strings.Replace(endpoint, "9001", "9002", 1))
	envoy := testutil.StartEnvoy(t, cfg, map[int]int{
		floodgatePort: fg1.GRPCPort(),
		9002:          fg2.GRPCPort(),
		appPort:       app.port(),
	})
	c := newClient(t, "")
	target := envoy.URL(edgePort) + "/"

	for i := 1; i <= 10; i++ {
		r := c.get(t, target, nil)
		if r.status != http.StatusOK {
			t.Fatalf("request %d: got %d %q, want 200", i, r.status, r.body)
		}
		checkAllowedHeaders(t, r, "default", 10, 3600, 10-i)
	}
	for range 4 {
		checkDenied(t, c.get(t, target, nil), "default", 10, 3600)
	}

	// Both replicas decided, and together they allowed exactly 10.
	var allowed float64
	for i, fg := range []*testutil.Floodgate{fg1, fg2} {
		a := metric(t, fg.AdminURL(), `floodgate_decisions_total{result="allowed"}`)
		d := metric(t, fg.AdminURL(), `floodgate_decisions_total{result="denied"}`)
		if a+d == 0 {
			t.Errorf("replica %d answered no checks: Envoy must spread them over both", i+1)
		}
		allowed += a
	}
	if allowed != 10 {
		t.Errorf("the replicas allowed %v requests together, want 10", allowed)
	}
}

// TestMemcachedDown: egress.yaml fails closed in Envoy (failure_mode_allow:
// false), yet requests pass while memcached is stopped or hangs, because
// floodgate with --fail-mode open fails open itself and answers in time.
// (The default, --fail-mode local, keeps limiting per replica instead; see
// internal/faults.)
func TestMemcachedDown(t *testing.T) {
	setup(t)
	mc := testutil.StartMemcached(t)
	fg := testutil.StartFloodgate(t, "--memcache-servers", mc.Addr(), "--limit", "2", "--fail-mode", "open")
	host := newUpstream(t)
	envoy := testutil.StartEnvoy(t, "egress.yaml", map[int]int{floodgatePort: fg.GRPCPort()})
	c := newClient(t, envoy.URL(egressPort))
	target := host.URL + "/"

	r := c.get(t, target, nil)
	if r.status != http.StatusOK {
		t.Fatalf("with memcached up: got %d %q, want 200", r.status, r.body)
	}
	checkAllowedHeaders(t, r, "egress", 2, 3600, 1)

	mc.Stop()
	for i := 1; i <= 5; i++ { // more than the limit of 2
		r := c.get(t, target, nil)
		if r.status != http.StatusOK {
			t.Fatalf("memcached stopped, request %d: got %d %q, want 200 (floodgate fails open)", i, r.status, r.body)
		}
	}

	mc.Restart() // empty
	// floodgate's circuit breaker probes memcached at least once a second,
	// so it counts there again within 2 seconds (internal/faults tests that
	// bound); until then requests fail open without rate-limit headers.
	testutil.WaitFor(t, 5*time.Second, func() error {
		r := c.get(t, target, nil)
		remaining := r.header.Get("X-RateLimit-Remaining")
		if r.status != http.StatusOK || (remaining != "" && remaining != "1") {
			t.Fatalf("memcached restarted: got %d, X-RateLimit-Remaining %q, want 200 and 1 (or none while failing open)",
				r.status, remaining)
		}
		if remaining != "1" {
			return errors.New("memcached restarted: floodgate does not count in it again yet")
		}
		return nil
	})
	mc.Freeze()
	defer mc.Thaw()
	for i := 1; i <= 3; i++ {
		r := c.get(t, target, nil)
		if r.status != http.StatusOK {
			t.Fatalf("memcached hung, request %d: got %d %q, want 200: floodgate must answer before Envoy's 250ms timeout",
				i, r.status, r.body)
		}
	}
	if got := stat(t, envoy, "http.egress.ext_authz.error"); got != 0 {
		t.Errorf("Envoy counted %d ext_authz errors, want 0: floodgate itself must answer", got)
	}
}

// TestFloodgateDown stops floodgate and checks that each config behaves as
// its comments say: front-proxy.yaml and sidecar.yaml let requests through
// marked with x-envoy-auth-failure-mode-allowed, egress.yaml answers 503 and
// does not call the host.
func TestFloodgateDown(t *testing.T) {
	setup(t)
	for _, tc := range []struct {
		config     string
		statPrefix string
		egress     bool
		failOpen   bool
	}{
		{config: "front-proxy.yaml", statPrefix: "edge", failOpen: true},
		{config: "sidecar.yaml", statPrefix: "inbound", failOpen: true},
		{config: "egress.yaml", statPrefix: "egress", egress: true, failOpen: false},
	} {
		t.Run(tc.config, func(t *testing.T) {
			t.Parallel()
			fg := testutil.StartFloodgate(t, "--limit", "100")
			app := newUpstream(t)
			var envoy *testutil.Envoy
			var c *client
			var target string
			if tc.egress {
				envoy = testutil.StartEnvoy(t, tc.config, map[int]int{floodgatePort: fg.GRPCPort()})
				c, target = newClient(t, envoy.URL(egressPort)), app.URL+"/"
			} else {
				envoy = startEnvoy(t, tc.config, fg, app)
				c, target = newClient(t, ""), envoy.URL(edgePort)+"/"
			}

			r := c.get(t, target, nil)
			if r.status != http.StatusOK || r.header.Get("X-RateLimit-Limit") != "100" {
				t.Fatalf("with floodgate up: got %d, X-RateLimit-Limit %q, want 200 and 100",
					r.status, r.header.Get("X-RateLimit-Limit"))
			}
			if got := app.lastHeader("X-Envoy-Auth-Failure-Mode-Allowed"); got != "" {
				t.Errorf("with floodgate up, the app got x-envoy-auth-failure-mode-allowed %q", got)
			}

			fg.Stop()
			for i := 1; i <= 3; i++ {
				r := c.get(t, target, nil)
				switch {
				case tc.failOpen && r.status != http.StatusOK:
					t.Fatalf("floodgate stopped, request %d: got %d %q, want 200 (fail open)", i, r.status, r.body)
				case !tc.failOpen && r.status != http.StatusServiceUnavailable:
					t.Fatalf("floodgate stopped, request %d: got %d %q, want 503 (fail closed)", i, r.status, r.body)
				}
				if h := r.header.Get("X-RateLimit-Limit"); h != "" {
					t.Errorf("floodgate stopped, request %d: X-RateLimit-Limit %q, want none", i, h)
				}
			}
			if tc.failOpen {
				if got := app.count(); got != 4 {
					t.Errorf("the app got %d requests, want 4", got)
				}
				if got := app.lastHeader("X-Envoy-Auth-Failure-Mode-Allowed"); got != "true" {
					t.Errorf("unchecked requests reached the app with x-envoy-auth-failure-mode-allowed %q, want true", got)
				}
			} else if got := app.count(); got != 1 {
				t.Errorf("the host got %d requests, want 1: calls must not leave while floodgate is down", got)
			}
			checkFailureStats(t, envoy, tc.statPrefix, tc.failOpen)
		})
	}
}

// checkFailureStats checks Envoy's ext_authz counters after the three
// requests TestFloodgateDown sends with floodgate stopped.
func checkFailureStats(t *testing.T, envoy *testutil.Envoy, prefix string, failOpen bool) {
	t.Helper()
	if got := stat(t, envoy, "http."+prefix+".ext_authz.error"); got != 3 {
		t.Errorf("http.%s.ext_authz.error = %d, want 3", prefix, got)
	}
	want := 0
	if failOpen {
		want = 3
	}
	if got := stat(t, envoy, "http."+prefix+".ext_authz.failure_mode_allowed"); got != want {
		t.Errorf("http.%s.ext_authz.failure_mode_allowed = %d, want %d", prefix, got, want)
	}
}

// startEnvoy runs config (front-proxy.yaml or sidecar.yaml, or a rewritten
// copy) with its floodgate and app clusters pointing at fg and app.
func startEnvoy(t *testing.T, config string, fg *testutil.Floodgate, app *upstream) *testutil.Envoy {
	t.Helper()
	return testutil.StartEnvoy(t, config, map[int]int{floodgatePort: fg.GRPCPort(), appPort: app.port()})
}

// rewriteConfig writes a copy of the config file name with old replaced by
// new into a temporary directory and returns its path. old must occur.
func rewriteConfig(t *testing.T, name, old, new string) string {
	t.Helper()
	src, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(src), old) {
		t.Fatalf("%s no longer contains %q; update the test", name, old)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(strings.Replace(string(src), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// checkAllowedHeaders checks the rate-limit headers floodgate adds to an
// allowed response through Envoy.
func checkAllowedHeaders(t *testing.T, r response, policy string, limit, windowSeconds, remaining int) {
	t.Helper()
	checkHeader(t, r, "X-RateLimit-Limit", strconv.Itoa(limit))
	checkHeader(t, r, "X-RateLimit-Remaining", strconv.Itoa(remaining))
	checkHeader(t, r, "RateLimit-Policy", fmt.Sprintf(`"%s";q=%d;w=%d`, policy, limit, windowSeconds))
	// Reset is 0 while quota is left, else the seconds until it returns.
	reset := r.header.Get("X-RateLimit-Reset")
	n, err := strconv.Atoi(reset)
	switch {
	case err != nil:
		t.Fatalf("X-RateLimit-Reset %q: not an integer", reset)
	case remaining > 0 && n != 0:
		t.Fatalf("X-RateLimit-Reset %d with %d remaining, want 0", n, remaining)
	case remaining == 0 && (n < 1 || n > windowSeconds):
		t.Fatalf("X-RateLimit-Reset %d with no quota left, want 1..%d", n, windowSeconds)
	}
	checkHeader(t, r, "RateLimit", fmt.Sprintf(`"%s";r=%d;t=%d`, policy, remaining, n))
}

// checkDenied checks that r is floodgate's 429, as the client sees it
// through Envoy.
func checkDenied(t *testing.T, r response, policy string, limit, windowSeconds int) {
	t.Helper()
	if r.status != http.StatusTooManyRequests {
		t.Fatalf("got %d %q, want 429", r.status, r.body)
	}
	ra := r.header.Get("Retry-After")
	n, err := strconv.Atoi(ra)
	if err != nil || n < 1 || n > windowSeconds {
		t.Fatalf("Retry-After %q, want an integer in 1..%d", ra, windowSeconds)
	}
	if want := fmt.Sprintf("Rate limit exceeded. Try again in %d seconds", n); r.body != want {
		t.Fatalf("429 body %q, want %q", r.body, want)
	}
	checkHeader(t, r, "Content-Type", "text/plain")
	checkHeader(t, r, "X-RateLimit-Limit", strconv.Itoa(limit))
	checkHeader(t, r, "X-RateLimit-Remaining", "0")
	checkHeader(t, r, "X-RateLimit-Reset", ra)
	checkHeader(t, r, "RateLimit-Policy", fmt.Sprintf(`"%s";q=%d;w=%d`, policy, limit, windowSeconds))
	checkHeader(t, r, "RateLimit", fmt.Sprintf(`"%s";r=0;t=%d`, policy, n))
}

func checkHeader(t *testing.T, r response, name, want string) {
	t.Helper()
	if got := r.header.Values(name); len(got) != 1 || got[0] != want {
		t.Fatalf("%d response: %s %q, want exactly %q", r.status, name, got, want)
	}
}

// upstream is an HTTP server in the test process on 127.0.0.1, standing in
// for the app behind Envoy or a third-party host. It answers every request
// with 200 and upstreamBody.
type upstream struct {
	*httptest.Server
	n    atomic.Int64
	mu   sync.Mutex
	last http.Header // headers of the latest request
}

func newUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.last = r.Header.Clone()
		u.mu.Unlock()
		u.n.Add(1)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, upstreamBody)
	}))
	t.Cleanup(u.Close)
	return u
}

// count returns the number of requests the upstream has answered.
func (u *upstream) count() int { return int(u.n.Load()) }

// lastHeader returns header name of the latest request.
func (u *upstream) lastHeader(name string) string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.last.Get(name)
}

func (u *upstream) port() int {
	return u.Listener.Addr().(*net.TCPAddr).Port
}

// response is what a client got back.
type response struct {
	status int
	header http.Header
	body   string
}

// client sends requests to Envoy, directly or with Envoy as its HTTP proxy.
type client struct{ hc *http.Client }

// newClient returns a client; proxy is the URL of Envoy as an HTTP proxy, or
// "" to send requests to Envoy directly.
func newClient(t *testing.T, proxy string) *client {
	t.Helper()
	tr := &http.Transport{}
	if proxy != "" {
		u, err := url.Parse(proxy)
		if err != nil {
			t.Fatal(err)
		}
		tr.Proxy = http.ProxyURL(u)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &client{hc: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// get sends GET target with the extra headers h (may be nil).
func (c *client) get(t *testing.T, target string, h http.Header) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range h {
		req.Header[k] = vs
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", target, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: string(body)}
}

// metric returns the sum of the series of floodgate's /metrics that series
// selects, written as a series is (`name{label="value",...}` or a bare
// name): every series of that name whose labels include those, so that
// floodgate_decisions_total{result="allowed"} counts every scope and rule.
func metric(t *testing.T, adminURL, series string) float64 {
	t.Helper()
	resp, err := http.Get(adminURL + "/metrics")
	if err != nil {
		t.Fatalf("GET %s/metrics: %v", adminURL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s/metrics: %v", adminURL, err)
	}
	sum, _ := testutil.MetricSelect(t, string(body), series)
	return sum
}

// stat returns one counter from Envoy's admin /stats, or 0 when Envoy has not
// created it yet.
func stat(t *testing.T, envoy *testutil.Envoy, name string) int {
	t.Helper()
	resp, err := http.Get(envoy.AdminURL() + "/stats?filter=" + url.QueryEscape("^"+strings.ReplaceAll(name, ".", `\.`)+"$"))
	if err != nil {
		t.Fatalf("GET envoy /stats: %v", err)
	}
	defer resp.Body.Close()
	s := bufio.NewScanner(resp.Body)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), name+": "); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("envoy stat %q: %v", s.Text(), err)
			}
			return n
		}
	}
	return 0
}
