package limiter

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"strconv"
	"sync"
	"time"
)

// Key layout and timing constants of the sliding window. See doc.go.
const (
	// KeyPrefix starts every key Sliding writes; the version lets a future
	// layout live beside this one during a rolling upgrade.
	KeyPrefix = "fg1:"

	// SkewMargin is added to every counter's TTL, so a counter outlives its
	// window even when replica clocks disagree by up to this much.
	SkewMargin = 60 * time.Second

	// minuteSeconds is the width of an aggregate bucket.
	minuteSeconds = 60

	// minuteWindowMin is the smallest window (in seconds) for which Sliding
	// keeps minute aggregates; below it they would never save a read.
	minuteWindowMin = 180

	// defaultMaxRequestors bounds the per-replica history cache.
	defaultMaxRequestors = 1 << 18

	cacheShards = 64
)

// SlidingConfig tunes a Sliding limiter. The zero value is ready to use.
type SlidingConfig struct {
	// MaxRequestors bounds how many requestor histories this replica keeps
	// cached (a history takes about 170 bytes, plus 24 per cached bucket
	// with requests in it). An evicted requestor is simply reloaded from
	// the store on its next request. Zero means 262,144.
	MaxRequestors int
}

// Increment is one counter change of a BatchStore.Batch: what
// Store.Add(ctx, Key, Delta, TTL) does.
type Increment struct {
	Key   string
	Delta int64
	TTL   time.Duration
}

// BatchStore is a Store that can also read some counters and change others
// in one round trip, when all their keys share a server as the keys of one
// requestor do (see doc.go). The memcached store implements it by
// pipelining, MemoryStore in one call; a wrapper around a BatchStore (metrics, a circuit breaker)
// should implement it too, or Sliding falls back to one round trip per Get
// and per Add.
//
// With a BatchStore, Sliding counts a returning requestor's request in the
// same round trip that reads the seconds it does not know yet (the count it
// gets back decides once the read is merged, exactly as in the two-step
// order; a request that turns out to be over the limit is decremented
// again), and changes the second counter and the minute aggregate together.
type BatchStore interface {
	Store

	// Batch applies each of adds in order, as Add does, then reads the
	// counters at gets, so that the values read include every add of the
	// batch and of any call that completed before it. It returns the values read (a missing key is
	// absent from the map and counts as zero, as with Get) and the new
	// value of each counter in adds, in the order of adds. Either list may
	// be empty. Every error wraps ErrStoreUnavailable; after an error, any
	// of the adds may or may not have been applied.
	Batch(ctx context.Context, gets []string, adds []Increment) (map[string]int64, []int64, error)
}

// Sliding is the sliding-window Strategy: a request at second t is allowed if
// and only if fewer than Limit allowed requests of the same requestor fall in
// the 1-second buckets of seconds [t-Window+1, t]. Denied requests are not
// counted.
//
// Counts live in a Store as one counter per requestor per second, plus one
// aggregate counter per requestor per minute, so that any number of Sliding
// instances (in any number of processes) sharing one Store enforce one limit.
// Each instance caches the settled part of every active requestor's history,
// so a returning requestor costs one small read per second and one increment
// per allowed request; see doc.go for the design.
//
// A Sliding is safe for concurrent use. Create it with NewSliding.
type Sliding struct {
	store  Store
	batch  BatchStore // store, when it is a BatchStore; else nil
	maxPer int        // max histories per shard
	seed   maphash.Seed
	shards [cacheShards]historyShard
}

type historyShard struct {
	mu sync.Mutex
	m  map[requestorKey]*history
}

// requestorKey is the binary form of a RequestorID: the 16 bytes that
// RequestorID encodes in base64url. The history cache is keyed by it, so a
// cached requestor does not keep its 24-byte ID string alive.
type requestorKey [16]byte

