package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/floodgate-rl/floodgate/authz"
	fgtestutil "github.com/floodgate-rl/floodgate/internal/testutil"
	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/memory"
	"github.com/floodgate-rl/floodgate/policy"
)

// limitPolicy is a policy of one rule for every request.
func limitPolicy(name string, limit int, extra string) string {
	return fmt.Sprintf("rules:\n- name: %s\n  limit: %d\n  window: 1m\n%s", name, limit, extra)
}

func TestPolicyReloader(t *testing.T) {
	t.Parallel()
	cm := fgtestutil.NewConfigMap(t, "policy.yaml", limitPolicy("first", 1, ""))
	initial, err := policy.Load(cm.Path())
	if err != nil {
		t.Fatal(err)
	}
	store := memory.New(time.Now)
	t.Cleanup(func() { store.Close() })
	// Only the default strategy: a rule naming another is refused.
	az, err := authz.NewServer(limiter.NewSliding(store, limiter.SlidingConfig{}), authz.Config{Limit: 100, Window: time.Hour, Headers: true})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	var logs fgtestutil.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	r, err := newPolicyReloader(cm.Path(), initial, az, reg, log)
	if err != nil {
		t.Fatal(err)
	}
	if az.Policy() != initial {
		t.Fatal("initial policy not installed")
	}
	lastOK := func() float64 {
		return testutil.ToFloat64(r.lastSuccess)
	}
	if lastOK() < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("last success %v not set at startup", lastOK())
	}

	steps := []struct {
		name    string
		content string // "" for no change
		rule    string // the rule in force after the poll
		ok, bad float64
		log     string // a line logged by the poll, "" for none
	}{
		{"unchanged", "", "first", 0, 0, ""},
		{"valid", limitPolicy("second", 2, ""), "second", 1, 0, `msg="policy reloaded" file=` + cm.Path() + " rules=1 sha256="},
		{"invalid", limitPolicy("third", 0, ""), "second", 1, 1,
			`msg="policy reload rejected, keeping the policy in force" file=` + cm.Path() + ` error="line 3: rules[0].limit: 0: must be at least 1" kept_sha256=`},
		{"the same invalid content again", limitPolicy("third", 0, ""), "second", 1, 1, ""},
		{"refused by the server", limitPolicy("fourth", 4, "  strategy: fixed\n"), "second", 1, 2,
			`error="set policy: rule fourth: strategy fixed: not available on this server (have sliding)"`},
		{"valid again", limitPolicy("fifth", 5, ""), "fifth", 2, 2, `msg="policy reloaded"`},
	}
	for _, st := range steps {
		if st.content != "" {
			cm.Update(st.content)
		}
		before := len(logs.String())
		stamp := lastOK()
		r.poll()
		logged := logs.String()[before:]
		if got := az.Policy().Rules[0].Name; got != st.rule {
			t.Errorf("%s: rule %q in force, want %q", st.name, got, st.rule)
		}
		if ok, bad := testutil.ToFloat64(r.reloadsOK), testutil.ToFloat64(r.reloadsError); ok != st.ok || bad != st.bad {
			t.Errorf("%s: reloads ok %v, error %v; want %v, %v", st.name, ok, bad, st.ok, st.bad)
		}
		if st.log == "" && logged != "" || st.log != "" && !strings.Contains(logged, st.log) || strings.Count(logged, "\n") > 1 {
			t.Errorf("%s: logged %q, want one line containing %q", st.name, logged, st.log)
		}
		if changed := lastOK() != stamp; changed != (strings.Contains(st.log, "policy reloaded")) {
			t.Errorf("%s: last success timestamp changed: %v", st.name, changed)
		}
	}
	want := metricHelp + "floodgate_policy_reloads_total{result=\"error\"} 2\nfloodgate_policy_reloads_total{result=\"ok\"} 2\n"
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "floodgate_policy_reloads_total"); err != nil {
		t.Error(err)
	}
}

const metricHelp = "# HELP floodgate_policy_reloads_total Changes of the --policy file: ok (the new version is in force) or error (rejected: the previous version stays in force).\n# TYPE floodgate_policy_reloads_total counter\n"

func TestStartPolicy(t *testing.T) {
	t.Parallel()
	synctest.Test(t, testStartPolicy)
}

