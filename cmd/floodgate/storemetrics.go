package main

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/floodgate-rl/floodgate/internal/prom"
	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/memcache"
)

// Store operation label values.
const (
	opAdd          = "add"
	opGet          = "get"
	opGetVersioned = "get_versioned" // SwapStore only
	opCAS          = "cas"           // SwapStore only
)

// storeOps lists every op label value, pre-initialised at zero.
var storeOps = []string{opAdd, opGet, opGetVersioned, opCAS}

// storeMetrics holds the Prometheus metrics of the counter store. Create it
// with newStoreMetrics; wrap a Store to have its calls recorded.
type storeMetrics struct {
	duration *prometheus.HistogramVec
	errors   *prometheus.CounterVec
	ops      *prometheus.CounterVec
	keysRead prometheus.Counter
}

// newStoreMetrics registers the floodgate_store_* metrics with reg, with
// every op label value present from the start so that rates and ratios are
// defined before the first error.
func newStoreMetrics(reg prometheus.Registerer) (*storeMetrics, error) {
	m := &storeMetrics{
		duration: prom.HistogramVec("floodgate_store_duration_seconds",
			"Latency of counter store operations, including failed ones.",
			// 100µs (a local memcached) to the 100ms default timeout and past it.
			[]float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1}, "op"),
		errors: prom.CounterVec("floodgate_store_errors_total",
			"Counter store operations that failed (timeouts, connection errors).", "op"),
		ops: prom.CounterVec("floodgate_store_operations_total",
			"Counter store operations: add increments one counter, or the counters of one decision "+
				"together with the reads it needs (a batch), get reads many at once, "+
				"get_versioned and cas read and replace one value. "+
				"With memcached, all of a requestor's keys live on one server, so each is one round trip at most; "+
				"operations that wait for a connection share one "+
				"(floodgate_memcache_round_trips_total).",
			"op"),
		keysRead: prom.Counter("floodgate_store_keys_read_total",
			"Keys requested from the counter store by read operations (get, get_versioned)."),
	}
	if err := prom.Register(reg, m.duration, m.errors, m.ops, m.keysRead); err != nil {
		return nil, fmt.Errorf("register store metrics: %w", err)
	}
	for _, op := range storeOps {
		m.duration.WithLabelValues(op)
		m.errors.WithLabelValues(op)
		m.ops.WithLabelValues(op)
	}
	return m, nil
}

// wrap returns a Store that forwards to next and records each call. When
// next is a limiter.SwapStore or a limiter.BatchStore, so is the returned
// Store (the strategies that need one check with a type assertion).
func (m *storeMetrics) wrap(next limiter.Store) limiter.Store {
	s := &instrumentedStore{
		next: next,
		add:  m.bind(opAdd),
		get:  m.bind(opGet),
		keys: m.keysRead,
	}
	ss, swap := next.(limiter.SwapStore)
	bs, batch := next.(limiter.BatchStore)
	var sw *instrumentedSwapStore
	if swap {
		sw = &instrumentedSwapStore{
			instrumentedStore: s,
			next:              ss,
			getVersioned:      m.bind(opGetVersioned),
			cas:               m.bind(opCAS),
		}
	}
	switch {
	case swap && batch:
		return &instrumentedSwapBatchStore{instrumentedSwapStore: sw, nextBatch: bs}
	case swap:
		return sw
	case batch:
		return &instrumentedBatchStore{instrumentedStore: s, next: bs}
	}
	return s
}

// opMetrics are the metrics of one op label, looked up once.
type opMetrics struct {
	duration prometheus.Observer
	errors   prometheus.Counter
	ops      prometheus.Counter
}

func (m *storeMetrics) bind(op string) opMetrics {
	return opMetrics{
		duration: m.duration.WithLabelValues(op),
		errors:   m.errors.WithLabelValues(op),
		ops:      m.ops.WithLabelValues(op),
	}
}

// record counts one operation that started at start and ended with err.
func (o opMetrics) record(start time.Time, err error) {
	o.duration.Observe(time.Since(start).Seconds())
	o.ops.Inc()
	if err != nil {
		o.errors.Inc()
	}
}

// instrumentedStore is a limiter.Store that records metrics around another.
// It is safe for concurrent use when the wrapped Store is.
type instrumentedStore struct {
	next     limiter.Store
	add, get opMetrics
	keys     prometheus.Counter
}

var _ limiter.Store = (*instrumentedStore)(nil)

// Add implements limiter.Store.
func (s *instrumentedStore) Add(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	start := time.Now()
	n, err := s.next.Add(ctx, key, delta, ttl)
	s.add.record(start, err)
	return n, err
}

// Get implements limiter.Store. A Get of no keys is passed on but not
// counted: it makes no round trip.
func (s *instrumentedStore) Get(ctx context.Context, keys []string) (map[string]int64, error) {
	if len(keys) == 0 {
		return s.next.Get(ctx, keys)
	}
	start := time.Now()
	vals, err := s.next.Get(ctx, keys)
	s.get.record(start, err)
	s.keys.Add(float64(len(keys)))
	return vals, err
}

