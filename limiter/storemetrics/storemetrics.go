// Package storemetrics is the Prometheus middleware of a limiter.Store: the
// floodgate_store_* metrics of every call, by operation, and the
// floodgate_memcache_* metrics of the memcached store's pipelines. It is a
// Store around a Store, like the circuit breaker of package
// limiter/resilient, so it sits anywhere in the stack; floodgate puts it
// outermost, to see every call the strategies make, refused ones included.
package storemetrics

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
	opGetVersioned = "get_versioned"
	opCAS          = "cas"
)

// storeOps lists every op label value, pre-initialised at zero.
var storeOps = []string{opAdd, opGet, opGetVersioned, opCAS}

// Metrics holds the Prometheus metrics of the counter store. Create it
// with New; Wrap a Store to have its calls recorded.
type Metrics struct {
	duration *prometheus.HistogramVec
	errors   *prometheus.CounterVec
	ops      *prometheus.CounterVec
	keysRead prometheus.Counter
}

// New registers the floodgate_store_* metrics with reg, with every op
// label value present from the start so that rates and ratios are defined
// before the first error.
func New(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
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

// Wrap returns a limiter.Store that forwards every call to next and
// records it.
func (m *Metrics) Wrap(next limiter.Store) limiter.Store {
	return &store{
		next:         next,
		add:          m.bind(opAdd),
		get:          m.bind(opGet),
		getVersioned: m.bind(opGetVersioned),
		cas:          m.bind(opCAS),
		keys:         m.keysRead,
	}
}

// opMetrics are the metrics of one op label, looked up once.
type opMetrics struct {
	duration prometheus.Observer
	errors   prometheus.Counter
	ops      prometheus.Counter
}

func (m *Metrics) bind(op string) opMetrics {
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

// store is a limiter.Store that records metrics around another. It is
// safe for concurrent use when the wrapped Store is.
type store struct {
	next                        limiter.Store
	add, get, getVersioned, cas opMetrics
	keys                        prometheus.Counter
}

var _ limiter.Store = (*store)(nil)

// Add implements limiter.Store.
func (s *store) Add(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	start := time.Now()
	n, err := s.next.Add(ctx, key, delta, ttl)
	s.add.record(start, err)
	return n, err
}

// Get implements limiter.Store. A Get of no keys is passed on but not
// counted: it makes no round trip.
func (s *store) Get(ctx context.Context, keys []string) (map[string]int64, error) {
	if len(keys) == 0 {
		return s.next.Get(ctx, keys)
	}
	start := time.Now()
	vals, err := s.next.Get(ctx, keys)
	s.get.record(start, err)
	s.keys.Add(float64(len(keys)))
	return vals, err
}

// Batch implements limiter.Store: one round trip, counted as one add when
// it changes counters (whatever it also reads) and as one get when it only
// reads, with its reads in the keys read. A Batch of nothing is passed on
// but not counted.
func (s *store) Batch(ctx context.Context, gets []string, adds []limiter.Increment) (map[string]int64, []int64, error) {
	if len(gets) == 0 && len(adds) == 0 {
		return s.next.Batch(ctx, gets, adds)
	}
	start := time.Now()
	vals, counts, err := s.next.Batch(ctx, gets, adds)
	if len(adds) > 0 {
		s.add.record(start, err)
	} else {
		s.get.record(start, err)
	}
	s.keys.Add(float64(len(gets)))
	return vals, counts, err
}

// GetVersioned implements limiter.Store.
func (s *store) GetVersioned(ctx context.Context, key string) ([]byte, uint64, error) {
	start := time.Now()
	v, ver, err := s.next.GetVersioned(ctx, key)
	s.getVersioned.record(start, err)
	s.keys.Inc()
	return v, ver, err
}

// CompareAndSwap implements limiter.Store. A conflict (false without an
// error) is not an error.
func (s *store) CompareAndSwap(ctx context.Context, key string, value []byte, version uint64, ttl time.Duration) (bool, error) {
	start := time.Now()
	ok, err := s.next.CompareAndSwap(ctx, key, value, version, ttl)
	s.cas.record(start, err)
	return ok, err
}

// RegisterPipeline registers with reg the metrics of the memcached store's
// pipelines, which carry every call to memcached: the round trips, the
// calls they carried, the calls never sent for want of a connection, and
// the calls in flight, read from st when scraped.
func RegisterPipeline(reg prometheus.Registerer, st *memcache.PipelineStats) error {
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
