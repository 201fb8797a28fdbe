package main

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/limiter"
)

// memBatchStore is a MemoryStore (a limiter.BatchStore, like the memcached
// store) whose Batch fails when failing is set.
type memBatchStore struct {
	*limiter.MemoryStore
	failing bool
}

func (m memBatchStore) Batch(ctx context.Context, gets []string, adds []limiter.Increment) (map[string]int64, []int64, error) {
	if m.failing {
		return nil, nil, errors.New("batch: " + limiter.ErrStoreUnavailable.Error())
	}
	return m.MemoryStore.Batch(ctx, gets, adds)
}

// batchOnly hides every method of a BatchStore but those of
// limiter.BatchStore.
type batchOnly struct{ limiter.BatchStore }

// TestStoreMetricsBatch checks that a wrapped BatchStore stays one (and a
// SwapStore when it was), and that each Batch is recorded as one round
// trip: an add when it changes counters, a get when it only reads.
func TestStoreMetricsBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m, _, mem := meteredMemory(t)
	w := m.wrap(memBatchStore{MemoryStore: mem})
	bs, ok := w.(limiter.BatchStore)
	if !ok {
		t.Fatal("wrapped BatchStore is not a limiter.BatchStore")
	}
	if _, ok := w.(limiter.SwapStore); !ok {
		t.Fatal("wrapped MemoryStore with Batch is not a limiter.SwapStore")
	}
	if _, ok := m.wrap(mem).(limiter.BatchStore); !ok {
		t.Error("wrapped MemoryStore is not a limiter.BatchStore")
	}
	if _, ok := m.wrap(failingStore{}).(limiter.BatchStore); ok {
		t.Error("wrapped plain Store claims to be a limiter.BatchStore")
	}
	plainBatch := m.wrap(batchOnly{memBatchStore{MemoryStore: mem, failing: true}})
	if _, ok := plainBatch.(limiter.SwapStore); ok {
		t.Error("wrapped BatchStore that is no SwapStore claims to be one")
	}

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
	if _, _, err := plainBatch.(limiter.BatchStore).Batch(ctx, nil, inc); err == nil {
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
