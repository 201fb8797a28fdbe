package limiter

import (
	"context"
	"fmt"
	"time"
)

// Usage is what Sliding.Peek reads of one requestor's window.
type Usage struct {
	// Count is the requests counted in the window ending at now, by every
	// replica sharing the store (seconds up to the clock skew ahead
	// included, as a decision counts them).
	Count int64
	// Remaining is how many more requests the requestor may make now;
	// RetryAfter, when none, how long until one is allowed, in whole
	// seconds, as a denial would say; 0 when Remaining > 0.
	Remaining  int64
	RetryAfter time.Duration
	// Minutes are the counts per clock minute over the window, the oldest
	// first and the minute of now last (which also holds the seconds
	// ahead of now).
	Minutes []int64
}

// Peek reads req's requestor's usage of its window from the store, as a
// decision would see it, and counts nothing: the console's lookup. It
// neither reads nor changes this replica's cache, so looking never changes
// a decision. It costs the store one read of the window's keys (minute
// aggregates where the window has them), and one of a minute's seconds
// when the wait falls inside it. Hits of req are ignored: Remaining and
// RetryAfter are for a request of one hit.
func (s *Sliding) Peek(ctx context.Context, req Request, now time.Time) (Usage, error) {
	req.Hits = 0
	if err := req.Validate(); err != nil {
		return Usage{}, fmt.Errorf("sliding window: %w", err)
	}
	w, t := int64(req.Window/time.Second), now.Unix()
	id := newRequestorKey(req.Scope, w, req.Requestor).String()
	h := &history{window: int32(w), synced: -1 << 62, deniedAt: -1 << 62}
	h.prepare(t, w)
	p := h.plan(id, t, w, s.lag)
	keys := p.keys
	var fresh []string
	for sec := p.to + 1; sec <= t+s.ahead; sec++ {
		fresh = append(fresh, secondKey(id, sec))
	}
	vals, err := s.store.Get(ctx, append(keys[:len(keys):len(keys)], fresh...))
	if err != nil {
		return Usage{}, fmt.Errorf("sliding window: peek %s: %w", id, err)
	}
	h.merge(p, vals, t)
	freshVals := make(map[string]int64, len(fresh))
	for _, k := range fresh {
		if n := vals[k]; n > 0 {
			freshVals[k] = n
		}
	}
	u := Usage{Count: h.sum(t, w) + freshSum(freshVals, fresh)}
	u.Remaining = max(req.Limit-u.Count, 0)
	if u.Remaining == 0 {
		d, err := s.denied(ctx, h, id, t, Decision{Allowed: true}, freshVals, req.Limit)
		if err != nil {
			return Usage{}, err
		}
		u.RetryAfter = d.RetryAfter
	}
	u.Minutes = h.minutes(t, w, freshSpans(freshVals))
	return u, nil
}

// minutes returns the counts per clock minute of the window ending at t,
// from the settled spans and the fresh ones; fresh seconds after t count
// in the last minute. Called on a history no one else holds.
func (h *history) minutes(t, w int64, fresh []span) []int64 {
	lo := t - w + 1
	first, last := floorDiv(lo, minuteSeconds), floorDiv(t, minuteSeconds)
	out := make([]int64, last-first+1)
	add := func(sec, n int64) {
		m := min(floorDiv(max(sec, lo), minuteSeconds), last)
		out[m-first] += n
	}
	for _, sp := range h.spans {
		if sp.end() >= lo {
			add(sp.start, sp.n)
		}
	}
	for _, sp := range fresh {
		if sp.start > h.synced && sp.start >= lo {
			add(sp.start, sp.n)
		}
	}
	return out
}
