package limiter

import (
	"context"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"slices"
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

	// MaxClockSkew is the most that the clocks of the replicas sharing the
	// store may disagree by (see ValidateClockSkew): Sliding's
	// SlidingConfig.MaxClockSkew, and what TokenBucket and SlidingLog
	// allow for so that a replica whose clock runs ahead gets no token or
	// log entry early (see doc.go). Zero means DefaultMaxClockSkew, a
	// negative value none.
	MaxClockSkew time.Duration

	// MaxDecisionTime is Sliding's SlidingConfig.MaxDecisionTime: zero
	// means DefaultMaxDecisionTime, a negative value no failure for a
	// slow decision (see there).
	MaxDecisionTime time.Duration
}

// Private is the StrategyConfig for a store that only this process uses
// (the in-memory store: the default, and the per-replica fallback's): one
// clock, so no skew margin (which costs the value strategies a second of
// refill), and no failure of a slow decision, which only keeps replicas
// sharing a store exact. MaxRequestors is kept.
func (cfg StrategyConfig) Private() StrategyConfig {
	cfg.MaxClockSkew, cfg.MaxDecisionTime = -1, -1
	return cfg
}

// skewMs returns cfg's MaxClockSkew in milliseconds, defaults applied.
func (cfg StrategyConfig) skewMs() int64 {
	switch {
	case cfg.MaxClockSkew == 0:
		return DefaultMaxClockSkew.Milliseconds()
	case cfg.MaxClockSkew < 0:
		return 0
	}
	return min(cfg.MaxClockSkew, MaxClockSkewLimit).Milliseconds()
}

