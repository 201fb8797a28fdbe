package limiter

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
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
// Each requestor's log is one value in a Store, under
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
// the log stays ordered; and an instant counts for Window plus
// StrategyConfig.MaxClockSkew, so that a replica whose clock runs ahead
// still sees every request of the window: no window of true time ever
// holds more than Limit (see doc.go). A request of n hits is n instants.
//
// RetryAfter, when the limit is reached, is the time until enough recorded
// instants have left the window, in whole seconds, at least one: a denied
// requestor that waits that long is let in. Each SlidingLog remembers denied
// requestors until then, trusting the memory for up to a second, so a
// requestor hammering past its limit costs a store round trip a second.
//
// A SlidingLog is safe for concurrent use. Create it with NewSlidingLog.
type SlidingLog struct {
	store  Store
	turns  *turns
	denied *denials
	skewMs int64 // StrategyConfig.MaxClockSkew, in milliseconds
}

// NewSlidingLog returns a SlidingLog keeping its logs in store.
func NewSlidingLog(store Store, cfg StrategyConfig) *SlidingLog {
	return &SlidingLog{store: store, turns: newTurns(), denied: newDenials(cfg.MaxRequestors), skewMs: cfg.skewMs()}
}

// Allow decides whether req's requestor may make req's hits more requests
// at now and records them when allowed. It implements Strategy, and is
// AllowAll of req alone (without the slices).
func (l *SlidingLog) Allow(ctx context.Context, req Request, now time.Time) (Decision, error) {
	if err := validateLog(req); err != nil {
		return Decision{}, fmt.Errorf("sliding log: %w", err)
	}
	id, key := slidingLogKeyOf(req)
	reqs := [1]Request{req}
	gs := [1]logGroup{{reqGroup: groupOf(req, id, key)}}
	var of [1]int
	var ds [1]Decision
	if err := l.decideSet(ctx, reqs[:], gs[:], of[:], ds[:], now.UnixMilli()); err != nil {
		return Decision{}, err
	}
	return ds[0], nil
}

// logGroup is one log of a set: its group, and what its decision found.
type logGroup struct {
	reqGroup
	n       int64 // entries in the window, without the set's
	untilMs int64 // when its hits fit, if they do not now; -1: never
	at      int64 // the instant its entries were recorded at
	read    bool  // n, untilMs and at are from its log
	swapMember
}

// AllowAll implements MultiStrategy. The logs of a set are one value each,
// so a set cannot be one compare-and-swap: its entries are recorded in key
// order, each log with its own compare-and-swap, and when one log has no
// room the entries already recorded are taken out again, one compensating
// compare-and-swap each. Between the two, a concurrent decision may see
// those entries and be denied: for at most the time of the set's later
// compare-and-swaps (bounded by the caller's deadline), and for at most the
// set's hits in each log; such a denial is remembered for at most a second.
// That errs on the side of under-admission; taking entries out never lets a
// window hold more than Limit. The logs are held in this instance's turns
// for the whole set, in key order.
func (l *SlidingLog) AllowAll(ctx context.Context, reqs []Request, now time.Time) ([]Decision, error) {
	if len(reqs) == 0 {
		return nil, nil
	}
	for i, r := range reqs {
		if err := validateLog(r); err != nil {
			return nil, fmt.Errorf("sliding log: request %d: %w", i, err)
		}
	}
	rgs, of := groupRequests(reqs, slidingLogKeyOf)
	gs := make([]logGroup, len(rgs))
	for i := range rgs {
		gs[i].reqGroup = rgs[i]
	}
	ds := make([]Decision, len(reqs))
	if err := l.decideSet(ctx, reqs, gs, of, ds, now.UnixMilli()); err != nil {
		return nil, err
	}
	return ds, nil
}

// validateLog reports whether r is a request SlidingLog can decide.
func validateLog(r Request) error {
	if err := r.Validate(); err != nil {
		return err
	}
	if r.Limit > MaxSlidingLogLimit {
		return fmt.Errorf("limit %d: must be at most %d; use the sliding strategy for larger limits", r.Limit, MaxSlidingLogLimit)
	}
	return nil
}

// slidingLogKeyOf returns the identity of r's log and its key.
func slidingLogKeyOf(r Request) (id, key string) {
	id = strategyID(slidingLogTag, r.Scope, int64(r.Window/time.Second), r.Requestor)
	return id, valueKey(id, slidingLogKind)
}

