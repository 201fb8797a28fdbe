// Package soak holds floodgate's soak test: two replicas sharing a real
// memcached under mixed load for a long time (10 minutes from `make soak`),
// while memcached is restarted, frozen and stopped every minute. It reports
// the replicas' resident memory and goroutines at the start and the end, and
// fails when they grew or when a check failed. It is not part of `make test`:
// without FLOODGATE_SOAK it skips at once.
package soak

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/floodgate-rl/floodgate/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// Flatness bounds, idle against idle: goroutines may differ by a few
// (gRPC's and the runtime's own), resident memory may grow by a margin for
// caches that were still filling at the first sample.
const (
	maxGoroutineGrowth = 20
	maxRSSGrowthFactor = 1.25
	rssSlack           = 16 << 20
)

// idlePause is how long the replicas idle before each sample, the same
// before the first and the last so that idle is compared with idle.
const idlePause = 5 * time.Second

// sample is what one replica's /metrics said at one time.
type sample struct {
	goroutines float64
	rss        float64
}

func (s sample) String() string {
	return fmt.Sprintf("%4.0f goroutines, %6.1f MiB resident", s.goroutines, s.rss/(1<<20))
}

func TestSoak(t *testing.T) {
	env := os.Getenv("FLOODGATE_SOAK")
	if env == "" {
		t.Skip("soak test: set FLOODGATE_SOAK=10m (make soak) to run it")
	}
	total, err := time.ParseDuration(env)
	if err != nil || total < time.Minute {
		t.Fatalf("FLOODGATE_SOAK=%q: want a duration of at least 1m", env)
	}

	mc := testutil.StartMemcached(t)
	var replicas []*testutil.Floodgate
	var clients []authv3.AuthorizationClient
	for range 2 {
		// A 30s window: within the warm-up every cache and counter reaches
		// the size it keeps, so growth after it is a leak, not a filling window.
		fg := testutil.StartFloodgate(t, "--memcache-servers", mc.Addr(), "--limit", "100", "--window", "30s", "--log-level", "warn")
		replicas = append(replicas, fg)
		conn, err := grpc.NewClient(fg.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		clients = append(clients, authv3.NewAuthorizationClient(conn))
	}

	l := &load{replicas: replicas, clients: clients}
	warmup := min(total/5, 2*time.Minute)
	t.Logf("soak: %v of mixed load on 2 replicas, memcached %s restarted, frozen or stopped every minute; warm-up %v",
		total, mc.Addr(), warmup)

	// Warm up, then pause to sample both replicas idle. These sleeps and
	// the faults' wait for nothing: they are the lengths of the load, of
	// the idle pause and of the faults that the soak is made of.
	l.start()
	time.Sleep(warmup)
	l.stop()
	time.Sleep(idlePause)
	start := l.samples(t)
	for i, s := range start {
		t.Logf("start   replica %d: %v", i+1, s)
	}

	l.start()
	began := time.Now()
	deadline := began.Add(total - warmup)
	faults := []func(){
		func() { t.Log("fault: memcached restarted (empty)"); mc.Restart() },
		func() {
			t.Log("fault: memcached frozen for 5s")
			mc.Freeze()
			time.Sleep(5 * time.Second)
			mc.Thaw()
		},
		func() {
			t.Log("fault: memcached stopped for 10s")
			mc.Stop()
			time.Sleep(10 * time.Second)
			mc.Restart()
		},
	}
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for n := 0; time.Now().Before(deadline); {
		select {
		case <-tick.C:
			l.audit(t, n)
			faults[n%len(faults)]()
			n++
			now := l.samples(t)
			t.Logf("%v: %d checks, %d errors; replica 1: %v; replica 2: %v",
				time.Since(began).Round(time.Second), l.checks.Load(), l.errors.Load(), now[0], now[1])
		case <-time.After(time.Until(deadline)):
		}
	}
	l.stop()
	time.Sleep(idlePause)
	end := l.samples(t)

	t.Logf("checks: %d, errors: %d, allowed %d, denied %d, degraded %d",
		l.checks.Load(), l.errors.Load(), l.allowed.Load(), l.denied.Load(), l.degraded.Load())
	if n := l.errors.Load(); n > 0 {
		t.Errorf("%d checks failed (first: %v), want none", n, l.firstErr.Load())
	}
	for i := range replicas {
		s, e := start[i], end[i]
		t.Logf("replica %d: start %v; end %v", i+1, s, e)
		if e.goroutines > s.goroutines+maxGoroutineGrowth {
			t.Errorf("replica %d: goroutines grew from %.0f to %.0f", i+1, s.goroutines, e.goroutines)
		}
		if e.rss > s.rss*maxRSSGrowthFactor+rssSlack {
			t.Errorf("replica %d: resident memory grew from %.1f to %.1f MiB", i+1, s.rss/(1<<20), e.rss/(1<<20))
		}
	}
}

// load is the mixed traffic of the soak: many requestors, a few hot ones
// (mostly denied), a per-route limit in its own scope, fresh connections,
// health checks and oversized requests, over both replicas.
type load struct {
	replicas []*testutil.Floodgate
	clients  []authv3.AuthorizationClient

	checks, errors, allowed, denied, degraded atomic.Int64
	firstErr                                  atomic.Value

	halt chan struct{}
	wg   sync.WaitGroup
}

const workers = 12

func (l *load) start() {
	l.halt = make(chan struct{})
	for w := range workers {
		l.wg.Go(func() { l.work(w) })
	}
}

func (l *load) stop() {
	close(l.halt)
	l.wg.Wait()
}

func (l *load) work(w int) {
	rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
	for {
		select {
		case <-l.halt:
			return
		case <-time.After(5 * time.Millisecond):
		}
		r := rng.IntN(len(l.clients))
		c := l.clients[r]
		var req *authv3.CheckRequest
		switch p := rng.IntN(100); {
		case p < 60: // many requestors
			req = checkRequest(fmt.Sprintf("10.%d.%d.%d", rng.IntN(4), rng.IntN(50), rng.IntN(50)+1), nil)
		case p < 80: // a few hot ones, mostly denied
			req = checkRequest(fmt.Sprintf("203.0.113.%d", rng.IntN(10)+1), nil)
		case p < 92: // a per-route limit in its own scope
			req = checkRequest(fmt.Sprintf("198.51.100.%d", rng.IntN(200)+1),
				map[string]string{"floodgate.scope": "login", "floodgate.limit": "5", "floodgate.window": "20s"})
		case p < 96: // a fresh connection, checked and closed
			l.fresh(r)
			continue
		case p < 98: // a health check
			l.health(r)
			continue
		default: // an oversized request, refused by the server
			req = checkRequest("192.0.2.1", nil)
			req.Attributes.Request.Http.Headers["x-padding"] = strings.Repeat("p", 5<<20)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := c.Check(ctx, req, grpc.MaxCallSendMsgSize(8<<20))
			cancel()
			if status.Code(err) != codes.ResourceExhausted {
				l.fail(fmt.Errorf("oversized Check: %v, want RESOURCE_EXHAUSTED", err))
			}
			continue
		}
		l.check(c, req)
	}
}

// check sends one Check with a generous deadline (the soak is about leaks,
// not latency, on a machine it saturates).
func (l *load) check(c authv3.AuthorizationClient, req *authv3.CheckRequest) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := c.Check(ctx, req)
	l.checks.Add(1)
	if err != nil {
		l.fail(err)
		return
	}
	switch codes.Code(resp.GetStatus().GetCode()) {
	case codes.OK:
		l.allowed.Add(1)
		for _, h := range resp.GetOkResponse().GetHeaders() { // set on the upstream request
			if h.GetHeader().GetKey() == "X-Floodgate-Degraded" {
				l.degraded.Add(1)
			}
		}
	case codes.ResourceExhausted:
		l.denied.Add(1)
	default:
		l.fail(fmt.Errorf("status %v", resp.GetStatus()))
	}
}

