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
	"maps"
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
	e := startEdge(t, "front-proxy.yaml", testutil.StartFloodgate(t, "--memcache-servers", mc.Addr(), "--limit", "100", "--window", "1h"))

	r := e.c.useQuota(t, e.base+"/", nil, "default", 100, 3600)
	t.Logf("request 101: %d %q, Retry-After %s", r.status, r.body, r.header.Get("Retry-After"))
	// Denied requests are not counted: still denied.
	checkDenied(t, e.get(t, "/", nil), "default", 100, 3600)
	e.app.checkCount(t, 100, "denied requests must not reach it")
}

// TestFrontProxyRoutes checks the per-route settings of front-proxy.yaml:
// /login has its own limit of 5 per 60s in scope "login", other routes use
// floodgate's defaults in the default scope, and /healthz is never checked.
func TestFrontProxyRoutes(t *testing.T) {
	setup(t)
	e := startEdge(t, "front-proxy.yaml", testutil.StartFloodgate(t, "--limit", "10", "--window", "1h"))

	e.c.useQuota(t, e.base+"/login", nil, "login", 5, 60)
	// Then a login is denied, however the path is spelled: Envoy
	// normalizes it before routing.
	for _, path := range []string{"/login", "//login", "/login/", "/login/reset", "/x/../login", "/%6Cogin"} {
		checkDenied(t, e.get(t, path, nil), "login", 5, 60)
	}

	// Logins did not use up the default scope.
	r := e.get(t, "/", nil)
	if r.status != http.StatusOK {
		t.Fatalf("/ after the login limit: got %d %q, want 200", r.status, r.body)
	}
	checkAllowedHeaders(t, r, "default", 10, 3600, 9)
	// /loginfoo is not the login route.
	r = e.get(t, "/loginfoo", nil)
	if r.status != http.StatusOK {
		t.Fatalf("/loginfoo: got %d %q, want 200", r.status, r.body)
	}
	checkAllowedHeaders(t, r, "default", 10, 3600, 8)

	checkHealthz := func() {
		t.Helper()
		for range 20 {
			r := e.get(t, "/healthz", nil)
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
		if r := e.get(t, "/", nil); r.status != http.StatusOK {
			t.Fatalf("/ request %d: got %d %q, want 200", i, r.status, r.body)
		}
	}
	checkDenied(t, e.get(t, "/", nil), "default", 10, 3600)
	checkHealthz() // still not limited with the default scope used up
}

// TestFrontProxyForgedXFF: under front-proxy.yaml a client cannot get a
// fresh quota by sending its own X-Forwarded-For; Envoy appends the address
// it sees and floodgate keys on that entry.
func TestFrontProxyForgedXFF(t *testing.T) {
	setup(t)
	e := startEdge(t, "front-proxy.yaml", testutil.StartFloodgate(t, "--limit", "3"))

	e.c.useQuota(t, e.base+"/", nil, "default", 3, 3600)
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
		r := e.get(t, "/", h)
		if r.status != http.StatusTooManyRequests {
			t.Errorf("request with X-Forwarded-For %q (#%d): got %d %q, want 429: a forged header must not give a fresh quota",
				xff, i, r.status, r.body)
		}
	}
	e.app.checkCount(t, 3, "")
}

// TestFrontProxyBehindLoadBalancer runs front-proxy.yaml as its comments say
// to behind one load balancer (xff_num_trusted_hops: 1, floodgate
// --xff-trusted-hops 1): the clients the balancer names in X-Forwarded-For
// are limited separately, though all connections come from one address.
func TestFrontProxyBehindLoadBalancer(t *testing.T) {
	setup(t)
	cfg := rewriteConfig(t, "front-proxy.yaml", "xff_num_trusted_hops: 0", "xff_num_trusted_hops: 1")
	e := startEdge(t, cfg, testutil.StartFloodgate(t, "--limit", "2", "--xff-trusted-hops", "1"))

	// As appended by the load balancer: what the client sent, then the client.
	alice := http.Header{"X-Forwarded-For": {"198.51.100.1"}}
	bob := http.Header{"X-Forwarded-For": {"203.0.113.99, 198.51.100.2"}}
	e.c.useQuota(t, e.base+"/", alice, "default", 2, 3600)
	// Clients behind the balancer have their own quotas: bob's is whole.
	e.c.useQuota(t, e.base+"/", bob, "default", 2, 3600)
}

