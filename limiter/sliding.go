package limiter

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	// cached (a history takes about 190 bytes, plus 24 per cached bucket
	// with requests in it). An evicted requestor is simply reloaded from
	// the store on its next request. Zero means 262,144.
	MaxRequestors int

	// MaxClockSkew is the most that the clocks of the replicas sharing
	// the store may disagree by; the limit holds exactly within it (see
	// doc.go). Zero means DefaultMaxClockSkew; a negative value means
	// clocks agree exactly. See ValidateClockSkew.
	MaxClockSkew time.Duration

	// MaxDecisionTime bounds the time from the start of Allow to the
	// store's answer that counts the request: a decision whose answer
	// comes later fails with ErrStoreUnavailable, so the caller's
	// failure mode applies. It sets, with MaxClockSkew, how old a second
	// must be before it is settled. Zero means DefaultMaxDecisionTime. A
	// negative value means DefaultMaxDecisionTime for the seconds read,
	// but no decision fails for its time: for a store no other process
	// shares (the in-memory store), whose answer is immediate, where only this
	// process's own scheduling can be slow, and where a failure would
	// leave the request to the failure mode, uncounted.
	MaxDecisionTime time.Duration
}

// Sliding is the sliding-window Strategy: a request at second t is allowed if
// and only if fewer than Limit allowed requests of the same requestor fall in
// the 1-second buckets of the window ending at t. Denied requests are not
// counted.
//
// Counts live in a Store as one counter per requestor per second, plus one
// aggregate counter per requestor per minute, so that any number of Sliding
// instances (in any number of processes, with clocks up to MaxClockSkew
// apart) sharing one Store enforce one limit: every decision counts its
// request first and then reads the seconds that may still change, so of
// any two concurrent decisions at least the later one sees the other. Each
// instance caches the settled part of every active requestor's history, so a
// returning requestor costs one round trip per allowed request; see doc.go
// for the design and the proof.
//
// A Sliding is safe for concurrent use. Create it with NewSliding.
type Sliding struct {
	store  Store
	maxPer int // max histories per shard
	seed   maphash.Seed
	shards [cacheShards]historyShard

	// ahead is how many seconds after its own a decision reads: the
	// seconds another replica, up to the skew ahead, may be counting in.
	ahead int64
	// lag is how old a second must be to be settled: a second s is
	// settled at t when s <= t-lag, as no decision that will be
	// decided by the store can still count in it (see doc.go).
	lag int64
	// maxDecision bounds the time from a decision's start to the store's
	// last answer; a later answer fails the decision.
	maxDecision time.Duration
	// failSlow: a decision over maxDecision fails (not for a private store).
	failSlow bool
	// since measures elapsed time for maxDecision: time.Since.
	since func(time.Time) time.Duration
	// pause waits before a decision tries again after an ambiguous
	// denial (see Allow); it returns false when ctx ended first.
	pause func(ctx context.Context) bool
}

// Defaults of SlidingConfig.
const (
	// DefaultMaxClockSkew is the clock difference between replicas that
	// Sliding stays exact under when SlidingConfig.MaxClockSkew is zero.
	DefaultMaxClockSkew = time.Second
	// DefaultMaxDecisionTime bounds a decision's store exchanges when
	// SlidingConfig.MaxDecisionTime is zero.
	DefaultMaxDecisionTime = 500 * time.Millisecond
	// MaxClockSkewLimit is the largest MaxClockSkew accepted: a decision
	// reads about two seconds of buckets per second of skew.
	MaxClockSkewLimit = 30 * time.Second

	// maxAttempts bounds how often one decision counts its request: the
	// first time, and again after a denial that the store's counts, read
	// again after the undo, no longer support (see Allow).
	maxAttempts = 4
)

// ValidateClockSkew reports whether d is usable as a maximum clock skew:
// from zero to MaxClockSkewLimit. It is the one rule for the flag and the
// config.
func ValidateClockSkew(d time.Duration) error {
	if d < 0 || d > MaxClockSkewLimit {
		return fmt.Errorf("max clock skew %s: must be from 0s to %s", d, MaxClockSkewLimit)
	}
	return nil
}

type historyShard struct {
	mu sync.Mutex
	m  map[requestorKey]*history
}

