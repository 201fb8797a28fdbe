package resilient

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/floodgate-rl/floodgate/limiter"
)

// ErrBusy is returned by a Bulkhead when a call could not start within its
// queue timeout because the maximum number of calls were in flight. It wraps
// limiter.ErrStoreUnavailable. A Breaker around a Bulkhead does not count it
// as a failure of the store: the store did not fail, this process had too
// much to ask. (floodgate puts the Bulkhead outside the Breaker.)
var ErrBusy = fmt.Errorf("too many concurrent store calls: %w", limiter.ErrOverloaded)

// DefaultQueueTimeout is the queue timeout of a Bulkhead created with zero.
const DefaultQueueTimeout = 100 * time.Millisecond

// Bulkhead bounds the calls in flight to a limiter.Store. The memcached
// client sends one call per connection at a time, so without a bound a burst
// of checks opens as many connections as it has concurrent calls, in every
// replica, until memcached refuses connections ("Too many open connections")
// for all of them. With a bound, a burst waits briefly for a free slot
// instead, on connections that are reused.
//
// A call that finds no free slot waits up to the queue timeout, or until its
// context is done, then fails with ErrBusy. It is safe for concurrent use.
type Bulkhead struct {
	next    limiter.Store
	slots   chan struct{}
	timeout time.Duration
	busy    atomic.Uint64
	// valuesOnly: counter calls (Add, Get, Batch) take no slot.
	valuesOnly bool
}

// bulkheadSwap is a Bulkhead around a limiter.SwapStore.
type bulkheadSwap struct {
	*Bulkhead
	next limiter.SwapStore
}

// bulkheadBatch is a Bulkhead around a limiter.BatchStore, and
// bulkheadSwapBatch one around a store that is both.
type bulkheadBatch struct {
	*Bulkhead
	next limiter.BatchStore
}

type bulkheadSwapBatch struct {
	bulkheadSwap
	batch limiter.BatchStore
}

var (
	_ limiter.Store      = (*Bulkhead)(nil)
	_ limiter.SwapStore  = bulkheadSwap{}
	_ limiter.BatchStore = bulkheadBatch{}
	_ limiter.SwapStore  = bulkheadSwapBatch{}
	_ limiter.BatchStore = bulkheadSwapBatch{}
)

// NewBulkhead returns a Store that lets at most max calls run at once in
// next; a call waits up to queueTimeout (zero means DefaultQueueTimeout) for
// a free slot. It is a limiter.SwapStore, a limiter.BatchStore or both when
// next is; BulkheadOf returns its *Bulkhead. max must be at least 1.
func NewBulkhead(next limiter.Store, max int, queueTimeout time.Duration) limiter.Store {
	if max < 1 {
		panic("resilient: NewBulkhead with max < 1")
	}
	if queueTimeout <= 0 {
		queueTimeout = DefaultQueueTimeout
	}
	b := &Bulkhead{next: next, slots: make(chan struct{}, max), timeout: queueTimeout}
	ss, swap := next.(limiter.SwapStore)
	bs, batch := next.(limiter.BatchStore)
	switch {
	case swap && batch:
		return bulkheadSwapBatch{bulkheadSwap: bulkheadSwap{Bulkhead: b, next: ss}, batch: bs}
	case swap:
		return bulkheadSwap{Bulkhead: b, next: ss}
	case batch:
		return bulkheadBatch{Bulkhead: b, next: bs}
	}
	return b
}

// NewValueBulkhead is NewBulkhead for a store whose counter calls (Add,
// Get, Batch) are pipelined, as the memcached store's are: those pass
// through without a slot, since the pipeline bounds its connections itself
// and carries waiting calls together (a slot would only cap how many can
// share a round trip), and only the value calls of a SwapStore
// (GetVersioned, CompareAndSwap), which take a connection each, are
// bounded.
func NewValueBulkhead(next limiter.Store, max int, queueTimeout time.Duration) limiter.Store {
	st := NewBulkhead(next, max, queueTimeout)
	BulkheadOf(st).valuesOnly = true
	return st
}

// BulkheadOf returns the *Bulkhead of a Store that NewBulkhead returned, or
// nil.
func BulkheadOf(s limiter.Store) *Bulkhead {
	switch b := s.(type) {
	case *Bulkhead:
		return b
	case bulkheadSwap:
		return b.Bulkhead
	case bulkheadBatch:
		return b.Bulkhead
	case bulkheadSwapBatch:
		return b.Bulkhead
	}
	return nil
}

// Busy returns how many calls failed with ErrBusy.
func (b *Bulkhead) Busy() uint64 { return b.busy.Load() }

// InFlight returns how many calls are running.
func (b *Bulkhead) InFlight() int { return len(b.slots) }

// enter takes a slot, waiting for one when all are taken.
func (b *Bulkhead) enter(ctx context.Context) error {
	select {
	case b.slots <- struct{}{}:
		return nil
	default:
	}
	t := time.NewTimer(b.timeout)
	defer t.Stop()
	select {
	case b.slots <- struct{}{}:
		return nil
	case <-t.C:
	case <-ctx.Done():
	}
	b.busy.Add(1)
	return ErrBusy
}

func (b *Bulkhead) leave() { <-b.slots }

// Add implements limiter.Store.
func (b *Bulkhead) Add(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	if b.valuesOnly {
		return b.next.Add(ctx, key, delta, ttl)
	}
	if err := b.enter(ctx); err != nil {
		return 0, err
	}
	defer b.leave()
	return b.next.Add(ctx, key, delta, ttl)
}

// Get implements limiter.Store.
func (b *Bulkhead) Get(ctx context.Context, keys []string) (map[string]int64, error) {
	if b.valuesOnly {
		return b.next.Get(ctx, keys)
	}
	if err := b.enter(ctx); err != nil {
		return nil, err
	}
	defer b.leave()
	return b.next.Get(ctx, keys)
}

// Batch implements limiter.BatchStore: one call, holding one slot.
func (b bulkheadBatch) Batch(ctx context.Context, gets []string, adds []limiter.Increment) (map[string]int64, []int64, error) {
	return b.Bulkhead.batch(ctx, b.next, gets, adds)
}

// Batch implements limiter.BatchStore.
func (b bulkheadSwapBatch) Batch(ctx context.Context, gets []string, adds []limiter.Increment) (map[string]int64, []int64, error) {
	return b.Bulkhead.batch(ctx, b.batch, gets, adds)
}

func (b *Bulkhead) batch(ctx context.Context, next limiter.BatchStore, gets []string, adds []limiter.Increment) (map[string]int64, []int64, error) {
	if b.valuesOnly {
		return next.Batch(ctx, gets, adds)
	}
	if err := b.enter(ctx); err != nil {
		return nil, nil, err
	}
	defer b.leave()
	return next.Batch(ctx, gets, adds)
}

// GetVersioned implements limiter.SwapStore.
func (b bulkheadSwap) GetVersioned(ctx context.Context, key string) ([]byte, uint64, error) {
	if err := b.enter(ctx); err != nil {
		return nil, 0, err
	}
	defer b.leave()
	return b.next.GetVersioned(ctx, key)
}

// CompareAndSwap implements limiter.SwapStore.
func (b bulkheadSwap) CompareAndSwap(ctx context.Context, key string, value []byte, version uint64, ttl time.Duration) (bool, error) {
	if err := b.enter(ctx); err != nil {
		return false, err
	}
	defer b.leave()
	return b.next.CompareAndSwap(ctx, key, value, version, ttl)
}
