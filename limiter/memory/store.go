package memory

import (
	"context"
	"fmt"
	"hash/maphash"
	"math"
	"sync"
	"time"

	"github.com/floodgate-rl/floodgate/limiter"
)

// A compile-time check that Store implements limiter.Store.
var (
	_ limiter.Store = (*Store)(nil)
)

const (
	// memShards is the number of independently locked maps of a Store.
	// A power of two, so a shard is picked with a mask.
	memShards = 64

	// sweepEvery is how often the janitor removes expired counters.
	sweepEvery = 5 * time.Second

	// shrinkMin is the smallest peak size at which a shard whose value map
	// has emptied out is rebuilt; Go maps never give memory back on delete.
	shrinkMin = 1024
)

// Store is the embedded, in-process Store: counters live in the memory
// of one process, so it suits a single floodgate instance, tests and
// benchmarks. Several processes that must share counters need the memcached
// store (package limiter/memcache).
//
// Create a Store with New; the zero value is not usable.
// Its methods are safe for concurrent use by many goroutines. Close it when
// done to stop its janitor goroutine.
//
// Counters are spread over 64 shards by a hash of their key, each with its own
// mutex. Like memcached, a Store keeps counters as values with no
// pointers: a counter is identified by a 128-bit seeded hash of its key rather
// than the key itself, and lives in a 32-byte slot of its shard's
// open-addressing table, so a counter costs 38 to 56 bytes whatever its key's
// length. Large tables live outside the Go heap: the garbage collector never
// scans them and they do not count toward the heap growth GOGC allows, so a
// million clients' counters cost their own size and no more. Two keys share a
// counter only if their 128-bit hashes collide: with two million counters the
// odds are about 2^-87. The hash seeds are random per store, so keys cannot be
// chosen to collide. The memory outside the heap is returned when a sweep
// shrinks a table, and when the store is garbage collected after Close.
//
// A counter expires its ttl (rounded up to a whole second, at least one
// second, as memcached does) after Add created it. An expired counter counts
// as missing at once; a janitor goroutine removes expired counters every few
// seconds, and shrinks tables that have emptied out, so memory stays bounded
// however many distinct keys pass through.
//
// Values (GetVersioned, CompareAndSwap) live in maps of their own beside the
// counters, keyed by the same hashes; a value holds a copy of its bytes, its
// version and its expiry, and expires its ttl after its last write. Versions
// come from a per-shard sequence, so a key recreated after it expired never
// gets back a version it had before. Unlike counters, values hold a pointer
// to their bytes, so the garbage collector does scan the value maps; the
// strategies keep one small value per active requestor.
type Store struct {
	now          func() time.Time
	seedA, seedB maphash.Seed
	shards       [memShards]memShard

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// memKey identifies a counter or a value: a 128-bit hash of its key. Its
// second word is never 0, which marks an empty slot of a memTable.
type memKey [2]uint64

// memValue is one value of the value methods (GetVersioned, CompareAndSwap): its bytes, its version and
// when it expires, in Unix nanoseconds.
type memValue struct {
	data    []byte
	version uint64
	expires int64
}

// memShard is one lock's worth of counters and values, padded to a multiple
// of a cache line so that shards locked by different cores do not contend.
type memShard struct {
	mu    sync.Mutex
	tab   memTable // the counters
	vals  map[memKey]memValue
	vpeak int    // largest len(vals) since vals was allocated
	seq   uint64 // the last version handed out in this shard
	_     [56]byte
}

// New returns an empty Store that reads the time from now
// (time.Now when nil) to decide which counters have expired, and starts its
// janitor goroutine. The janitor wakes on the real clock every few seconds
// whatever now returns.
func New(now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	m := &Store{
		now:   now,
		seedA: maphash.MakeSeed(),
		seedB: maphash.MakeSeed(),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	for i := range m.shards {
		m.shards[i].vals = make(map[memKey]memValue)
	}
	go m.janitor()
	return m
}

// Close stops the janitor goroutine and waits for it to exit. It always
// returns nil; calling it again does nothing. The store still answers Add and
// Get after Close, but expired counters are no longer removed from memory.
func (m *Store) Close() error {
	m.closeOnce.Do(func() {
		close(m.stop)
		<-m.done
	})
	return nil
}

// Len returns the number of live counters and values: those that exist and
// have not expired. It visits every one, so it is meant for tests and
// occasional metrics, not for the request path.
func (m *Store) Len() int {
	now := m.now().UnixNano()
	n := 0
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		n += sh.tab.live(now)
		for _, v := range sh.vals {
			if v.expires > now {
				n++
			}
		}
		sh.mu.Unlock()
	}
	return n
}

// Add implements limiter.Store. It adds delta to the counter at key and returns the
// new value. A missing or expired counter is created with value delta and the
// given ttl when delta > 0; otherwise Add returns 0 and creates nothing, as
// memcached does. The value never goes below 0 and saturates at the largest
// int64 instead of wrapping. Add fails only when ctx is already done.
func (m *Store) Add(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("memory add %q: %w: %w", key, limiter.ErrStoreUnavailable, err)
	}
	k := m.hash(key)
	now := m.now().UnixNano()
	sh := &m.shards[k[0]&(memShards-1)]

	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.tab.add(k, delta, ttl, now), nil
}

// Get implements limiter.Store. It returns the values of the live counters among keys;
// missing and expired ones are absent from the map. Get fails only when ctx is
// already done.
func (m *Store) Get(ctx context.Context, keys []string) (map[string]int64, error) {
	if err := ctx.Err(); err != nil {
		if len(keys) == 1 {
			return nil, fmt.Errorf("memory get %q: %w: %w", keys[0], limiter.ErrStoreUnavailable, err)
		}
		return nil, fmt.Errorf("memory get %d keys: %w: %w", len(keys), limiter.ErrStoreUnavailable, err)
	}
	return m.get(keys, m.now().UnixNano()), nil
}

