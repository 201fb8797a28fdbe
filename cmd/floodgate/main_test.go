package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/floodgate-rl/floodgate/internal/testutil"
)

func TestRunHelp(t *testing.T) {
	t.Parallel()
	var stdout, stderr strings.Builder
	if code := run(context.Background(), []string{"--help"}, envOf(nil), &stdout, &stderr); code != exitOK {
		t.Errorf("run(--help) = %d, want %d", code, exitOK)
	}
	if !strings.HasPrefix(stdout.String(), "Usage: floodgate") || stderr.Len() != 0 {
		t.Errorf("run(--help): stdout %q..., stderr %q; want usage on stdout only", firstLine(stdout.String()), stderr.String())
	}
}

func TestRunVersion(t *testing.T) {
	t.Parallel()
	var stdout, stderr strings.Builder
	if code := run(context.Background(), []string{"--version"}, envOf(nil), &stdout, &stderr); code != exitOK {
		t.Errorf("run(--version) = %d, want %d", code, exitOK)
	}
	if got, want := stdout.String(), "floodgate "+Version()+"\n"; got != want || stderr.Len() != 0 {
		t.Errorf("run(--version): stdout %q, stderr %q; want stdout %q", got, stderr.String(), want)
	}
}

func TestRunConfigError(t *testing.T) {
	t.Parallel()
	var stdout, stderr strings.Builder
	code := run(context.Background(), []string{"--limit", "0"}, envOf(nil), &stdout, &stderr)
	if code != exitUsage {
		t.Errorf("run(--limit 0) = %d, want %d", code, exitUsage)
	}
	want := "floodgate: invalid value \"0\" for flag --limit: must be at least 1\n"
	if stderr.String() != want || stdout.Len() != 0 {
		t.Errorf("run(--limit 0): stdout %q, stderr %q; want stderr %q", stdout.String(), stderr.String(), want)
	}
}

func TestAdminHandler(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	reg.MustRegister(buildInfo())
	var draining atomic.Bool
	srv := httptest.NewServer(adminHandler(reg, &draining))
	t.Cleanup(srv.Close)

	check := func(path string, wantCode int, wantBody string) {
		t.Helper()
		code, body := testutil.Get(t, srv.URL+path)
		if code != wantCode || !strings.Contains(body, wantBody) {
			t.Errorf("GET %s = %d %q, want %d with %q", path, code, firstLine(body), wantCode, wantBody)
		}
	}
	check("/healthz", http.StatusOK, "ok")
	check("/readyz", http.StatusOK, "ready")
	check("/metrics", http.StatusOK, "floodgate_build_info{version=")
	check("/nope", http.StatusNotFound, "")

	draining.Store(true)
	check("/readyz", http.StatusServiceUnavailable, "shutting down")
	check("/healthz", http.StatusOK, "ok")
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
