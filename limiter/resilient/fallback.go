package resilient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/floodgate-rl/floodgate/limiter"
)

// DefaultReason is the reason a Fallback reports when FallbackConfig.Reason
// is empty.
const DefaultReason = "store-unavailable"

// LogInterval is the shortest time between two of a Fallback's log lines.
const LogInterval = 10 * time.Second

// FallbackConfig tunes a Fallback. The zero value is usable.
type FallbackConfig struct {
	// Reason is what AllowDegraded reports for a decision the local
	// strategy made: a short token such as "memcached-unavailable", which
	// floodgate sends in the X-Floodgate-Degraded response header. Empty
	// means DefaultReason.
	Reason string
	// Logger receives a warning when the primary strategy fails for any
	// reason but ErrOpen (an open breaker logs its own transitions), at most
	// once per LogInterval, with the number of local decisions since the
	// last line. nil discards.
	Logger *slog.Logger
	// Now is the clock of that rate limit; nil means time.Now. Decisions
	// use the instant passed to Allow.
	Now func() time.Time
}

// Fallback is a limiter.Strategy that decides with a primary strategy and,
// when that fails with an error wrapping limiter.ErrStoreUnavailable, with a
// local one instead. floodgate's primary counts in memcached through a
// Breaker, and its local strategy is the same algorithm on a
// limiter.MemoryStore: while memcached is unavailable each replica enforces
// the limit on its own, so a requestor gets at most the limit from each
// replica rather than an unlimited number of requests.
//
// The local strategy keeps its own counts, which live as long as they would
// in memcached: what a replica allowed during one outage still counts during
// the next within the window. Those counts are not copied to memcached when
// it returns; requests allowed locally are not charged there.
//
// A local decision is made even when ctx is done (the local strategy is
// given a context without cancellation): a caller whose deadline passed
// while the store hung still gets an answer. Errors of the primary that do
// not wrap limiter.ErrStoreUnavailable (an invalid Request) are returned as
// they are.
//
// A Fallback is safe for concurrent use when both strategies are.
type Fallback struct {
	primary, local limiter.Strategy
	reason         string
	log            *slog.Logger
	now            func() time.Time

	locals atomic.Uint64 // local decisions, ever

	logMu      sync.Mutex
	lastLog    time.Time
	unlogged   uint64 // local decisions since the last log line
	loggedOnce bool
}

var _ limiter.Strategy = (*Fallback)(nil)

// NewFallback returns a Fallback that asks primary first and local when
// primary fails with limiter.ErrStoreUnavailable.
func NewFallback(primary, local limiter.Strategy, cfg FallbackConfig) *Fallback {
	f := &Fallback{primary: primary, local: local, reason: cfg.Reason, log: cfg.Logger, now: cfg.Now}
	if f.reason == "" {
		f.reason = DefaultReason
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	if f.now == nil {
		f.now = time.Now
	}
	return f
}

// Allow implements limiter.Strategy: AllowDegraded without the reason.
func (f *Fallback) Allow(ctx context.Context, req limiter.Request, now time.Time) (limiter.Decision, error) {
	d, _, err := f.AllowDegraded(ctx, req, now)
	return d, err
}

// AllowDegraded decides like Allow and also says which strategy decided:
// reason is "" for the primary, and FallbackConfig.Reason for the local
// strategy. When both fail, the error holds both errors and wraps the
// primary's.
func (f *Fallback) AllowDegraded(ctx context.Context, req limiter.Request, now time.Time) (d limiter.Decision, reason string, err error) {
	d, err = f.primary.Allow(ctx, req, now)
	if err == nil || !errors.Is(err, limiter.ErrStoreUnavailable) {
		return d, "", err
	}
	d, lerr := f.local.Allow(context.WithoutCancel(ctx), req, now)
	if lerr != nil {
		return limiter.Decision{}, "", fmt.Errorf("%w; local fallback: %w", err, lerr)
	}
	f.locals.Add(1)
	f.noteFailure(err)
	return d, f.reason, nil
}

// Locals returns how many decisions the local strategy has made.
func (f *Fallback) Locals() uint64 { return f.locals.Load() }

// noteFailure logs a failure of the primary, at most once per LogInterval.
// Failures because the breaker is open are only counted.
func (f *Fallback) noteFailure(err error) {
	f.logMu.Lock()
	f.unlogged++
	if errors.Is(err, ErrOpen) {
		f.logMu.Unlock()
		return
	}
	now := f.now()
	if f.loggedOnce && now.Sub(f.lastLog) < LogInterval {
		f.logMu.Unlock()
		return
	}
	n := f.unlogged
	f.unlogged, f.lastLog, f.loggedOnce = 0, now, true
	f.logMu.Unlock()
	f.log.Warn("counter store failed, deciding with the per-replica limiter",
		"reason", f.reason, "local_decisions_since_last_log", n, "error", err)
}
