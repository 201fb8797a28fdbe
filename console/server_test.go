package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/floodgate-rl/floodgate/console"
	"github.com/floodgate-rl/floodgate/console/topk"
	"github.com/floodgate-rl/floodgate/internal/testutil"
	"github.com/floodgate-rl/floodgate/limiter"
)

var t0 = time.Unix(1_800_000_000, 0)

// fixture is a console over a real Tracker, with a hand-written Peeker
// that returns what peek says.
type fixture struct {
	tr          *topk.Tracker
	srv         *httptest.Server
	peek        func(req limiter.Request) (console.Usage, error)
	got         limiter.Request
	gotStrategy string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{tr: topk.NewTracker(topk.Config{})}
	f.peek = func(limiter.Request) (console.Usage, error) { return console.Usage{}, nil }
	c, err := console.New(console.Config{
		Top: console.Local{T: f.tr},
		Peek: console.PeekFunc(func(_ context.Context, strategy string, req limiter.Request, _ time.Time) (console.Usage, error) {
			f.got, f.gotStrategy = req, strategy
			return f.peek(req)
		}),
		Resolve: func(scope, identity string) (console.Target, error) {
			if strings.HasPrefix(identity, "bad") {
				return console.Target{}, fmt.Errorf("%w: identity %q: not an address", console.ErrBadLookup, identity)
			}
			return console.Target{Request: limiter.Request{Scope: scope, Requestor: "ip:" + identity, Limit: 5, Window: time.Minute}, Strategy: "sliding", Source: "server defaults"}, nil
		},
		Status: func() console.Status {
			return console.Status{Version: "test", Replica: "r1", Store: "memory", Rates: []console.Rate{{API: "ext_authz", Scope: "login", Result: "denied", PerSecond: 1.5, Total: 90}}}
		},
		Now: func() time.Time { return t0.Add(30 * time.Second) },
	})
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewServer(c.Handler())
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) deny(scope, item string, n int, retry time.Duration) {
	for range n {
		f.tr.Record(topk.Denial{Scope: scope, Rule: scope, Item: item, At: t0, RetryAfter: retry})
	}
}

// get returns the status and body of path.
func (f *fixture) get(t *testing.T, path string) (int, string) {
	t.Helper()
	return testutil.Get(t, f.srv.URL+path)
}

func TestTop(t *testing.T) {
	f := newFixture(t)
	f.deny("login", "ip:203.0.113.7", 3, time.Minute)
	f.deny("login", "ip:198.51.100.1", 1, 10*time.Second)
	f.deny("api", "ip:10.0.0.1", 2, time.Minute)
	code, body := f.get(t, "/api/v1/top?scope=login&n=5")
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	var top console.Top
	if err := json.Unmarshal([]byte(body), &top); err != nil {
		t.Fatal(err)
	}
	want := console.Top{
		Scope: "login", Window: "5m", At: "2027-01-15T08:00:30Z", TotalDenials: 4, Replicas: 1,
		Requestors: []console.TopRequest{
			{Identity: "ip:203.0.113.7", Denials: 3, DenialsMin: 3, Share: 0.75, FirstSeen: "2027-01-15T08:00:00Z", LastSeen: "2027-01-15T08:00:00Z", RetryAfter: 30, Rule: "login"},
			{Identity: "ip:198.51.100.1", Denials: 1, DenialsMin: 1, Share: 0.25, FirstSeen: "2027-01-15T08:00:00Z", LastSeen: "2027-01-15T08:00:00Z", RetryAfter: 0, Rule: "login"},
		},
	}
	if fmt.Sprintf("%+v", top) != fmt.Sprintf("%+v", want) {
		t.Errorf("top =\n%+v\nwant\n%+v", top, want)
	}
	if _, body := f.get(t, "/api/v1/top?scope=login&n=1&window=1h"); !strings.Contains(body, `"window": "1h"`) || strings.Contains(body, "198.51.100.1") {
		t.Errorf("n=1 window=1h: %s", body)
	}
	if _, body := f.get(t, "/api/v1/scopes"); !strings.Contains(body, `"api",`) || !strings.Contains(body, `"login"`) {
		t.Errorf("scopes: %s", body)
	}
}

