package storetest

import (
	"context"
	"time"

	"github.com/floodgate-rl/floodgate/limiter"
)

// Failing returns a limiter.Store that never answers: each of its calls
// waits for fail(ctx) and returns the error fail returns, which must wrap
// limiter.ErrStoreUnavailable, as a Store's errors do. fail can return at
// once (a store that is down), wait for the context (a store that hangs),
// or wait for a while (a store's own timeout). A Batch or Get of nothing
// fails too.
func Failing(fail func(ctx context.Context) error) limiter.Store {
	return failing(fail)
}

type failing func(ctx context.Context) error

func (f failing) Add(ctx context.Context, _ string, _ int64, _ time.Duration) (int64, error) {
	return 0, f(ctx)
}

func (f failing) Get(ctx context.Context, _ []string) (map[string]int64, error) {
	return nil, f(ctx)
}

func (f failing) Batch(ctx context.Context, _ []string, _ []limiter.Increment) (map[string]int64, []int64, error) {
	return nil, nil, f(ctx)
}

func (f failing) GetVersioned(ctx context.Context, _ string) ([]byte, uint64, error) {
	return nil, 0, f(ctx)
}

func (f failing) CompareAndSwap(ctx context.Context, _ string, _ []byte, _ uint64, _ time.Duration) (bool, error) {
	return false, f(ctx)
}
