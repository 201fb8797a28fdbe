package main

// Tests of the real floodgate binary: built once per test run with `go build`
// (with -race when the tests have it), started on loopback ports, spoken to
// over gRPC and HTTP, and stopped with signals. Every process here is started
// by the test and ended by its own PID.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/floodgate-rl/floodgate/internal/supervisor"
	"github.com/floodgate-rl/floodgate/internal/testutil"
)

// testVersion is linked into the binary under test.
const testVersion = "v0.0.0-floodgate-test"

var (
	binDir   string // created by TestMain
	binOnce  sync.Once
	binPath  string
	binError error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "floodgate-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// floodgateBin builds the floodgate binary once and returns its path.
func floodgateBin(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			binError = fmt.Errorf("go tool not on PATH: %w", err)
			return
		}
		out := filepath.Join(binDir, "floodgate")
		args := []string{"build", "-o", out, "-ldflags", "-X main.version=" + testVersion}
		if raceEnabled {
			args = append(args, "-race")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, goTool, append(args, ".")...)
		if b, err := cmd.CombinedOutput(); err != nil {
			binError = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, b)
			return
		}
		binPath = out
	})
	if binError != nil {
		t.Fatal(binError)
	}
	return binPath
}

// childEnv is the environment of the binary under test: ours without any
// FLOODGATE_* variable, plus extra ("NAME=value").
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envPrefix) {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// exitCode returns the exit status in err from exec.Cmd.Wait or Run.
func exitCode(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	default:
		t.Fatalf("running floodgate: %v", err)
		return -1
	}
}

// runBin runs the binary to completion (30 s at most) and returns its exit
// status, stdout and stderr.
func runBin(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, floodgateBin(t), args...)
	cmd.Env = childEnv(env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("floodgate %q did not exit within 30s; stderr:\n%s", args, stderr.String())
	}
	return exitCode(t, err), stdout.String(), stderr.String()
}

func TestBinaryVersion(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := runBin(t, nil, "--version")
	if code != 0 || stdout != "floodgate "+testVersion+"\n" || stderr != "" {
		t.Errorf("floodgate --version: exit %d, stdout %q, stderr %q; want 0, %q, nothing",
			code, stdout, stderr, "floodgate "+testVersion+"\n")
	}
}

func TestBinaryHelp(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := runBin(t, nil, "--help")
	if code != 0 || stderr != "" {
		t.Errorf("floodgate --help: exit %d, stderr %q; want 0 and nothing", code, stderr)
	}
	for _, want := range []string{"--memcache-servers", "FLOODGATE_MEMCACHE_SERVERS", "default 1h", "--version"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("floodgate --help lacks %q", want)
		}
	}
}

func TestBinaryBadConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"limit 0", []string{"--limit", "0"}, nil,
			`floodgate: invalid value "0" for flag --limit: must be at least 1`},
		{"window 500ms", []string{"--window", "500ms"}, nil,
			`floodgate: invalid value "500ms" for flag --window: must be a whole number of seconds from 1s to 24h`},
		{"memcache servers", []string{"--memcache-servers", "bad"}, nil,
			`floodgate: invalid value "bad" for flag --memcache-servers: memcache server "bad": want host:port, with an IPv6 host in brackets as in [::1]:11211: address bad: missing port in address`},
		{"key", []string{"--key", "bogus"}, nil,
			`floodgate: invalid value "bogus" for flag --key: unknown form: want "source", "xff", "header:<name>", "principal" or "metadata:<filter>:<path>"`},
		{"unknown flag", []string{"--rate-limit", "5"}, nil,
			`floodgate: unknown flag --rate-limit (see --help)`},
		{"positional", []string{"serve"}, nil,
			`floodgate: unexpected argument "serve": floodgate takes only flags`},
		{"env window", nil, []string{"FLOODGATE_WINDOW=500ms"},
			`floodgate: invalid value "500ms" for FLOODGATE_WINDOW: must be a whole number of seconds from 1s to 24h`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := runBin(t, tt.env, tt.args...)
			if code != exitUsage {
				t.Errorf("exit status %d, want %d", code, exitUsage)
			}
			if stderr != tt.want+"\n" {
				t.Errorf("stderr\n got %q\nwant %q", stderr, tt.want+"\n")
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
		})
	}
}

// busyAddr returns a loopback address that a listener of the test holds
// until the test ends.
func busyAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

