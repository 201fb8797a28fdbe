package authz_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/authz"
	"github.com/floodgate-rl/floodgate/internal/testutil"
	"github.com/floodgate-rl/floodgate/limiter"
)

// denyingHarness is a harness whose strategy denies everything with a
// wait of 42s, on a test clock at t0.
func denyingHarness(t *testing.T, cfg authz.Config) (*harness, *testutil.Clock) {
	t.Helper()
	clock := testutil.NewClock(t0)
	cfg.Now = clock.Now
	return newHarness(t, &fakeStrategy{AllowFn: decide(limiter.Decision{RetryAfter: 42 * time.Second}, nil)}, cfg), clock
}

// TestLimitedLogOncePerWindow: the first denial of a requestor in a scope
// is logged with its scope, identity, limit, window and N; later denials
// within the window are not; another scope or requestor, or the next
// window, is a new line.
func TestLimitedLogOncePerWindow(t *testing.T) {
	t.Parallel()
	h, clock := denyingHarness(t, authz.Config{Limit: 5, Window: time.Minute, Headers: true})
	login := map[string]string{"floodgate.scope": "login"}
	from := func(ip string, ext map[string]string) {
		h.check(t, checkReq(socket(ip, 40000), map[string]string{":path": "/"}, ext))
	}
	const line = `level=INFO msg="requestor limited" scope=login identity=ip:203.0.113.7 limit=5 window=60 retry_after=42 decision=denied suppressed=0`
	for range 5 {
		from("203.0.113.7", login)
	}
	if n := h.logs.CountLines(line); n != 1 {
		t.Fatalf("%d lines %q after 5 denials, want 1; logs:\n%s", n, line, h.logs)
	}
	from("203.0.113.7", nil)
	from("203.0.113.8", login)
	if n := h.logs.CountLines(`msg="requestor limited" scope=default identity=ip:203.0.113.7 `); n != 1 {
		t.Errorf("another scope: %d lines, want 1; logs:\n%s", n, h.logs)
	}
	if n := h.logs.CountLines(`msg="requestor limited" scope=login identity=ip:203.0.113.8 `); n != 1 {
		t.Errorf("another requestor: %d lines, want 1; logs:\n%s", n, h.logs)
	}
	clock.Set(t0.Add(59 * time.Second))
	from("203.0.113.7", login)
	if n := h.logs.CountLines(line); n != 1 {
		t.Errorf("within the window: %d lines, want still 1", n)
	}
	clock.Set(t0.Add(time.Minute))
	from("203.0.113.7", login)
	if n := h.logs.CountLines(line); n != 2 {
		t.Errorf("in the next window: %d lines, want 2; logs:\n%s", n, h.logs)
	}
	if n := h.logs.CountLines(`msg="requestor limited"`); n != 4 {
		t.Errorf("%d lines in all, want 4; logs:\n%s", n, h.logs)
	}
}

// TestLimitedLogIdentities: an identity from a header is logged as its
// fingerprint unless Config.ShowIdentities; the rule that decided is
// named.
func TestLimitedLogIdentities(t *testing.T) {
	t.Parallel()
	key, err := authz.ParseKey("header:x-api-key", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		show bool
		want string
	}{
		// printf %s k-secret-1 | sha256sum | cut -c1-12
		{false, `identity=header:x-api-key:sha256:` + fingerprint("k-secret-1") + " "},
		{true, `identity=header:x-api-key:k-secret-1 `},
	} {
		t.Run(fmt.Sprintf("show=%v", tt.show), func(t *testing.T) {
			t.Parallel()
			h, _ := denyingHarness(t, authz.Config{Limit: 5, Window: time.Minute, Key: key, ShowIdentities: tt.show})
			if err := h.srv.SetPolicy(mustPolicy(t, "rules:\n- name: api\n  limit: 5\n  window: 1m\n")); err != nil {
				t.Fatal(err)
			}
			h.check(t, checkReq(socket("203.0.113.7", 40000), map[string]string{":path": "/", "x-api-key": "k-secret-1"}, nil))
			if n := h.logs.CountLines(`msg="requestor limited" scope=api rule=api `+tt.want, "limit=5 window=60 retry_after=42"); n != 1 {
				t.Errorf("want one line with %q; logs:\n%s", tt.want, h.logs)
			}
			if !tt.show && strings.Contains(h.logs.String(), "k-secret-1") {
				t.Errorf("the key is in the log:\n%s", h.logs)
			}
		})
	}
}