// TestSidecar checks sidecar.yaml: the limit applies in the service's scope,
// and the probe routes are never limited.
func TestSidecar(t *testing.T) {
	setup(t)
	e := startEdge(t, "sidecar.yaml", testutil.StartFloodgate(t, "--limit", "3"))

	e.c.useQuota(t, e.base+"/orders", nil, "my-app", 3, 3600)
	for _, path := range []string{"/healthz", "/readyz"} {
		for range 5 {
			if r := e.get(t, path, nil); r.status != http.StatusOK {
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
	_, c := startEgress(t, fg)

	for _, host := range []*upstream{hostA, hostB} {
		c.useQuota(t, host.URL+"/v1/things", nil, "egress", 3, 3600)
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
	e := startEdgePorts(t, secondFloodgate(t, "front-proxy.yaml"), fg1, map[int]int{secondFloodgatePort: fg2.GRPCPort()})

	e.c.useQuota(t, e.base+"/", nil, "default", 10, 3600)
	for range 3 {
		checkDenied(t, e.get(t, "/", nil), "default", 10, 3600)
	}
	checkReplicasShared(t, "floodgate_decisions_total", 10, fg1, fg2)
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
	envoy, c := startEgress(t, fg)
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
	checkStat(t, envoy, "http.egress.ext_authz.error", 0, "floodgate itself must answer")
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
			var app *upstream
			var envoy *testutil.Envoy
			var c *client
			var target string
			if tc.egress {
				app = newUpstream(t)
				envoy, c = startEgress(t, fg)
				target = app.URL + "/"
			} else {
				e := startEdge(t, tc.config, fg)
				app, envoy, c, target = e.app, e.envoy, e.c, e.base+"/"
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
				app.checkCount(t, 4, "")
				if got := app.lastHeader("X-Envoy-Auth-Failure-Mode-Allowed"); got != "true" {
					t.Errorf("unchecked requests reached the app with x-envoy-auth-failure-mode-allowed %q, want true", got)
				}
			} else {
				app.checkCount(t, 1, "calls must not leave while floodgate is down")
			}
			checkFailureStats(t, envoy, tc.statPrefix, tc.failOpen)
		})
	}
}

// checkFailureStats checks Envoy's ext_authz counters after the three
// requests TestFloodgateDown sends with floodgate stopped.
func checkFailureStats(t *testing.T, envoy *testutil.Envoy, prefix string, failOpen bool) {
	t.Helper()
	checkStat(t, envoy, "http."+prefix+".ext_authz.error", 3, "")
	want := 0
	if failOpen {
		want = 3
	}
	checkStat(t, envoy, "http."+prefix+".ext_authz.failure_mode_allowed", want, "")
}

// edge is an app and Envoy running a config that listens on edgePort
// (front-proxy.yaml, sidecar.yaml, or a copy of one) in front of it and of
// floodgate, with a client that sends requests to Envoy directly.
type edge struct {
	fg    *testutil.Floodgate
	app   *upstream
	envoy *testutil.Envoy
	c     *client
	base  string // Envoy's edge listener: http://127.0.0.1:port
}

// startEdge runs config with its floodgate and app clusters pointing at fg
// and at a new app.
func startEdge(t *testing.T, config string, fg *testutil.Floodgate) *edge {
	t.Helper()
	return startEdgePorts(t, config, fg, nil)
}

// startEdgePorts is startEdge with extra, more ports of config mapped to
// the test's (a second floodgate, another app).
func startEdgePorts(t *testing.T, config string, fg *testutil.Floodgate, extra map[int]int) *edge {
	t.Helper()
	e := &edge{fg: fg, app: newUpstream(t), c: newClient(t, "")}
	ports := map[int]int{floodgatePort: fg.GRPCPort(), appPort: e.app.port()}
	maps.Copy(ports, extra)
	e.envoy = testutil.StartEnvoy(t, config, ports)
	e.base = e.envoy.URL(edgePort)
	return e
}

// send sends method path through Envoy with the extra headers h (may be nil).
func (e *edge) send(t *testing.T, method, path string, h http.Header) response {
	t.Helper()
	return e.c.send(t, newRequest(t, method, e.base+path, h))
}

// get is send GET.
func (e *edge) get(t *testing.T, path string, h http.Header) response {
	t.Helper()
	return e.send(t, http.MethodGet, path, h)
}

// startEgress runs egress.yaml with its floodgate cluster pointing at fg,
// and returns it with a client that uses it as its HTTP proxy.
func startEgress(t *testing.T, fg *testutil.Floodgate) (*testutil.Envoy, *client) {
	t.Helper()
	envoy := testutil.StartEnvoy(t, "egress.yaml", map[int]int{floodgatePort: fg.GRPCPort()})
	return envoy, newClient(t, envoy.URL(egressPort))
}

// secondFloodgatePort is the port of the floodgate endpoint that
// secondFloodgate adds.
const secondFloodgatePort = 9002

// secondFloodgate returns a copy of config whose floodgate cluster has a
// second endpoint, on secondFloodgatePort.
func secondFloodgate(t *testing.T, config string) string {
	t.Helper()
	endpoint := fmt.Sprintf("        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}\n", floodgatePort)
	second := strings.Replace(endpoint, strconv.Itoa(floodgatePort), strconv.Itoa(secondFloodgatePort), 1)
	return rewriteConfig(t, config, endpoint, endpoint+second)
}

// checkReplicasShared checks that every replica answered some of Envoy's
// calls (the series name, result "allowed" or "denied", of its /metrics),
// and that together they allowed want requests.
func checkReplicasShared(t *testing.T, name string, want float64, replicas ...*testutil.Floodgate) {
	t.Helper()
	var allowed float64
	for i, fg := range replicas {
		a := metric(t, fg.AdminURL(), name+`{result="allowed"}`)
		d := metric(t, fg.AdminURL(), name+`{result="denied"}`)
		if a+d == 0 {
			t.Errorf("replica %d answered no calls: Envoy must spread them over all %d", i+1, len(replicas))
		}
		allowed += a
	}
	if allowed != want {
		t.Errorf("the replicas allowed %v requests together, want %v", allowed, want)
	}
}

// rewriteConfig writes a copy of the file name, with the first occurrence
// of each old string of oldNew (old, new, old, new...) replaced by its new
// one, into a temporary directory and returns its path. Every old string
// must occur.
func rewriteConfig(t *testing.T, name string, oldNew ...string) string {
	t.Helper()
	return rewrite(t, name, 1, oldNew)
}

// rewriteAll is rewriteConfig replacing every occurrence of each old string.
func rewriteAll(t *testing.T, name string, oldNew ...string) string {
	t.Helper()
	return rewrite(t, name, -1, oldNew)
}

// rewrite is rewriteConfig replacing n occurrences (-1: all) of each old
// string.
func rewrite(t *testing.T, name string, n int, oldNew []string) string {
	t.Helper()
	if len(oldNew)%2 != 0 {
		t.Fatalf("rewrite %s: %d strings, want old, new pairs", name, len(oldNew))
	}
	return editCopy(t, name, func(s string) string {
		for i := 0; i < len(oldNew); i += 2 {
			if !strings.Contains(s, oldNew[i]) {
				t.Fatalf("%s no longer contains %q; update the test", name, oldNew[i])
			}
			s = strings.Replace(s, oldNew[i], oldNew[i+1], n)
		}
		return s
	})
}

// editCopy writes edit's version of the file name into a temporary
// directory, under the same base name, and returns its path.
func editCopy(t *testing.T, name string, edit func(string) string) string {
	t.Helper()
	src, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), filepath.Base(name))
	if err := os.WriteFile(path, []byte(edit(string(src))), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// useQuota sends limit GET target requests with the extra headers h (may
// be nil), each of which must reach the app with floodgate's rate-limit
// headers counting down policy's fresh quota of limit per windowSeconds,
// then one more, which must be floodgate's 429. It returns that 429.
func (c *client) useQuota(t *testing.T, target string, h http.Header, policy string, limit, windowSeconds int) response {
	t.Helper()
	for i := 1; i <= limit; i++ {
		r := c.get(t, target, h)
		if r.status != http.StatusOK || r.body != upstreamBody {
			t.Fatalf("%s, request %d of %d: got %d %q, want 200 from the app", target, i, limit, r.status, r.body)
		}
		checkAllowedHeaders(t, r, policy, limit, windowSeconds, limit-i)
	}
	r := c.get(t, target, h)
	checkDenied(t, r, policy, limit, windowSeconds)
	return r
}

// checkStat checks that Envoy's counter name is want; why, if not "", says
// why it must be.
func checkStat(t *testing.T, envoy *testutil.Envoy, name string, want int, why string) {
	t.Helper()
	if got := stat(t, envoy, name); got != want {
		if why != "" {
			why = ": " + why
		}
		t.Errorf("Envoy's %s = %d, want %d%s", name, got, want, why)
	}
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
// through Envoy's ext_authz filter.
func checkDenied(t *testing.T, r response, policy string, limit, windowSeconds int) {
	t.Helper()
	check429(t, r, policy, limit, windowSeconds)
	checkHeader(t, r, "Content-Type", "text/plain")
	checkHeader(t, r, "X-RateLimit-Limit", strconv.Itoa(limit))
}

// check429 checks what floodgate's 429 has through either of Envoy's
// filters, for the rule called policy of limit per windowSeconds: the body
// and Retry-After with the same N, and floodgate's RateLimit headers.
func check429(t *testing.T, r response, policy string, limit, windowSeconds int) {
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

// checkCount checks that the upstream has answered want requests; why, if
// not "", says why it must have.
func (u *upstream) checkCount(t *testing.T, want int, why string) {
	t.Helper()
	if got := u.count(); got != want {
		if why != "" {
			why = ": " + why
		}
		t.Errorf("the upstream got %d requests, want %d%s", got, want, why)
	}
}

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

// newRequest returns a request for method target with the extra headers h
// (may be nil).
func newRequest(t *testing.T, method, target string, h http.Header) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range h {
		req.Header[k] = vs
	}
	return req
}

// get sends GET target with the extra headers h (may be nil).
func (c *client) get(t *testing.T, target string, h http.Header) response {
	t.Helper()
	return c.send(t, newRequest(t, http.MethodGet, target, h))
}

// send sends req and returns the whole response.
func (c *client) send(t *testing.T, req *http.Request) response {
	t.Helper()
	r, err := c.do(req)
	if err != nil {
		host := ""
		if req.Host != "" {
			host = " (Host " + req.Host + ")"
		}
		t.Fatalf("%s %s%s: %v", req.Method, req.URL, host, err)
	}
	return r
}

// do sends req and reads the whole response, returning the error instead
// of failing the test.
func (c *client) do(req *http.Request) (response, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, fmt.Errorf("read body: %w", err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: string(body)}, nil
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
