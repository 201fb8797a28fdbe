package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/floodgate-rl/floodgate/internal/testutil"
)

func TestPProfFlag(t *testing.T) {
	t.Parallel()
	pprof := func(want bool) func(Config) error {
		return func(c Config) error {
			if c.PProf != want {
				return fmt.Errorf("PProf = %v, want %v", c.PProf, want)
			}
			return nil
		}
	}
	testParseConfig(t, []configCase{
		{name: "default", want: pprof(false)},
		{name: "flag", args: []string{"--pprof"}, want: pprof(true)},
		{name: "env", env: map[string]string{"FLOODGATE_PPROF": "true"}, want: pprof(true)},
		{name: "flag wins", args: []string{"--pprof=false"}, env: map[string]string{"FLOODGATE_PPROF": "true"}, want: pprof(false)},
	})
}

func TestWithPProf(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	reg.MustRegister(buildInfo())
	var draining atomic.Bool
	get := func(h http.Handler, path string) (int, string) {
		t.Helper()
		srv := httptest.NewServer(h)
		defer srv.Close()
		return testutil.Get(t, srv.URL+path)
	}
	off := withPProf(adminHandler(reg, &draining), false)
	if code, _ := get(off, "/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("without --pprof: GET /debug/pprof/ = %d, want 404", code)
	}
	on := withPProf(adminHandler(reg, &draining), true)
	for path, want := range map[string]string{
		"/debug/pprof/":             "goroutine",
		"/debug/pprof/heap?debug=1": "heap profile",
		"/debug/pprof/cmdline":      "",
		"/debug/pprof/symbol":       "num_symbols",
		"/metrics":                  "floodgate_build_info",
		"/readyz":                   "ready",
	} {
		if code, body := get(on, path); code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("with --pprof: GET %s = %d %q, want 200 with %q", path, code, firstLine(body), want)
		}
	}
}
