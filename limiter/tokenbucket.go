package limiter

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
)

// Compile-time check that TokenBucket implements MultiStrategy.
var _ MultiStrategy = (*TokenBucket)(nil)

const (
	// tokenBucketKind ends TokenBucket's keys.
	tokenBucketKind = 'g'

	// maxBurstSpan bounds Burst times Window in milliseconds, so that the
	// arithmetic of TokenBucket never overflows: it allows a burst of about
	// 26 billion requests with a 24h window.
	maxBurstSpan = 1 << 61

	// maxBucketTTL bounds the time to live of a bucket's value.
	maxBucketTTL = 366 * 24 * time.Hour
)

// TokenBucket is the token-bucket Strategy, computed as GCRA (the generic
// cell rate algorithm): each requestor has a bucket of Burst tokens (Limit
// when Request.Burst is zero) that refills continuously at Limit tokens per
// Window, one every Window/Limit; a request takes one token and is allowed if
// and only if a whole token is there. A requestor that has been quiet long
// enough to fill the bucket (Window, when Burst is Limit) may thus make Burst
// requests at once, and over a long time makes Limit per Window on average.
// Denied requests take nothing.
//
// Instead of a token count, GCRA keeps one instant per requestor, the
// theoretical arrival time (TAT): when the bucket will be full again. A
// request at t is allowed if and only if max(TAT, t) - t <= (Burst-1) *
// Window/Limit, and then moves the TAT to max(TAT, t) + Window/Limit; a
// request of n hits needs n tokens and moves the TAT n steps. Replicas'
// clocks may disagree by up to StrategyConfig.MaxClockSkew s: a bucket is
// judged at t-s, and a TAT behind t restarts from t, so no replica sees a
// token before the slowest clock would (see doc.go for the bound and its
// cost). Time is
// counted in milliseconds; the TAT carries the remainder of Window/Limit as a
// fraction of a millisecond in units of 1/Limit, so the rate is exact.
//
// The TAT lives in a Store as a 16-byte value (the millisecond and the
// fraction, big-endian) under
//
//	fg1:<id>:g    e.g. fg1:q3Jd0yY6p1o1Yz7mS5b1Zw:g
//
// where <id> is a RequestorID of the scope tagged with "token-bucket", the
// limit and the burst, the window (in seconds) and the requestor: unlike
// Sliding's counters, a TAT is meaningless under another rate, so requests of
// different limits or bursts never share one. A decision reads the TAT and
// writes the new one with CompareAndSwap, so any number of replicas sharing
// the store enforce one bucket exactly; a replica that loses the race reads
// again, and after 24 lost attempts Allow fails with ErrContention.
// Decisions of one TokenBucket for one requestor take turns, so only
// replicas ever race. The value expires SkewMargin after the bucket would be
// full again.
//
// Remaining is the number of whole tokens left, which exceeds Limit when
// Burst does and the bucket is nearly full. RetryAfter, when none is
// left, is the time until one is, in whole seconds, at least one: a denied
// requestor that waits that long is let in. Each TokenBucket remembers
// denied requestors until that time, trusting the memory for up to a
// second, so a requestor hammering past its limit costs a store round trip
// a second, not one a request.
//
// Limit, Burst and Window must satisfy Burst * Window (in milliseconds) <=
// 2^61; Allow refuses other requests. A TokenBucket is safe for concurrent
// use. Create it with NewTokenBucket.
type TokenBucket struct {
	store  Store
	turns  *turns
	denied *denials
	skewMs int64 // StrategyConfig.MaxClockSkew, in milliseconds
}

// NewTokenBucket returns a TokenBucket keeping its buckets in store.
func NewTokenBucket(store Store, cfg StrategyConfig) *TokenBucket {
	return &TokenBucket{store: store, turns: newTurns(), denied: newDenials(cfg.MaxRequestors), skewMs: cfg.skewMs()}
}

// Allow decides whether req's requestor may make req's hits more requests
// at now and takes that many tokens when allowed. It implements Strategy,
// and is AllowAll of req alone (without the slices).
func (b *TokenBucket) Allow(ctx context.Context, req Request, now time.Time) (Decision, error) {
	g, err := newGCRA(req)
	if err != nil {
		return Decision{}, fmt.Errorf("token bucket: %w", err)
	}
	id := tokenBucketID(req)
	reqs := [1]Request{req}
	gs := [1]tbGroup{{reqGroup: groupOf(req, id, valueKey(id, tokenBucketKind)), g: g}}
	var of [1]int
	var ds [1]Decision
	if err := b.decideSet(ctx, reqs[:], gs[:], of[:], ds[:], now.UnixMilli()); err != nil {
		return Decision{}, err
	}
	return ds[0], nil
}

