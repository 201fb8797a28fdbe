package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	gomemcache "github.com/bradfitz/gomemcache/memcache"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/floodgate-rl/floodgate/internal/testutil"
	"github.com/floodgate-rl/floodgate/limiter/memcache"
)

// gatherServer returns the values of the floodgate_memcache_* metrics of
// server in reg, by name.
func gatherServer(t *testing.T, reg *prometheus.Registry, server string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "server" && lp.GetValue() == server {
					v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
					out[mf.GetName()] = v
				}
			}
		}
	}
	return out
}

// TestMemcacheStatsEvictions fills a real memcached until it evicts and
// checks that the evictions show in floodgate_memcache_evictions_total and
// in a warning, and that a server whose stats cannot be read shows as down
// with its last reading, warned about once.
func TestMemcacheStatsEvictions(t *testing.T) {
	mc := testutil.StartMemcached(t)
	st, err := memcache.New([]string{mc.Addr()}, memcache.Config{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var logs bytes.Buffer
	m := newMemcacheStats(st.Stats, slog.New(slog.NewTextHandler(&logs, nil)))
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	ctx := context.Background()

	m.poll(ctx)
	got := gatherServer(t, reg, mc.Addr())
	if got["floodgate_memcache_stats_up"] != 1 || got["floodgate_memcache_evictions_total"] != 0 ||
		got["floodgate_memcache_limit_bytes"] != 64<<20 {
		t.Fatalf("metrics of an empty memcached: %v", got)
	}
	if strings.Contains(logs.String(), "evicts") {
		t.Fatalf("warning without evictions: %s", logs.String())
	}

	// testutil's memcached has 64 MiB: values of 256 KiB evict after about
	// 256 of them; stop at four times that.
	direct := gomemcache.New(mc.Addr())
	direct.Timeout = 10 * time.Second
	value := bytes.Repeat([]byte("x"), 256<<10)
	for i := 0; ; i++ {
		if i == 1024 {
			t.Fatalf("no eviction after storing %d MiB in memcached", i/4)
		}
		if err := direct.Set(&gomemcache.Item{Key: fmt.Sprint("fill:", i), Value: value}); err != nil {
			t.Fatal(err)
		}
		if i%16 == 0 && st.Stats(ctx)[0].Evictions > 0 {
			break
		}
	}
	m.poll(ctx)
	got = gatherServer(t, reg, mc.Addr())
	if got["floodgate_memcache_evictions_total"] <= 0 || got["floodgate_memcache_bytes"] <= 0 || got["floodgate_memcache_items"] <= 0 {
		t.Fatalf("metrics of a memcached that evicted: %v", got)
	}
	if !strings.Contains(logs.String(), "memcached evicts items") {
		t.Errorf("no warning of the evictions: %s", logs.String())
	}

	mc.Stop()
	m.poll(ctx)
	m.poll(ctx)
	down := gatherServer(t, reg, mc.Addr())
	if down["floodgate_memcache_stats_up"] != 0 || down["floodgate_memcache_evictions_total"] != got["floodgate_memcache_evictions_total"] {
		t.Errorf("metrics of a stopped memcached: %v, want up 0 and the last evictions %v", down, got["floodgate_memcache_evictions_total"])
	}
	if n := strings.Count(logs.String(), "cannot read memcached stats"); n != 1 {
		t.Errorf("%d warnings for two failed readings, want 1: %s", n, logs.String())
	}
}

// TestMemcacheStatsReadings checks the metrics and the log lines over a
// sequence of readings: a server never read shows only as down, evictions
// are warned about when they grow (not when a restart lowers them), and a
// server that leaves the set leaves the metrics.
func TestMemcacheStatsReadings(t *testing.T) {
	down := errors.New("connection refused")
	readings := [][]memcache.ServerStats{
		{{Addr: "a:1", Err: down}, {Addr: "b:1", Evictions: 0, LimitMaxBytes: 100}},
		{{Addr: "a:1", Evictions: 5, LimitMaxBytes: 100}, {Addr: "b:1", Evictions: 0, LimitMaxBytes: 100}},
		{{Addr: "a:1", Evictions: 2, LimitMaxBytes: 100}}, // a restarted, b left
		{{Addr: "a:1", Evictions: 3, LimitMaxBytes: 100}},
	}
	tests := []struct {
		wantA, wantB map[string]float64 // evictions and up; nil: no series
		wantWarns    int                // warnings so far
	}{
		{map[string]float64{"floodgate_memcache_stats_up": 0}, map[string]float64{"floodgate_memcache_stats_up": 1, "floodgate_memcache_evictions_total": 0}, 1},
		{map[string]float64{"floodgate_memcache_stats_up": 1, "floodgate_memcache_evictions_total": 5}, map[string]float64{"floodgate_memcache_stats_up": 1, "floodgate_memcache_evictions_total": 0}, 2},
		{map[string]float64{"floodgate_memcache_stats_up": 1, "floodgate_memcache_evictions_total": 2}, nil, 2},
		{map[string]float64{"floodgate_memcache_stats_up": 1, "floodgate_memcache_evictions_total": 3}, nil, 3},
	}
	i := 0
	var logs bytes.Buffer
	m := newMemcacheStats(func(context.Context) []memcache.ServerStats { return readings[i] }, slog.New(slog.NewTextHandler(&logs, nil)))
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	for ; i < len(readings); i++ {
		m.poll(context.Background())
		for server, want := range map[string]map[string]float64{"a:1": tests[i].wantA, "b:1": tests[i].wantB} {
			got := gatherServer(t, reg, server)
			for name, v := range want {
				if got[name] != v {
					t.Errorf("reading %d: %s{server=%q} = %v, want %v", i, name, server, got[name], v)
				}
			}
			if want == nil && len(got) > 0 {
				t.Errorf("reading %d: server %s left, but has %v", i, server, got)
			}
			if _, ok := got["floodgate_memcache_evictions_total"]; ok != (want["floodgate_memcache_stats_up"] == 1) {
				t.Errorf("reading %d: server %s: %v", i, server, got)
			}
		}
		if n := strings.Count(logs.String(), "level=WARN"); n != tests[i].wantWarns {
			t.Errorf("reading %d: %d warnings, want %d: %s", i, n, tests[i].wantWarns, logs.String())
		}
	}
}
