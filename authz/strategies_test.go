package authz_test

import (
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/floodgate-rl/floodgate/authz"
	"github.com/floodgate-rl/floodgate/limiter"
)

// testClock is a settable clock, safe for concurrent use.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// rig is a harness whose Server has every strategy, built by
// limiter.NewStrategy on one MemoryStore, with a test clock.
type rig struct {
	*harness
	clock      *testClock
	strategies map[string]limiter.Strategy
}

// t0 is half a minute into a minute: fixed windows of 60s end 30s later.
var t0 = time.Date(2026, 11, 22, 12, 0, 30, 0, time.UTC)

// newRig starts a Server on a real gRPC listener with cfg, whose default
// strategy is the one called def ("" for the default).
func newRig(t testing.TB, cfg authz.Config, def string) *rig {
	t.Helper()
	clock := &testClock{t: t0}
	store := limiter.NewMemoryStore(clock.now)
	t.Cleanup(func() { store.Close() })
	strategies := make(map[string]limiter.Strategy)
	for _, name := range limiter.Strategies() {
		s, err := limiter.NewStrategy(name, store, limiter.StrategyConfig{})
		if err != nil {
			t.Fatalf("NewStrategy(%s): %v", name, err)
		}
		if c, ok := s.(io.Closer); ok {
			t.Cleanup(func() { c.Close() })
		}
		strategies[name] = s
	}
	name, err := limiter.ParseStrategy(def)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Now = clock.now
	cfg.Strategy = def
	cfg.Strategies = strategies
	return &rig{harness: newHarness(t, strategies[name], cfg), clock: clock, strategies: strategies}
}

// expect checks that resp is want.
func expect(t testing.TB, what string, resp, want proto.Message) {
	t.Helper()
	if !proto.Equal(resp, want) {
		t.Errorf("%s:\n got %v\nwant %v", what, resp, want)
	}
}

func TestStrategyExtension(t *testing.T) {
	t.Parallel()
	r := newRig(t, baseConfig(), "")
	ext := func(strategy string) map[string]string {
		return map[string]string{"floodgate.limit": "2", "floodgate.window": "60s", "floodgate.scope": "s-" + strategy, "floodgate.strategy": strategy}
	}

	// fixed: X-RateLimit-Reset is the time to the window boundary (30s at
	// t0) once the last request is taken, and the denial says the same.
	expect(t, "fixed 1st", r.check(t, fromIP(ext("fixed"))), okResp(okHeaders(2, 1, 0, 60, "s-fixed")...))
	expect(t, "fixed 2nd", r.check(t, fromIP(ext("fixed"))), okResp(okHeaders(2, 0, 30, 60, "s-fixed")...))
	expect(t, "fixed 3rd", r.check(t, fromIP(ext("fixed"))), deniedResp(2, 30, 60, "s-fixed"))

	// sliding, the default: the last request is free again a window later.
	expect(t, "sliding 1st", r.check(t, fromIP(ext("sliding"))), okResp(okHeaders(2, 1, 0, 60, "s-sliding")...))
	expect(t, "sliding 2nd", r.check(t, fromIP(ext("sliding"))), okResp(okHeaders(2, 0, 60, 60, "s-sliding")...))
	expect(t, "sliding 3rd", r.check(t, fromIP(ext("sliding"))), deniedResp(2, 60, 60, "s-sliding"))

	// token-bucket and sliding-log take their turns too.
	for _, s := range []string{"token-bucket", "sliding-log"} {
		r.check(t, fromIP(ext(s)))
		r.check(t, fromIP(ext(s)))
		if resp := r.check(t, fromIP(ext(s))); resp.GetDeniedResponse() == nil {
			t.Errorf("%s: third request of 2 per minute allowed: %v", s, resp)
		}
	}

	// At the boundary the fixed window starts again; the sliding one does not.
	r.clock.set(t0.Add(30 * time.Second))
	expect(t, "fixed after the boundary", r.check(t, fromIP(ext("fixed"))), okResp(okHeaders(2, 1, 0, 60, "s-fixed")...))
	expect(t, "sliding after 30s", r.check(t, fromIP(ext("sliding"))), deniedResp(2, 30, 60, "s-sliding"))

	if v := r.metric(t, "floodgate_invalid_overrides_total", "name", "floodgate.strategy"); v != 0 {
		t.Errorf("invalid strategy overrides = %v, want 0", v)
	}
}

func TestDefaultStrategyFlag(t *testing.T) {
	t.Parallel()
	// --strategy fixed: requests without floodgate.strategy use it.
	r := newRig(t, authz.Config{Limit: 1, Window: time.Minute, Headers: true}, "fixed")
	expect(t, "1st", r.check(t, fromIP(nil)), okResp(okHeaders(1, 0, 30, 60, "default")...))
	expect(t, "2nd", r.check(t, fromIP(nil)), deniedResp(1, 30, 60, "default"))
	// Naming the default explicitly is the same strategy, and counters.
	expect(t, "named", r.check(t, fromIP(map[string]string{"floodgate.strategy": "fixed"})), deniedResp(1, 30, 60, "default"))
}

func TestInvalidStrategyExtension(t *testing.T) {
	t.Parallel()
	// Without Config.Strategies only the default exists: other names are
	// invalid values, ignored and counted like any other.
	fs := &fakeStrategy{}
	h := newHarness(t, fs, baseConfig())
	for _, v := range []string{"fixed", "leaky-bucket", "", "SLIDING"} {
		resp := h.check(t, fromIP(map[string]string{"floodgate.strategy": v, "floodgate.limit": "7"}))
		if resp.GetStatus().GetCode() != 0 || fs.last(t).Limit != 7 {
			t.Errorf("floodgate.strategy %q: %v, limit %d", v, resp, fs.last(t).Limit)
		}
	}
	if v := h.metric(t, "floodgate_invalid_overrides_total", "name", "floodgate.strategy"); v != 4 {
		t.Errorf("invalid strategy overrides = %v, want 4", v)
	}
	if n := h.logs.count("invalid context extension ignored", "floodgate.strategy", "not available on this server"); n != 1 {
		t.Errorf("%d log lines about the unavailable strategy, want 1:\n%s", n, h.logs)
	}
	// The default's own name is valid.
	h.check(t, fromIP(map[string]string{"floodgate.strategy": "sliding"}))
	if v := h.metric(t, "floodgate_invalid_overrides_total", "name", "floodgate.strategy"); v != 4 {
		t.Errorf("invalid strategy overrides = %v, want still 4", v)
	}
}

func TestNewServerStrategiesErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  func(*authz.Config)
		want string
	}{
		{"unknown default", func(c *authz.Config) { c.Strategy = "leaky" }, `default strategy: unknown strategy "leaky"`},
		{"unknown name", func(c *authz.Config) { c.Strategies = map[string]limiter.Strategy{"leaky": &fakeStrategy{}} }, `unknown strategy "leaky"`},
		{"empty name", func(c *authz.Config) { c.Strategies = map[string]limiter.Strategy{"": &fakeStrategy{}} }, "empty name"},
		{"nil strategy", func(c *authz.Config) { c.Strategies = map[string]limiter.Strategy{"fixed": nil} }, "fixed is nil"},
	}
	for _, tt := range tests {
		cfg := baseConfig()
		tt.cfg(&cfg)
		_, err := authz.NewServer(&fakeStrategy{}, cfg)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: NewServer error %v, want one containing %q", tt.name, err, tt.want)
		}
	}
}