// tbGroup is one bucket of a set: its group and arithmetic, and what its
// decision found.
type tbGroup struct {
	reqGroup
	g          gcra
	r          gcraResult
	remembered bool // r is a remembered denial, not the bucket's answer
	swapMember
}

// AllowAll implements MultiStrategy. The buckets of a set are one value
// each, so a set cannot be one compare-and-swap: their tokens are taken in
// key order, each with its own compare-and-swap, and when one bucket has
// too few the buckets already taken from are given their tokens back, one
// compensating compare-and-swap each. Between the two, a concurrent
// decision may see those tokens gone and be denied: for at most the time of
// the set's later compare-and-swaps (bounded by the caller's deadline), and
// for at most the set's hits in each bucket; such a denial is remembered
// for at most a second. That errs on the side of under-admission; nothing
// given back ever lets a bucket give more than its tokens. The buckets are
// held in this instance's turns for the whole set, in key order.
func (b *TokenBucket) AllowAll(ctx context.Context, reqs []Request, now time.Time) ([]Decision, error) {
	if len(reqs) == 0 {
		return nil, nil
	}
	gcras := make([]gcra, len(reqs))
	for i, r := range reqs {
		g, err := newGCRA(r)
		if err != nil {
			return nil, fmt.Errorf("token bucket: request %d: %w", i, err)
		}
		gcras[i] = g
	}
	rgs, of := groupRequests(reqs, func(r Request) (string, string) {
		id := tokenBucketID(r)
		return id, valueKey(id, tokenBucketKind)
	})
	gs := make([]tbGroup, len(rgs))
	for i := range reqs {
		gs[of[i]].reqGroup, gs[of[i]].g = rgs[of[i]], gcras[i]
	}
	ds := make([]Decision, len(reqs))
	if err := b.decideSet(ctx, reqs, gs, of, ds, now.UnixMilli()); err != nil {
		return nil, err
	}
	return ds, nil
}

// tokenBucketID is the identity of r's bucket: the scope tagged with the
// strategy, the limit and the burst, the window and the requestor.
func tokenBucketID(r Request) string {
	burst := r.Burst
	if burst == 0 {
		burst = r.Limit
	}
	tag := "token-bucket/" + strconv.FormatInt(r.Limit, 10) + "/" + strconv.FormatInt(burst, 10)
	return strategyID(tag, r.Scope, int64(r.Window/time.Second), r.Requestor)
}

// decideSet decides valid requests reqs, in groups gs (of[i] is reqs[i]'s),
// into ds. A set with a bucket remembered denied, or hits it can never
// hold, takes nothing: its other buckets are only read, without waiting
// for turns.
func (b *TokenBucket) decideSet(ctx context.Context, reqs []Request, gs []tbGroup, of []int, ds []Decision, nowMs int64) error {
	doomed := false
	for i := range gs {
		g := &gs[i]
		if g.hits > g.g.burst {
			g.r, g.skip, doomed = gcraResult{nextMs: -1}, true, true
		} else if until, ok := b.denied.until(denyKey{id: g.id, limit: g.hits}, nowMs); ok {
			g.r, g.remembered, g.skip, doomed = gcraResult{nextMs: until}, true, true, true
		}
	}
	if err := swapAll(ctx, b.store, b.turns, "token bucket", gs, doomed, func(g *tbGroup, write bool) swap { return b.decideBucket(g, nowMs, write) }, func(g *tbGroup) swap { return b.giveBack(g, nowMs) }); err != nil {
		return err
	}
	b.decisions(reqs, gs, of, ds, nowMs)
	return nil
}

