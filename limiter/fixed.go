package limiter

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// Compile-time check that Fixed implements MultiStrategy.
var _ MultiStrategy = (*Fixed)(nil)

// fixedTag separates Fixed's requestor identities from other strategies'.
const fixedTag = "fixed"

// Fixed is the fixed-window Strategy: time is cut into windows of Window
// aligned to the Unix epoch (they start at the multiples of Window), and a
// request is allowed if and only if fewer than Limit requests of the same
// requestor were allowed in the current window. Denied requests are not
// counted. At a boundary the count starts again from zero, so up to 2*Limit
// requests may pass within one Window that straddles a boundary; Sliding
// avoids that at a higher cost.
//
// Fixed keeps one counter per requestor per window in a Store, under
//
//	fg1:<id>:f<window index>    e.g. fg1:q3Jd0yY6p1o1Yz7mS5b1Zw:f500000
//
// where <id> is a RequestorID of the scope tagged "fixed", the window (in
// seconds) and the requestor, and the window index is the Unix second
// divided by the window, rounded down. A counter lives Window+SkewMargin. An
// allowed request costs one atomic increment; the value it returns arbitrates
// between all concurrent decisions of all replicas, so exactly Limit
// increments succeed however many race, and a losing one is decremented
// again. Requests with different limits but the same scope and window share
// the counters, each enforcing its own limit.
//
// RetryAfter, when the window is full, is the time until the next boundary
// (X-RateLimit-Reset), in whole seconds, at least one.
//
// Each Fixed remembers which requestors it saw fill their window, so a
// denied requestor costs no store round trip until the boundary. A Fixed is
// safe for concurrent use. Create it with NewFixed.
type Fixed struct {
	store  Store
	denied *denials
}

// NewFixed returns a Fixed limiter counting in store.
func NewFixed(store Store, cfg StrategyConfig) *Fixed {
	return &Fixed{store: store, denied: newDenials(cfg.MaxRequestors)}
}

// Allow decides whether req's requestor may make one more request at now and
// counts it when allowed. It implements Strategy.
func (f *Fixed) Allow(ctx context.Context, req Request, now time.Time) (Decision, error) {
	if err := req.Validate(); err != nil {
		return Decision{}, fmt.Errorf("fixed window: %w", err)
	}
	w := int64(req.Window / time.Second)
	id := strategyID(fixedTag, req.Scope, w, req.Requestor)
	idx := floorDiv(now.Unix(), w)
	endMs := (idx + 1) * w * 1000 // the next boundary
	nowMs := now.UnixMilli()
	d := Decision{Limit: req.Limit, Window: req.Window}

	dk := denyKey{id: id, limit: req.Limit}
	if until, ok := f.denied.until(dk, nowMs); ok {
		d.RetryAfter = retryAfter(until, nowMs)
		return d, nil
	}

	key := fixedKey(id, idx)
	v, err := f.store.Add(ctx, key, 1, req.Window+SkewMargin)
	if err != nil {
		return Decision{}, fmt.Errorf("fixed window: count %s: %w", key, err)
	}
	if v <= req.Limit {
		d.Allowed = true
		d.Remaining = req.Limit - v
		if d.Remaining == 0 {
			f.denied.deny(dk, endMs, nowMs)
			d.RetryAfter = retryAfter(endMs, nowMs)
		}
		return d, nil
	}
	// Denied: undo the increment so a denied request leaves no trace. If the
	// undo fails the counter stays one too high until the boundary, which
	// errs on the safe side.
	_, _ = f.store.Add(ctx, key, -1, req.Window+SkewMargin)
	f.denied.deny(dk, endMs, nowMs)
	d.RetryAfter = retryAfter(endMs, nowMs)
	return d, nil
}

// fixedKey names the counter of window idx for id.
func fixedKey(id string, idx int64) string {
	b := make([]byte, 0, len(KeyPrefix)+len(id)+2+20)
	b = append(b, KeyPrefix...)
	b = append(b, id...)
	b = append(b, ':', 'f')
	b = strconv.AppendInt(b, idx, 10)
	return string(b)
}

// AllowAll implements MultiStrategy.
func (f *Fixed) AllowAll(ctx context.Context, reqs []Request, now time.Time) ([]Decision, error) {
	return allowAllInterim(ctx, reqs, now, f.Allow)
}
