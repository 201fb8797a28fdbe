package limiter

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"
)

// Compile-time check that SlidingLog implements MultiStrategy.
var _ MultiStrategy = (*SlidingLog)(nil)

const (
	// MaxSlidingLogLimit is the largest Limit SlidingLog accepts. The log
	// of a requestor is read and written whole on every allowed request, so
	// it suits small limits; use Sliding for larger ones.
	MaxSlidingLogLimit = 1000

	// slidingLogKind ends SlidingLog's keys.
	slidingLogKind = 'l'

	// slidingLogTag separates SlidingLog's identities from other strategies'.
	slidingLogTag = "sliding-log"
)

// SlidingLog is the sliding-log Strategy: it records the instant, to the
// millisecond, of every allowed request, and allows a request at t if and
// only if fewer than Limit of them fall in (t-Window, t]. It is the exact
// form of the sliding window: Sliding counts in whole seconds, SlidingLog in
// milliseconds. Denied requests are not recorded. Limit may be at most
// MaxSlidingLogLimit; Allow refuses larger ones.
//
// Each requestor's log is one value in a SwapStore, under
//
//	fg1:<id>:l    e.g. fg1:q3Jd0yY6p1o1Yz7mS5b1Zw:l
//
// where <id> is a RequestorID of the scope tagged "sliding-log", the window
// (in seconds) and the requestor. The value holds the instants in ascending
// order: the first as a signed varint of Unix milliseconds, each next one as
// an unsigned varint of its distance from the previous one, so 1,000 entries
// take a few kilobytes. An allowed request drops the instants that left the
// window, appends its own and writes the log back with CompareAndSwap, so any
// number of replicas sharing the store enforce one limit exactly; a replica
// that loses the race reads again, and after 24 lost attempts Allow fails
// with ErrContention. Decisions of one SlidingLog for one requestor take
// turns, so only replicas ever race. A log lives Window+SkewMargin after its
// last write. Requests with different limits but the same scope and window
// share the log, each enforcing its own limit.
//
// A request whose clock reads earlier than the newest instant in the log (a
// replica's clock behind another's) is recorded at that newest instant, so
// the log stays ordered and no window ever holds more than Limit.
//
// RetryAfter, when the limit is reached, is the time until enough recorded
// instants have left the window, in whole seconds, at least one: a denied
// requestor that waits that long is let in. Each SlidingLog remembers denied
// requestors until then, so they cost no store round trip meanwhile.
//
// A SlidingLog is safe for concurrent use. Create it with NewSlidingLog.
type SlidingLog struct {
	store  SwapStore
	turns  *turns
	denied *denials
}

// NewSlidingLog returns a SlidingLog keeping its logs in store.
func NewSlidingLog(store SwapStore, cfg StrategyConfig) *SlidingLog {
	return &SlidingLog{store: store, turns: newTurns(), denied: newDenials(cfg.MaxRequestors)}
}

// Allow decides whether req's requestor may make one more request at now and
// records it when allowed. It implements Strategy.
func (l *SlidingLog) Allow(ctx context.Context, req Request, now time.Time) (Decision, error) {
	if err := req.Validate(); err != nil {
		return Decision{}, fmt.Errorf("sliding log: %w", err)
	}
	if req.Limit > MaxSlidingLogLimit {
		return Decision{}, fmt.Errorf("sliding log: limit %d: must be at most %d; use the sliding strategy for larger limits", req.Limit, MaxSlidingLogLimit)
	}
	w := int64(req.Window / time.Second)
	windowMs := w * 1000
	id := strategyID(slidingLogTag, req.Scope, w, req.Requestor)
	nowMs := now.UnixMilli()
	d := Decision{Limit: req.Limit, Window: req.Window}

	dk := denyKey{id: id, limit: req.Limit}
	if until, ok := l.denied.until(dk, nowMs); ok {
		d.RetryAfter = retryAfter(until, nowMs)
		return d, nil
	}
	key := valueKey(id, slidingLogKind)
	done, err := l.turns.take(ctx, key)
	if err != nil {
		return Decision{}, fmt.Errorf("sliding log: %w", err)
	}
	defer done()
	// Another decision of this instance may have filled the log while this
	// one waited for its turn.
	if until, ok := l.denied.until(dk, nowMs); ok {
		d.RetryAfter = retryAfter(until, nowMs)
		return d, nil
	}

	var untilMs int64 // when the next request is allowed, if none is now
	err = update(ctx, l.store, key, func(old []byte, _ bool) ([]byte, time.Duration, bool, error) {
		log, err := decodeLog(old)
		if err != nil {
			return nil, 0, false, err
		}
		t := nowMs
		if n := len(log); n > 0 {
			t = max(t, log[n-1])
		}
		// Drop what has left the window (t-windowMs, t].
		i := 0
		for i < len(log) && log[i] <= t-windowMs {
			i++
		}
		log = log[i:]
		n := int64(len(log))
		d.Allowed, d.Remaining, untilMs = false, 0, 0
		if n >= req.Limit {
			// The request is allowed once the (n-Limit+1)th oldest left.
			untilMs = log[n-req.Limit] + windowMs
			return nil, 0, false, nil
		}
		log = append(log, t)
		n++
		d.Allowed, d.Remaining = true, req.Limit-n
		if d.Remaining == 0 {
			untilMs = log[0] + windowMs
		}
		return encodeLog(log), req.Window + SkewMargin, true, nil
	})
	if err != nil {
		return Decision{}, fmt.Errorf("sliding log: %w", err)
	}
	if d.Remaining == 0 {
		l.denied.deny(dk, untilMs, nowMs)
		d.RetryAfter = retryAfter(untilMs, nowMs)
	}
	return d, nil
}

// encodeLog returns the stored form of log, ascending Unix milliseconds.
func encodeLog(log []int64) []byte {
	b := make([]byte, 0, 6+3*len(log))
	for i, ms := range log {
		if i == 0 {
			b = binary.AppendVarint(b, ms)
			continue
		}
		b = binary.AppendUvarint(b, uint64(ms-log[i-1]))
	}
	return b
}

// decodeLog parses the stored form of a log; nil or empty is an empty log.
func decodeLog(b []byte) ([]int64, error) {
	log := make([]int64, 0, len(b)/2+1)
	for len(b) > 0 {
		var v int64
		var n int
		if len(log) == 0 {
			v, n = binary.Varint(b)
		} else {
			var delta uint64
			delta, n = binary.Uvarint(b)
			v = log[len(log)-1] + int64(delta)
			if n > 0 && (delta > 1<<62 || v < log[len(log)-1]) {
				n = -1
			}
		}
		if n <= 0 {
			return nil, fmt.Errorf("%w: bad log entry %d: %w", errCorruptValue, len(log), ErrStoreUnavailable)
		}
		log = append(log, v)
		b = b[n:]
	}
	return log, nil
}

// AllowAll implements MultiStrategy.
func (l *SlidingLog) AllowAll(ctx context.Context, reqs []Request, now time.Time) ([]Decision, error) {
	return allowAllInterim(ctx, reqs, now, l.Allow)
}
