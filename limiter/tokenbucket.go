package limiter

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
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
// Window/Limit, and then moves the TAT to max(TAT, t) + Window/Limit. Time is
// counted in milliseconds; the TAT carries the remainder of Window/Limit as a
// fraction of a millisecond in units of 1/Limit, so the rate is exact.
//
// The TAT lives in a SwapStore as a 16-byte value (the millisecond and the
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
// denied requestors until that time, so they cost no store round trip
// meanwhile.
//
// Limit, Burst and Window must satisfy Burst * Window (in milliseconds) <=
// 2^61; Allow refuses other requests. A TokenBucket is safe for concurrent
// use. Create it with NewTokenBucket.
type TokenBucket struct {
	store  SwapStore
	turns  *turns
	denied *denials
}

// NewTokenBucket returns a TokenBucket keeping its buckets in store.
func NewTokenBucket(store SwapStore, cfg StrategyConfig) *TokenBucket {
	return &TokenBucket{store: store, turns: newTurns(), denied: newDenials(cfg.MaxRequestors)}
}

// Allow decides whether req's requestor may make one more request at now and
// takes a token when allowed. It implements Strategy.
func (b *TokenBucket) Allow(ctx context.Context, req Request, now time.Time) (Decision, error) {
	g, err := newGCRA(req)
	if err != nil {
		return Decision{}, fmt.Errorf("token bucket: %w", err)
	}
	w := int64(req.Window / time.Second)
	tag := "token-bucket/" + strconv.FormatInt(g.limit, 10) + "/" + strconv.FormatInt(g.burst, 10)
	id := strategyID(tag, req.Scope, w, req.Requestor)
	nowMs := now.UnixMilli()
	d := Decision{Limit: req.Limit, Window: req.Window}

	dk := denyKey{id: id}
	if until, ok := b.denied.until(dk, nowMs); ok {
		d.RetryAfter = retryAfter(until, nowMs)
		return d, nil
	}
	key := valueKey(id, tokenBucketKind)
	done, err := b.turns.take(ctx, key)
	if err != nil {
		return Decision{}, fmt.Errorf("token bucket: %w", err)
	}
	defer done()
	// Another decision of this instance may have emptied the bucket while
	// this one waited for its turn.
	if until, ok := b.denied.until(dk, nowMs); ok {
		d.RetryAfter = retryAfter(until, nowMs)
		return d, nil
	}

	var nextMs int64 // when the next token is there, if none is left
	err = update(ctx, b.store, key, func(old []byte, found bool) ([]byte, time.Duration, bool, error) {
		var tat gcraInstant
		if found {
			var err error
			if tat, err = decodeTAT(old, g.limit); err != nil {
				return nil, 0, false, err
			}
		}
		r := g.decide(tat, found, nowMs)
		d.Allowed, d.Remaining, nextMs = r.allowed, r.remaining, r.nextMs
		if !r.allowed {
			return nil, 0, false, nil
		}
		full := min(r.tat.ceilMs()-nowMs, maxBucketTTL.Milliseconds())
		return encodeTAT(r.tat), time.Duration(full)*time.Millisecond + SkewMargin, true, nil
	})
	if err != nil {
		return Decision{}, fmt.Errorf("token bucket: %w", err)
	}
	if d.Remaining == 0 {
		b.denied.deny(dk, nextMs, nowMs)
		d.RetryAfter = retryAfter(nextMs, nowMs)
	}
	return d, nil
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

// decide applies one request at nowMs to a bucket whose TAT is tat (found
// false: a full bucket).
func (g gcra) decide(tat gcraInstant, found bool, nowMs int64) gcraResult {
	now := gcraInstant{ms: nowMs}
	if !found || tat.before(now) {
		tat = now // a full bucket
	}
	if allowAt := g.sub(tat, g.tolerance); now.before(allowAt) {
		return gcraResult{nextMs: allowAt.ceilMs()}
	}
	next := g.add(tat, g.step)
	// Tokens left: (Burst*step - (next - now)) / step, in units of 1/limit
	// ms, where step is windowMs. next - now <= Burst*step here, so nothing
	// overflows (see maxBurstSpan).
	left := (nowMs-next.ms)*g.limit - next.frac + g.burst*g.windowMs
	r := gcraResult{allowed: true, tat: next, remaining: left / g.windowMs}
	if r.remaining == 0 {
		r.nextMs = g.sub(next, g.tolerance).ceilMs()
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

// AllowAll implements MultiStrategy.
func (b *TokenBucket) AllowAll(ctx context.Context, reqs []Request, now time.Time) ([]Decision, error) {
	return allowAllInterim(ctx, reqs, now, b.Allow)
}