// decideBucket is the read-modify-write step of g's bucket at nowMs: it
// takes g's hits when write is true and they are there, else only reads.
// g.wrote tells whether the last call asked for a write.
func (b *TokenBucket) decideBucket(g *tbGroup, nowMs int64, write bool) swap {
	return func(old []byte, found bool) ([]byte, time.Duration, bool, error) {
		g.wrote = false
		var tat gcraInstant
		if found {
			var err error
			if tat, err = decodeTAT(old, g.g.limit); err != nil {
				return nil, 0, false, err
			}
		}
		g.r = g.g.decide(tat, found, nowMs, g.hits, b.skewMs)
		if !g.r.allowed || !write {
			return nil, 0, false, nil
		}
		g.wrote = true
		return encodeTAT(g.r.tat), b.ttl(g.r.tat, nowMs), true, nil
	}
}

// ttl is how long a bucket whose TAT is tat must live: until it is full
// for every replica, and SkewMargin more.
func (b *TokenBucket) ttl(tat gcraInstant, nowMs int64) time.Duration {
	full := min(tat.ceilMs()-nowMs+b.skewMs, maxBucketTTL.Milliseconds())
	return time.Duration(max(full, 0))*time.Millisecond + SkewMargin
}

// giveBack is the compensating step of g's tokens: it moves the TAT back
// by the hits taken. Tokens are alike, so whatever other decisions took
// meanwhile stays taken.
func (b *TokenBucket) giveBack(g *tbGroup, nowMs int64) swap {
	back := g.g.steps(g.hits)
	return func(old []byte, found bool) ([]byte, time.Duration, bool, error) {
		if !found {
			return nil, 0, false, nil // expired: nothing left to give back
		}
		tat, err := decodeTAT(old, g.g.limit)
		if err != nil {
			return nil, 0, false, err
		}
		tat = g.g.sub(tat, back)
		return encodeTAT(tat), b.ttl(tat, nowMs), true, nil
	}
}

// decisions writes the decisions of a set from its buckets' results into
// ds, and remembers the denials.
func (b *TokenBucket) decisions(reqs []Request, gs []tbGroup, of []int, ds []Decision, nowMs int64) {
	counted := true
	for i := range gs {
		counted = counted && gs[i].taken
	}
	for i, r := range reqs {
		g := &gs[of[i]]
		d := Decision{Limit: r.Limit, Window: r.Window}
		switch {
		case g.r.nextMs < 0: // more hits than the bucket holds
			d.RetryAfter = r.Window
		case g.r.allowed && !counted:
			d.Allowed, d.Remaining = true, g.r.remaining+g.hits // the room left without them
		case g.r.allowed:
			d.Allowed, d.Remaining = true, g.r.remaining
			if d.Remaining == 0 {
				b.denied.deny(denyKey{id: g.id, limit: 1}, g.r.nextMs, nowMs)
				d.RetryAfter = retryAfter(g.r.nextMs, nowMs)
			}
		case g.remembered: // not renewed: a memory is trusted a second from when it was seen
			d.RetryAfter = retryAfter(g.r.nextMs, nowMs)
		default:
			b.denied.deny(denyKey{id: g.id, limit: g.hits}, g.r.nextMs, nowMs)
			d.RetryAfter = retryAfter(g.r.nextMs, nowMs)
		}
		ds[i] = d
	}
	if !counted {
		denyUnlessDenied(ds, time.Second)
	}
}

// gcraInstant is an instant in Unix milliseconds plus frac/limit of a
// millisecond, 0 <= frac < limit; the limit is that of its gcra.
type gcraInstant struct {
	ms, frac int64
}

func (a gcraInstant) before(b gcraInstant) bool {
	return a.ms < b.ms || a.ms == b.ms && a.frac < b.frac
}

// ceilMs returns a rounded up to a whole millisecond.
func (a gcraInstant) ceilMs() int64 {
	if a.frac > 0 {
		return a.ms + 1
	}
	return a.ms
}

// gcra is the arithmetic of one rate and burst.
type gcra struct {
	limit, burst int64
	windowMs     int64
	step         gcraInstant // the emission interval, Window/Limit
	tolerance    gcraInstant // how far the TAT may run ahead: (Burst-1) steps
}

func newGCRA(req Request) (gcra, error) {
	if err := req.Validate(); err != nil {
		return gcra{}, err
	}
	g := gcra{limit: req.Limit, burst: req.Burst, windowMs: req.Window.Milliseconds()}
	if g.burst == 0 {
		g.burst = g.limit
	}
	if g.burst > maxBurstSpan/g.windowMs || g.limit > maxBurstSpan {
		return gcra{}, fmt.Errorf("burst %d and limit %d per %s: too large (burst times window in ms must stay within 2^61)", g.burst, g.limit, req.Window)
	}
	g.step = gcraInstant{g.windowMs / g.limit, g.windowMs % g.limit}
	tol := (g.burst - 1) * g.windowMs
	g.tolerance = gcraInstant{tol / g.limit, tol % g.limit}
	return g, nil
}

