package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	fgtestutil "github.com/floodgate-rl/floodgate/internal/testutil"
	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/memory"
	rlsconf "github.com/floodgate-rl/floodgate/policy/rls"
	"github.com/floodgate-rl/floodgate/rls"
)

// rlsLimits is a configuration of one domain, "test", whose descriptor
// (client, <anything>) has limit per minute.
func rlsLimits(limit int) string {
	return fmt.Sprintf("domain: test\ndescriptors:\n  - key: client\n    rate_limit: {unit: minute, requests_per_unit: %d}\n", limit)
}

// rlsRequest is what Envoy's ratelimit filter sends for client.
func rlsRequest(client string) *rlsv3.RateLimitRequest {
	return &rlsv3.RateLimitRequest{Domain: "test", Descriptors: []*ratelimitv3.RateLimitDescriptor{{
		Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: "client", Value: client}},
	}}}
}

func TestRLSReloader(t *testing.T) {
	t.Parallel()
	cm := fgtestutil.NewConfigMap(t, "policy.yaml", rlsLimits(1))
	initial, err := rlsconf.Load(cm.Dir)
	if err != nil {
		t.Fatal(err)
	}
	store := memory.New(time.Now)
	t.Cleanup(func() { store.Close() })
	// The sliding log takes at most 1,000 requests per unit: a rule of more
	// is refused by the server.
	srv, err := rls.NewServer(rls.Config{Limits: initial, Strategy: limiter.NewSlidingLog(store, limiter.StrategyConfig{}), StrategyName: limiter.StrategySlidingLog})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	var logs fgtestutil.Buffer
	r, err := newRLSReloader(cm.Dir, initial, srv, reg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(cm.Dir, "policy.yaml")
	for _, st := range []struct {
		name    string
		content string // "" for no change
		limit   uint32 // the limit in force after the poll
		ok, bad float64
		log     string // a line logged by the poll, "" for none
	}{
		{"unchanged", "", 1, 0, 0, ""},
		{"valid", rlsLimits(2), 2, 1, 0, `msg="rls config reloaded" path=` + cm.Dir + " domains=1 rules=1 sha256="},
		{"invalid", rlsLimits(2) + "    shadow: true\n", 2, 1, 1,
			`msg="rls config reload rejected, keeping the config in force" path=` + cm.Dir + ` error="` + file + `:5: descriptors[0]: unknown field \"shadow\"`},
		{"the same invalid content again", rlsLimits(2) + "    shadow: true\n", 2, 1, 1, ""},
		{"refused by the server", rlsLimits(5000), 2, 1, 2,
			`error="` + file + `:3: rate_limit.requests_per_unit: 5000: strategy sliding-log takes at most 1000; use sliding"`},
		{"valid again", rlsLimits(3), 3, 2, 2, `msg="rls config reloaded"`},
	} {
		if st.content != "" {
			cm.Update(st.content)
		}
		before := len(logs.String())
		r.poll()
		logged := logs.String()[before:]
		if got := srv.Limits().Limits()[0].RequestsPerUnit; got != st.limit {
			t.Errorf("%s: limit %d in force, want %d", st.name, got, st.limit)
		}
		if ok, bad := testutil.ToFloat64(r.reloadsOK), testutil.ToFloat64(r.reloadsError); ok != st.ok || bad != st.bad {
			t.Errorf("%s: reloads ok %v, error %v; want %v, %v", st.name, ok, bad, st.ok, st.bad)
		}
		if st.log == "" && logged != "" || st.log != "" && !strings.Contains(logged, st.log) || strings.Count(logged, "\n") > 1 {
			t.Errorf("%s: logged %q, want one line containing %q", st.name, logged, st.log)
		}
	}
	if got := testutil.ToFloat64(r.lastSuccess); got < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("last success %v", got)
	}
}

func TestStartRLSConfig(t *testing.T) {
	t.Parallel()
	synctest.Test(t, testStartRLSConfig)
}