// registry lists the strategies NewStrategy knows, default first. Adding a
// strategy is one file with its type and one entry here; neither package authz
// nor the command changes.
var registry = []struct {
	name  string
	build func(Store, StrategyConfig) (Strategy, error)
}{
	{StrategySliding, func(st Store, cfg StrategyConfig) (Strategy, error) {
		return NewSliding(st, SlidingConfig(cfg)), nil
	}},
	{StrategyFixed, func(st Store, cfg StrategyConfig) (Strategy, error) {
		return NewFixed(st, cfg), nil
	}},
	{StrategyTokenBucket, func(st Store, cfg StrategyConfig) (Strategy, error) {
		return NewTokenBucket(st, cfg), nil
	}},
	{StrategySlidingLog, func(st Store, cfg StrategyConfig) (Strategy, error) {
		return NewSlidingLog(st, cfg), nil
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
// DefaultStrategy) counting in store. A *Sliding, which NewStrategy returns for
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
// it can be allowed, and trusts that memory for at most denialTrust after
// it was made. Every strategy here only ever moves that instant later for
// requests that are allowed: counts within a fixed window, a token bucket's
// theoretical arrival time and a log's timestamps only grow, on every
// replica. But a set of requests (MultiStrategy) counts before it knows
// whether all of it has room, and takes its counts back when not, so a
// denial may have seen counts that are later undone: trusting it for a
// second at most bounds what that costs, while a requestor hammering past
// its limit costs one store round trip a second, not one a request. It is
// safe for concurrent use.
type denials struct {
	maxPer int // entries per shard
	seed   maphash.Seed
	shards [cacheShards]denyShard
}

// denialTrust is how long a remembered denial is trusted.
const denialTrust = 1000 // milliseconds

type denyShard struct {
	mu sync.Mutex
	m  map[denyKey]denial
}

// denial is a remembered denial: until when (Unix milliseconds), and until
// when it is trusted.
type denial struct{ until, trusted int64 }

func newDenials(maxRequestors int) *denials {
	if maxRequestors <= 0 {
		maxRequestors = defaultMaxRequestors
	}
	d := &denials{maxPer: (maxRequestors + cacheShards - 1) / cacheShards, seed: maphash.MakeSeed()}
	for i := range d.shards {
		d.shards[i].m = make(map[denyKey]denial)
	}
	return d
}

func (d *denials) shard(k denyKey) *denyShard {
	return &d.shards[maphash.String(d.seed, k.id)%cacheShards]
}

// until returns the remembered instant before which k is denied, and whether
// nowMs is before it and the memory still trusted.
func (d *denials) until(k denyKey, nowMs int64) (int64, bool) {
	sh := d.shard(k)
	sh.mu.Lock()
	e, ok := sh.m[k]
	sh.mu.Unlock()
	return e.until, ok && nowMs < e.until && nowMs < e.trusted
}

// deny remembers that k is denied until untilMs, as seen at nowMs. Entries
// no longer trusted are dropped when the shard is full, then arbitrary ones.
func (d *denials) deny(k denyKey, untilMs, nowMs int64) {
	sh := d.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	old, ok := sh.m[k]
	if ok && old.trusted > nowMs {
		untilMs = max(untilMs, old.until) // the instant only moves later
	}
	e := denial{until: untilMs, trusted: min(untilMs, nowMs+denialTrust)}
	if !ok && len(sh.m) >= d.maxPer {
		for key, e := range sh.m {
			if e.trusted <= nowMs {
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
	sh.m[k] = e
}

// reqGroup is the requests of a set that share one stored value or counter
// (see MultiStrategy): their hits are counted together.
type reqGroup struct {
	id, key  string
	window   time.Duration // of all its requests: the key covers it
	hits     int64         // of all its requests, saturated at math.MaxInt64
	limit    int64         // the smallest Limit of its requests
	maxLimit int64         // the largest
}

// valueKey returns the key of the group's value or counter.
func (g *reqGroup) valueKey() string { return g.key }

// groupOf is the group of r alone, under id and key.
func groupOf(r Request, id, key string) reqGroup {
	return reqGroup{id: id, key: key, window: r.Window, hits: r.HitsOf(), limit: r.Limit, maxLimit: r.Limit}
}

// groupRequests puts each of reqs in the group of its key (keyOf returns
// the identity and the key of a request), and returns the groups in key
// order, so that turns are always taken in the same order, and the index
// of each request's group.
func groupRequests(reqs []Request, keyOf func(Request) (id, key string)) ([]reqGroup, []int) {
	gs := make([]reqGroup, 0, len(reqs))
	for _, r := range reqs {
		id, key := keyOf(r)
		i := slices.IndexFunc(gs, func(g reqGroup) bool { return g.key == key })
		if i < 0 {
			gs = append(gs, groupOf(r, id, key))
			continue
		}
		g := &gs[i]
		g.hits, g.limit, g.maxLimit = satAdd(g.hits, r.HitsOf()), min(g.limit, r.Limit), max(g.maxLimit, r.Limit)
	}
	slices.SortFunc(gs, func(a, b reqGroup) int { return strings.Compare(a.key, b.key) })
	of := make([]int, len(reqs))
	for i, r := range reqs {
		_, key := keyOf(r)
		of[i] = slices.IndexFunc(gs, func(g reqGroup) bool { return g.key == key })
	}
	return gs, of
}

// denyUnlessDenied makes every decision of a set that was not counted a
// denial when none is one (the set gave up although each request had room
// at the last look): nothing was counted, so none may say allowed. retry is
// the RetryAfter such a denial gets.
func denyUnlessDenied(ds []Decision, retry time.Duration) {
	for _, d := range ds {
		if !d.Allowed {
			return
		}
	}
	for i := range ds {
		ds[i].Allowed, ds[i].Remaining, ds[i].RetryAfter = false, 0, retry
	}
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

// takeAll takes the turns of n keys, key(0) to key(n-1), which the caller
// gives in a fixed order (key order) so that two sets never wait on each
// other in a cycle, and returns the function that ends them all. On an
// error the turns taken so far are ended.
func (t *turns) takeAll(ctx context.Context, n int, key func(i int) string) (func(), error) {
	dones := make([]func(), 0, n)
	release := func() {
		for _, done := range dones {
			done()
		}
	}
	for i := range n {
		done, err := t.take(ctx, key(i))
		if err != nil {
			release()
			return nil, err
		}
		dones = append(dones, done)
	}
	return release, nil
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
func update(ctx context.Context, store Store, key string, f swap) error {
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
