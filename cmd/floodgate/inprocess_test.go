package main

// floodgate in the test's own process: a Main, started as run starts it,
// so that a test that needs the servers, not the binary's flags, exit
// statuses or signals, runs faster and under the race detector.

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/floodgate-rl/floodgate/internal/testutil"
)

// errTestDone is the cause with which startInProcess stops its Main.
var errTestDone = errors.New("test done")

// newTestMain returns the Main of args (after serverArgs), parsed by
// ParseConfig without the environment, logging to logs, and leaving the
// test process's runtime alone.
func newTestMain(t *testing.T, logs io.Writer, args ...string) *Main {
	t.Helper()
	cfg, err := ParseConfig(serverArgs(args...), envOf(nil))
	if err != nil {
		t.Fatalf("ParseConfig(%q): %v", args, err)
	}
	m := NewMain(cfg, logs)
	m.SkipRuntimeTuning = true // the test process's runtime is not floodgate's
	return m
}

// startInProcess runs floodgate in the test's process through Main, as
// startServer runs the binary: a newTestMain of args, logging in s.stderr.
// It returns once Main.Start has returned, so the startup line is logged.
// At the end of the test it cancels Main's context and fails the test
// unless Main.Wait returns nil. s.cmd is nil: signal and wait are not for
// it.
func startInProcess(t *testing.T, args ...string) *server {
	t.Helper()
	s := &server{stderr: &testutil.Buffer{}, done: make(chan struct{})}
	m := newTestMain(t, s.stderr, args...)
	ctx, cancel := context.WithCancelCause(context.Background())
	if err := m.Start(ctx); err != nil {
		cancel(errTestDone)
		t.Fatalf("Main.Start: %v\n%s", err, s.stderr.String())
	}
	go func() {
		s.waitErr = m.Wait(ctx)
		close(s.done)
	}()
	t.Cleanup(func() {
		cancel(errTestDone)
		<-s.done
		if s.waitErr != nil {
			t.Errorf("Main.Wait: %v", s.waitErr)
		}
		if t.Failed() {
			t.Logf("floodgate log:\n%s", s.stderr.String())
		}
	})
	var ok bool
	if s.startup, ok = startupOf(s.stderr.String()); !ok {
		t.Fatalf("Main.Start returned before the startup line:\n%s", s.stderr.String())
	}
	if got, want := s.startup.GRPCAddr, m.GRPCAddr().String(); got != want {
		t.Errorf("startup line grpc_addr %s, Main.GRPCAddr %s", got, want)
	}
	if got, want := s.startup.AdminAddr, m.AdminAddr().String(); got != want {
		t.Errorf("startup line admin_addr %s, Main.AdminAddr %s", got, want)
	}
	return s
}

// TestMainLife runs one Main from Start to the end of Wait: it serves
// Check and health on its gRPC address and /readyz on its admin address,
// and once its context is cancelled it logs the cause, drains, returns nil
// and leaves neither listener open.
func TestMainLife(t *testing.T) {
	t.Parallel()
	var logs testutil.Buffer
	m := newTestMain(t, &logs, "--limit", "1", "--console-addr", "off")
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	if err := m.Start(ctx); err != nil {
		t.Fatalf("Start: %v\n%s", err, logs.String())
	}
	waited := make(chan error, 1)
	go func() { waited <- m.Wait(ctx) }()

	s := &server{startup: startupLine{GRPCAddr: m.GRPCAddr().String(), AdminAddr: m.AdminAddr().String()}}
	conn := s.dial(t)
	cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer ccancel()
	authc := authv3.NewAuthorizationClient(conn)
	for i, wantAllowed := range []bool{true, false} {
		resp, err := authc.Check(cctx, checkRequest("203.0.113.8"))
		if err != nil {
			t.Fatalf("Check %d: %v", i+1, err)
		}
		if allowed := resp.GetStatus().GetCode() == 0; allowed != wantAllowed {
			t.Errorf("Check %d allowed = %v, want %v", i+1, allowed, wantAllowed)
		}
	}
	if h, err := healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{}); err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health Check = %v, %v; want SERVING", h.GetStatus(), err)
	}
	if code, body := s.get(t, "/readyz"); code != 200 || strings.TrimSpace(body) != "ready" {
		t.Errorf("GET /readyz = %d %q, want 200 ready", code, body)
	}

	cancel(errTestDone)
	select {
	case err := <-waited:
		if err != nil {
			t.Errorf("Wait = %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Wait did not return within 30s of the cancel")
	}
	if n := logs.CountLines(`"msg":"shutting down"`, `"cause":"test done"`); n != 1 {
		t.Errorf("%d shutting down lines with the cause, want 1:\n%s", n, logs.String())
	}
	if n := logs.CountLines(`"msg":"stopped"`); n != 1 {
		t.Errorf("%d stopped lines, want 1:\n%s", n, logs.String())
	}
	for _, addr := range []string{s.startup.GRPCAddr, s.startup.AdminAddr} {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after Wait", addr)
		}
	}
}

// TestMainStartFails: a Start that fails (the admin port is taken) returns
// the error run prints, and releases what it had opened, the gRPC listener
// among it.
func TestMainStartFails(t *testing.T) {
	t.Parallel()
	busy := busyAddr(t)
	var logs testutil.Buffer
	m := newTestMain(t, &logs, "--admin-addr", busy, "--console-addr", "off")
	err := m.Start(context.Background())
	if want := "--admin-addr: listen tcp " + busy + ": bind: address already in use"; err == nil || err.Error() != want {
		t.Fatalf("Start = %v, want %s", err, want)
	}
	if c, err := net.Dial("tcp", m.GRPCAddr().String()); err == nil {
		c.Close()
		t.Errorf("the gRPC listener %s is still open after the failed Start", m.GRPCAddr())
	}
	if strings.Contains(logs.String(), "floodgate serving") {
		t.Errorf("a failed Start logged the startup line:\n%s", logs.String())
	}
}
