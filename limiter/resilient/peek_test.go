package resilient_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/memory"
	"github.com/floodgate-rl/floodgate/limiter/resilient"
)

// TestFallbackPeek: Peek reads the primary's store, counting nothing; a
// store that fails gives its error (never a local answer); a primary
// without a lookup gives ErrNoPeek.
func TestFallbackPeek(t *testing.T) {
	r := newFallbackRig(t, resilient.FallbackConfig{})
	req := limiter.Request{Requestor: "client", Limit: 3, Window: time.Minute}
	r.decide(t, req)
	r.decide(t, req)
	for range 2 {
		u, err := r.f.Peek(context.Background(), req, r.clk.Now())
		if err != nil || u.Count != 2 || u.Remaining != 1 {
			t.Fatalf("Peek = %+v, %v; want 2 counted, 1 left", u, err)
		}
	}
	r.store.down.Store(true)
	if _, err := r.f.Peek(context.Background(), req, r.clk.Now()); !errors.Is(err, limiter.ErrStoreUnavailable) {
		t.Errorf("Peek with the store down: %v, want ErrStoreUnavailable", err)
	}
	mem := memory.New(r.clk.Now)
	defer mem.Close()
	tb, err := limiter.NewStrategy(limiter.StrategyTokenBucket, mem, limiter.StrategyConfig{})
	if err != nil {
		t.Fatal(err)
	}
	f := resilient.NewFallback(tb, tb, resilient.FallbackConfig{})
	defer f.Close()
	if _, err := f.Peek(context.Background(), req, r.clk.Now()); !errors.Is(err, resilient.ErrNoPeek) {
		t.Errorf("Peek of a token bucket: %v, want ErrNoPeek", err)
	}
}
