package limiter

import (
	"context"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
)

// Names of the built-in strategies, as NewStrategy, ParseStrategy and
// Strategies spell them.
const (
	StrategySliding     = "sliding"
	StrategyFixed       = "fixed"
	StrategyTokenBucket = "token-bucket"
	StrategySlidingLog  = "sliding-log"

	// DefaultStrategy is the strategy an empty name selects.
	DefaultStrategy = StrategySliding
)

// StrategyConfig tunes the strategies NewStrategy builds. The zero value is
// ready to use.
type StrategyConfig struct {
	// MaxRequestors bounds how many requestors one strategy instance keeps
	// in its per-requestor cache: Sliding's settled histories, and the
	// others' memory of who is denied until when. A requestor dropped from
	// the cache is read from the store again on its next request. Zero means
	// 262,144.
	MaxRequestors int

	// MaxClockSkew is Sliding's SlidingConfig.MaxClockSkew: zero means
	// DefaultMaxClockSkew, a negative value none.
	MaxClockSkew time.Duration
}

// registry lists the strategies NewStrategy knows, default first. Adding a
// strategy is one file with its type and one entry here; neither package authz
// nor the command changes.
var registry = []struct {
	name  string
	build func(Store, StrategyConfig) (Strategy, error)
}{
	{StrategySliding, func(st Store, cfg StrategyConfig) (Strategy, error) {
		return NewSliding(st, SlidingConfig{MaxRequestors: cfg.MaxRequestors, MaxClockSkew: cfg.MaxClockSkew}), nil
	}},
	{StrategyFixed, func(st Store, cfg StrategyConfig) (Strategy, error) {
		return NewFixed(st, cfg), nil
	}},
	{StrategyTokenBucket, func(st Store, cfg StrategyConfig) (Strategy, error) {
		ss, err := swapStore(StrategyTokenBucket, st)
		if err != nil {
			return nil, err
		}
		return NewTokenBucket(ss, cfg), nil
	}},
	{StrategySlidingLog, func(st Store, cfg StrategyConfig) (Strategy, error) {
		ss, err := swapStore(StrategySlidingLog, st)
		if err != nil {
			return nil, err
		}
		return NewSlidingLog(ss, cfg), nil
	}},
}

// Strategies returns the names NewStrategy accepts, the default first. The
// caller owns the slice.
func Strategies() []string {
	names := make([]string, len(registry))
	for i, r := range registry {
		names[i] = r.name
	}
	return names
}

// ParseStrategy returns the strategy name s selects: one of Strategies, or
// DefaultStrategy when s is empty. Names are matched exactly, lowercase. For
// any other s the error names the valid ones, for a flag or a policy file.
func ParseStrategy(s string) (string, error) {
	if s == "" {
		return DefaultStrategy, nil
	}
	for _, r := range registry {
		if r.name == s {
			return s, nil
		}
	}
	return "", fmt.Errorf("unknown strategy %q: want one of %s", s, strings.Join(Strategies(), ", "))
}

// NewStrategy builds the strategy called name (see ParseStrategy; "" is
// DefaultStrategy) counting in store. The token-bucket and sliding-log
// strategies need a SwapStore, and return an error naming the store's type
// when store is not one; MemoryStore and the memcached store are, and so must
// be any wrapper around them. A *Sliding, which NewStrategy returns for
// "sliding", holds a cache its Close releases; the others need no closing.
func NewStrategy(name string, store Store, cfg StrategyConfig) (Strategy, error) {
	name, err := ParseStrategy(name)
	if err != nil {
		return nil, err
	}
	if store == nil {
		return nil, fmt.Errorf("strategy %s: no store", name)
	}
	for _, r := range registry {
		if r.name == name {
			return r.build(store, cfg)
		}
	}
	panic("unreachable: ParseStrategy accepted " + name)
}

// swapStore returns store as a SwapStore for the strategy called name, or an
// error saying why it is not one.
func swapStore(name string, store Store) (SwapStore, error) {
	ss, ok := store.(SwapStore)
	if !ok {
		return nil, fmt.Errorf("strategy %s: needs a store with compare-and-swap (limiter.SwapStore), and %T is not one", name, store)
	}
	return ss, nil
}

// What the strategies other than Sliding share: requestor identities tagged
// with the strategy, the memory of denials, per-key turns and the
// compare-and-swap loop.