// testStartRLSConfig runs in a synctest bubble (see checkStartReloading).
func testStartRLSConfig(t *testing.T) {
	cm := fgtestutil.NewConfigMap(t, "policy.yaml", rlsLimits(1))
	cfg := DefaultConfig()
	if err := parseRLSConfig(&cfg, cm.Dir); err != nil {
		t.Fatal(err)
	}
	store := memory.New(time.Now)
	t.Cleanup(func() { store.Close() })
	srv, err := rls.NewServer(rls.Config{Limits: cfg.RLSConfig, Strategy: limiter.NewSliding(store, limiter.SlidingConfig{})})
	if err != nil {
		t.Fatal(err)
	}
	checkStartReloading(t, cfg.RLSConfigPath, func() (*reloader, error) {
		return newRLSReloader(cfg.RLSConfigPath, cfg.RLSConfig, srv, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	}, func(n int) { cm.Update(rlsLimits(n)) },
		func() int { return int(srv.Limits().Limits()[0].RequestsPerUnit) })
}

// TestBinaryCheckRLSConfig runs check-rls-config on the shipped limits of
// envoy/ratelimit-filter.yaml: their exact listing, exit 0.
func TestBinaryCheckRLSConfig(t *testing.T) {
	t.Parallel()
	path := filepath.Join("..", "..", "envoy", "ratelimit-config.yaml")
	c, err := rlsconf.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runBin(t, nil, "check-rls-config", path)
	want := strings.ReplaceAll(`edge.remote_address: 100/hour (P:13)
edge.api_key: 1000/hour (P:21)
edge.api_key_partner-7d1c: 10000/hour name="partner" (P:25)
edge.method_write.remote_address: 20/minute (P:37)
edge.route_login.remote_address: 5/minute name="login" (P:46)
edge.route_search.remote_address: 10/minute name="search-trial" shadow (P:55)
edge.route_grpc.remote_address: 60/minute name="grpc" (P:64)
valid: domains=1 rules=7 sha256=`, "P", path) + c.Digest[:12] + "\n"
	if code != exitOK || stdout != want || stderr != "" {
		t.Errorf("check-rls-config: exit %d, stderr %q, stdout\n%s\nwant exit 0, no stderr, stdout\n%s", code, stderr, stdout, want)
	}
}

// TestBinaryCheckRLSConfigErrors: every problem of every file is listed,
// one line each, and the exit status is 2; so does --rls-config, with the
// first problem on one line.
func TestBinaryCheckRLSConfigErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a := fgtestutil.WriteFile(t, dir, "a.yaml", []byte("domain: edge\ndescriptors:\n  - key: k\n    rate_limit: {unit: week, requests_per_unit: 5}\n  - key: x\n    rate_limt: {unit: minute, requests_per_unit: 5}\n"))
	b := fgtestutil.WriteFile(t, dir, "b.yml", []byte("domain: edge\n"))
	empty := fgtestutil.WriteFile(t, t.TempDir(), "empty.yaml", []byte("domain: \"\"\n"))
	code, stdout, stderr := runBin(t, nil, "check-rls-config", dir)
	want := "floodgate: " + a + ":4: descriptors[0].rate_limit.unit: rate limit unit 'week': floodgate's windows are at most a day (want second, minute, hour or day)\n" +
		"floodgate: " + a + `:6: descriptors[1]: unknown field "rate_limt" (want key, value, rate_limit, descriptors, shadow_mode, detailed_metric, value_to_metric, share_threshold)` + "\n" +
		"floodgate: " + b + ":1: domain: duplicate domain 'edge' in config file (first in " + a + ":1)\n" +
		"floodgate: " + dir + ": 3 errors\n"
	if code != exitUsage || stdout != "" || stderr != want {
		t.Errorf("check-rls-config: exit %d, stdout %q, stderr\n%s\nwant exit 2, stderr\n%s", code, stdout, stderr, want)
	}

	for _, tc := range []struct {
		args []string
		env  []string
		want string
	}{
		{args: []string{"--rls-config", dir}, want: `floodgate: invalid value "` + dir + `" for flag --rls-config: ` + a +
			":4: descriptors[0].rate_limit.unit: rate limit unit 'week': floodgate's windows are at most a day (want second, minute, hour or day) (and 2 more: floodgate check-rls-config " + dir + " lists them all)\n"},
		{env: []string{"FLOODGATE_RLS_CONFIG=" + empty}, want: `floodgate: invalid value "` + empty + `" for FLOODGATE_RLS_CONFIG: ` + empty + ":1: domain: config file cannot have empty domain\n"},
		{args: []string{"--rls-config", filepath.Join(dir, "missing")}, want: `floodgate: invalid value "` + filepath.Join(dir, "missing") + `" for flag --rls-config: ` + filepath.Join(dir, "missing") + ": no such file or directory\n"},
		{args: []string{"check-rls-config"}, want: "floodgate: check-rls-config takes one argument, a file or a directory: floodgate check-rls-config PATH\n"},
	} {
		code, _, stderr := runBin(t, tc.env, tc.args...)
		if code != exitUsage || stderr != tc.want {
			t.Errorf("floodgate %q %q: exit %d, stderr\n%s\nwant exit 2, stderr\n%s", tc.env, tc.args, code, stderr, tc.want)
		}
	}
}