// decideSet decides valid requests reqs, in groups gs (of[i] is reqs[i]'s),
// into ds. A set with a log remembered denied, or more hits than it can
// ever hold, records nothing: its other logs are only read, without
// waiting for turns.
func (l *SlidingLog) decideSet(ctx context.Context, reqs []Request, gs []logGroup, of []int, ds []Decision, nowMs int64) error {
	doomed := false
	for i := range gs {
		g := &gs[i]
		if g.hits > g.limit {
			g.untilMs, g.skip, doomed = -1, true, true
		} else if until, ok := l.denied.until(denyKey{id: g.id, limit: g.limit - g.hits + 1}, nowMs); ok {
			g.untilMs, g.skip, doomed = until, true, true
		}
	}
	if err := swapAll(ctx, l.store, l.turns, "sliding log", gs, doomed, func(g *logGroup, write bool) swap { return l.decideLog(g, nowMs, write) }, l.takeOut); err != nil {
		return err
	}
	l.decisions(reqs, gs, of, ds, nowMs)
	return nil
}

// decideLog is the read-modify-write step of g's log at nowMs: it drops
// what has left the window (and the skew bound), and appends g's hits when
// write is true and they fit, else only reads. g.wrote tells whether the
// last call asked for a write.
//
// An entry counts for Window+MaxClockSkew: a replica whose clock runs
// ahead by up to the skew must still see every entry another replica
// recorded within the window. A request whose clock reads earlier than the
// newest entry (a clock behind another's) is recorded at that newest
// instant, so the log stays ordered.
func (l *SlidingLog) decideLog(g *logGroup, nowMs int64, write bool) swap {
	return func(old []byte, _ bool) ([]byte, time.Duration, bool, error) {
		g.wrote = false
		log, err := decodeLog(old)
		if err != nil {
			return nil, 0, false, err
		}
		t := nowMs
		if n := len(log); n > 0 {
			t = max(t, log[n-1])
		}
		span := g.window.Milliseconds() + l.skewMs
		i := 0
		for i < len(log) && log[i] <= t-span {
			i++
		}
		log = log[i:]
		g.n, g.untilMs, g.at, g.read = int64(len(log)), 0, t, true
		if g.n > g.limit-g.hits {
			// Allowed once enough of the oldest have left.
			g.untilMs = log[g.n-(g.limit-g.hits)-1] + span
			return nil, 0, false, nil
		}
		if !write {
			return nil, 0, false, nil
		}
		for range g.hits {
			log = append(log, t)
		}
		g.wrote = true
		if g.n+g.hits == g.limit {
			g.untilMs = log[0] + span
		}
		return encodeLog(log), time.Duration(span)*time.Millisecond + SkewMargin, true, nil
	}
}

// takeOut is the compensating step of g's recorded entries: it removes
// as many entries at the instant they were recorded at as the set added.
// Entries at one instant are alike, so what other decisions recorded
// meanwhile stays.
func (l *SlidingLog) takeOut(g *logGroup) swap {
	return func(old []byte, found bool) ([]byte, time.Duration, bool, error) {
		log, err := decodeLog(old)
		if err != nil || !found {
			return nil, 0, false, err
		}
		left := g.hits
		for j := len(log) - 1; j >= 0 && left > 0; j-- {
			if log[j] == g.at {
				log = slices.Delete(log, j, j+1)
				left--
			}
		}
		return encodeLog(log), time.Duration(g.window.Milliseconds()+l.skewMs)*time.Millisecond + SkewMargin, true, nil
	}
}

// decisions writes the decisions of a set from its logs' results into ds,
// and remembers the denials.
func (l *SlidingLog) decisions(reqs []Request, gs []logGroup, of []int, ds []Decision, nowMs int64) {
	counted := true
	for i := range gs {
		counted = counted && gs[i].taken
	}
	for i, r := range reqs {
		g := &gs[of[i]]
		d := Decision{Limit: r.Limit, Window: r.Window}
		switch {
		case g.hits > r.Limit:
			d.RetryAfter = r.Window // never fits: no wait lets it in
		case !g.read: // remembered denied, or beside a request that never fits
			d.RetryAfter = r.Window
			if g.untilMs > 0 {
				d.RetryAfter = retryAfter(g.untilMs, nowMs)
			}
		case counted:
			d.Allowed, d.Remaining = true, r.Limit-g.n-g.hits
			if d.Remaining == 0 { // the last of the room used
				l.denied.deny(denyKey{id: g.id, limit: r.Limit}, g.untilMs, nowMs)
				d.RetryAfter = retryAfter(g.untilMs, nowMs)
			}
		case g.n <= r.Limit-g.hits:
			d.Allowed, d.Remaining = true, r.Limit-g.n // the room left without them
		default:
			l.denied.deny(denyKey{id: g.id, limit: r.Limit - g.hits + 1}, g.untilMs, nowMs)
			d.RetryAfter = retryAfter(g.untilMs, nowMs)
		}
		ds[i] = d
	}
	if !counted {
		denyUnlessDenied(ds, time.Second)
	}
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