// NewSliding returns a Sliding limiter counting in store.
func NewSliding(store Store, cfg SlidingConfig) *Sliding {
	max := cfg.MaxRequestors
	if max <= 0 {
		max = defaultMaxRequestors
	}
	s := &Sliding{store: store, maxPer: (max + cacheShards - 1) / cacheShards, seed: maphash.MakeSeed()}
	s.batch, _ = store.(BatchStore)
	for i := range s.shards {
		s.shards[i].m = make(map[requestorKey]*history)
	}
	return s
}

// Close releases the cached histories. It does not close the Store. It
// always returns nil.
func (s *Sliding) Close() error {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		sh.m = make(map[requestorKey]*history)
		sh.mu.Unlock()
	}
	return nil
}

// span is a run of seconds [start, start+width) holding n counted requests.
// width is 1 for a second bucket and 60 for a minute aggregate.
type span struct {
	start int64
	width int64
	n     int64
}

func (sp span) end() int64 { return sp.start + sp.width - 1 }

// load is an in-flight read of a history's missing buckets; concurrent
// decisions for the same requestor wait for it instead of reading again.
type load struct {
	done chan struct{}
	err  error
}

// history is one requestor's cached view of its buckets in one replica. It
// takes 96 bytes (a size class of the allocator) besides its spans; the
// field order avoids padding.
//
// Invariant: every second in (window start, synced] is settled (no replica
// will still add to it) and its count is in spans; nothing newer is in spans.
type history struct {
	mu     sync.Mutex
	window int32  // seconds, at most a day; fixed, as it is part of the requestor's ID
	used   uint32 // the second of the last decision mod 2^32, for eviction (shard lock)
	synced int64  // newest settled second whose count is in spans
	spans  []span // ascending, non-overlapping, non-zero counts only

	recentAt int64 // the second at which recent was read
	recent   int64 // the count of second recentAt-1, which may still change

	latest   int64 // the newest second decided
	satAt    int64 // a second in which this replica saw the limit reached
	deniedAt int64 // the second of this replica's last denial

	loading *load
}

