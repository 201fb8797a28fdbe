package console

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/policy"
)

// Usage is what the deciding strategy holds for one requestor, read
// without counting anything.
type Usage struct {
	// Count is the requests counted in the window ending now.
	Count int64
	// Remaining is how many more the requestor may make now.
	Remaining int64
	// RetryAfter is how long until its next request is allowed, in whole
	// seconds, as a 429 would say; 0 when Remaining > 0.
	RetryAfter time.Duration
	// Minutes are the counts per clock minute over the window, the oldest
	// first and the current minute last; nil when the strategy cannot say.
	Minutes []int64
	// Partial, when not "", says why the numbers are not the store's
	// (for example, only this replica's cache was read).
	Partial string
}

// Peeker reads a requestor's usage from the store that decides, without
// counting, as the strategy called strategy (limiter.Strategies) counts it.
// cmd/floodgate gives the console one over its strategies; a strategy it
// cannot read fails with ErrNoLookup.
type Peeker interface {
	Peek(ctx context.Context, strategy string, req limiter.Request, now time.Time) (Usage, error)
}

// ErrNoLookup marks a Peek of a strategy that offers no read-only lookup:
// the API answers 501.
var ErrNoLookup = errors.New("no read-only lookup for this strategy")

// PeekFunc adapts a function to a Peeker.
type PeekFunc func(ctx context.Context, strategy string, req limiter.Request, now time.Time) (Usage, error)

// Peek calls f.
func (f PeekFunc) Peek(ctx context.Context, strategy string, req limiter.Request, now time.Time) (Usage, error) {
	return f(ctx, strategy, req, now)
}

// Target is a lookup resolved: the limiter.Request whose counts to read
// (its Requestor as floodgate derives it), the strategy deciding it, and
// where its limit comes from.
type Target struct {
	Request  limiter.Request
	Strategy string
	// Source says where the limit and window come from: "policy rule
	// login", "server defaults", "query".
	Source string
}

// ErrBadLookup marks a lookup the console cannot resolve from its
// parameters: answered 400 with the error's text.
var ErrBadLookup = errors.New("bad lookup")

// Resolver turns a scope and an identity as an operator types it (an
// address, an API key, or floodgate's own form such as "ip:203.0.113.7")
// into a Target. Errors that wrap ErrBadLookup are the operator's (400);
// others are the server's (500).
type Resolver func(scope, identity string) (Target, error)

// Lookup is the answer of GET /api/v1/requestors (see the package doc).
type Lookup struct {
	Scope         string   `json:"scope"`
	Identity      string   `json:"identity"`
	Limit         int64    `json:"limit"`
	WindowSeconds int64    `json:"window_seconds"`
	Strategy      string   `json:"strategy"`
	Source        string   `json:"source"`
	Count         int64    `json:"count"`
	Remaining     int64    `json:"remaining"`
	RetryAfter    int64    `json:"retry_after"`
	Minutes       []Minute `json:"minutes"`
	Partial       string   `json:"partial,omitempty"`
	At            string   `json:"at"`
}

// Minute is one clock minute's count of a Lookup.
type Minute struct {
	Start string `json:"start"`
	Count int64  `json:"count"`
}

// lookup resolves and reads one requestor.
func (s *Server) lookup(ctx context.Context, scope, identity string, limit int64, window time.Duration, now time.Time) (Lookup, error) {
	if s.peek == nil {
		return Lookup{}, errors.New("lookup: not available on this server")
	}
	t, err := s.resolve(scope, identity)
	if err != nil {
		return Lookup{}, err
	}
	if limit > 0 {
		t.Request.Limit, t.Source = limit, "query"
	}
	if window > 0 {
		t.Request.Window, t.Source = window, "query"
	}
	if err := t.Request.Validate(); err != nil {
		return Lookup{}, fmt.Errorf("%w: %w", ErrBadLookup, err)
	}
	u, err := s.peek.Peek(ctx, t.Strategy, t.Request, now)
	if err != nil {
		return Lookup{}, fmt.Errorf("lookup %s in scope %q: %w", s.display(t.Request.Requestor), scope, err)
	}
	l := Lookup{
		Scope: scope, Identity: s.display(t.Request.Requestor),
		Limit: t.Request.Limit, WindowSeconds: int64(t.Request.Window / time.Second),
		Strategy: t.Strategy, Source: t.Source,
		Count: u.Count, Remaining: u.Remaining, RetryAfter: policy.CeilSeconds(u.RetryAfter),
		Partial: u.Partial, At: stamp(now),
	}
	if u.Remaining > 0 {
		l.RetryAfter = 0
	}
	if u.Minutes != nil {
		first := now.Truncate(time.Minute).Add(-time.Duration(len(u.Minutes)-1) * time.Minute)
		l.Minutes = make([]Minute, len(u.Minutes))
		for i, n := range u.Minutes {
			l.Minutes[i] = Minute{Start: stamp(first.Add(time.Duration(i) * time.Minute)), Count: n}
		}
	}
	return l, nil
}

// stamp formats an instant for the API: RFC 3339 in UTC, to the second.
func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
