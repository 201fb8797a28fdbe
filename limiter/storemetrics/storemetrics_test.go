package storemetrics

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/memory"
	"github.com/floodgate-rl/floodgate/limiter/storetest"
)

// failingStore is a limiter.Store whose every call fails.
var failingStore = storetest.Failing(func(context.Context) error {
	return fmt.Errorf("store: %w", limiter.ErrStoreUnavailable)
})

// counterWant is a counter a test expects to read want; name says which.
type counterWant struct {
	name string
	got  prometheus.Collector
	want float64
}

// expectCounters checks the value of every counter of cs.
func expectCounters(t *testing.T, cs []counterWant) {
	t.Helper()
	for _, c := range cs {
		if got := testutil.ToFloat64(c.got); got != c.want {
			t.Errorf("%s = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestStoreMetricsPreinitialised(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	if _, err := New(reg); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP floodgate_store_errors_total Counter store operations that failed (timeouts, connection errors).
# TYPE floodgate_store_errors_total counter
floodgate_store_errors_total{op="add"} 0
floodgate_store_errors_total{op="cas"} 0
floodgate_store_errors_total{op="get"} 0
floodgate_store_errors_total{op="get_versioned"} 0
# HELP floodgate_store_keys_read_total Keys requested from the counter store by read operations (get, get_versioned).
# TYPE floodgate_store_keys_read_total counter
floodgate_store_keys_read_total 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"floodgate_store_errors_total", "floodgate_store_keys_read_total"); err != nil {
		t.Error(err)
	}
	// 4 histograms and 4 op counters are there at zero too.
	if n, err := testutil.GatherAndCount(reg, "floodgate_store_duration_seconds", "floodgate_store_operations_total"); err != nil || n != 8 {
		t.Errorf("GatherAndCount = %d, %v; want 8 series", n, err)
	}
}

// metered is store metrics registered on a new registry, and two stores
// they wrap: ok, an in-memory store closed at the end of the test, and bad,
// failingStore.
type metered struct {
	m       *Metrics
	reg     *prometheus.Registry
	ok, bad limiter.Store
}

// newMetered returns a metered on a new registry and in-memory store.
func newMetered(t *testing.T) metered {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := New(reg)
	if err != nil {
		t.Fatal(err)
	}
	mem := memory.New(time.Now)
	t.Cleanup(func() { mem.Close() })
	return metered{m: m, reg: reg, ok: m.Wrap(mem), bad: m.Wrap(failingStore)}
}

func TestStoreMetricsRecords(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newMetered(t)
	m, reg, ok, bad := s.m, s.reg, s.ok, s.bad

	if n, err := ok.Add(ctx, "k1", 3, time.Minute); err != nil || n != 3 {
		t.Fatalf("Add = %d, %v; want 3, nil", n, err)
	}
	if _, err := ok.Add(ctx, "k2", 1, time.Minute); err != nil {
		t.Fatal(err)
	}
	vals, err := ok.Get(ctx, []string{"k1", "k2", "missing"})
	if err != nil || vals["k1"] != 3 || vals["k2"] != 1 || len(vals) != 2 {
		t.Fatalf("Get = %v, %v; want k1=3 k2=1", vals, err)
	}
	if _, err := ok.Get(ctx, nil); err != nil { // no round trip: not counted
		t.Fatal(err)
	}
	swap := ok
	if swapped, err := swap.CompareAndSwap(ctx, "v", []byte("x"), 0, time.Minute); err != nil || !swapped {
		t.Fatalf("CompareAndSwap(create) = %v, %v; want true", swapped, err)
	}
	if swapped, err := swap.CompareAndSwap(ctx, "v", []byte("y"), 0, time.Minute); err != nil || swapped {
		t.Fatalf("CompareAndSwap(create again) = %v, %v; want a conflict", swapped, err)
	}
	if v, ver, err := swap.GetVersioned(ctx, "v"); err != nil || string(v) != "x" || ver == 0 {
		t.Fatalf("GetVersioned = %q, %d, %v; want x at a non-zero version", v, ver, err)
	}
	if _, err := bad.Add(ctx, "k", 1, time.Minute); !errors.Is(err, limiter.ErrStoreUnavailable) {
		t.Fatalf("failing Add error = %v, want ErrStoreUnavailable passed through", err)
	}
	if _, err := bad.Get(ctx, []string{"a", "b"}); !errors.Is(err, limiter.ErrStoreUnavailable) {
		t.Fatalf("failing Get error = %v, want ErrStoreUnavailable passed through", err)
	}

	expectCounters(t, []counterWant{
		{"operations add", m.ops.WithLabelValues(opAdd), 3},
		{"operations get", m.ops.WithLabelValues(opGet), 2},
		{"errors add", m.errors.WithLabelValues(opAdd), 1},
		{"errors get", m.errors.WithLabelValues(opGet), 1},
		{"operations cas", m.ops.WithLabelValues(opCAS), 2},
		{"errors cas (a conflict is no error)", m.errors.WithLabelValues(opCAS), 0},
		{"operations get_versioned", m.ops.WithLabelValues(opGetVersioned), 1},
		{"keys read", m.keysRead, 6},
	})
	want := map[string]uint64{opAdd: 3, opGet: 2, opCAS: 2, opGetVersioned: 1}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "floodgate_store_duration_seconds" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			op := mt.GetLabel()[0].GetValue()
			if got := mt.GetHistogram().GetSampleCount(); got != want[op] {
				t.Errorf("duration{op=%q} count = %d, want %d", op, got, want[op])
			}
		}
	}
}

func TestStoreMetricsRegisterTwice(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	if _, err := New(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := New(reg); err == nil {
		t.Error("second newStoreMetrics on one registry: nil error, want a duplicate registration error")
	}
}

// TestStoreMetricsBatch checks that each Batch is recorded as one round
// trip: an add when it changes counters, a get when it only reads.
func TestStoreMetricsBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newMetered(t)
	m, bs, bad := s.m, s.ok, s.bad

	inc := []limiter.Increment{{Key: "k", Delta: 2, TTL: time.Minute}, {Key: "m", Delta: 2, TTL: time.Minute}}
	if _, counts, err := bs.Batch(ctx, []string{"k", "x", "y"}, inc); err != nil || counts[0] != 2 {
		t.Fatalf("Batch = %v, %v", counts, err)
	}
	if vals, _, err := bs.Batch(ctx, []string{"k"}, nil); err != nil || vals["k"] != 2 {
		t.Fatalf("read-only Batch = %v, %v", vals, err)
	}
	if _, _, err := bs.Batch(ctx, nil, nil); err != nil { // no round trip: not counted
		t.Fatal(err)
	}
	if _, _, err := bad.Batch(ctx, nil, inc); err == nil {
		t.Fatal("failing Batch succeeded")
	}
	expectCounters(t, []counterWant{
		{"operations add", m.ops.WithLabelValues(opAdd), 2},
		{"operations get", m.ops.WithLabelValues(opGet), 1},
		{"errors add", m.errors.WithLabelValues(opAdd), 1},
		{"errors get", m.errors.WithLabelValues(opGet), 0},
		{"keys read", m.keysRead, 4},
	})
}