// requestorKey is the binary form of a RequestorID: the 16 bytes that
// RequestorID encodes in base64url. The history cache is keyed by it, so a
// cached requestor does not keep its 24-byte ID string alive.
type requestorKey [16]byte

// NewSliding returns a Sliding limiter counting in store. It panics when
// cfg.MaxClockSkew is not valid (see ValidateClockSkew); callers validate
// configuration first.
func NewSliding(store Store, cfg SlidingConfig) *Sliding {
	maxReq := cfg.MaxRequestors
	if maxReq <= 0 {
		maxReq = defaultMaxRequestors
	}
	skew := cfg.MaxClockSkew
	if skew == 0 {
		skew = DefaultMaxClockSkew
	}
	if skew < 0 {
		skew = 0
	}
	if err := ValidateClockSkew(skew); err != nil {
		panic(fmt.Sprintf("limiter.NewSliding: %v", err))
	}
	dec, failSlow := cfg.MaxDecisionTime, cfg.MaxDecisionTime >= 0
	if dec <= 0 {
		dec = DefaultMaxDecisionTime
	}
	s := &Sliding{
		store:       store,
		maxPer:      (maxReq + cacheShards - 1) / cacheShards,
		seed:        maphash.MakeSeed(),
		maxDecision: dec,
		failSlow:    failSlow,
		since:       time.Since,
		pause:       jitterPause,
	}
	// A decision started at our second t counts at real instant at most
	// t+1+dec; a replica s ahead then reads at most t+1+dec+s: the
	// seconds up to t+ceil(dec+s) hold requests it may have counted
	// before ours. A second s is settled once no decision still running
	// can count in it: once t >= s+1+dec+skew, so lag = 2+floor(dec+skew)
	// errs by at most a second on the safe side.
	span := dec + skew
	s.ahead = int64((span + time.Second - 1) / time.Second)
	s.lag = 2 + int64(span/time.Second)
	for i := range s.shards {
		s.shards[i].m = make(map[requestorKey]*history)
	}
	return s
}