func TestBadParameters(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct{ path, want string }{
		{"/api/v1/top?n=0", `n \"0\": want a number from 1 to 100`},
		{"/api/v1/top?n=101", `n \"101\": want a number from 1 to 100`},
		{"/api/v1/top?n=x", `n \"x\": want a number`},
		{"/api/v1/top?window=2h", `window \"2h\": want 5m or 1h`},
		{"/api/v1/top?scope=a%20b", `scope \"a b\": invalid character ' '`},
		{"/api/v1/top?scope=" + strings.Repeat("s", 65), `length 65: must be 1 to 64`},
		{"/api/v1/top?scope=rls:", `want rls: and a domain`},
		{"/api/v1/requestors?scope=login", `identity: required`},
		{"/api/v1/requestors?identity=" + strings.Repeat("k", console.MaxIdentityLen+1), `identity: 4097 bytes, at most 4096`},
		{"/api/v1/requestors?identity=1.2.3.4&limit=0", `limit \"0\": want a number from 1`},
		{"/api/v1/requestors?identity=1.2.3.4&limit_window=1y", `limit_window \"1y\"`},
		{"/api/v1/requestors?identity=bad", `identity \"bad\": not an address`},
	} {
		t.Run(tc.path, func(t *testing.T) {
			code, body := f.get(t, tc.path)
			if code != 400 || !strings.Contains(body, tc.want) || !strings.Contains(body, `"error"`) {
				t.Errorf("%d %s, want 400 with %s", code, body, tc.want)
			}
		})
	}
}

func TestLookup(t *testing.T) {
	f := newFixture(t)
	f.peek = func(req limiter.Request) (console.Usage, error) {
		return console.Usage{Count: 5, Remaining: 0, RetryAfter: 41500 * time.Millisecond, Minutes: []int64{2, 3}}, nil
	}
	code, body := f.get(t, "/api/v1/requestors?scope=login&identity=203.0.113.7")
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	var l console.Lookup
	json.Unmarshal([]byte(body), &l)
	want := console.Lookup{Scope: "login", Identity: "ip:203.0.113.7", Limit: 5, WindowSeconds: 60, Strategy: "sliding", Source: "server defaults",
		Count: 5, RetryAfter: 42, At: "2027-01-15T08:00:30Z",
		Minutes: []console.Minute{{"2027-01-15T07:59:00Z", 2}, {"2027-01-15T08:00:00Z", 3}}}
	if fmt.Sprintf("%+v", l) != fmt.Sprintf("%+v", want) {
		t.Errorf("lookup =\n%+v\nwant\n%+v", l, want)
	}
	// The query's limit and window replace the resolved ones.
	f.get(t, "/api/v1/requestors?scope=login&identity=203.0.113.7&limit=9&limit_window=1h")
	if f.got.Limit != 9 || f.got.Window != time.Hour || f.gotStrategy != "sliding" {
		t.Errorf("peeked %+v as %q, want limit 9 per hour as sliding", f.got, f.gotStrategy)
	}
	f.peek = func(limiter.Request) (console.Usage, error) {
		return console.Usage{}, fmt.Errorf("strategy token-bucket: %w", console.ErrNoLookup)
	}
	if code, body := f.get(t, "/api/v1/requestors?identity=203.0.113.7"); code != 501 || !strings.Contains(body, "no read-only lookup") {
		t.Errorf("a strategy without a lookup: %d %s, want 501", code, body)
	}
	f.peek = func(limiter.Request) (console.Usage, error) {
		return console.Usage{}, fmt.Errorf("memcache get: %w", limiter.ErrStoreUnavailable)
	}
	if code, body := f.get(t, "/api/v1/requestors?identity=203.0.113.7"); code != 503 || !strings.Contains(body, "counter store unavailable") {
		t.Errorf("store down: %d %s, want 503", code, body)
	}
}