// get returns the values of the counters among keys live at now.
func (m *Store) get(keys []string, now int64) map[string]int64 {
	out := make(map[string]int64, len(keys))
	for _, key := range keys {
		k := m.hash(key)
		sh := &m.shards[k[0]&(memShards-1)]
		sh.mu.Lock()
		v, ok := sh.tab.get(k, now)
		sh.mu.Unlock()
		if ok {
			out[key] = v
		}
	}
	return out
}

// Batch implements limiter.Store: each Add of adds in order, then Get of gets,
// in the caller's goroutine, so that a decision that changes a second and
// its minute aggregate makes one call instead of two concurrent ones. It is
// not atomic: other calls may interleave, as on memcached. It fails only
// when ctx is already done.
func (m *Store) Batch(ctx context.Context, gets []string, adds []limiter.Increment) (map[string]int64, []int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("memory batch of %d keys: %w: %w", len(gets)+len(adds), limiter.ErrStoreUnavailable, err)
	}
	now := m.now().UnixNano()
	counts := make([]int64, len(adds))
	for i, a := range adds {
		k := m.hash(a.Key)
		sh := &m.shards[k[0]&(memShards-1)]
		sh.mu.Lock()
		counts[i] = sh.tab.add(k, a.Delta, a.TTL, now)
		sh.mu.Unlock()
	}
	if len(gets) == 0 {
		return nil, counts, nil
	}
	return m.get(gets, now), counts, nil
}

// GetVersioned implements limiter.Store. It returns a copy of the value at key
// and its version; a missing or expired value returns nil, 0 and no error.
// GetVersioned fails only when ctx is already done.
func (m *Store) GetVersioned(ctx context.Context, key string) ([]byte, uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, fmt.Errorf("memory get %q: %w: %w", key, limiter.ErrStoreUnavailable, err)
	}
	k := m.hash(key)
	now := m.now().UnixNano()
	sh := &m.shards[k[0]&(memShards-1)]
	sh.mu.Lock()
	v, ok := sh.vals[k]
	sh.mu.Unlock()
	if !ok || v.expires <= now {
		return nil, 0, nil
	}
	// The stored bytes are never modified, only replaced, so the copy can
	// be made outside the lock.
	return append([]byte{}, v.data...), v.version, nil
}

// CompareAndSwap implements limiter.Store. Under the shard's lock it stores a
// copy of value with the given ttl if key's version is version (0 for a
// missing or expired key) and gives the key the shard's next version. It
// fails only when ctx is already done.
func (m *Store) CompareAndSwap(ctx context.Context, key string, value []byte, version uint64, ttl time.Duration) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("memory cas %q: %w: %w", key, limiter.ErrStoreUnavailable, err)
	}
	k := m.hash(key)
	data := append([]byte{}, value...)
	now := m.now().UnixNano()
	sh := &m.shards[k[0]&(memShards-1)]

	sh.mu.Lock()
	defer sh.mu.Unlock()
	var current uint64
	if v, ok := sh.vals[k]; ok && v.expires > now {
		current = v.version
	}
	if current != version {
		return false, nil
	}
	sh.seq++
	sh.vals[k] = memValue{data: data, version: sh.seq, expires: expiry(now, ttl)}
	if len(sh.vals) > sh.vpeak {
		sh.vpeak = len(sh.vals)
	}
	return true, nil
}

// hash returns the identity of key's counter and value.
func (m *Store) hash(key string) memKey {
	k := memKey{maphash.String(m.seedA, key), maphash.String(m.seedB, key)}
	if k[1] == 0 {
		k[1] = 1 // 0 marks an empty slot
	}
	return k
}

// janitor calls sweep every sweepEvery until Close.
func (m *Store) janitor() {
	defer close(m.done)
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			m.sweep()
		}
	}
}

// sweep removes the counters and values that have expired by now, one shard
// at a time so requests to other shards go on meanwhile. A counter table
// that has emptied out is rebuilt smaller (see memTable.sweep). A value map
// that has shrunk to under a quarter of its peak is copied into a map of the
// right size, because Go maps keep their memory after deletes.
func (m *Store) sweep() {
	for i := range m.shards {
		now := m.now().UnixNano()
		sh := &m.shards[i]
		sh.mu.Lock()
		sh.tab.sweep(now)
		for k, v := range sh.vals {
			if v.expires <= now {
				delete(sh.vals, k)
			}
		}
		if sh.vpeak >= shrinkMin && len(sh.vals) < sh.vpeak/4 {
			fresh := make(map[memKey]memValue, len(sh.vals))
			for k, v := range sh.vals {
				fresh[k] = v
			}
			sh.vals = fresh
			sh.vpeak = len(fresh)
		}
		sh.mu.Unlock()
	}
}

// expiry returns when a counter created at now (Unix nanoseconds) with ttl
// expires: ttl is rounded up to a whole second, at least one, as memcached
// does.
func expiry(now int64, ttl time.Duration) int64 {
	secs := int64(ttl / time.Second)
	if ttl%time.Second != 0 {
		secs++
	}
	secs = max(secs, 1)
	if secs > (math.MaxInt64-now)/int64(time.Second) {
		return math.MaxInt64
	}
	return now + secs*int64(time.Second)
}

// addClamped returns v+delta, kept within [0, math.MaxInt64].
func addClamped(v, delta int64) int64 {
	switch {
	case delta > 0 && v > math.MaxInt64-delta:
		return math.MaxInt64
	case v+delta < 0:
		return 0
	}
	return v + delta
}
