package authz_test

import (
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/floodgate-rl/floodgate/authz"
	"github.com/floodgate-rl/floodgate/internal/testutil"
	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/memory"
)

// rig is a harness whose Server has every strategy, built by
// limiter.NewStrategy on one memory.Store, with a test clock.
type rig struct {
	*harness
	clock      *testutil.Clock
	strategies map[string]limiter.Strategy
}

// t0 is half a minute into a minute: fixed windows of 60s end 30s later.
var t0 = time.Date(2026, 11, 22, 12, 0, 30, 0, time.UTC)

// newRig starts a Server on a real gRPC listener with cfg, whose default
// strategy is the one called def ("" for the default).
func newRig(t testing.TB, cfg authz.Config, def string) *rig {
	t.Helper()
	clock := testutil.NewClock(t0)
	store := memory.New(clock.Now)
	t.Cleanup(func() { store.Close() })
	strategies := make(map[string]limiter.Strategy)
	for _, name := range limiter.Strategies() {
		// One process, one clock: no skew margin (which costs the value
		// strategies up to a second of refill; limiter tests that).
		s, err := limiter.NewStrategy(name, store, limiter.StrategyConfig{MaxClockSkew: -1})
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
	cfg.Now = clock.Now
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
	r.clock.Set(t0.Add(30 * time.Second))
	expect(t, "fixed after the boundary", r.check(t, fromIP(ext("fixed"))), okResp(okHeaders(2, 1, 0, 60, "s-fixed")...))
	expect(t, "sliding after 30s", r.check(t, fromIP(ext("sliding"))), deniedResp(2, 30, 60, "s-sliding"))

	r.expectMetric(t, 0, "floodgate_invalid_overrides_total", "name", "floodgate.strategy")
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
	h.expectMetric(t, 4, "floodgate_invalid_overrides_total", "name", "floodgate.strategy")
	if n := h.logs.CountLines("invalid context extension ignored", "floodgate.strategy", "not available on this server"); n != 1 {
		t.Errorf("%d log lines about the unavailable strategy, want 1:\n%s", n, h.logs)
	}
	// The default's own name is valid.
	h.check(t, fromIP(map[string]string{"floodgate.strategy": "sliding"}))
	h.expectMetric(t, 4, "floodgate_invalid_overrides_total", "name", "floodgate.strategy")
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

// TestUnservableRouteValues gives routes values that are valid one by one
// but that their strategy cannot serve together: the values dropped fall
// back to the server's, counted and logged as invalid extensions, and the
// request is decided (never the fail mode). Every strategy is a
// fakeStrategy, which records the Request it is asked.
func TestUnservableRouteValues(t *testing.T) {
	t.Parallel()
	const maxInt64 = "9223372036854775807"
	tests := []struct {
		name     string
		def      string // the server's default strategy
		limit    int64  // the server's default limit (window 1h)
		window   time.Duration
		ext      map[string]string
		strategy string // the strategy asked
		want     limiter.Request
		invalid  []string // extensions counted and logged as invalid
	}{
		{name: "sliding-log, limit 1000", ext: map[string]string{"floodgate.strategy": "sliding-log", "floodgate.limit": "1000"},
			strategy: "sliding-log", want: limiter.Request{Limit: 1000, Window: time.Hour}},
		{name: "sliding-log, limit 1001", ext: map[string]string{"floodgate.strategy": "sliding-log", "floodgate.limit": "1001"},
			strategy: "sliding-log", want: limiter.Request{Limit: 100, Window: time.Hour}, invalid: []string{"floodgate.limit"}},
		{name: "sliding-log by default, route limit 5000", def: "sliding-log", ext: map[string]string{"floodgate.limit": "5000"},
			strategy: "sliding-log", want: limiter.Request{Limit: 100, Window: time.Hour}, invalid: []string{"floodgate.limit"}},
		{name: "sliding-log with the server's limit 5000", limit: 5000, ext: map[string]string{"floodgate.strategy": "sliding-log", "floodgate.window": "1m"},
			strategy: "sliding", want: limiter.Request{Limit: 5000, Window: time.Minute}, invalid: []string{"floodgate.strategy"}},
		{name: "token-bucket, limit 2^63-1", ext: map[string]string{"floodgate.strategy": "token-bucket", "floodgate.limit": maxInt64},
			strategy: "token-bucket", want: limiter.Request{Limit: 100, Window: time.Hour}, invalid: []string{"floodgate.limit"}},
		{name: "token-bucket, the largest limit for 1h", ext: map[string]string{"floodgate.strategy": "token-bucket", "floodgate.limit": "640511947003"},
			strategy: "token-bucket", want: limiter.Request{Limit: 640511947003, Window: time.Hour}},
		{name: "token-bucket, one more", ext: map[string]string{"floodgate.strategy": "token-bucket", "floodgate.limit": "640511947004"},
			strategy: "token-bucket", want: limiter.Request{Limit: 100, Window: time.Hour}, invalid: []string{"floodgate.limit"}},
		{name: "token-bucket, the window at fault", limit: 1e15, window: time.Second, ext: map[string]string{"floodgate.strategy": "token-bucket", "floodgate.window": "3s"},
			strategy: "token-bucket", want: limiter.Request{Limit: 1e15, Window: time.Second}, invalid: []string{"floodgate.window"}},
		{name: "token-bucket, the window rather than the limit", limit: 1e11, ext: map[string]string{"floodgate.strategy": "token-bucket", "floodgate.limit": "200000000000", "floodgate.window": "24h"},
			strategy: "token-bucket", want: limiter.Request{Limit: 2e11, Window: time.Hour}, invalid: []string{"floodgate.window"}},
		{name: "token-bucket, neither limit nor window alone", limit: 1e11, ext: map[string]string{"floodgate.strategy": "token-bucket", "floodgate.limit": "1000000000000", "floodgate.window": "24h"},
			strategy: "token-bucket", want: limiter.Request{Limit: 1e11, Window: time.Hour}, invalid: []string{"floodgate.limit", "floodgate.window"}},
		{name: "token-bucket, only the strategy can go", limit: 1e12, ext: map[string]string{"floodgate.strategy": "token-bucket", "floodgate.window": "24h"},
			strategy: "sliding", want: limiter.Request{Limit: 1e12, Window: 24 * time.Hour}, invalid: []string{"floodgate.strategy"}},
		{name: "sliding takes any limit", ext: map[string]string{"floodgate.limit": maxInt64},
			strategy: "sliding", want: limiter.Request{Limit: 1<<63 - 1, Window: time.Hour}},
		{name: "fixed takes any limit", ext: map[string]string{"floodgate.strategy": "fixed", "floodgate.limit": maxInt64, "floodgate.window": "24h"},
			strategy: "fixed", want: limiter.Request{Limit: 1<<63 - 1, Window: 24 * time.Hour}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fakes := make(map[string]limiter.Strategy)
			for _, name := range limiter.Strategies() {
				fakes[name] = &fakeStrategy{}
			}
			cfg := authz.Config{Limit: 100, Window: time.Hour, Headers: true, Strategy: tt.def, Strategies: fakes}
			if tt.limit != 0 {
				cfg.Limit = tt.limit
			}
			if tt.window != 0 {
				cfg.Window = tt.window
			}
			def, _ := limiter.ParseStrategy(tt.def)
			h := newHarness(t, fakes[def], cfg)
			const calls = 3
			for range calls {
				if resp := h.check(t, fromIP(tt.ext)); resp.GetStatus().GetCode() != 0 {
					t.Fatalf("status %v, want OK", resp.GetStatus())
				}
			}
			want := tt.want
			want.Requestor = "ip:203.0.113.7"
			for name, s := range fakes {
				reqs := s.(*fakeStrategy).requests()
				if name != tt.strategy {
					if len(reqs) > 0 {
						t.Errorf("strategy %s asked %+v, want %s asked", name, reqs[0], tt.strategy)
					}
					continue
				}
				if len(reqs) != calls {
					t.Fatalf("strategy %s asked %d times, want %d", name, len(reqs), calls)
				}
				for _, got := range reqs {
					if got != want {
						t.Errorf("strategy %s asked %+v, want %+v", name, got, want)
					}
				}
			}
			for _, name := range []string{"floodgate.limit", "floodgate.window", "floodgate.strategy"} {
				wantN, wantLogs := 0.0, 0
				for _, n := range tt.invalid {
					if n == name {
						wantN, wantLogs = calls, 1
					}
				}
				h.expectMetric(t, wantN, "floodgate_invalid_overrides_total", "name", name)
				if n := h.logs.CountLines("invalid context extension ignored", "name="+name); n != wantLogs {
					t.Errorf("%s logged %d times, want %d; logs:\n%s", name, n, wantLogs, h.logs)
				}
			}
		})
	}
}

// TestUnservableRouteValuesDecided is the finding itself, on the real
// strategies: a sliding log asked for 5000 requests, and a token bucket
// asked for 2^63-1, are decided under the server's limit, not failed open.
func TestUnservableRouteValuesDecided(t *testing.T) {
	t.Parallel()
	r := newRig(t, authz.Config{Limit: 2, Window: time.Minute, Headers: true}, "")
	for _, tt := range []struct{ strategy, limit string }{
		{"sliding-log", "5000"},
		{"token-bucket", "9223372036854775807"},
	} {
		ext := map[string]string{"floodgate.strategy": tt.strategy, "floodgate.limit": tt.limit, "floodgate.scope": "s-" + tt.strategy}
		expect(t, tt.strategy+" 1st", r.check(t, fromIP(ext)), okResp(okHeaders(2, 1, 0, 60, "s-"+tt.strategy)...))
		r.check(t, fromIP(ext))
		if resp := r.check(t, fromIP(ext)); resp.GetDeniedResponse() == nil {
			t.Errorf("%s: third request of 2 per minute: %v, want a 429", tt.strategy, resp)
		}
	}
	// The bounds are the strategies' own: the largest limits they take are
	// decided under the route's limit, by the real strategies.
	for _, tt := range []struct {
		strategy, limit string
		want            int
	}{
		{"sliding-log", "1000", 1000},
		{"sliding-log", "1001", 2},
		{"token-bucket", "38430716820228", 38430716820228}, // 2^61 / 60,000 ms
		{"token-bucket", "38430716820229", 2},
	} {
		ext := map[string]string{"floodgate.strategy": tt.strategy, "floodgate.limit": tt.limit, "floodgate.scope": "b" + tt.limit}
		resp := r.check(t, fromIP(ext))
		if got := resp.GetOkResponse().GetResponseHeadersToAdd(); len(got) == 0 || got[0].GetHeader().GetValue() != strconv.Itoa(tt.want) {
			t.Errorf("%s, limit %s: %v, want allowed with X-RateLimit-Limit %d", tt.strategy, tt.limit, resp, tt.want)
		}
	}
	r.expectMetric(t, 0, "floodgate_decisions_total", "result", "fail_open")
	r.expectMetric(t, 8, "floodgate_invalid_overrides_total", "name", "floodgate.limit")
}

// TestUnservableRuleLimit: a policy rule that leaves the strategy to the
// route, whose strategy cannot serve the rule's limit, is decided by the
// default strategy; the route's strategy counts as invalid.
func TestUnservableRuleLimit(t *testing.T) {
	t.Parallel()
	r := newRig(t, authz.Config{Limit: 2, Window: time.Minute, Headers: true}, "")
	r.setPolicy(t, "rules:\n- name: big\n  match: {scope: big}\n  limit: 5000\n  window: 1m\n")
	ext := map[string]string{"floodgate.strategy": "sliding-log", "floodgate.scope": "big"}
	expect(t, "1st", r.check(t, fromIP(ext)), okResp(okHeaders(5000, 4999, 0, 60, "big")...))
	r.expectMetric(t, 0, "floodgate_decisions_total", "result", "fail_open")
	r.expectMetric(t, 1, "floodgate_invalid_overrides_total", "name", "floodgate.strategy")
}

func TestNewServerUnservableDefaults(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		strategy string
		limit    int64
		window   time.Duration
	}{
		{"sliding-log", 1001, time.Hour},
		{"token-bucket", 1<<63 - 1, time.Hour},
		{"token-bucket", 1e12, 24 * time.Hour},
	} {
		cfg := authz.Config{Limit: tt.limit, Window: tt.window, Strategy: tt.strategy}
		_, err := authz.NewServer(&fakeStrategy{}, cfg)
		if err == nil || !strings.Contains(err.Error(), "default strategy: ") || !strings.Contains(err.Error(), tt.strategy) {
			t.Errorf("%s with limit %d per %s: NewServer error %v, want one about the default strategy", tt.strategy, tt.limit, tt.window, err)
		}
	}
}
