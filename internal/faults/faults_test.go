package faults_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/floodgate-rl/floodgate/internal/testutil"
)

// breakerFailures is resilient.DefaultFailures: consecutive store failures
// that open floodgate's circuit breaker.
const breakerFailures = 5

// recoveryBound is how soon floodgate must count in memcached again once
// memcached is back (issue 6): its circuit breaker probes at least once a
// second while open.
const recoveryBound = 2 * time.Second

// TestMemcachedFrozen freezes memcached with SIGSTOP while checks flow, as a
// hung or overloaded server would behave: connections stay open, nothing is
// answered, every call runs into --memcache-timeout.
//
// Every check must still be answered, by floodgate and before Envoy's
// deadline (no gRPC error at all), from the per-replica fallback limiter
// (--fail-mode local, the default), whose answers carry the
// X-Floodgate-Degraded header, and a requestor's limit must still hold in
// this replica. The circuit breaker must stop floodgate from calling the
// frozen server: the store errors during the freeze are bounded by the calls
// in flight when it froze, the failures that open the breaker, and its
// probes, whatever the number of checks. Without the breaker, every check
// would wait for a timeout and count an error. After SIGCONT floodgate
// counts in memcached again.
func TestMemcachedFrozen(t *testing.T) {
	mc := testutil.StartMemcached(t)
	const limit = 50
	// --degraded-header-to-client: the 429s of the fallback say so too.
	fg := testutil.StartFloodgate(t, "--memcache-servers", mc.Addr(), "--limit", strconv.Itoa(limit), "--degraded-header-to-client")
	c := dial(t, fg)
	c.mustCheck(t, "198.51.100.1") // connect

	// Workers check in a loop: worker 0 always for one hot requestor, the
	// others for many requestors.
	const workers, hot = 4, "203.0.113.99"
	var phase atomic.Int32 // 0 healthy, 1 frozen, 2 thawed
	// tallies by phase, and [3]: the checks in flight when the phase
	// changed. A check sent just before the freeze waits for
	// --memcache-timeout by design before the fallback answers it; on a
	// starved machine that can pass Envoy's deadline, which says nothing
	// of floodgate, so those are held to being answered, not to the
	// deadline.
	var tallies [4]tally
	var hotFrozenAllowed, hotFrozenDenied atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				case <-time.After(time.Millisecond):
				}
				ip := fmt.Sprintf("198.51.%d.%d", 100+w, n%250+1)
				if w == 0 {
					ip = hot
				}
				p := phase.Load()
				o := c.check(ip)
				if phase.Load() != p {
					tallies[3].add(o)
					continue
				}
				tallies[p].add(o)
				if w == 0 && p == 1 && o.err == nil && o.degraded != "" {
					if o.allowed {
						hotFrozenAllowed.Add(1)
					} else {
						hotFrozenDenied.Add(1)
					}
				}
			}
		})
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()

	// Not waits for another process: the phases of the fault, traffic
	// for a second before it and for three seconds during it.
	time.Sleep(time.Second)
	before := metrics(t, fg)
	phase.Store(1)
	mc.Freeze()
	time.Sleep(3 * time.Second)
	during := metrics(t, fg)
	phase.Store(2)
	mc.Thaw()

	// Back within a generous bound (the 2-second promise is tested on a
	// restart, where it does not depend on when the frozen calls give up).
	n := 0
	testutil.WaitFor(t, 5*time.Second, func() error {
		n++
		if o := c.mustCheck(t, fmt.Sprintf("192.0.2.%d", n%250+1)); o.degraded != "" {
			return errors.New("memcached thawed: checks still decided by the fallback")
		}
		return nil
	})
	close(stop)
	wg.Wait()
	stop = make(chan struct{}) // for the deferred close

	for i, name := range []string{"healthy", "frozen", "thawed"} {
		ta := &tallies[i]
		if len(ta.errs) > 0 {
			t.Errorf("%s: %d of %d checks failed, want none; first: %v", name, len(ta.errs), ta.n, ta.errs[0])
		}
		t.Logf("%s: %d checks, %d allowed, %d degraded; latency p50 %v, p99 %v, max %v",
			name, ta.n, ta.allowed, ta.degraded, ta.percentile(50), ta.percentile(99), ta.percentile(100))
	}
	across := &tallies[3]
	t.Logf("across a phase change: %d checks, latency max %v", across.n, across.percentile(100))
	if across.n > 2*workers {
		t.Errorf("%d checks across a phase change, want at most %d (one per worker at the freeze and at the thaw)", across.n, 2*workers)
	}
	for _, err := range across.errs {
		if status.Code(err) != codes.DeadlineExceeded {
			t.Errorf("a check across a phase change failed: %v", err)
		}
	}
	frozen := &tallies[1]
	if frozen.degraded == 0 {
		t.Errorf("no check during the freeze carried %s", degradedHeader)
	}
	if v := during[`floodgate_decisions_total{result="fallback_allowed"}`] + during[`floodgate_decisions_total{result="fallback_denied"}`]; v == 0 {
		t.Error("floodgate_decisions_total counted no fallback decisions during the freeze")
	}
	if v := during[`floodgate_decisions_total{result="fail_open"}`]; v != 0 {
		t.Errorf("%v checks failed open: with --fail-mode local none should", v)
	}
	if v := during["floodgate_store_breaker_rejected_total"]; v == 0 {
		t.Error("floodgate_store_breaker_rejected_total = 0: the breaker never kept a call from the frozen memcached")
	}

	// The breaker bounds the calls that waited for the frozen server.
	// Probes: the open periods are at least 50ms, 100ms, 200ms, 400ms and
	// then 500ms, so 3 seconds hold fewer than 10. Before the breaker
	// opens, a decision of a requestor the fallback already allowed first
	// tries to charge that to memcached: one more call per worker.
	bound := float64(3*workers + breakerFailures + 10)
	errs := storeErrors(during) - storeErrors(before)
	if frozen.n <= int(2*bound) {
		t.Fatalf("only %d checks during the freeze: too few to tell a breaker from none", frozen.n)
	}
	t.Logf("store errors during the freeze: %v (bound %v)", errs, bound)
	if errs > bound {
		t.Errorf("%v store errors during the freeze for %d checks, want at most %v: the breaker must stop calling a frozen memcached",
			errs, frozen.n, bound)
	}

	// The limit held in this replica: the hot requestor got at most the
	// limit from the fallback, and was then denied by it.
	if a, d := hotFrozenAllowed.Load(), hotFrozenDenied.Load(); a > limit || d == 0 {
		t.Errorf("hot requestor during the freeze: %d allowed, %d denied by the fallback; want at most %d allowed, then denials", a, d, limit)
	}
}

