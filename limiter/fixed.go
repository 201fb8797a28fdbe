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
// Each replica names the window from its own clock, so with clocks up to
// StrategyConfig.MaxClockSkew s apart, a replica ahead starts counting in
// the next window up to s early while one behind still counts in the last:
// each counter still holds at most Limit, but its requests span up to
// Window+s of true time, so one Window of true time may meet the end of one
// counter, all of the next and the start of a third: up to 3*Limit in the
// worst case (2*Limit when clocks agree). Use Sliding where that matters.
//
// Each Fixed remembers which requestors it saw fill their window, trusting
// the memory for up to a second, so a requestor hammering past its limit
// costs a store round trip a second. A Fixed is safe for concurrent use.
// Create it with NewFixed.
type Fixed struct {
	store  Store
	denied *denials
}

// NewFixed returns a Fixed limiter counting in store.
func NewFixed(store Store, cfg StrategyConfig) *Fixed {
	return &Fixed{store: store, denied: newDenials(cfg.MaxRequestors)}
}

// Allow decides whether req's requestor may make req's hits more requests
// at now and counts them when allowed. It implements Strategy, and is
// AllowAll of req alone (without the slices).
func (f *Fixed) Allow(ctx context.Context, req Request, now time.Time) (Decision, error) {
	if err := req.Validate(); err != nil {
		return Decision{}, fmt.Errorf("fixed window: %w", err)
	}
	reqs := [1]Request{req}
	id, key := fixedKeyOf(req, now)
	gs := [1]reqGroup{groupOf(req, id, key)}
	var of [1]int
	var counts [1]int64
	var ds [1]Decision
	if err := f.decideSet(ctx, reqs[:], gs[:], of[:], counts[:], ds[:], now.UnixMilli()); err != nil {
		return Decision{}, err
	}
	return ds[0], nil
}

// AllowAll implements MultiStrategy. Each requestor's counter is
// incremented by the hits of its requests, one after the other; when any
// comes back over its limit, all are decremented again, and the set tries
// again (after a pause under a millisecond, at most maxAttempts times in
// all) while the counts the decrements return leave room for every one, so
// that a set is not denied only because another was counted and undone.
func (f *Fixed) AllowAll(ctx context.Context, reqs []Request, now time.Time) ([]Decision, error) {
	if len(reqs) == 0 {
		return nil, nil
	}
	for i, r := range reqs {
		if err := r.Validate(); err != nil {
			return nil, fmt.Errorf("fixed window: request %d: %w", i, err)
		}
	}
	gs, of := groupRequests(reqs, func(r Request) (string, string) { return fixedKeyOf(r, now) })
	ds := make([]Decision, len(reqs))
	if err := f.decideSet(ctx, reqs, gs, of, make([]int64, len(gs)), ds, now.UnixMilli()); err != nil {
		return nil, err
	}
	return ds, nil
}

// fixedKeyOf returns the identity of r's requestor and the key of its
// counter in the window of now.
func fixedKeyOf(r Request, now time.Time) (id, key string) {
	w := int64(r.Window / time.Second)
	id = strategyID(fixedTag, r.Scope, w, r.Requestor)
	return id, fixedKey(id, floorDiv(now.Unix(), w))
}

// decideSet decides valid requests reqs, in groups gs (of[i] is reqs[i]'s),
// into ds; counts is room for one count per group.
func (f *Fixed) decideSet(ctx context.Context, reqs []Request, gs []reqGroup, of []int, counts []int64, ds []Decision, nowMs int64) error {
	for i, r := range reqs {
		ds[i] = Decision{Limit: r.Limit, Window: r.Window}
	}
	if f.remembered(reqs, gs, of, ds, nowMs) {
		return f.read(ctx, reqs, gs, of, ds, nowMs)
	}
	for attempt := 1; ; attempt++ {
		room, counted, err := f.count(ctx, gs, counts)
		if err != nil {
			return err
		}
		if counted {
			f.decide(reqs, gs, of, counts, ds, nowMs, true)
			return nil
		}
		if room && attempt < maxAttempts && jitterPause(ctx) {
			continue
		}
		f.decide(reqs, gs, of, counts, ds, nowMs, false)
		denyUnlessDenied(ds, time.Second)
		return nil
	}
}

