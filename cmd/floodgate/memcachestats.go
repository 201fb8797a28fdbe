package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/floodgate-rl/floodgate/internal/periodic"
	"github.com/floodgate-rl/floodgate/limiter/memcache"
)

// memcacheStatsInterval is how often every memcached server's stats are
// read.
const memcacheStatsInterval = 10 * time.Second

// memcacheStats exports what each memcached server says of its memory (its
// stats command) as floodgate_memcache_* metrics with a server label, read
// every memcacheStatsInterval and served from the last reading at scrape.
// It logs when a server evicts items, since an evicted counter lets its
// requestor through uncounted. It is safe for concurrent use.
type memcacheStats struct {
	read func(context.Context) []memcache.ServerStats
	log  *slog.Logger

	mu   sync.Mutex
	last []memcacheReading
	// Per server: the evictions of its last reading, and whether that
	// reading failed, so that only changes are logged.
	evictions map[string]uint64
	failing   map[string]bool
}

// memcacheReading is the last reading of one server: its last good stats,
// if any, and whether the latest reading failed.
type memcacheReading struct {
	stats memcache.ServerStats
	good  bool // stats holds a reading that succeeded
	up    bool // the latest reading succeeded
}

// memcacheStatsMetric is one metric taken from memcache.ServerStats.
type memcacheStatsMetric struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(*memcache.ServerStats) uint64
}

// memcacheStatsMetrics are the metrics memcacheStats exports for every
// server whose stats it read.
var memcacheStatsMetrics = []memcacheStatsMetric{
	{prometheus.NewDesc("floodgate_memcache_evictions_total",
		"Items the memcached server evicted before they expired to make room for new ones, since it started "+
			"(its stats' evictions). An evicted counter starts again from zero, so its requestor is allowed more "+
			"than the limit: this must stay at 0; give memcached more memory (-m) when it grows.",
		[]string{"server"}, nil), prometheus.CounterValue, func(s *memcache.ServerStats) uint64 { return s.Evictions }},
	{prometheus.NewDesc("floodgate_memcache_evicted_unfetched_total",
		"Evicted items that were never read, since the memcached server started (its stats' evicted_unfetched).",
		[]string{"server"}, nil), prometheus.CounterValue, func(s *memcache.ServerStats) uint64 { return s.EvictedUnfetched }},
	{prometheus.NewDesc("floodgate_memcache_reclaimed_total",
		"Items the memcached server stored in the memory of expired ones, since it started (its stats' reclaimed).",
		[]string{"server"}, nil), prometheus.CounterValue, func(s *memcache.ServerStats) uint64 { return s.Reclaimed }},
	{prometheus.NewDesc("floodgate_memcache_expired_unfetched_total",
		"Items that expired without being read, since the memcached server started (its stats' expired_unfetched).",
		[]string{"server"}, nil), prometheus.CounterValue, func(s *memcache.ServerStats) uint64 { return s.ExpiredUnfetched }},
	{prometheus.NewDesc("floodgate_memcache_bytes",
		"Bytes of the items the memcached server stores (its stats' bytes); each counter takes a 120-byte "+
			"slab chunk of floodgate_memcache_limit_bytes (docs/operations.md, Sizing memcached).",
		[]string{"server"}, nil), prometheus.GaugeValue, func(s *memcache.ServerStats) uint64 { return s.Bytes }},
	{prometheus.NewDesc("floodgate_memcache_limit_bytes",
		"Memory the memcached server may use for items (its -m, stats' limit_maxbytes).",
		[]string{"server"}, nil), prometheus.GaugeValue, func(s *memcache.ServerStats) uint64 { return s.LimitMaxBytes }},
	{prometheus.NewDesc("floodgate_memcache_items",
		"Items the memcached server stores now (its stats' curr_items).",
		[]string{"server"}, nil), prometheus.GaugeValue, func(s *memcache.ServerStats) uint64 { return s.CurrItems }},
}