// TestMemcachedKilledAndRestarted kills memcached under two replicas that
// share it, then starts an empty one on the same port. While it is down
// every check is answered, decided per replica; once it is back each
// replica counts in it again within recoveryBound, and the replicas share
// one limit again.
func TestMemcachedKilledAndRestarted(t *testing.T) {
	mc := testutil.StartMemcached(t)
	const limit = 5
	// --degraded-header-to-client: the 429s of the fallback say so too.
	a := dial(t, testutil.StartFloodgate(t, "--memcache-servers", mc.Addr(), "--limit", strconv.Itoa(limit), "--degraded-header-to-client"))
	b := dial(t, testutil.StartFloodgate(t, "--memcache-servers", mc.Addr(), "--limit", strconv.Itoa(limit), "--degraded-header-to-client"))

	const r = "203.0.113.10"
	for i := range 2 {
		if o := a.mustCheck(t, r); !o.allowed || o.degraded != "" {
			t.Fatalf("check %d with memcached up: allowed %v, degraded %q; want allowed, not degraded", i+1, o.allowed, o.degraded)
		}
	}

	// Background traffic on both replicas for the whole outage.
	var bg tally
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, c := range []*authClient{a, b} {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Millisecond):
				}
				bg.add(c.check(fmt.Sprintf("198.51.%d.%d", 100+i, n%250+1)))
			}
		})
	}

	mc.Stop()
	// Replica a decides alone, from what it knows: r had used 2 of the
	// limit through it, so it gets the rest, then 429s.
	allowed := 0
	for i := range 2 * limit {
		o := a.mustCheck(t, r)
		if o.degraded != "memcached-unavailable" {
			t.Fatalf("check %d with memcached down: %s %q, want memcached-unavailable", i+1, degradedHeader, o.degraded)
		}
		if o.allowed {
			allowed++
		}
	}
	if allowed != limit-2 {
		t.Errorf("with memcached down replica a allowed %d of %d checks, want %d: the limit holds per replica, less what it knew was used", allowed, 2*limit, limit-2)
	}
	time.Sleep(time.Second) // the fault's length: the breaker backs off further

	mc.Restart() // empty, on the same port
	back := time.Now()
	for name, c := range map[string]*authClient{"a": a, "b": b} {
		n := 0
		testutil.WaitFor(t, recoveryBound-time.Since(back), func() error {
			n++
			if o := c.mustCheck(t, fmt.Sprintf("192.0.2.%d", n%250+1)); o.degraded != "" {
				return fmt.Errorf("replica %s still decides with the fallback %v after memcached came back", name, time.Since(back).Round(time.Millisecond))
			}
			return nil
		})
		t.Logf("replica %s counts in memcached again %v after its restart", name, time.Since(back).Round(time.Millisecond))
	}
	close(stop)
	wg.Wait()
	if len(bg.errs) > 0 {
		t.Errorf("%d of %d background checks failed, want none; first: %v", len(bg.errs), bg.n, bg.errs[0])
	}

	// One limit across both replicas again.
	const q = "203.0.113.20"
	for i := range limit + 1 {
		c := []*authClient{a, b}[i%2]
		o := c.mustCheck(t, q)
		if o.degraded != "" || o.allowed != (i < limit) {
			t.Fatalf("check %d after recovery: allowed %v, degraded %q; want allowed %v from memcached", i+1, o.allowed, o.degraded, i < limit)
		}
	}
}