// remembered marks in ds the requests that cannot fit (more hits than
// their limit) or that this instance remembers denied, and reports whether
// there is any: then the set is denied without counting.
func (f *Fixed) remembered(reqs []Request, gs []reqGroup, of []int, ds []Decision, nowMs int64) bool {
	found := false
	for i, r := range reqs {
		g := gs[of[i]]
		if g.hits > r.Limit {
			ds[i].RetryAfter, found = r.Window, true
			continue
		}
		if until, ok := f.denied.until(denyKey{id: g.id, limit: r.Limit - g.hits + 1}, nowMs); ok {
			ds[i].RetryAfter, found = retryAfter(until, nowMs), true
		}
	}
	return found
}

// read completes the decisions of a set denied without counting: it reads
// the counters of the requests not yet decided, which had room when their
// counters leave room for their hits.
func (f *Fixed) read(ctx context.Context, reqs []Request, gs []reqGroup, of []int, ds []Decision, nowMs int64) error {
	var keys []string
	for i := range reqs {
		if ds[i].RetryAfter == 0 {
			keys = append(keys, gs[of[i]].key)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	vals, err := f.store.Get(ctx, keys)
	if err != nil {
		// The set is denied anyway: the others say no room, safely.
		vals = nil
	}
	for i, r := range reqs {
		if ds[i].RetryAfter != 0 {
			continue
		}
		g := gs[of[i]]
		c, ok := vals[g.key]
		if ok || err == nil {
			if c <= r.Limit-g.hits {
				ds[i].Allowed, ds[i].Remaining = true, r.Limit-c
				continue
			}
		}
		ds[i].RetryAfter = retryAfter(fixedEnd(r, nowMs), nowMs)
	}
	return nil
}

// count increments every group's counter by its hits, in order. When all
// fit, it reports counted, with counts[j] the value group j's increment
// returned. Otherwise it decrements them all again and reports whether the
// values the decrements returned (now in counts) leave room for every
// group; a failed decrement leaves its counter high, which errs on the safe
// side, and reports no room. A failed increment undoes the others and
// fails.
func (f *Fixed) count(ctx context.Context, gs []reqGroup, counts []int64) (room, counted bool, err error) {
	fits := true
	n := 0
	for ; n < len(gs); n++ {
		var v int64
		if v, err = f.store.Add(ctx, gs[n].key, gs[n].hits, gs[n].window+SkewMargin); err != nil {
			break
		}
		counts[n] = v
		fits = fits && v <= gs[n].limit
	}
	if n == len(gs) && fits {
		return false, true, nil
	}
	room = n == len(gs)
	for j := range gs[:n] {
		c, uerr := f.store.Add(ctx, gs[j].key, -gs[j].hits, gs[j].window+SkewMargin)
		if uerr != nil {
			counts[j], room = counts[j]-gs[j].hits, false
			continue
		}
		counts[j] = c
		room = room && c <= gs[j].limit-gs[j].hits
	}
	if n < len(gs) {
		return false, false, fmt.Errorf("fixed window: count %s: %w", gs[n].key, err)
	}
	return room, false, nil
}

// decide writes the decisions of a set from counts: the values the
// increments returned when counted, else what the counters hold without
// the set. A request with no room left is remembered denied until the
// window's end.
func (f *Fixed) decide(reqs []Request, gs []reqGroup, of []int, counts []int64, ds []Decision, nowMs int64, counted bool) {
	for i, r := range reqs {
		g, c := gs[of[i]], counts[of[i]]
		end := fixedEnd(r, nowMs)
		d := &ds[i]
		switch {
		case counted:
			d.Allowed, d.Remaining = true, r.Limit-c
			if d.Remaining == 0 {
				f.denied.deny(denyKey{id: g.id, limit: r.Limit}, end, nowMs)
				d.RetryAfter = retryAfter(end, nowMs)
			}
		case c <= r.Limit-g.hits:
			d.Allowed, d.Remaining = true, r.Limit-c
		default:
			f.denied.deny(denyKey{id: g.id, limit: r.Limit - g.hits + 1}, end, nowMs)
			d.RetryAfter = retryAfter(end, nowMs)
		}
	}
}

// fixedEnd returns the next window boundary after nowMs for r's window,
// in Unix milliseconds.
func fixedEnd(r Request, nowMs int64) int64 {
	w := int64(r.Window / time.Second)
	return (floorDiv(floorDiv(nowMs, 1000), w) + 1) * w * 1000
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
