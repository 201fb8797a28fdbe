package main

import (
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
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want bool
	}{
		{"default", nil, nil, false},
		{"flag", []string{"--pprof"}, nil, true},
		{"env", nil, map[string]string{"FLOODGATE_PPROF": "true"}, true},
		{"flag wins", []string{"--pprof=false"}, map[string]string{"FLOODGATE_PPROF": "true"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig(tc.args, envOf(tc.env))
			if err != nil {
				t.Fatal(err)
			}
			if c.PProf != tc.want {
				t.Errorf("PProf = %v, want %v", c.PProf, tc.want)
			}
		})
	}
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