// TestFloodgateRestartMidWindow kills floodgate (SIGKILL) in the middle of a
// requestor's window and starts a new one: the counts live in memcached, so
// the limit holds across the restart.
func TestFloodgateRestartMidWindow(t *testing.T) {
	mc := testutil.StartMemcached(t)
	const limit, ip = 10, "203.0.113.30"
	fg := testutil.StartFloodgate(t, "--memcache-servers", mc.Addr(), "--limit", strconv.Itoa(limit))
	c := dial(t, fg)
	for i := range 6 {
		if o := c.mustCheck(t, ip); !o.allowed {
			t.Fatalf("check %d before the restart denied", i+1)
		}
	}
	fg.Stop()

	c = dial(t, testutil.StartFloodgate(t, "--memcache-servers", mc.Addr(), "--limit", strconv.Itoa(limit)))
	for i := range 4 {
		o := c.mustCheck(t, ip)
		want := strconv.Itoa(limit - 6 - i - 1)
		if !o.allowed || o.degraded != "" || o.headers["x-ratelimit-remaining"] != want {
			t.Fatalf("check %d after the restart: allowed %v, degraded %q, remaining %q; want allowed with %s remaining",
				i+1, o.allowed, o.degraded, o.headers["x-ratelimit-remaining"], want)
		}
	}
	o := c.mustCheck(t, ip)
	if o.allowed || o.code != codes.ResourceExhausted {
		t.Fatalf("check 11: allowed %v, want a 429: the limit must hold across the restart", o.allowed)
	}
	if n, err := strconv.Atoi(o.headers["retry-after"]); err != nil || n < 3500 || n > 3600 {
		t.Errorf("Retry-After %q, want about an hour (the first request's bucket leaves the window)", o.headers["retry-after"])
	}
}