// testStartPolicy runs in a synctest bubble (see checkStartReloading).
func testStartPolicy(t *testing.T) {
	cm := fgtestutil.NewConfigMap(t, "policy.yaml", limitPolicy("first", 1, ""))
	cfg := DefaultConfig()
	if err := parsePolicy(&cfg, cm.Path()); err != nil {
		t.Fatal(err)
	}
	store := memory.New(time.Now)
	t.Cleanup(func() { store.Close() })
	az, err := authz.NewServer(limiter.NewSliding(store, limiter.SlidingConfig{}), authz.Config{Limit: 100, Window: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"", "first", "second", "third"}
	checkStartReloading(t, cfg.PolicyFile, func() (*reloader, error) {
		return newPolicyReloader(cfg.PolicyFile, cfg.Policy, az, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	}, func(n int) { cm.Update(limitPolicy(names[n], n, "")) },
		func() int { return slices.Index(names, az.Policy().Rules[0].Name) })

	// No --policy: nothing to do.
	stop2, err := startPolicy(context.Background(), DefaultConfig(), az, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	stop2()
}

// checkStartReloading starts reloading path with build every 5ms, in a
// synctest bubble: the polls pass on the bubble's clock, and synctest.Wait
// returns once the reloader waits for its next poll, so "reloaded at the
// next poll" and "not reloaded after stop" are exact. version(n) writes
// version n of the file (version 1 is in force at the start); inForce says
// which version is in force.
func checkStartReloading(t *testing.T, path string, build func() (*reloader, error), version func(n int), inForce func() int) {
	t.Helper()
	stop, err := startReloading(t.Context(), path, 5*time.Millisecond, build)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	version(2)
	time.Sleep(5 * time.Millisecond) // one poll
	synctest.Wait()
	if got := inForce(); got != 2 {
		t.Fatalf("version %d in force one poll after the change, want 2", got)
	}
	stop()
	version(3)
	time.Sleep(50 * time.Millisecond) // ten polls, had the reloader not stopped
	synctest.Wait()
	if got := inForce(); got != 2 {
		t.Errorf("reloaded version %d after stop", got)
	}
}

// TestServePolicy runs floodgate (in process) with --policy on a ConfigMap-style
// directory and changes the file under it: a valid version takes effect,
// an invalid one is logged and counted while the previous one stays.
func TestServePolicy(t *testing.T) {
	t.Parallel()
	cm := fgtestutil.NewConfigMap(t, "policy.yaml", limitPolicy("two", 2, "  match: {path_prefix: /}\n"))
	s := startInProcess(t, "--policy", cm.Path(), "--limit", "100")
	client := authv3.NewAuthorizationClient(s.dial(t))
	check := func(ip string) *authv3.CheckResponse {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := client.Check(ctx, checkRequest(ip))
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	// allowedUnder counts how many requests of a new client get through.
	allowedUnder := func(ip string) int {
		t.Helper()
		n := 0
		for range 10 {
			if check(ip).GetStatus().GetCode() != 0 {
				return n
			}
			n++
		}
		return n
	}
	metric := func(series string) float64 {
		_, body := s.get(t, "/metrics")
		return metricValue(t, body, series)
	}
	reach := func(want float64) func(float64) bool { return func(v float64) bool { return v == want } }

	if n := allowedUnder("198.51.100.1"); n != 2 {
		t.Errorf("under the first policy %d requests allowed, want 2", n)
	}
	cm.Update(limitPolicy("three", 3, ""))
	waitMetric(t, s, `floodgate_policy_reloads_total{result="ok"}`, reach(1))
	if n := allowedUnder("198.51.100.2"); n != 3 {
		t.Errorf("after the reload %d requests allowed, want 3", n)
	}
	cm.Update(limitPolicy("broken", 3, "  limt: 4\n"))
	waitMetric(t, s, `floodgate_policy_reloads_total{result="error"}`, reach(1))
	if n := allowedUnder("198.51.100.3"); n != 3 {
		t.Errorf("after a rejected reload %d requests allowed, want still 3", n)
	}
	if !strings.Contains(s.stderr.String(), `"msg":"policy reload rejected, keeping the policy in force","file":"`+cm.Path()+`","error":"line 5: rules[0]: unknown field \"limt\"`) {
		t.Errorf("no log line about the rejected policy:\n%s", s.stderr.String())
	}
	if v := metric("floodgate_policy_last_reload_success_timestamp_seconds"); v < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("last reload success %v", v)
	}
}