// TestLimitedLogRateLimited: at most 20 lines at once and 10 a second;
// the next line says how many were suppressed.
func TestLimitedLogRateLimited(t *testing.T) {
	t.Parallel()
	h, clock := denyingHarness(t, authz.Config{Limit: 5, Window: time.Hour, Headers: true})
	for i := range 50 {
		h.check(t, checkReq(socket(fmt.Sprintf("198.51.100.%d", i), 40000), nil, nil))
	}
	if n := h.logs.CountLines(`msg="requestor limited"`); n != 20 {
		t.Fatalf("%d lines for 50 first denials at once, want 20 (the burst); logs:\n%s", n, h.logs)
	}
	clock.Set(t0.Add(time.Second))
	h.check(t, checkReq(socket("198.51.100.200", 40000), nil, nil))
	if n := h.logs.CountLines(`msg="requestor limited"`, "identity=ip:198.51.100.200 ", "suppressed=30"); n != 1 {
		t.Errorf("the line a second later: want it with suppressed=30; logs:\n%s", h.logs)
	}
	// The suppressed requestors were remembered: no line for them in
	// their window, and none counted twice.
	clock.Set(t0.Add(2 * time.Second))
	h.check(t, checkReq(socket("198.51.100.49", 40000), nil, nil))
	h.check(t, checkReq(socket("198.51.100.201", 40000), nil, nil))
	if n := h.logs.CountLines(`msg="requestor limited"`, "identity=ip:198.51.100.201 ", "suppressed=0"); n != 1 {
		t.Errorf("want the next line with suppressed=0; logs:\n%s", h.logs)
	}
	if n := h.logs.CountLines(`identity=ip:198.51.100.49 `); n != 0 {
		t.Errorf("a suppressed requestor logged within its window; logs:\n%s", h.logs)
	}
}

// TestLimitedLogNotForAllowed: allowed, fail-open and blocked answers are
// not "limited".
func TestLimitedLogNotForAllowed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, &fakeStrategy{AllowFn: decide(limiter.Decision{}, errStore)}, baseConfig())
	h.check(t, fromIP(nil))
	h2 := newHarness(t, &fakeStrategy{}, baseConfig())
	h2.check(t, fromIP(nil))
	if n := h.logs.CountLines("requestor limited") + h2.logs.CountLines("requestor limited"); n != 0 {
		t.Errorf("%d lines, want 0; logs:\n%s%s", n, h.logs, h2.logs)
	}
}

// BenchmarkCheckDeniedLogged is BenchmarkCheck's denial with the log at
// level Info, so that every denial goes through the "requestor limited"
// bookkeeping: one requestor denied again and again (a hash and a lookup),
// and a new requestor each time (the bounded set full, the line budget
// spent: counted as suppressed).
func BenchmarkCheckDeniedLogged(b *testing.B) {
	for _, bc := range []struct {
		name     string
		distinct bool
	}{{"same-requestor", false}, {"new-requestors", true}} {
		b.Run(bc.name, func(b *testing.B) {
			deny := func(_ context.Context, req limiter.Request, _ time.Time) (limiter.Decision, error) {
				return limiter.Decision{Limit: req.Limit, Window: req.Window, RetryAfter: 3 * time.Second}, nil
			}
			srv, err := authz.NewServer(strategyFunc(deny), authz.Config{Limit: 100, Window: time.Hour, Headers: true,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				b.Fatal(err)
			}
			var n atomic.Int64
			ctx := context.Background()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				req := checkReq(socket("203.0.113.7", 41000), nil, nil)
				for pb.Next() {
					if bc.distinct {
						i := n.Add(1)
						req = checkReq(socket(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), 41000), nil, nil)
					}
					if _, err := srv.Check(ctx, req); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