// TestBurstAcrossReplicas sends 1,000 concurrent checks for one requestor,
// spread over 3 replicas sharing memcached: exactly the limit is allowed.
// The store timeout is raised to 2s so that no call times out on a loaded
// machine (a timeout would rightly send its decision to the per-replica
// fallback, which is not what this test is about), and the checks get 30s:
// this tests exactness, not latency.
func TestBurstAcrossReplicas(t *testing.T) {
	mc := testutil.StartMemcached(t)
	const limit, burst, ip = 100, 1000, "203.0.113.40"
	var clients []*authClient
	for range 3 {
		fg := testutil.StartFloodgate(t, "--memcache-servers", mc.Addr(), "--memcache-timeout", "2s", "--limit", strconv.Itoa(limit))
		c := dial(t, fg)
		c.mustCheck(t, "198.51.100.1") // connect before the burst
		clients = append(clients, c)
	}

	start := make(chan struct{})
	var allowed, denied, degraded atomic.Int64
	errs := make(chan error, burst)
	var wg sync.WaitGroup
	for i := range burst {
		wg.Go(func() {
			<-start
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			resp, err := clients[i%3].Check(ctx, testutil.CheckRequest(ip))
			if err != nil {
				errs <- err
				return
			}
			switch codes.Code(resp.GetStatus().GetCode()) {
			case codes.OK:
				allowed.Add(1)
				if upstreamDegraded(resp) != "" {
					degraded.Add(1)
				}
			case codes.ResourceExhausted:
				denied.Add(1)
			default:
				errs <- fmt.Errorf("status %v", resp.GetStatus())
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Check: %v", err)
	}
	if degraded.Load() != 0 {
		t.Fatalf("%d checks were decided by the fallback: a store call failed", degraded.Load())
	}
	if a, d := allowed.Load(), denied.Load(); a != limit || d != burst-limit {
		t.Errorf("%d concurrent checks over 3 replicas: %d allowed, %d denied; want exactly %d allowed", burst, a, d, limit)
	}
	var fromMetrics float64
	for _, c := range clients {
		fromMetrics += metrics(t, c.fg)[`floodgate_decisions_total{result="allowed"}`] - 1 // minus the connecting check
	}
	if fromMetrics != limit {
		t.Errorf("the replicas' floodgate_decisions_total{result=\"allowed\"} add up to %v, want %d", fromMetrics, limit)
	}
}

// TestEnvoyDegraded runs envoy/front-proxy.yaml in front of floodgate with
// memcached stopped: clients keep being limited, by the replica's fallback,
// and Envoy passes X-Floodgate-Degraded to the app on the requests it
// allows (so that the app and Envoy's access log see it), never to the
// client, allowed or denied: it would tell an attacker when the limit is
// weaker. A value the client sends itself does not reach the app. (How
// each shipped config behaves when floodgate itself is down is
// TestFloodgateDown in envoy/envoy_test.go.)
func TestEnvoyDegraded(t *testing.T) {
	testutil.EnvoyPath(t) // skip (or fail under CI) before starting anything
	mc := testutil.StartMemcached(t)
	fg := testutil.StartFloodgate(t, "--memcache-servers", mc.Addr(), "--limit", "3")
	seen := make(chan string, 16) // the app's X-Floodgate-Degraded, per request
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case seen <- r.Header.Get(degradedHeader):
		default:
		}
		io.WriteString(w, "hello from upstream\n")
	}))
	t.Cleanup(app.Close)
	envoy := testutil.StartEnvoy(t, filepath.Join(testutil.ModuleRoot(t), "envoy", "front-proxy.yaml"), map[int]int{
		9001: fg.GRPCPort(),
		8080: app.Listener.Addr().(*net.TCPAddr).Port,
	})
	hc := &http.Client{Timeout: 10 * time.Second}
	t.Cleanup(hc.CloseIdleConnections)
	get := func() *http.Response {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, envoy.URL(10000)+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set(degradedHeader, "spoofed")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	app1 := func(want string) {
		t.Helper()
		select {
		case got := <-seen:
			if got != want {
				t.Errorf("the app saw %s %q, want %q", degradedHeader, got, want)
			}
		default:
			t.Error("the app got no request")
		}
	}

	if r := get(); r.StatusCode != http.StatusOK || r.Header.Get(degradedHeader) != "" || r.Header.Get("X-RateLimit-Remaining") != "2" {
		t.Fatalf("memcached up: %d, %s %q, X-RateLimit-Remaining %q; want 200, none, 2",
			r.StatusCode, degradedHeader, r.Header.Get(degradedHeader), r.Header.Get("X-RateLimit-Remaining"))
	}
	app1("") // the client's "spoofed" removed
	mc.Stop()
	// The fallback starts from what the replica knew: 1 of 3 used.
	for i, want := range []int{200, 200, 429, 429, 429} {
		r := get()
		if r.StatusCode != want || r.Header.Get(degradedHeader) != "" {
			t.Fatalf("memcached down, request %d: %d with %s %q; want %d without it",
				i+1, r.StatusCode, degradedHeader, r.Header.Get(degradedHeader), want)
		}
		if want == http.StatusOK {
			app1("memcached-unavailable")
		}
	}
	if n := len(seen); n != 0 {
		t.Errorf("the app got %d requests more than the 3 allowed", n)
	}
}