const (
	// maxSwapAttempts bounds the read-modify-write attempts of one
	// decision. Decisions of one instance for one key take turns, so only
	// replicas compete for a value, and each conflict means another replica
	// made progress.
	maxSwapAttempts = 24

	// swapBackoff is the longest pause before a retry after a conflict; the
	// pause is random, and grows with each conflict up to this.
	swapBackoff = 20 * time.Millisecond

	// maxRetryAfter bounds any RetryAfter: a value written by a replica
	// whose clock runs far ahead cannot make a requestor wait for years.
	maxRetryAfter = MaxWindow + SkewMargin
)

// strategyID is RequestorID for a strategy other than Sliding: the tag names
// the strategy, and any parameter its stored state depends on, and is hashed
// with the scope so that two strategies never share an identity. Each
// strategy's keys also end in a different kind of suffix.
func strategyID(tag, scope string, window int64, requestor string) string {
	return RequestorID(tag+"\x00"+scope, window, requestor)
}

// valueKey names the single value a strategy keeps for id:
// "fg1:<id>:<kind>".
func valueKey(id string, kind byte) string {
	b := make([]byte, 0, len(KeyPrefix)+len(id)+2)
	b = append(b, KeyPrefix...)
	b = append(b, id...)
	b = append(b, ':', kind)
	return string(b)
}

// retryAfter returns how long from nowMs until untilMs (Unix milliseconds),
// rounded up to whole seconds: a request made that many whole seconds later
// falls at or after untilMs. It is at least one second and at most
// maxRetryAfter.
func retryAfter(untilMs, nowMs int64) time.Duration {
	wait := untilMs - nowMs
	if wait > maxRetryAfter.Milliseconds() || wait < -maxRetryAfter.Milliseconds() {
		// Far-off instants (a skewed or corrupt value) cannot overflow.
		if wait > 0 {
			return maxRetryAfter
		}
		return time.Second
	}
	secs := max((wait+999)/1000, 1)
	return time.Duration(secs) * time.Second
}

// denyKey identifies a requestor in a denial memory: its identity and the
// limit it was denied under (different limits may share one identity).
type denyKey struct {
	id    string
	limit int64
}

// denials remembers, per requestor, an instant before which no request of
// it can be allowed. Every strategy here only ever moves that instant later:
// counts within a fixed window, a token bucket's theoretical arrival time
// and a log's timestamps only grow, on every replica. So a remembered denial
// is exact, and a denied requestor costs no store round trip until the
// instant passes. It is safe for concurrent use.
type denials struct {
	maxPer int // entries per shard
	seed   maphash.Seed
	shards [cacheShards]denyShard
}

type denyShard struct {
	mu sync.Mutex
	m  map[denyKey]int64 // Unix milliseconds until which denied
}

func newDenials(maxRequestors int) *denials {
	if maxRequestors <= 0 {
		maxRequestors = defaultMaxRequestors
	}
	d := &denials{maxPer: (maxRequestors + cacheShards - 1) / cacheShards, seed: maphash.MakeSeed()}
	for i := range d.shards {
		d.shards[i].m = make(map[denyKey]int64)
	}
	return d
}

func (d *denials) shard(k denyKey) *denyShard {
	return &d.shards[maphash.String(d.seed, k.id)%cacheShards]
}

// until returns the remembered instant before which k is denied, and whether
// nowMs is before it.
func (d *denials) until(k denyKey, nowMs int64) (int64, bool) {
	sh := d.shard(k)
	sh.mu.Lock()
	u, ok := sh.m[k]
	sh.mu.Unlock()
	return u, ok && nowMs < u
}

// deny remembers that k is denied until untilMs. Entries whose instant has
// passed are dropped when the shard is full, then arbitrary ones.
func (d *denials) deny(k denyKey, untilMs, nowMs int64) {
	sh := d.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if u, ok := sh.m[k]; ok && u >= untilMs {
		return
	}
	if _, ok := sh.m[k]; !ok && len(sh.m) >= d.maxPer {
		for key, u := range sh.m {
			if u <= nowMs {
				delete(sh.m, key)
			}
		}
		for key := range sh.m {
			if len(sh.m) < d.maxPer {
				break
			}
			delete(sh.m, key)
		}
	}
	sh.m[k] = untilMs
}