func (g gcra) add(a, b gcraInstant) gcraInstant {
	r := gcraInstant{a.ms + b.ms, a.frac + b.frac}
	if r.frac >= g.limit {
		r.frac -= g.limit
		r.ms++
	}
	return r
}

func (g gcra) sub(a, b gcraInstant) gcraInstant {
	r := gcraInstant{a.ms - b.ms, a.frac - b.frac}
	if r.frac < 0 {
		r.frac += g.limit
		r.ms--
	}
	return r
}

// gcraResult is one decision: whether allowed, the new TAT to store when
// allowed, the whole tokens left, and when none is left the Unix millisecond
// from which a request is allowed again.
type gcraResult struct {
	allowed   bool
	tat       gcraInstant
	remaining int64
	nextMs    int64
}

// steps returns n emission intervals, n*Window/Limit, exactly: n*windowMs
// stays within 2^61 for n up to the burst (see maxBurstSpan).
func (g gcra) steps(n int64) gcraInstant {
	t := n * g.windowMs
	return gcraInstant{t / g.limit, t % g.limit}
}

// decide applies a request of n hits (1 <= n <= burst) at nowMs to a
// bucket whose TAT is tat (found false: a full bucket), on a replica whose
// clock may be up to skewMs ahead of the others'.
//
// The bucket is judged at nowMs-skewMs, no later than the slowest replica's
// clock, and a TAT behind the clock restarts from nowMs, no earlier than
// any replica's: so every replica sees at most the tokens the slowest clock
// would, and a TAT written by a clock behind gives no token early (doc.go
// has the bound).
func (g gcra) decide(tat gcraInstant, found bool, nowMs, n, skewMs int64) gcraResult {
	judge := gcraInstant{ms: nowMs - skewMs}
	if !found {
		tat = gcraInstant{ms: math.MinInt64 / 2}
	}
	base := tat
	if base.before(judge) {
		base = judge // a full bucket, as judged
	}
	// Allowed when the bucket holds n tokens at judge: base+(n-1)*step-
	// tolerance <= judge.
	if allowAt := g.sub(g.add(base, g.steps(n-1)), g.tolerance); judge.before(allowAt) {
		return gcraResult{nextMs: allowAt.ceilMs() + skewMs}
	}
	start := tat
	if start.before(gcraInstant{ms: nowMs}) {
		start = gcraInstant{ms: nowMs}
	}
	next := g.add(start, g.steps(n))
	// Tokens left at judge: (Burst*step - (next - judge)) / step, in units
	// of 1/limit ms, where step is windowMs; below zero counts as none.
	var left int64
	if d := next.ms - judge.ms; d <= g.burst*g.windowMs/g.limit+1 {
		left = g.burst*g.windowMs - d*g.limit - next.frac // no overflow: see maxBurstSpan
	}
	r := gcraResult{allowed: true, tat: next, remaining: max(left, 0) / g.windowMs}
	if r.remaining == 0 {
		r.nextMs = g.sub(next, g.tolerance).ceilMs() + skewMs
	}
	return r
}

// encodeTAT and decodeTAT convert a TAT to and from its stored form: the
// millisecond and the fraction as two big-endian 64-bit integers.
func encodeTAT(t gcraInstant) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b, uint64(t.ms))
	binary.BigEndian.PutUint64(b[8:], uint64(t.frac))
	return b
}

var errCorruptValue = errors.New("corrupt value")

func decodeTAT(b []byte, limit int64) (gcraInstant, error) {
	if len(b) != 16 {
		return gcraInstant{}, fmt.Errorf("%w: %d bytes, want a 16-byte TAT: %w", errCorruptValue, len(b), ErrStoreUnavailable)
	}
	t := gcraInstant{int64(binary.BigEndian.Uint64(b)), int64(binary.BigEndian.Uint64(b[8:]))}
	if t.frac < 0 || t.frac >= limit {
		return gcraInstant{}, fmt.Errorf("%w: TAT fraction %d out of [0, %d): %w", errCorruptValue, t.frac, limit, ErrStoreUnavailable)
	}
	return t, nil
}