func TestBinaryPortInUse(t *testing.T) {
	t.Parallel()
	busy := busyAddr(t)
	for _, flagName := range []string{"--grpc-addr", "--admin-addr"} {
		args := []string{"--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", flagName, busy}
		code, _, stderr := runBin(t, nil, args...)
		if code != exitFailed {
			t.Errorf("%s in use: exit %d, want %d", flagName, code, exitFailed)
		}
		want := "floodgate: " + flagName + ": listen tcp " + busy + ": bind: address already in use\n"
		if stderr != want {
			t.Errorf("%s in use: stderr\n got %q\nwant %q", flagName, stderr, want)
		}
	}
}

// startupLine is floodgate's JSON "floodgate serving" log record.
type startupLine struct {
	Msg             string `json:"msg"`
	Version         string `json:"version"`
	GRPCAddr        string `json:"grpc_addr"`
	AdminAddr       string `json:"admin_addr"`
	Store           string `json:"store"`
	Limit           int64  `json:"limit"`
	Window          string `json:"window"`
	Key             string `json:"key"`
	FailMode        string `json:"fail_mode"`
	Headers         bool   `json:"headers"`
	ShutdownTimeout string `json:"shutdown_timeout"`
}

// server is a running floodgate: a process of the binary (startServer) or
// a Main in the test's own process (startInProcess).
type server struct {
	cmd     *exec.Cmd // nil in process: signal and wait are for the binary
	stderr  *testutil.Buffer
	done    chan struct{} // closed when the process or the Main has exited
	waitErr error         // set before done is closed
	startup startupLine
}

// serverArgs are the flags every server of the tests starts with, before
// a test's own: free loopback ports and JSON logs.
func serverArgs(args ...string) []string {
	return append([]string{"--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--log-format", "json"}, args...)
}

// startupOf returns the "floodgate serving" line of logs, if there is one.
func startupOf(logs string) (startupLine, bool) {
	for line := range strings.Lines(logs) {
		var l startupLine
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "floodgate serving" {
			return l, true
		}
	}
	return startupLine{}, false
}

// startServer starts floodgate on free loopback ports with JSON logs and
// extra args, and waits until it has logged its startup line. The process is
// killed (by its PID) at the end of the test if it is still running.
func startServer(t *testing.T, args ...string) *server {
	t.Helper()
	s := &server{stderr: &testutil.Buffer{}, done: make(chan struct{})}
	s.cmd = exec.Command(floodgateBin(t), serverArgs(args...)...)
	s.cmd.Env = childEnv()
	s.cmd.Stderr = s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			s.cmd.Process.Kill()
			<-s.done
		}
		if t.Failed() {
			t.Logf("floodgate stderr:\n%s", s.stderr.String())
		}
	})

	testutil.WaitFor(t, 60*time.Second, func() error {
		var ok bool
		if s.startup, ok = startupOf(s.stderr.String()); ok {
			return nil
		}
		select {
		case <-s.done:
			return supervisor.Permanent(fmt.Errorf("floodgate exited before serving: %v\n%s", s.waitErr, s.stderr.String()))
		default:
			return errors.New("floodgate did not log its startup line")
		}
	})
	return s
}

// wait waits up to timeout for the process to exit and returns its status.
func (s *server) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-s.done:
		return exitCode(t, s.waitErr)
	case <-time.After(timeout):
		t.Fatalf("floodgate still running %v after the signal", timeout)
		return -1
	}
}

func (s *server) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// get fetches path from the admin server.
func (s *server) get(t *testing.T, path string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + s.startup.AdminAddr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, string(b)
}