// turns makes the decisions of one instance for one key take turns, so that
// a burst from one requestor does not make an instance's own goroutines
// conflict on its value. Waiting respects the context. It is safe for
// concurrent use; a key's entry lives only while someone holds or awaits it.
type turns struct {
	seed   maphash.Seed
	shards [cacheShards]turnShard
}

type turnShard struct {
	mu sync.Mutex
	m  map[string]*turn
}

type turn struct {
	sem  chan struct{} // holds a token while someone has the turn
	refs int           // holders and waiters; guarded by the shard's mu
}

func newTurns() *turns {
	t := &turns{seed: maphash.MakeSeed()}
	for i := range t.shards {
		t.shards[i].m = make(map[string]*turn)
	}
	return t
}

// take waits for key's turn and returns the function that ends it.
func (t *turns) take(ctx context.Context, key string) (func(), error) {
	sh := &t.shards[maphash.String(t.seed, key)%cacheShards]
	sh.mu.Lock()
	tn := sh.m[key]
	if tn == nil {
		tn = &turn{sem: make(chan struct{}, 1)}
		sh.m[key] = tn
	}
	tn.refs++
	sh.mu.Unlock()

	leave := func() {
		sh.mu.Lock()
		tn.refs--
		if tn.refs == 0 {
			delete(sh.m, key)
		}
		sh.mu.Unlock()
	}
	select {
	case tn.sem <- struct{}{}:
		return func() { <-tn.sem; leave() }, nil
	case <-ctx.Done():
		leave()
		return nil, fmt.Errorf("wait for %s: %w: %w", key, ErrStoreUnavailable, ctx.Err())
	}
}

// swap is one read-modify-write step: given the current value (nil and
// found false when the key is missing), it returns the value to write, its
// time to live and whether to write at all.
type swap func(old []byte, found bool) (next []byte, ttl time.Duration, write bool, err error)

// update reads key, calls f and writes what f returns with CompareAndSwap.
// When another replica wrote the key in between, it reads again and calls f
// again, after a short random pause, up to maxSwapAttempts times; then it
// gives up with an error wrapping ErrContention and ErrStoreUnavailable. f's
// errors are returned wrapped with the key.
func update(ctx context.Context, store SwapStore, key string, f swap) error {
	for attempt := range maxSwapAttempts {
		if attempt > 0 {
			pause := min(swapBackoff, time.Duration(100<<attempt)*time.Microsecond)
			timer := time.NewTimer(rand.N(pause))
			select {
			case <-timer.C:
			case <-ctx.Done():
				timer.Stop()
				return fmt.Errorf("retry %s: %w: %w", key, ErrStoreUnavailable, ctx.Err())
			}
		}
		old, version, err := store.GetVersioned(ctx, key)
		if err != nil {
			return fmt.Errorf("read %s: %w", key, err)
		}
		next, ttl, write, err := f(old, version != 0)
		if err != nil {
			return fmt.Errorf("value of %s: %w", key, err)
		}
		if !write {
			return nil
		}
		ok, err := store.CompareAndSwap(ctx, key, next, version, ttl)
		if err != nil {
			return fmt.Errorf("write %s: %w", key, err)
		}
		if ok {
			return nil
		}
	}
	return fmt.Errorf("write %s: %d attempts lost to other replicas: %w: %w", key, maxSwapAttempts, ErrStoreUnavailable, ErrContention)
}

// allowAllInterim is the first, conservative AllowAll: a single request of
// one hit is decided by allow; any other set is validated and then denied
// whole, counting nothing (under-admission, never over). It is replaced by
// each strategy's own AllowAll.
func allowAllInterim(ctx context.Context, reqs []Request, now time.Time, allow func(context.Context, Request, time.Time) (Decision, error)) ([]Decision, error) {
	if len(reqs) == 0 {
		return nil, nil
	}
	for i, r := range reqs {
		if err := r.Validate(); err != nil {
			return nil, fmt.Errorf("request %d: %w", i, err)
		}
	}
	if len(reqs) == 1 && reqs[0].HitsOf() == 1 {
		d, err := allow(ctx, reqs[0], now)
		if err != nil {
			return nil, err
		}
		return []Decision{d}, nil
	}
	out := make([]Decision, len(reqs))
	for i, r := range reqs {
		out[i] = Decision{Limit: r.Limit, Window: r.Window, RetryAfter: r.Window}
	}
	return out, nil
}