func (l *load) fresh(r int) {
	conn, err := grpc.NewClient(l.replicas[r].GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		l.fail(err)
		return
	}
	defer conn.Close()
	l.check(authv3.NewAuthorizationClient(conn), checkRequest("10.9.9.9", nil))
}

func (l *load) health(r int) {
	conn, err := grpc.NewClient(l.replicas[r].GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		l.fail(err)
		return
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		l.fail(fmt.Errorf("health: %v, %v", resp.GetStatus(), err))
	}
}

func (l *load) fail(err error) {
	l.errors.Add(1)
	l.firstErr.CompareAndSwap(nil, err.Error())
}

// samples reads goroutines and resident memory from each replica.
func (l *load) samples(t *testing.T) []sample {
	t.Helper()
	var out []sample
	for _, fg := range l.replicas {
		m := scrape(t, fg.AdminURL())
		out = append(out, sample{goroutines: m["go_goroutines"], rss: m["process_resident_memory_bytes"]})
	}
	return out
}

func scrape(t *testing.T, adminURL string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(adminURL + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	out := make(map[string]float64)
	s := bufio.NewScanner(resp.Body)
	for s.Scan() {
		name, v, ok := strings.Cut(s.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			out[name] = f
		}
	}
	return out
}

// checkRequest is what Envoy sends for GET / from the client at ip, with
// the route's context extensions ext.
func checkRequest(ip string, ext map[string]string) *authv3.CheckRequest {
	r := testutil.CheckRequest(ip)
	r.Attributes.ContextExtensions = ext
	return r
}

// audit is the limit's own check in the soak: 300 checks of one new
// requestor over both replicas, 100 at a time, started just before a second
// boundary while memcached is healthy, must allow exactly the limit (100):
// more is a failure, less is reported.
func (l *load) audit(t *testing.T, n int) {
	t.Helper()
	const checks, inFlight, limit = 300, 100, 100
	ip := fmt.Sprintf("192.0.2.%d", n%250+1)
	next := time.Now().Truncate(time.Second).Add(time.Second)
	// Not a wait for the replicas: the audit starts at an instant of the
	// wall clock that they count seconds by, 30ms before a boundary.
	time.Sleep(time.Until(next.Add(-30 * time.Millisecond)))
	var allowed, failed atomic.Int64
	work := make(chan int)
	var wg sync.WaitGroup
	for range inFlight {
		wg.Go(func() {
			for i := range work {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				resp, err := l.clients[i%len(l.clients)].Check(ctx, checkRequest(ip, nil))
				cancel()
				switch {
				case err != nil:
					failed.Add(1)
				case codes.Code(resp.GetStatus().GetCode()) == codes.OK:
					allowed.Add(1)
				}
			}
		})
	}
	for i := range checks {
		work <- i
	}
	close(work)
	wg.Wait()
	switch a := allowed.Load(); {
	case a > limit:
		t.Errorf("audit %d: %d of %d checks of %s allowed over 2 replicas at a second boundary, limit %d", n, a, checks, ip, limit)
	case a < limit || failed.Load() > 0:
		t.Logf("audit %d: %d allowed of %d (limit %d), %d failed", n, a, checks, limit, failed.Load())
	default:
		t.Logf("audit %d: exactly %d of %d allowed at a second boundary", n, a, checks)
	}
}