// dial connects to the gRPC server.
func (s *server) dial(t *testing.T) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(s.startup.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// checkRequest is what Envoy sends for GET / from the client at ip.
func checkRequest(ip string) *authv3.CheckRequest { return testutil.CheckRequest(ip) }

func TestBinaryServeAndDrain(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--limit", "2", "--window", "1h", "--shutdown-timeout", "20s")

	want := startupLine{
		Msg: "floodgate serving", Version: testVersion,
		GRPCAddr: s.startup.GRPCAddr, AdminAddr: s.startup.AdminAddr,
		Store: "memory", Limit: 2, Window: "1h", Key: "source", FailMode: "local", Headers: true,
		ShutdownTimeout: "20s",
	}
	if s.startup != want {
		t.Errorf("startup line\n got %+v\nwant %+v", s.startup, want)
	}
	for _, addr := range []string{s.startup.GRPCAddr, s.startup.AdminAddr} {
		if !strings.HasPrefix(addr, "127.0.0.1:") || strings.HasSuffix(addr, ":0") {
			t.Errorf("startup line address %q: want the bound 127.0.0.1 port", addr)
		}
	}

	if code, body := s.get(t, "/readyz"); code != http.StatusOK || strings.TrimSpace(body) != "ready" {
		t.Errorf("GET /readyz = %d %q, want 200 ready", code, body)
	}
	if code, body := s.get(t, "/healthz"); code != http.StatusOK || strings.TrimSpace(body) != "ok" {
		t.Errorf("GET /healthz = %d %q, want 200 ok", code, body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn := s.dial(t)
	health := healthpb.NewHealthClient(conn)
	for _, svc := range []string{"", "envoy.service.auth.v3.Authorization"} {
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health Check(%q) = %v, %v; want SERVING", svc, resp.GetStatus(), err)
		}
	}

	// --limit 2: two allowed, the third denied with 429.
	authc := authv3.NewAuthorizationClient(conn)
	for i := 1; i <= 3; i++ {
		resp, err := authc.Check(ctx, checkRequest("203.0.113.7"))
		if err != nil {
			t.Fatalf("Check %d: %v", i, err)
		}
		allowed := resp.GetStatus().GetCode() == 0
		if i <= 2 && !allowed {
			t.Errorf("Check %d denied: %v", i, resp)
		}
		if i == 3 {
			if allowed || resp.GetDeniedResponse().GetStatus().GetCode() != typev3.StatusCode_TooManyRequests {
				t.Errorf("Check 3 = %v, want denied with 429", resp)
			}
		}
	}

	code, metrics := s.get(t, "/metrics")
	if code != http.StatusOK {
		t.Errorf("GET /metrics = %d", code)
	}
	for result, want := range map[string]float64{"allowed": 2, "denied": 1} {
		if v := metricValue(t, metrics, `floodgate_decisions_total{result="`+result+`"}`); v != want {
			t.Errorf("/metrics: floodgate_decisions_total{result=%q} = %v, want %v", result, v, want)
		}
	}
	for _, want := range []string{
		`floodgate_decisions_total{result="allowed",rule="none",scope="default"} 2`,
		`floodgate_store_operations_total{op="add"}`,
		`floodgate_store_errors_total{op="get"} 0`,
		`floodgate_store_duration_seconds_bucket{op="add"`,
		`floodgate_store_keys_read_total`,
		`floodgate_check_duration_seconds`,
		`floodgate_build_info{version="` + testVersion + `"} 1`,
		`go_goroutines`,
		`process_cpu_seconds_total`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// An open Watch stream is an in-flight RPC: it holds the drain open, so
	// the draining state can be observed before it is let go.
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	watch, err := health.Watch(wctx, &healthpb.HealthCheckRequest{Service: "envoy.service.auth.v3.Authorization"})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch first = %v, %v; want SERVING", resp.GetStatus(), err)
	}

	s.signal(t, syscall.SIGTERM)
	if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Watch after SIGTERM = %v, %v; want NOT_SERVING", resp.GetStatus(), err)
	}
	if code, body := s.get(t, "/readyz"); code != http.StatusServiceUnavailable || strings.TrimSpace(body) != "shutting down" {
		t.Errorf("GET /readyz while draining = %d %q, want 503 shutting down", code, body)
	}
	if code, _ := s.get(t, "/healthz"); code != http.StatusOK {
		t.Errorf("GET /healthz while draining = %d, want 200", code)
	}
	select {
	case <-s.done:
		t.Fatal("floodgate exited with an RPC still in flight")
	default:
	}

	wcancel() // the last RPC ends: the drain completes
	if code := s.wait(t, 15*time.Second); code != 0 {
		t.Errorf("exit status after SIGTERM = %d, want 0", code)
	}
	logs := s.stderr.String()
	for _, want := range []string{`"msg":"shutting down"`, `"msg":"stopped"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %s", want)
		}
	}
	if strings.Contains(logs, "shutdown timeout reached") {
		t.Error("drain hit the shutdown timeout; want a graceful stop")
	}
}

func TestBinaryShutdownTimeout(t *testing.T) {
	t.Parallel()
	const timeout = time.Second
	s := startServer(t, "--shutdown-timeout", timeout.String())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	watch, err := healthpb.NewHealthClient(s.dial(t)).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	s.signal(t, syscall.SIGINT)
	code := s.wait(t, timeout+10*time.Second) // the watch is never let go
	elapsed := time.Since(start)
	if code != 0 {
		t.Errorf("exit status after SIGINT = %d, want 0", code)
	}
	if elapsed < timeout-100*time.Millisecond {
		t.Errorf("exited %v after SIGINT, before the %v shutdown timeout, with an RPC in flight", elapsed, timeout)
	}
	if !strings.Contains(s.stderr.String(), "shutdown timeout reached") {
		t.Error("log lacks the shutdown timeout warning")
	}
}

// metricValue returns the sum of the series of exposition that series
// selects, written as a series is (`name{label="value",...}` or a bare
// name): every series of that name whose labels include those, so that
// floodgate_decisions_total{result="allowed"} counts every scope and rule;
// -1 when there is none.
func metricValue(t *testing.T, exposition, series string) float64 {
	t.Helper()
	sum, n := testutil.MetricSelect(t, exposition, series)
	if n == 0 {
		return -1
	}
	return sum
}

func TestBinaryMemcached(t *testing.T) {
	t.Parallel()
	mc := testutil.StartMemcached(t)
	// --fail-mode open: the per-replica fallback (the default, local) is
	// tested in internal/faults.
	// A second's timeout: the first decision reads a cold history of ~120
	// keys, which a loaded machine running the race detector elsewhere can
	// take longer than 50 ms to answer; a stopped memcached refuses at once.
	s := startServer(t, "--memcache-servers", mc.Addr(), "--memcache-timeout", "1s", "--limit", "2", "--fail-mode", "open")
	if s.startup.Store != "memcache" {
		t.Errorf("startup line store = %q, want memcache", s.startup.Store)
	}
	if !strings.Contains(s.stderr.String(), `"memcache_servers":"`+mc.Addr()+`"`) {
		t.Errorf("startup line lacks memcache_servers %s", mc.Addr())
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	authc := authv3.NewAuthorizationClient(s.dial(t))
	for i, wantAllowed := range []bool{true, true, false} {
		resp, err := authc.Check(ctx, checkRequest("198.51.100.9"))
		if err != nil {
			t.Fatalf("Check %d: %v", i+1, err)
		}
		if allowed := resp.GetStatus().GetCode() == 0; allowed != wantAllowed {
			t.Fatalf("Check %d allowed = %v, want %v: %v", i+1, allowed, wantAllowed, resp)
		}
	}
	_, metrics := s.get(t, "/metrics")
	if v := metricValue(t, metrics, `floodgate_store_operations_total{op="add"}`); v < 1 {
		t.Errorf("store add operations = %v, want at least 1 against memcached", v)
	}
	if v := metricValue(t, metrics, `floodgate_store_errors_total{op="add"}`); v != 0 {
		t.Errorf("store add errors = %v, want 0", v)
	}
	// One at a time, every add (a decision's batch) is a round trip of its own.
	adds := metricValue(t, metrics, `floodgate_store_operations_total{op="add"}`)
	if rt, ops := metricValue(t, metrics, "floodgate_memcache_round_trips_total"), metricValue(t, metrics, "floodgate_memcache_round_trip_operations_total"); rt != adds || ops != adds {
		t.Errorf("memcache round trips = %v carrying %v operations, want %v and %v (the store's add operations)", rt, ops, adds, adds)
	}

	// memcached gone: floodgate fails open, and counts it.
	mc.Stop()
	resp, err := authc.Check(ctx, checkRequest("198.51.100.10"))
	if err != nil {
		t.Fatalf("Check with memcached stopped: %v (want fail-open, never a gRPC error)", err)
	}
	if resp.GetStatus().GetCode() != 0 {
		t.Errorf("Check with memcached stopped = %v, want allowed (fail open)", resp)
	}
	_, metrics = s.get(t, "/metrics")
	if v := metricValue(t, metrics, `floodgate_decisions_total{result="fail_open"}`); v != 1 {
		t.Errorf("fail_open decisions = %v, want 1", v)
	}
	errs := metricValue(t, metrics, `floodgate_store_errors_total{op="add"}`) +
		metricValue(t, metrics, `floodgate_store_errors_total{op="get"}`)
	if errs < 1 {
		t.Errorf("store errors = %v, want at least 1 with memcached stopped", errs)
	}

	s.signal(t, syscall.SIGTERM)
	if code := s.wait(t, 15*time.Second); code != 0 {
		t.Errorf("exit status after SIGTERM = %d, want 0", code)
	}
}