// Allow decides whether req's requestor may make one more request at now and
// counts it when allowed. It implements Strategy.
func (s *Sliding) Allow(ctx context.Context, req Request, now time.Time) (Decision, error) {
	if err := req.Validate(); err != nil {
		return Decision{}, fmt.Errorf("sliding window: %w", err)
	}
	w := int64(req.Window / time.Second)
	key := newRequestorKey(req.Scope, w, req.Requestor)
	id := key.String()
	t := now.Unix()
	d := Decision{Limit: req.Limit, Window: req.Window}

	h := s.history(key, w, t)
	// With a BatchStore the request may be counted in the round trip that
	// reads the missing buckets: then counted is set and v is the value the
	// increment of second t returned.
	var counted bool
	var v int64
	// Read what this replica does not know yet, then decide on complete data.
	for {
		h.mu.Lock()
		if l := h.loading; l != nil {
			h.mu.Unlock()
			select {
			case <-l.done:
			case <-ctx.Done():
				return Decision{}, fmt.Errorf("sliding window: wait for %s: %w: %w", id, ErrStoreUnavailable, ctx.Err())
			}
			if l.err != nil {
				return Decision{}, l.err
			}
			continue
		}
		// Decisions of one requestor never go back in time: one that read
		// the clock just before another crossed into a new second joins it.
		t = max(t, h.latest)
		h.latest = t
		h.prepare(t, w)
		p := h.plan(id, t, w)
		if len(p.keys) == 0 {
			break // h.mu stays locked
		}
		l := &load{done: make(chan struct{})}
		h.loading = l
		spec := s.batch != nil && h.deniedAt < t-1 && h.sum(t, w) < req.Limit
		h.mu.Unlock()
		var vals map[string]int64
		var err error
		if spec {
			// Count the request now, on the chance that the read will not
			// deny it; the count decides below exactly as after a separate
			// increment, and is undone when the request is denied.
			var counts []int64
			vals, counts, err = s.batch.Batch(ctx, p.keys, s.increments(id, t, w, 1, req.Window))
			if err == nil && len(counts) == 0 {
				err = fmt.Errorf("%w: the store's batch returned no counts", ErrStoreUnavailable)
			}
			if err == nil {
				v = counts[0]
			}
		} else {
			vals, err = s.store.Get(ctx, p.keys)
		}
		h.mu.Lock()
		if err == nil {
			h.merge(p, vals, t)
		} else {
			l.err = fmt.Errorf("sliding window: read %d buckets of %s: %w", len(p.keys), id, err)
		}
		h.loading = nil
		close(l.done)
		if err != nil {
			h.mu.Unlock()
			return Decision{}, l.err
		}
		if spec {
			// Decide on the merged read with h.mu still held, so that no
			// other decision moves h.latest past the second counted in.
			if len(h.plan(id, t, w).keys) == 0 {
				counted = true
				break
			}
			// Not reached: plan p read everything the window lacked. Undo
			// and decide the two-step way.
			h.mu.Unlock()
			_, _ = s.add(ctx, id, t, w, -1, req.Window)
			continue
		}
		h.mu.Unlock()
	}

	// h.mu is held here and h knows every bucket of the window but second t.
	base := h.sum(t, w)
	threshold := req.Limit - base
	if threshold <= 0 || h.satAt == t {
		// Over the limit on settled data alone, or this second is full.
		h.deniedAt = t
		ra, ok := h.retryAfter(t, w, req.Limit)
		h.mu.Unlock()
		if counted {
			_, _ = s.add(ctx, id, t, w, -1, req.Window)
		}
		if !ok {
			return s.needDetail(ctx, h, id, t, d)
		}
		d.RetryAfter = ra
		return d, nil
	}
	h.mu.Unlock()

	// Count the request in second t; the counter arbitrates between all
	// concurrent decisions of all replicas: the first threshold increments win.
	if !counted {
		var err error
		v, err = s.add(ctx, id, t, w, 1, req.Window)
		if err != nil {
			return Decision{}, fmt.Errorf("sliding window: count %s: %w", id, err)
		}
	}
	if v <= threshold {
		d.Allowed = true
		d.Remaining = threshold - v
		if d.Remaining == 0 {
			h.mu.Lock()
			ra, ok := h.retryAfter(t, w, req.Limit)
			h.mu.Unlock()
			d.RetryAfter = ra
			if !ok {
				// The request is counted; only the retry time is missing.
				if rd, err := s.needDetail(ctx, h, id, t, d); err == nil {
					d.RetryAfter = rd.RetryAfter
				} else {
					d.RetryAfter = req.Window
				}
			}
		}
		return d, nil
	}

	// Denied: undo the increment so a denied request leaves no trace. If the
	// undo fails the counter stays one too high, which errs on the safe side
	// and heals when the bucket leaves the window.
	_, _ = s.add(ctx, id, t, w, -1, req.Window)
	h.mu.Lock()
	h.satAt = max(h.satAt, t)
	h.deniedAt = t
	ra, ok := h.retryAfter(t, w, req.Limit)
	h.mu.Unlock()
	if !ok {
		return s.needDetail(ctx, h, id, t, d)
	}
	d.RetryAfter = ra
	return d, nil
}