// TestServeRLS runs floodgate (in process) with --rls-config on a ConfigMap-style
// directory: ShouldRateLimit and Check on the one gRPC listener, the
// health of the rate limit service, a reload, and the metrics.
func TestServeRLS(t *testing.T) {
	t.Parallel()
	cm := fgtestutil.NewConfigMap(t, "policy.yaml", rlsLimits(2))
	s := startInProcess(t, "--rls-config", cm.Dir, "--limit", "1")
	if !strings.Contains(s.stderr.String(), `"rls_config":"`+cm.Dir+`","rls_domains":"test","rls_rules":1,"rls_sha256":"`) {
		t.Errorf("startup line lacks the rls config:\n%s", s.stderr.String())
	}
	conn := s.dial(t)
	client := rlsv3.NewRateLimitServiceClient(conn)
	ask := func(c string) rlsv3.RateLimitResponse_Code {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := client.ShouldRateLimit(ctx, rlsRequest(c))
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetOverallCode()
	}
	allowedUnder := func(c string) int {
		t.Helper()
		n := 0
		for ask(c) == rlsv3.RateLimitResponse_OK && n < 10 {
			n++
		}
		return n
	}
	if n := allowedUnder("a"); n != 2 {
		t.Errorf("%d requests allowed, want 2", n)
	}
	// ext_authz on the same listener, with its own limit and counters.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, checkRequest("198.51.100.1")); err != nil || resp.GetStatus().GetCode() != 0 {
		t.Errorf("Check beside the rate limit service: %v, %v; want OK", resp.GetStatus(), err)
	}
	h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: rlsv3.RateLimitService_ServiceDesc.ServiceName})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health of %s: %v, %v; want SERVING", rlsv3.RateLimitService_ServiceDesc.ServiceName, h.GetStatus(), err)
	}

	cm.Update(rlsLimits(3))
	waitMetric(t, s, `floodgate_rls_config_reloads_total{result="ok"}`, func(v float64) bool { return v == 1 })
	if n := allowedUnder("b"); n != 3 {
		t.Errorf("after the reload %d requests allowed, want 3", n)
	}
	_, m := s.get(t, "/metrics")
	for series, want := range map[string]float64{
		`floodgate_rls_decisions_total{result="allowed"}`: 5,
		`floodgate_rls_decisions_total{result="denied"}`:  2,
		`floodgate_rls_config_domains`:                    1,
	} {
		if got := metricValue(t, m, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
}

// TestServeRLSOverTLS: the rate limit service is behind the listener's
// (mutual) TLS, as ext_authz is.
func TestServeRLSOverTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := fgtestutil.NewCA(t, "floodgate test CA")
	cert, key := ca.Issue(t, "floodgate", true)
	ccert, ckey := ca.Issue(t, "envoy", false)
	limits := fgtestutil.WriteFile(t, dir, "limits.yaml", []byte(rlsLimits(1)))
	s := startInProcess(t, "--rls-config", limits,
		"--tls-cert", fgtestutil.WriteFile(t, dir, "tls.crt", cert), "--tls-key", fgtestutil.WriteFile(t, dir, "tls.key", key),
		"--tls-client-ca", fgtestutil.WriteFile(t, dir, "ca.crt", ca.PEM))
	clientCert, err := tls.X509KeyPair(ccert, ckey)
	if err != nil {
		t.Fatal(err)
	}
	call := func(certs []tls.Certificate) error {
		t.Helper()
		cfg := &tls.Config{RootCAs: x509.NewCertPool(), Certificates: certs, MinVersion: tls.VersionTLS12}
		cfg.RootCAs.AddCert(ca.Cert)
		conn, err := grpc.NewClient(s.startup.GRPCAddr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = rlsv3.NewRateLimitServiceClient(conn).ShouldRateLimit(ctx, rlsRequest("a"))
		return err
	}
	if err := call([]tls.Certificate{clientCert}); err != nil {
		t.Errorf("ShouldRateLimit over mutual TLS: %v", err)
	}
	if err := call(nil); err == nil {
		t.Error("ShouldRateLimit without a client certificate succeeded")
	}
}

// deadlineSets is deadlineStrategy deciding sets: it records the deadline
// of each AllowAll's context.
type deadlineSets struct{ deadlineStrategy }

func (d *deadlineSets) AllowAll(ctx context.Context, reqs []limiter.Request, now time.Time) ([]limiter.Decision, error) {
	ds := make([]limiter.Decision, len(reqs))
	for i, r := range reqs {
		ds[i], _ = d.Allow(ctx, r, now)
	}
	return ds, nil
}

// TestRLSDeadlineCap: ShouldRateLimit runs under floodgate's gRPC server
// options as Check does: no deadline, or a far one, becomes
// checkDeadline(cfg); a nearer one is kept.
func TestRLSDeadlineCap(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	limits, err := rlsconf.Parse("limits.yaml", []byte(rlsLimits(10)))
	if err != nil {
		t.Fatal(err)
	}
	ds := &deadlineSets{}
	srv, err := rls.NewServer(rls.Config{Limits: limits, Strategy: ds})
	if err != nil {
		t.Fatal(err)
	}
	c := rlsv3.NewRateLimitServiceClient(serveInProcess(t, cfg, nil, srv.Register))
	checkDeadlineCap(t, &ds.deadlineStrategy, checkDeadline(cfg), func(ctx context.Context) error {
		_, err := c.ShouldRateLimit(ctx, rlsRequest("a"))
		return err
	})
}
