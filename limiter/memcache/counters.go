package memcache

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/memcache/internal/wire"
)

// Add implements limiter.Store. A positive delta increments the counter and a
// negative one decrements it, which memcached stops at zero. When the counter
// is missing, a positive delta creates it with value delta and the given ttl
// (rounded up to whole seconds, at least one); a zero or negative delta
// returns 0 and creates nothing. It is one round trip, a meta arithmetic
// command that creates a missing counter atomically, so two clients that
// create the same counter at once both count. An Add that fails with a
// timeout may still have been applied, once, when the server gets to it.
func (s *Store) Add(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, opError("add", key, err)
	}
	srv := s.set.Load().pick(serverKey(key))
	if srv == nil {
		return 0, opError("add", key, errNoServers)
	}
	op := "incr"
	if delta < 0 {
		op = "decr"
	}
	if !wire.LegalKey(key) {
		return 0, opError(op, key, wire.ErrMalformedKey)
	}
	_, counts, err := srv.pipe.counters(ctx, nil, []limiter.Increment{{Key: key, Delta: delta, TTL: ttl}}, s.now())
	if err != nil {
		return 0, opError(op, key, err)
	}
	return counts[0], nil
}

// Batch implements limiter.Store. When every key shares a server, as
// the keys of one requestor do, it is one round trip: the meta arithmetic
// commands of adds followed by a multi-key get of gets, written at once, so
// the get sees the adds. Otherwise it is the Adds, one by one, and then a
// Get.
func (s *Store) Batch(ctx context.Context, gets []string, adds []limiter.Increment) (map[string]int64, []int64, error) {
	first := ""
	switch {
	case len(gets) > 0:
		first = gets[0]
	case len(adds) > 0:
		first = adds[0].Key
	default:
		return map[string]int64{}, nil, nil
	}
	n := len(gets) + len(adds)
	if err := ctx.Err(); err != nil {
		return nil, nil, batchError(n, first, err)
	}
	set := s.set.Load()
	sk := serverKey(first)
	srv := set.pick(sk)
	if srv == nil {
		return nil, nil, batchError(n, first, errNoServers)
	}
	one := true
	check := func(key string) error {
		if !wire.LegalKey(key) {
			return opError("batch", key, wire.ErrMalformedKey)
		}
		if ks := serverKey(key); ks != sk && set.pick(ks) != srv {
			one = false
		}
		return nil
	}
	for _, k := range gets {
		if err := check(k); err != nil {
			return nil, nil, err
		}
	}
	for _, a := range adds {
		if err := check(a.Key); err != nil {
			return nil, nil, err
		}
	}
	if !one {
		counts := make([]int64, len(adds))
		for i, a := range adds {
			var err error
			if counts[i], err = s.Add(ctx, a.Key, a.Delta, a.TTL); err != nil {
				return nil, nil, err
			}
		}
		vals, err := s.Get(ctx, gets)
		if err != nil {
			return nil, nil, err
		}
		return vals, counts, nil
	}
	vals, counts, err := srv.pipe.counters(ctx, gets, adds, s.now())
	if err != nil {
		return nil, nil, batchError(n, first, err)
	}
	return vals, counts, nil
}

// batchError reports that a Batch of n keys, the first one first, failed.
func batchError(n int, first string, err error) error {
	if n == 1 {
		return opError("batch", first, err)
	}
	return fmt.Errorf("memcache batch of %d keys from %q: %w: %w", n, first, limiter.ErrStoreUnavailable, err)
}

// Get implements limiter.Store with one multi-key get per server,
// concurrently, on the servers' pipelines (see pipeline.go), which check
// every answer: a value of a key not asked for, or one that is not a
// counter, fails the Get. As all the keys of one requestor share a server,
// that is one round trip.
func (s *Store) Get(ctx context.Context, keys []string) (map[string]int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, getError(keys, err)
	}
	if len(keys) == 0 {
		return map[string]int64{}, nil
	}
	for _, k := range keys {
		if !wire.LegalKey(k) {
			return nil, opError("get", k, wire.ErrMalformedKey)
		}
	}
	vals, err := s.getMulti(ctx, keys)
	if err != nil {
		return nil, getError(keys, err)
	}
	return vals, nil
}

// getMulti gets keys, which are not empty and legal, from their servers in
// one set.
func (s *Store) getMulti(ctx context.Context, keys []string) (map[string]int64, error) {
	set := s.set.Load()
	first := set.pick(serverKey(keys[0]))
	if first == nil {
		return nil, errNoServers
	}
	// The usual Get holds the keys of one requestor, which come together:
	// pick once per requestor, and group only when a second server shows.
	same := true
	sk, srv := serverKey(keys[0]), first
	for _, k := range keys[1:] {
		if ks := serverKey(k); ks != sk {
			sk, srv = ks, set.pick(ks)
		}
		if srv != first {
			same = false
			break
		}
	}
	now := s.now()
	if same {
		vals, _, err := first.pipe.counters(ctx, keys, nil, now)
		return vals, err
	}
	groups := map[*server][]string{}
	sk, srv = "", nil
	for _, k := range keys {
		if ks := serverKey(k); ks != sk || srv == nil {
			sk, srv = ks, set.pick(ks)
		}
		groups[srv] = append(groups[srv], k)
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		out      = make(map[string]int64, len(keys))
		firstErr error
	)
	for srv, keys := range groups {
		wg.Go(func() {
			got, _, err := srv.pipe.counters(ctx, keys, nil, now)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = fmt.Errorf("server %s: %w", srv.addr, err)
			}
			maps.Copy(out, got)
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	return out, nil
}