// Batch records a limiter.BatchStore's Batch: one round trip, counted as one
// add when it changes counters (whatever it also reads) and as one get when
// it only reads, with its reads in the keys read. A Batch of nothing is
// passed on but not counted.
func (s *instrumentedStore) batch(ctx context.Context, next limiter.BatchStore, gets []string, adds []limiter.Increment) (map[string]int64, []int64, error) {
	if len(gets) == 0 && len(adds) == 0 {
		return next.Batch(ctx, gets, adds)
	}
	start := time.Now()
	vals, counts, err := next.Batch(ctx, gets, adds)
	if len(adds) > 0 {
		s.add.record(start, err)
	} else {
		s.get.record(start, err)
	}
	s.keys.Add(float64(len(gets)))
	return vals, counts, err
}

// instrumentedBatchStore is an instrumentedStore around a
// limiter.BatchStore.
type instrumentedBatchStore struct {
	*instrumentedStore
	next limiter.BatchStore
}

var _ limiter.BatchStore = (*instrumentedBatchStore)(nil)

// Batch implements limiter.BatchStore.
func (s *instrumentedBatchStore) Batch(ctx context.Context, gets []string, adds []limiter.Increment) (map[string]int64, []int64, error) {
	return s.batch(ctx, s.next, gets, adds)
}

// instrumentedSwapBatchStore is an instrumentedSwapStore around a store
// that is also a limiter.BatchStore, such as the memcached store.
type instrumentedSwapBatchStore struct {
	*instrumentedSwapStore
	nextBatch limiter.BatchStore
}

var (
	_ limiter.SwapStore  = (*instrumentedSwapBatchStore)(nil)
	_ limiter.BatchStore = (*instrumentedSwapBatchStore)(nil)
)

// Batch implements limiter.BatchStore.
func (s *instrumentedSwapBatchStore) Batch(ctx context.Context, gets []string, adds []limiter.Increment) (map[string]int64, []int64, error) {
	return s.batch(ctx, s.nextBatch, gets, adds)
}

// instrumentedSwapStore is an instrumentedStore around a limiter.SwapStore.
// A conflict (CompareAndSwap returning false without an error) is not an
// error.
type instrumentedSwapStore struct {
	*instrumentedStore
	next              limiter.SwapStore
	getVersioned, cas opMetrics
}

var _ limiter.SwapStore = (*instrumentedSwapStore)(nil)

// GetVersioned implements limiter.SwapStore.
func (s *instrumentedSwapStore) GetVersioned(ctx context.Context, key string) ([]byte, uint64, error) {
	start := time.Now()
	v, ver, err := s.next.GetVersioned(ctx, key)
	s.getVersioned.record(start, err)
	s.keys.Inc()
	return v, ver, err
}

// CompareAndSwap implements limiter.SwapStore.
func (s *instrumentedSwapStore) CompareAndSwap(ctx context.Context, key string, value []byte, version uint64, ttl time.Duration) (bool, error) {
	start := time.Now()
	ok, err := s.next.CompareAndSwap(ctx, key, value, version, ttl)
	s.cas.record(start, err)
	return ok, err
}

// registerPipelineMetrics registers the metrics of the memcached store's
// pipelines, which carry every call to memcached: the round trips, the
// calls they carried, the calls never sent for want of a connection, and
// the calls in flight, read from st when scraped.
func registerPipelineMetrics(reg prometheus.Registerer, st *memcache.PipelineStats) error {
	if err := prom.Register(reg,
		prom.CounterFunc("floodgate_memcache_round_trips_total",
			"Round trips to memcached: one write of commands, then one read of their answers. "+
				"Calls that find every connection to their server busy wait and go out together, "+
				"so under load a round trip carries several.",
			func() float64 { return float64(st.RoundTrips.Load()) }),
		prom.CounterFunc("floodgate_memcache_round_trip_operations_total",
			"memcached calls (add, get, batch, value reads and swaps) carried by "+
				"floodgate_memcache_round_trips_total; the ratio of the two is the calls per round trip.",
			func() float64 { return float64(st.Calls.Load()) }),
		prom.CounterFunc("floodgate_store_saturated_total",
			"memcached calls never sent because all --memcache-max-conns connections to their server "+
				"stayed busy for --memcache-timeout (or the check's deadline came first); each was "+
				"decided as memcached-overloaded.",
			func() float64 { return float64(st.Saturated.Load()) }),
		prom.GaugeFunc("floodgate_store_calls_in_flight",
			"memcached calls in flight now: waiting for a connection to their server, or in a round trip.",
			func() float64 { return float64(st.InFlight.Load()) }),
	); err != nil {
		return fmt.Errorf("register memcache pipeline metrics: %w", err)
	}
	return nil
}