// jitterPause waits a random time below a millisecond, so that two
// decisions that denied each other do not try again in lockstep.
func jitterPause(ctx context.Context) bool {
	t := time.NewTimer(rand.N(time.Millisecond) + 50*time.Microsecond)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Close releases the cached histories. It does not close the Store. It
// always returns nil.
func (s *Sliding) Close() error {
	s.Forget()
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

// load is an in-flight read of a history's missing settled buckets;
// concurrent decisions for the same requestor wait for it instead of
// reading again.
type load struct {
	done chan struct{}
	err  error
}

// history is one requestor's cached view of its settled buckets in one
// replica.
//
// Invariant: every second in (window start, synced] is settled (no decision
// still running anywhere can count in it) and its count is in spans;
// nothing newer is in spans.
type history struct {
	mu     sync.Mutex
	window int32  // seconds, at most a day; fixed, as it is part of the requestor's ID
	used   uint32 // the second of the last decision mod 2^32, for eviction (shard lock)
	synced int64  // newest settled second whose count is in spans
	spans  []span // ascending, non-overlapping, non-zero counts only

	latest   int64 // the newest second decided
	deniedAt int64 // the second of this replica's last denial

	// freshSum is what the last decision, at second freshAt, counted in
	// the seconds that had not settled (its own request included): with
	// spans, what this replica knows of the window without the store.
	freshAt, freshSum int64

	// retryTill is the second at which the last denial said a request of
	// retryLimit would be allowed, computed on complete data.
	retryTill, retryLimit int64

	loading *load

	// keys are the keys of the latest second a decision of one hit was
	// made in (see keysFor), shared by the decisions in that second.
	keys atomic.Pointer[secondKeys]
}

// secondKeys are the store keys of a requestor's decisions of one hit in
// one second: its ID and its decisionKeys. They are built by the first such
// decision and then only read, by every decision of that second, so a hot
// requestor's decisions build no key strings.
type secondKeys struct {
	t  int64
	id string
	decisionKeys
}

// decisionKeys are the keys of a decision at second t: fresh, every second
// that may still change, from t-lag+1 to t+ahead, t itself last (nil until
// needed, in a window with minute aggregates: see slidingGroup.freshKeys);
// reads, the ones its count reads beside its increments (see
// slidingGroup.counted); and incs, the increments that count its hits,
// second t's first.
type decisionKeys struct {
	fresh []string
	reads []string
	incs  []Increment
}

// byMinute reports whether the keys are of a window with minute aggregates,
// whose counts are decided by the minute's count (slidingGroup.counted).
func (k decisionKeys) byMinute() bool { return len(k.incs) == 2 }

// settledSums is what a history's settled seconds add up to in the window
// ending at t: all of them, and those before t's minute (see
// Sliding.counted).
type settledSums struct {
	all, beforeMinute int64
}

// pending is the settled part of a history that a decision has undertaken
// to read (in its own exchange) and merge; concurrent decisions wait for it.
type pending struct {
	p plan
	l *load
}

// exchange is one round trip of a decision at t: it applies adds (the
// increments that count the request, those that undo it, or none), then
// reads gets and, for pend, the settled keys the history lacks, which it
// merges. It returns the settled sums of the window (sums, or after the
// merge), the values read and the counts the adds returned, one per add.
func (s *Sliding) exchange(ctx context.Context, h *history, pend *pending, sums settledSums, gets []string, adds []Increment, t, w int64) (settledSums, map[string]int64, []int64, error) {
	if pend != nil {
		gets = append(slices.Clip(pend.p.keys), gets...)
	}
	vals, counts, err := s.store.Batch(ctx, gets, adds)
	if err == nil && len(counts) != len(adds) {
		err = fmt.Errorf("%w: the store's batch returned %d counts for %d increments", ErrStoreUnavailable, len(counts), len(adds))
	}
	if pend != nil {
		h.mu.Lock()
		if err == nil {
			h.merge(pend.p, vals, t)
			sums = h.sums(t, w)
		} else {
			pend.l.err = fmt.Errorf("sliding window: read %d buckets: %w", len(pend.p.keys), err)
		}
		h.loading = nil
		close(pend.l.done)
		h.mu.Unlock()
	}
	if err != nil {
		return settledSums{}, nil, nil, err
	}
	return sums, vals, counts, nil
}

// freshSum adds up the values read under keys.
func freshSum(vals map[string]int64, keys []string) int64 {
	var n int64
	for _, k := range keys {
		n += vals[k]
	}
	return n
}

// settledView is what a decision takes from its history under the lock:
// the settled sum of the window and this replica's last denial.
type settledView struct {
	settledSums
	deniedAt int64
	// retryTill and retryLimit are from this replica's last denial.
	retryTill, retryLimit int64
	// again says that this replica had decided in the same second before:
	// a requestor hot enough for its keys to be kept (keysFor).
	again bool
	// fresh is what this replica's last decision counted in the seconds
	// that had not settled, when that is recent enough to still be in them.
	fresh int64
}

// begin returns the second a decision at t decides in (never earlier than
// one this replica already decided), with what h knows of the settled part
// of the window. When h lacks settled seconds, the caller is to read them
// in its exchange (pending); concurrent decisions wait for that read.
func (s *Sliding) begin(ctx context.Context, h *history, id string, t, w int64) (int64, settledView, *pending, error) {
	for {
		h.mu.Lock()
		if l := h.loading; l != nil {
			h.mu.Unlock()
			select {
			case <-l.done:
			case <-ctx.Done():
				return 0, settledView{}, nil, fmt.Errorf("sliding window: wait for %s: %w: %w", id, ErrStoreUnavailable, ctx.Err())
			}
			if l.err != nil {
				return 0, settledView{}, nil, l.err
			}
			continue
		}
		// Decisions of one requestor never go back in time: one that read
		// the clock just before another crossed into a new second joins it.
		again := h.latest >= t // this replica decided in t already
		t = max(t, h.latest)
		h.latest = t
		h.prepare(t, w)
		v := settledView{settledSums: h.sums(t, w), deniedAt: h.deniedAt, retryTill: h.retryTill, retryLimit: h.retryLimit, again: again}
		if h.freshAt > t-s.lag {
			v.fresh = h.freshSum
		}
		p := h.plan(id, t, w, s.lag)
		var pend *pending
		if len(p.keys) > 0 {
			pend = &pending{p: p, l: &load{done: make(chan struct{})}}
			h.loading = pend.l
		}
		h.mu.Unlock()
		return t, v, pend, nil
	}
}

// keysFor returns the keys of a decision of h's requestor (id) at t (see
// decisionKeys). For one hit of a requestor decided here before in second t
// (again), they are h's keys of second t, built once; the slices returned
// are shared and must not be changed. A requestor seen once a second or
// less keeps none, and one that was hot drops its keys at its first
// decision of a later second that is not hot: a million of them would hold
// a few hundred bytes each for nothing.
func (s *Sliding) keysFor(h *history, id string, t, w, hits int64, window time.Duration, again bool) decisionKeys {
	if hits != 1 {
		return s.buildKeys(id, t, w, hits, window, false)
	}
	k := h.keys.Load()
	if k != nil && k.t == t {
		return k.decisionKeys
	}
	keys := s.buildKeys(id, t, w, 1, window, again)
	switch {
	case again:
		h.keys.Store(&secondKeys{t: t, id: id, decisionKeys: keys})
	case k != nil:
		h.keys.CompareAndSwap(k, nil) // an earlier second's, of no more use
	}
	return keys
}

// idOf returns the RequestorID of h's requestor, key: the one h's keys
// were built with, when there are any.
func idOf(h *history, key requestorKey) string {
	if k := h.keys.Load(); k != nil {
		return k.id
	}
	return key.String()
}

// buildKeys is keysFor without h. In a window with minute aggregates,
// fresh is left nil unless eager: most counts there read none of them, and
// freshKeys builds them when a decision needs them.
func (s *Sliding) buildKeys(id string, t, w, hits int64, window time.Duration, eager bool) decisionKeys {
	k := decisionKeys{incs: s.increments(id, t, w, hits, window)}
	if !k.byMinute() || eager {
		k.fresh = s.freshKeys(id, t, w)
	}
	if !k.byMinute() {
		k.reads = k.fresh[:len(k.fresh)-1]
		return k
	}
	// The minute aggregate's count stands for every second of t's minute:
	// a count reads only the fresh seconds outside it.
	m0 := floorDiv(t, minuteSeconds) * minuteSeconds
	for sec := max(t-s.lag+1, t-w+1); sec <= t+s.ahead; sec++ {
		if sec < m0 || sec >= m0+minuteSeconds {
			k.reads = append(k.reads, secondKey(id, sec))
		}
	}
	return k
}

// freshKeys returns the keys of the fresh seconds of a decision at t, from
// t-lag+1 to t+ahead, with t's own last.
func (s *Sliding) freshKeys(id string, t, w int64) []string {
	first := max(t-s.lag+1, t-w+1)
	fresh := make([]string, 0, t+s.ahead-first+1)
	for sec := first; sec <= t+s.ahead; sec++ {
		if sec != t {
			fresh = append(fresh, secondKey(id, sec))
		}
	}
	return append(fresh, secondKey(id, t))
}

// undo returns the increments that take back incs.
func undo(incs []Increment) []Increment {
	out := make([]Increment, len(incs))
	for i, inc := range incs {
		out[i] = Increment{Key: inc.Key, Delta: -inc.Delta, TTL: inc.TTL}
	}
	return out
}

// denied completes decision d, a denial (or an allowed request that used
// the last of the quota, for its retry time) at second t, from
// the settled history and the fresh counts vals (second keys to counts; nil
// when unknown). limit is the limit as for a request of one hit: a request
// of h hits under a limit L fits exactly when one of one hit fits L-h+1.
// Nothing is counted. When the retry time falls inside a
// minute known only as an aggregate, that minute's seconds are read once.
func (s *Sliding) denied(ctx context.Context, h *history, id string, t int64, d Decision, vals map[string]int64, limit int64) (Decision, error) {
	w := int64(h.window)
	fresh := freshSpans(vals)
	h.mu.Lock()
	ra, ok := h.retryAfter(t, w, limit, fresh)
	var keys []string
	var m int64
	if !ok {
		keys, m = h.detailKeys(id, t, limit, fresh)
	}
	h.mu.Unlock()
	if !ok && len(keys) > 0 {
		got, err := s.store.Get(ctx, keys)
		if err != nil {
			return Decision{}, fmt.Errorf("sliding window: read minute %d of %s: %w", m, id, err)
		}
		h.mu.Lock()
		h.expand(m, t-w+1, got, keys)
		ra, ok = h.retryAfter(t, w, limit, fresh)
		h.mu.Unlock()
	}
	if !ok {
		// The minute's seconds are gone (evicted from memcached): promise
		// the minute's last second, which is never too early.
		ra = min(ra+(minuteSeconds-1)*time.Second, time.Duration(w)*time.Second)
	}
	if !d.Allowed {
		h.mu.Lock()
		h.deniedAt = max(h.deniedAt, t)
		if vals != nil && ok {
			h.retryTill, h.retryLimit = t+int64(ra/time.Second), limit
		}
		h.mu.Unlock()
	}
	d.RetryAfter = ra
	return d, nil
}

// freshSpans turns fresh counts read by second key into ascending spans.
func freshSpans(vals map[string]int64) []span {
	var out []span
	for k, n := range vals {
		if n <= 0 {
			continue
		}
		sec, ok := secondOfKey(k)
		if !ok {
			continue
		}
		out = append(out, span{start: sec, width: 1, n: n})
	}
	slices.SortFunc(out, func(a, b span) int { return cmp.Compare(a.start, b.start) })
	return out
}

// secondOfKey returns the second a second key names.
func secondOfKey(k string) (int64, bool) {
	i := strings.LastIndexByte(k, ':')
	if i < 0 || i+1 >= len(k) || k[i+1] == 'm' {
		return 0, false
	}
	n, err := strconv.ParseInt(k[i+1:], 10, 64)
	return n, err == nil
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

// observe records n, what a decision at t counted in the unsettled
// seconds, for Known.
func (h *history) observe(t, n int64) {
	h.mu.Lock()
	if t > h.freshAt || t == h.freshAt && n > h.freshSum {
		h.freshAt, h.freshSum = t, n
	}
	h.mu.Unlock()
}

// Known returns what this replica knows, without asking the store, of the
// requests of req's requestor in the window ending at now: the settled
// seconds it has cached and what its last decision counted in the others.
// When that reaches req.Limit it also returns how long until it no longer
// does, never too early. It counts nothing; a requestor this replica has
// not seen is 0. resilient.Fallback starts its local decisions from it, so
// that a requestor at its limit when the store fails stays limited.
func (s *Sliding) Known(req Request, now time.Time) (int64, time.Duration) {
	if req.Validate() != nil {
		return 0, 0
	}
	w := int64(req.Window / time.Second)
	key := newRequestorKey(req.Scope, w, req.Requestor)
	sh := &s.shards[maphash.Comparable(s.seed, key)%cacheShards]
	sh.mu.Lock()
	h := sh.m[key]
	sh.mu.Unlock()
	if h == nil {
		return 0, 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	t := max(now.Unix(), h.latest)
	lo := t - w + 1
	var n int64
	for _, sp := range h.spans {
		if sp.end() >= lo {
			n += sp.n
		}
	}
	var fresh []span
	// The fresh requests may be in any of the seconds the last decision
	// read: place them in the latest, which leaves the window last.
	if last := h.freshAt + s.ahead; h.freshSum > 0 && last >= lo && last > h.synced {
		n += h.freshSum
		fresh = []span{{start: last, width: 1, n: h.freshSum}}
	}
	if n < req.Limit {
		return n, 0
	}
	ra, ok := h.retryAfter(t, w, req.Limit, fresh)
	if !ok {
		ra = min(ra+(minuteSeconds-1)*time.Second, time.Duration(w+s.ahead)*time.Second)
	}
	return n, ra
}

// Charge counts n requests of req's requestor, decided elsewhere, in second
// sec (Unix seconds): the counts a replica allowed on its own while the
// store was unreachable, added once it is back (resilient.Fallback does).
// It changes the second's counter and minute aggregate, and this
// replica's cached history when that second is already settled in it.
func (s *Sliding) Charge(ctx context.Context, req Request, sec, n int64) error {
	if err := req.Validate(); err != nil {
		return fmt.Errorf("sliding window: %w", err)
	}
	if n <= 0 {
		return nil
	}
	w := int64(req.Window / time.Second)
	key := newRequestorKey(req.Scope, w, req.Requestor)
	id := key.String()
	if _, _, err := s.store.Batch(ctx, nil, s.increments(id, sec, w, n, req.Window)); err != nil {
		return fmt.Errorf("sliding window: charge %d requests of %s at %d: %w", n, id, sec, err)
	}
	sh := &s.shards[maphash.Comparable(s.seed, key)%cacheShards]
	sh.mu.Lock()
	h := sh.m[key]
	sh.mu.Unlock()
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if sec > h.synced {
		return nil // read from the store when it settles
	}
	i, found := slices.BinarySearchFunc(h.spans, sec, func(sp span, sec int64) int {
		switch {
		case sp.end() < sec:
			return -1
		case sp.start > sec:
			return 1
		}
		return 0
	})
	if found {
		h.spans[i].n += n
	} else {
		h.spans = slices.Insert(h.spans, i, span{start: sec, width: 1, n: n})
	}
	return nil
}

// Forget drops every cached history, so that each requestor's next
// decision reads its settled seconds from the store again: after an outage,
// when other replicas may have charged seconds this one holds as settled.
func (s *Sliding) Forget() {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		clear(sh.m)
		sh.mu.Unlock()
	}
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
		h = &history{window: int32(w), synced: -1 << 62, deniedAt: -1 << 62}
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

// plan lists the settled buckets to read so that h knows every settled
// second of the window ending at t: those up to t-lag.
type plan struct {
	from, to int64 // the settled seconds to merge, inclusive; from > to if none
	keys     []string
	expand   int64 // start of a straddling minute span being replaced; -1 if none
	nExpand  int   // keys begin with this many seconds of that minute
}

// plan is called with h.mu held.
func (h *history) plan(id string, t, w, lag int64) plan {
	lo := t - w + 1
	p := plan{from: max(h.synced+1, lo), to: t - lag, expand: -1}
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

// sum counts the settled requests in the window ending at t. Called with
// h.mu held after a complete plan.
func (h *history) sum(t, w int64) int64 { return h.sums(t, w).all }

// sums counts the settled requests in the window ending at t, and those of
// them before t's minute. Called with h.mu held after a complete plan.
func (h *history) sums(t, w int64) settledSums {
	lo, m0 := t-w+1, floorDiv(t, minuteSeconds)*minuteSeconds
	var out settledSums
	for _, sp := range h.spans {
		if sp.end() >= lo {
			out.all += sp.n
			if sp.start < m0 {
				out.beforeMinute += sp.n
			}
		}
	}
	return out
}

// retryAfter returns how long until a request would be allowed at the limit
// reached at second t, given the settled spans and the fresh ones (seconds
// after synced, ascending), or false when the answer lies inside a minute
// aggregate whose seconds are not loaded. Called with h.mu held.
//
// As nothing more is counted while the limit is reached, the window ending
// at t+d holds the total minus the buckets older than t+d-w+1; the answer
// is the smallest d at which that drops below limit. It lies in [1s,
// window+ahead]: a request another replica counted in a second ahead of
// this one's stays in the window that long.
func (h *history) retryAfter(t, w, limit int64, fresh []span) (time.Duration, bool) {
	sec, ok := h.crossing(t, w, limit, fresh)
	return time.Duration(max(sec+w-t, 1)) * time.Second, ok
}

// crossing returns the second whose bucket, once it leaves the window, brings
// the count below limit; for a minute aggregate that is not loaded it returns
// the aggregate's start and false.
func (h *history) crossing(t, w, limit int64, fresh []span) (int64, bool) {
	lo := t - w + 1
	var total int64
	for _, sp := range h.spans {
		if sp.end() >= lo {
			total += sp.n
		}
	}
	for _, sp := range fresh {
		if sp.start > h.synced && sp.start >= lo {
			total += sp.n
		}
	}
	need := max(total, limit) - limit + 1 // requests that must leave the window
	for _, sp := range h.spans {
		if sp.end() < lo {
			continue
		}
		if sp.n >= need {
			return sp.start, sp.width == 1
		}
		need -= sp.n
	}
	for _, sp := range fresh {
		if sp.start <= h.synced || sp.start < lo {
			continue
		}
		if sp.n >= need {
			return sp.start, true
		}
		need -= sp.n
	}
	return t, true
}

// detailKeys names the seconds of the minute aggregate in which crossing
// falls, and that minute's start; none when crossing needs no detail.
func (h *history) detailKeys(id string, t, limit int64, fresh []span) ([]string, int64) {
	m, ok := h.crossing(t, int64(h.window), limit, fresh)
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