// needDetail completes decision d when the retry time falls inside a minute
// known only as an aggregate: it loads that minute's seconds into h and
// computes the retry time again. Nothing is counted.
func (s *Sliding) needDetail(ctx context.Context, h *history, id string, t int64, d Decision) (Decision, error) {
	w, limit := int64(h.window), d.Limit
	h.mu.Lock()
	keys, m := h.detailKeys(id, t, limit)
	h.mu.Unlock()
	if len(keys) > 0 {
		vals, err := s.store.Get(ctx, keys)
		if err != nil {
			return Decision{}, fmt.Errorf("sliding window: read minute %d of %s: %w", m, id, err)
		}
		h.mu.Lock()
		h.expand(m, t-w+1, vals, keys)
		h.mu.Unlock()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	ra, ok := h.retryAfter(t, w, limit)
	if !ok {
		// The minute's seconds are gone (evicted from memcached): promise
		// the minute's last second, which is never too early.
		ra = min(ra+(minuteSeconds-1)*time.Second, time.Duration(w)*time.Second)
	}
	d.RetryAfter = ra
	return d, nil
}

// increments are the changes that count (delta 1) or uncount (delta -1) a
// request of id at second t in a window of w seconds: second t's counter
// and, for windows of minuteWindowMin or more, the minute aggregate.
func (s *Sliding) increments(id string, t, w, delta int64, window time.Duration) []Increment {
	incs := []Increment{{Key: secondKey(id, t), Delta: delta, TTL: window + SkewMargin}}
	if w >= minuteWindowMin {
		incs = append(incs, Increment{Key: minuteKey(id, floorDiv(t, minuteSeconds)), Delta: delta, TTL: window + 2*SkewMargin + minuteSeconds*time.Second})
	}
	return incs
}

// add applies delta to second t's counter of id and, for windows of
// minuteWindowMin or more, to the minute aggregate: in one round trip with
// a BatchStore, else as two concurrent Adds. It returns the second
// counter's value.
func (s *Sliding) add(ctx context.Context, id string, t, w, delta int64, window time.Duration) (int64, error) {
	incs := s.increments(id, t, w, delta, window)
	if s.batch != nil {
		_, counts, err := s.batch.Batch(ctx, nil, incs)
		if err == nil && len(counts) == 0 {
			err = fmt.Errorf("%w: the store's batch returned no counts", ErrStoreUnavailable)
		}
		if err != nil {
			return 0, err
		}
		return counts[0], nil
	}
	sec := incs[0]
	if len(incs) == 1 {
		return s.store.Add(ctx, sec.Key, sec.Delta, sec.TTL)
	}
	var mErr error
	done := make(chan struct{})
	go func() {
		m := incs[1]
		_, mErr = s.store.Add(ctx, m.Key, m.Delta, m.TTL)
		close(done)
	}()
	v, err := s.store.Add(ctx, sec.Key, sec.Delta, sec.TTL)
	<-done
	if err == nil && mErr != nil {
		err = mErr
	}
	return v, err
}

// history returns the cached history for key, creating it (and evicting
// others when the shard is full).
func (s *Sliding) history(key requestorKey, w, t int64) *history {
	sh := &s.shards[maphash.Comparable(s.seed, key)%cacheShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	h := sh.m[key]
	if h == nil {
		if len(sh.m) >= s.maxPer {
			sh.evict(t, s.maxPer)
		}
		h = &history{window: int32(w), synced: -1 << 62}
		sh.m[key] = h
	}
	h.used = uint32(t)
	return h
}

// evict drops histories that have been idle for longer than their window,
// and then arbitrary ones until the shard is an eighth below max, so that a
// stream of new requestors pays for one scan of the shard per max/8 of them
// rather than one per requestor. A dropped history is only a cache: the
// next request reloads it from the store.
func (sh *historyShard) evict(t int64, max int) {
	for k, h := range sh.m {
		// Serial-number arithmetic on the low 32 bits of the seconds:
		// exact while a history was used within the last 68 years.
		if idle := int32(uint32(t) - h.used); int64(idle) > int64(h.window) {
			delete(sh.m, k)
		}
	}
	target := min(max-max/8, max-1)
	for k := range sh.m {
		if len(sh.m) <= target {
			break
		}
		delete(sh.m, k)
	}
}

// prepare drops what has left the window ending at t and resets the history
// when it went stale. Called with h.mu held and no load in flight.
func (h *history) prepare(t, w int64) {
	lo := t - w + 1
	if h.synced < lo-1 {
		h.synced = lo - 1
		h.spans = h.spans[:0]
		h.recentAt = 0
		return
	}
	i := 0
	for i < len(h.spans) && h.spans[i].end() < lo {
		i++
	}
	if i > 0 {
		h.spans = append(h.spans[:0], h.spans[i:]...)
	}
}

// plan lists the buckets to read so that h knows every second of the window
// ending at t except t itself. Called with h.mu held.
type plan struct {
	from, to int64 // the settled seconds to merge, inclusive; from > to if none
	keys     []string
	expand   int64 // start of a straddling minute span being replaced; -1 if none
	nExpand  int   // keys begin with this many seconds of that minute
	recent   bool  // keys end with second t-1
}

func (h *history) plan(id string, t, w int64) plan {
	lo := t - w + 1
	p := plan{from: h.synced + 1, to: t - 2, expand: -1}
	if p.from < lo {
		p.from = lo
	}
	// A minute aggregate that straddles the window's start must be replaced
	// by the seconds of it still inside the window.
	if len(h.spans) > 0 && h.spans[0].width > 1 && h.spans[0].start < lo {
		sp := h.spans[0]
		p.expand = sp.start
		for sec := lo; sec <= sp.end(); sec++ {
			p.keys = append(p.keys, secondKey(id, sec))
		}
		p.nExpand = len(p.keys)
	}
	for sec := p.from; sec <= p.to; {
		if w >= minuteWindowMin && floorMod(sec, minuteSeconds) == 0 && sec+minuteSeconds-1 <= p.to {
			p.keys = append(p.keys, minuteKey(id, floorDiv(sec, minuteSeconds)))
			sec += minuteSeconds
			continue
		}
		p.keys = append(p.keys, secondKey(id, sec))
		sec++
	}
	if w >= 2 && h.recentAt != t {
		p.recent = true
		p.keys = append(p.keys, secondKey(id, t-1))
	}
	return p
}

// merge records what plan p read. Called with h.mu held, and with no other
// load in flight, so nothing else moved h.synced meanwhile.
func (h *history) merge(p plan, vals map[string]int64, t int64) {
	keys := p.keys
	if p.expand >= 0 {
		h.expand(p.expand, t-int64(h.window)+1, vals, keys[:p.nExpand])
		keys = keys[p.nExpand:]
	}
	if p.recent {
		h.recent = vals[keys[len(keys)-1]]
		h.recentAt = t
		keys = keys[:len(keys)-1]
	}
	if p.from <= p.to {
		sec := p.from
		for _, k := range keys {
			width := int64(1)
			if isMinuteKey(k) {
				width = minuteSeconds
			}
			if n := vals[k]; n > 0 {
				h.spans = append(h.spans, span{start: sec, width: width, n: n})
			}
			sec += width
		}
		h.synced = p.to
	}
}

// expand replaces the minute span starting at m with the seconds of it from
// lo on, read under keys (which name those seconds in order).
func (h *history) expand(m, lo int64, vals map[string]int64, keys []string) {
	i := 0
	for i < len(h.spans) && h.spans[i].start != m {
		i++
	}
	if i == len(h.spans) || h.spans[i].width == 1 {
		return // already expanded by someone else
	}
	first := max(m, lo)
	secs := make([]span, 0, len(keys))
	for j, k := range keys {
		if n := vals[k]; n > 0 {
			secs = append(secs, span{start: first + int64(j), width: 1, n: n})
		}
	}
	rest := append(secs, h.spans[i+1:]...)
	h.spans = append(h.spans[:i], rest...)
}

// sum counts the requests in the window ending at t, excluding second t.
// Called with h.mu held after a complete plan.
func (h *history) sum(t, w int64) int64 {
	lo := t - w + 1
	var n int64
	for _, sp := range h.spans {
		if sp.end() >= lo {
			n += sp.n
		}
	}
	if w >= 2 && h.recentAt == t {
		n += h.recent
	}
	return n
}

// retryAfter returns how long until a request would be allowed at the limit
// reached at second t, or false when the answer lies inside a minute
// aggregate whose seconds are not loaded. Called with h.mu held.
//
// Second t holds limit-sum requests when the settled history sums to less
// than limit (the counter stops at the limit), none otherwise. As nothing
// more is counted while the limit is reached, the window ending at t+d holds
// the total minus the buckets older than t+d-w+1; the answer is the smallest
// d at which that drops below limit. It lies in [1s, window].
func (h *history) retryAfter(t, w, limit int64) (time.Duration, bool) {
	sec, ok := h.crossing(t, w, limit)
	return time.Duration(sec+w-t) * time.Second, ok
}

// crossing returns the second whose bucket, once it leaves the window, brings
// the count below limit; for a minute aggregate that is not loaded it returns
// the aggregate's start and false.
func (h *history) crossing(t, w, limit int64) (int64, bool) {
	base := h.sum(t, w)
	need := max(base, limit) - limit + 1 // requests that must leave the window
	lo := t - w + 1
	for _, sp := range h.spans {
		if sp.end() < lo {
			continue
		}
		if sp.n >= need {
			return sp.start, sp.width == 1
		}
		need -= sp.n
	}
	if w >= 2 && h.recentAt == t {
		if h.recent >= need {
			return t - 1, true
		}
	}
	return t, true
}

// detailKeys names the seconds of the minute aggregate in which crossing
// falls, and that minute's start; none when crossing needs no detail.
func (h *history) detailKeys(id string, t, limit int64) ([]string, int64) {
	m, ok := h.crossing(t, int64(h.window), limit)
	if ok {
		return nil, -1
	}
	lo := t - int64(h.window) + 1
	keys := make([]string, 0, minuteSeconds)
	for sec := max(m, lo); sec < m+minuteSeconds; sec++ {
		keys = append(keys, secondKey(id, sec))
	}
	return keys, m
}

// RequestorID derives the store identity of a requestor within a scope and
// window (in seconds): the first 128 bits of SHA-256 over the scope, a NUL,
// the window as 8 big-endian bytes and the requestor, in unpadded base64url
// (22 characters). Hashing keeps every key short and free of memcached's
// forbidden bytes whatever the requestor contains; the window is part of it
// so that two windows never share counters.
func RequestorID(scope string, window int64, requestor string) string {
	return newRequestorKey(scope, window, requestor).String()
}

// newRequestorKey returns the binary form of RequestorID(scope, window,
// requestor).
func newRequestorKey(scope string, window int64, requestor string) requestorKey {
	hsh := sha256.New()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(window))
	hsh.Write([]byte(scope))
	hsh.Write([]byte{0})
	hsh.Write(b[:])
	hsh.Write([]byte(requestor))
	var sum [sha256.Size]byte
	var k requestorKey
	copy(k[:], hsh.Sum(sum[:0]))
	return k
}

// String returns k as a RequestorID: unpadded base64url, 22 characters.
func (k requestorKey) String() string {
	return base64.RawURLEncoding.EncodeToString(k[:])
}

// secondKey names the counter of second sec (Unix seconds) for id.
func secondKey(id string, sec int64) string {
	// A fixed-size buffer stays on the stack (a RequestorID key is at most
	// 48 bytes), so the string is the only allocation.
	var buf [64]byte
	b := append(buf[:0], KeyPrefix...)
	b = append(b, id...)
	b = append(b, ':')
	b = strconv.AppendInt(b, sec, 10)
	return string(b)
}

// minuteKey names the aggregate of minute m (Unix seconds / 60) for id.
func minuteKey(id string, m int64) string {
	var buf [64]byte // see secondKey
	b := append(buf[:0], KeyPrefix...)
	b = append(b, id...)
	b = append(b, ':', 'm')
	b = strconv.AppendInt(b, m, 10)
	return string(b)
}

func isMinuteKey(k string) bool {
	for i := len(k) - 1; i >= 0; i-- {
		if k[i] == ':' {
			return i+1 < len(k) && k[i+1] == 'm'
		}
	}
	return false
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

func floorMod(a, b int64) int64 { return a - floorDiv(a, b)*b }