// memcacheStatsUp is 1 for a server whose last stats reading succeeded.
var memcacheStatsUp = prometheus.NewDesc("floodgate_memcache_stats_up",
	"1 when the last reading of the memcached server's stats (every 10s) succeeded, else 0; "+
		"the other floodgate_memcache_* metrics of the server come from the last reading that succeeded.",
	[]string{"server"}, nil)

// newMemcacheStats returns a memcacheStats that reads stats with read, such
// as memcache.Store.Stats, and logs to log. It reads nothing before poll.
func newMemcacheStats(read func(context.Context) []memcache.ServerStats, log *slog.Logger) *memcacheStats {
	return &memcacheStats{read: read, log: log, evictions: map[string]uint64{}, failing: map[string]bool{}}
}

// startMemcacheStats reads the stats of st's servers once, registers their
// metrics with reg, and reads them again every memcacheStatsInterval until
// ctx ends or the returned stop is called.
func startMemcacheStats(ctx context.Context, reg prometheus.Registerer, st *memcache.Store, log *slog.Logger) (stop func(), err error) {
	m := newMemcacheStats(st.Stats, log)
	m.poll(ctx)
	if err := reg.Register(m); err != nil {
		return nil, fmt.Errorf("register memcached stats metrics: %w", err)
	}
	return periodic.Start(ctx, memcacheStatsInterval, func() { m.poll(ctx) }), nil
}

// poll reads every server's stats, keeps them for Collect, and logs
// evictions and failed readings when they change. A server whose reading
// fails keeps its last good one, marked down.
func (m *memcacheStats) poll(ctx context.Context) {
	got := m.read(ctx)
	m.mu.Lock()
	defer m.mu.Unlock()
	prev := make(map[string]memcacheReading, len(m.last))
	for _, r := range m.last {
		prev[r.stats.Addr] = r
	}
	readings := make([]memcacheReading, len(got))
	for i, s := range got {
		if s.Err != nil {
			if !m.failing[s.Addr] {
				m.log.Warn("cannot read memcached stats", "server", s.Addr, "err", s.Err)
			}
			m.failing[s.Addr] = true
			readings[i] = memcacheReading{stats: s}
			if p := prev[s.Addr]; p.good {
				readings[i].stats, readings[i].good = p.stats, true
			}
			continue
		}
		readings[i] = memcacheReading{stats: s, good: true, up: true}
		if m.failing[s.Addr] {
			m.log.Info("memcached stats readable again", "server", s.Addr)
		}
		m.failing[s.Addr] = false
		last, seen := m.evictions[s.Addr]
		if s.Evictions > last || (!seen && s.Evictions > 0) {
			m.log.Warn("memcached evicts items: counters it evicted start again from zero, so their requestors may be allowed more than the limit; give it more memory (-m)",
				"server", s.Addr, "evictions", s.Evictions, "new_evictions", s.Evictions-min(last, s.Evictions),
				"bytes", s.Bytes, "limit_bytes", s.LimitMaxBytes, "items", s.CurrItems)
		}
		m.evictions[s.Addr] = s.Evictions // lower after a restart
	}
	m.last = readings
}

// Describe implements prometheus.Collector.
func (m *memcacheStats) Describe(ch chan<- *prometheus.Desc) {
	for _, mm := range memcacheStatsMetrics {
		ch <- mm.desc
	}
	ch <- memcacheStatsUp
}

// Collect implements prometheus.Collector with the last reading: the
// servers the store had then, so a server that left the set leaves the
// metrics with the next reading.
func (m *memcacheStats) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range m.last {
		r := &m.last[i]
		up := 0.0
		if r.up {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(memcacheStatsUp, prometheus.GaugeValue, up, r.stats.Addr)
		if !r.good {
			continue // never read: nothing to show
		}
		for _, mm := range memcacheStatsMetrics {
			ch <- prometheus.MustNewConstMetric(mm.desc, mm.kind, float64(mm.value(&r.stats)), r.stats.Addr)
		}
	}
}
