package resilient_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/resilient"
)

// TestBreakerCountsBatches checks that a failing Batch counts as a failed
// call, and that an open breaker refuses batches without calling the store.
func TestBreakerCountsBatches(t *testing.T) {
	f := newFlakyStore(t, time.Now)
	s := resilient.NewBreaker(f, resilient.BreakerConfig{Failures: 3})
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