func TestLookupUnavailable(t *testing.T) {
	c, err := console.New(console.Config{Top: console.Local{T: topk.NewTracker(topk.Config{})}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/api/v1/requestors?identity=1.2.3.4")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 501 {
		t.Errorf("lookup without a Peeker: %d, want 501", resp.StatusCode)
	}
	if _, err := console.New(console.Config{}); err == nil {
		t.Error("New without a top source: no error")
	}
}

// TestPageWithoutJavaScript: the page is whole as the server renders it:
// the rates, the top lists and a lookup with its usage bar and chart, and
// it allows no inline script and no other origin.
func TestPageWithoutJavaScript(t *testing.T) {
	f := newFixture(t)
	f.deny("login", "ip:203.0.113.7", 3, time.Minute)
	f.peek = func(limiter.Request) (console.Usage, error) {
		return console.Usage{Count: 4, Remaining: 1, Minutes: []int64{1, 0, 3}}, nil
	}
	resp, err := http.Get(f.srv.URL + "/?" + url.Values{"scope": {"login"}, "identity": {"203.0.113.7"}}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	page := string(b)
	for _, want := range []string{
		`<tr data-api="ext_authz" data-scope="login" data-result="denied"><td>ext_authz</td><td>login</td><td class="result-denied">denied</td><td class="num">1.50</td>`,
		`<table class="toplist" data-scope="login" data-total="3">`,
		`<td class="num denials">3</td><td class="num">100.0%</td>`,
		`href="/?identity=ip%3A203.0.113.7&amp;scope=login#lookup"`,
		`<span id="lk-count">4</span>, remaining <span id="lk-remaining">1</span>`,
		`<rect class="used" x="0" y="0" width="240" height="14">`,
		`<title>2027-01-15T08:00:00Z: 3</title>`,
		`no circuit breaker (in-memory store)`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe") {
		t.Errorf("CSP = %q", csp)
	}
	if strings.Contains(page, "<script>") || strings.Contains(page, "style=") {
		t.Error("page has an inline script or style, which its CSP forbids")
	}
	for path, ctype := range map[string]string{"/console.js": "text/javascript", "/console.css": "text/css"} {
		r, err := http.Get(f.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != 200 || !strings.HasPrefix(r.Header.Get("Content-Type"), ctype) {
			t.Errorf("%s: %d %s", path, r.StatusCode, r.Header.Get("Content-Type"))
		}
	}
	// A lookup that fails is shown in place, the page still whole.
	_, page = f.get(t, "/?identity=bad")
	if !strings.Contains(page, `id="lookup-error">bad lookup: identity &#34;bad&#34;: not an address`) {
		t.Errorf("page of a bad lookup lacks its error")
	}
}

// TestRates: the rates are the counters' increase over the samples, per
// second, by API, scope and result.
func TestRates(t *testing.T) {
	reg := prometheus.NewRegistry()
	dec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "floodgate_decisions_total"}, []string{"result", "scope"})
	rls := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "floodgate_rls_decisions_total"}, []string{"result"})
	other := prometheus.NewCounter(prometheus.CounterOpts{Name: "floodgate_other_total"})
	reg.MustRegister(dec, rls, other)
	r := console.NewRates(reg)
	dec.WithLabelValues("denied", "login").Add(10)
	r.Sample(t0)
	dec.WithLabelValues("denied", "login").Add(30)
	dec.WithLabelValues("allowed", "").Add(60)
	rls.WithLabelValues("denied").Add(6)
	other.Add(1000)
	r.Sample(t0.Add(30 * time.Second))
	got := fmt.Sprint(r.Rates())
	want := "[{ext_authz  allowed 2 60} {ext_authz login denied 1 40} {rls  denied 0.2 6}]"
	if got != want {
		t.Errorf("rates = %s, want %s", got, want)
	}
	// Samples older than a minute are dropped: the rate is over the last one.
	r.Sample(t0.Add(95 * time.Second))
	if got := fmt.Sprint(r.Rates()); !strings.Contains(got, "{ext_authz login denied 0 40}") {
		t.Errorf("after a quiet minute: %s", got)
	}
}

func TestStatusJSON(t *testing.T) {
	f := newFixture(t)
	_, body := f.get(t, "/api/v1/status")
	var st console.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil || st.Replica != "r1" || len(st.Rates) != 1 {
		t.Errorf("status %s: %v", body, err)
	}
}
