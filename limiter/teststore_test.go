package limiter

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"
)

// testStore is the Store of this package's internal tests: two maps under
// one lock, on an injected clock, with memcached's semantics (counters
// that expire ttl after their creation and never go below zero, values
// with versions that expire ttl after their last write). The real
// in-memory store, package limiter/memory, imports this package, so these
// tests cannot use it; teststore_external_test.go runs the conformance
// suite (limiter/storetest) against testStore, so that it is as strict a
// witness as the stores floodgate runs on.
type testStore struct {
	now func() time.Time

	mu       sync.Mutex
	counters map[string]testCounter
	values   map[string]testValue
	seq      uint64 // the last version handed out
}

type testCounter struct {
	n       int64
	expires time.Time
}

type testValue struct {
	data    []byte
	version uint64
	expires time.Time
}

// newTestStore returns an empty testStore reading the time from now
// (time.Now when nil).
func newTestStore(now func() time.Time) *testStore {
	if now == nil {
		now = time.Now
	}
	return &testStore{now: now, counters: map[string]testCounter{}, values: map[string]testValue{}}
}

// Close does nothing: a testStore holds no goroutine. It returns nil.
func (s *testStore) Close() error { return nil }

// Len returns the number of live counters and values.
func (s *testStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	now, n := s.now(), 0
	for _, c := range s.counters {
		if c.expires.After(now) {
			n++
		}
	}
	for _, v := range s.values {
		if v.expires.After(now) {
			n++
		}
	}
	return n
}

// testExpiry is when something written at now with ttl expires: ttl
// rounded up to whole seconds, at least one, as memcached does.
func testExpiry(now time.Time, ttl time.Duration) time.Time {
	return now.Add(max(time.Second, (ttl+time.Second-1)/time.Second*time.Second))
}

func (s *testStore) Add(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("test add: %w: %w", ErrStoreUnavailable, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	c, ok := s.counters[key]
	if !ok || !c.expires.After(now) {
		if delta <= 0 {
			return 0, nil
		}
		s.counters[key] = testCounter{n: delta, expires: testExpiry(now, ttl)}
		return delta, nil
	}
	switch {
	case delta > 0 && c.n > math.MaxInt64-delta:
		c.n = math.MaxInt64
	case c.n+delta < 0:
		c.n = 0
	default:
		c.n += delta
	}
	s.counters[key] = c
	return c.n, nil
}

func (s *testStore) Get(ctx context.Context, keys []string) (map[string]int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("test get: %w: %w", ErrStoreUnavailable, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now, out := s.now(), make(map[string]int64, len(keys))
	for _, k := range keys {
		if c, ok := s.counters[k]; ok && c.expires.After(now) {
			out[k] = c.n
		}
	}
	return out, nil
}

func (s *testStore) Batch(ctx context.Context, gets []string, adds []Increment) (map[string]int64, []int64, error) {
	return BatchSequentially(ctx, s, gets, adds)
}

func (s *testStore) GetVersioned(ctx context.Context, key string) ([]byte, uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, fmt.Errorf("test gets: %w: %w", ErrStoreUnavailable, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.values[key]
	if !ok || !v.expires.After(s.now()) {
		return nil, 0, nil
	}
	return append([]byte{}, v.data...), v.version, nil
}

func (s *testStore) CompareAndSwap(ctx context.Context, key string, value []byte, version uint64, ttl time.Duration) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("test cas: %w: %w", ErrStoreUnavailable, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var current uint64
	if v, ok := s.values[key]; ok && v.expires.After(now) {
		current = v.version
	}
	if current != version {
		return false, nil
	}
	s.seq++
	s.values[key] = testValue{data: append([]byte{}, value...), version: s.seq, expires: testExpiry(now, ttl)}
	return true, nil
}
