package resilient_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/resilient"
)

// batchStore is a flakyStore that is also a limiter.BatchStore; swapBatch
// is one that is a SwapStore too.
type batchStore struct{ plainStore }

func (b batchStore) Batch(ctx context.Context, gets []string, adds []limiter.Increment) (map[string]int64, []int64, error) {
	f := b.Store.(*flakyStore)
	if err := f.enter(); err != nil {
		return nil, nil, err
	}
	vals, err := f.mem.Get(ctx, gets)
	if err != nil {
		return nil, nil, err
	}
	counts := make([]int64, len(adds))
	for i, a := range adds {
		if counts[i], err = f.mem.Add(ctx, a.Key, a.Delta, a.TTL); err != nil {
			return nil, nil, err
		}
	}
	return vals, counts, nil
}

type swapBatch struct {
	*flakyStore
	batchStore
}

func (s swapBatch) Add(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	return s.flakyStore.Add(ctx, key, delta, ttl)
}

func (s swapBatch) Get(ctx context.Context, keys []string) (map[string]int64, error) {
	return s.flakyStore.Get(ctx, keys)
}

// TestWrappersKeepBatching checks that the Breaker is a BatchStore exactly
// when the store it wraps is one, keeps being a SwapStore, and that
// BreakerOf finds it.
func TestWrappersKeepBatching(t *testing.T) {
	f := newFlakyStore(t, time.Now)
	for _, tc := range []struct {
		name        string
		store       limiter.Store
		swap, batch bool
	}{
		{"plain", plainStore{f}, false, false},
		{"swap", f, true, false},
		{"batch", batchStore{plainStore{f}}, false, true},
		{"swap and batch", swapBatch{f, batchStore{plainStore{f}}}, true, true},
	} {
		for _, w := range []struct {
			name string
			wrap func(limiter.Store) limiter.Store
			find func(limiter.Store) bool
		}{
			{"breaker", func(s limiter.Store) limiter.Store { return resilient.NewBreaker(s, resilient.BreakerConfig{}) },
				func(s limiter.Store) bool { return resilient.BreakerOf(s) != nil }},
		} {
			s := w.wrap(tc.store)
			_, swap := s.(limiter.SwapStore)
			_, batch := s.(limiter.BatchStore)
			if swap != tc.swap || batch != tc.batch || !w.find(s) {
				t.Errorf("%s around %s: SwapStore %v, BatchStore %v, found %v; want %v, %v, true",
					w.name, tc.name, swap, batch, w.find(s), tc.swap, tc.batch)
			}
		}
	}
}

// TestBreakerCountsBatches checks that a failing Batch counts as a failed
// call, and that an open breaker refuses batches without calling the store.
func TestBreakerCountsBatches(t *testing.T) {
	f := newFlakyStore(t, time.Now)
	s := resilient.NewBreaker(batchStore{plainStore{f}}, resilient.BreakerConfig{Failures: 3}).(limiter.BatchStore)
	ctx := context.Background()
	adds := []limiter.Increment{{Key: "k", Delta: 1, TTL: time.Minute}}
	if _, counts, err := s.Batch(ctx, []string{"k"}, adds); err != nil || counts[0] != 1 {
		t.Fatalf("Batch = %v, %v; want [1], nil", counts, err)
	}
	f.down.Store(true)
	for range 3 {
		if _, _, err := s.Batch(ctx, nil, adds); !errors.Is(err, errDown) {
			t.Fatalf("Batch while down: %v, want errDown", err)
		}
	}
	calls := f.calls.Load()
	if _, _, err := s.Batch(ctx, nil, adds); !errors.Is(err, resilient.ErrOpen) {
		t.Fatalf("Batch after 3 failures: %v, want ErrOpen", err)
	}
	if f.calls.Load() != calls {
		t.Error("an open breaker called the store")
	}
	// A Batch of nothing makes no round trip: passed on, never refused.
	if _, _, err := s.Batch(ctx, nil, nil); errors.Is(err, resilient.ErrOpen) {
		t.Errorf("empty Batch on an open breaker: %v, want it passed on", err)
	}
}
