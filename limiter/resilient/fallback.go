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

// Reasons a Fallback reports when FallbackConfig leaves them empty.
const (
	DefaultReason         = "store-unavailable"
	DefaultOverloadReason = "store-overloaded"
)

// LogInterval is the shortest time between two of a Fallback's log lines.
const LogInterval = 10 * time.Second

// Defaults of FallbackConfig.
const (
	// DefaultMaxPending bounds the local decisions waiting to be charged
	// to the store.
	DefaultMaxPending = 1 << 16
	// DefaultReconcileGrace is how long after the store's return a
	// Fallback forgets its primary's cache a second time, once the other
	// replicas have charged their local decisions too.
	DefaultReconcileGrace = 10 * time.Second
	// reconcileTimeout bounds one attempt to charge the pending decisions.
	reconcileTimeout = 5 * time.Second
)

// FallbackConfig tunes a Fallback. The zero value is usable.
type FallbackConfig struct {
	// Reason is what AllowDegraded reports for a decision the local
	// strategy made because the store failed: a short token such as
	// "memcached-unavailable", which floodgate puts in X-Floodgate-Degraded
	// on the upstream request. Empty means DefaultReason.
	Reason string
	// OverloadReason is reported instead when the primary failed with
	// limiter.ErrOverloaded: this process waited too long for the store,
	// which did not fail. Empty means DefaultOverloadReason.
	OverloadReason string
	// Logger receives a warning when the primary strategy fails for any
	// reason but ErrOpen (an open breaker logs its own transitions), at most
	// once per LogInterval, with the number of local decisions since the
	// last line. nil discards.
	Logger *slog.Logger
	// Now is the clock of that rate limit and of reconciliation; nil means
	// time.Now. Decisions use the instant passed to Allow.
	Now func() time.Time
	// MaxPending bounds the local decisions kept to be charged to the
	// store (by requestor and second); past it they are counted in
	// Unreconciled and dropped. Zero means DefaultMaxPending.
	MaxPending int
	// ReconcileGrace: see DefaultReconcileGrace. Zero means it.
	ReconcileGrace time.Duration
}

// Fallback is a limiter.Strategy that decides with a primary strategy and,
// when that fails with an error wrapping limiter.ErrStoreUnavailable, with a
// local one instead. floodgate's primary counts in memcached through a
// Breaker, and its local strategy is the same algorithm on a
// limiter.MemoryStore.
//
// A local decision starts from what the primary knows of the requestor
// without its store, when the primary can say (limiter.Sliding's Known): the
// settled seconds it has cached and what its last decision counted in the
// others. The local strategy is asked with the limit less that, so a
// requestor at its limit when the store failed stays limited, and one that
// had used half keeps only the other half. Without such knowledge (a
// requestor this replica had not seen, or another strategy) each replica
// enforces the limit on its own.
//
// Requests allowed locally are charged to the store once it answers again
// (the next decision after local ones charges them before it asks the
// primary; concurrent ones wait for it), in the
// seconds they were allowed in, when those are still in the window, and
// through the primary when it can (limiter.Sliding's Charge): the shared
// count afterwards includes them. The primary's cache is then forgotten, at
// once and again ReconcileGrace later, so that what other replicas charged
// into seconds this one held as settled is read again.
//
// A local decision is made even when ctx is done (the local strategy is
// given a context without cancellation): a caller whose deadline passed
// while the store hung still gets an answer. Errors of the primary that do
// not wrap limiter.ErrStoreUnavailable (an invalid Request) are returned as
// they are.
//
// A Fallback is safe for concurrent use when both strategies are.
type Fallback struct {
	primary, local   limiter.Strategy
	reason, overload string
	log              *slog.Logger
	now              func() time.Time
	maxPending       int
	grace            time.Duration

	locals atomic.Uint64 // local decisions, ever

	logMu      sync.Mutex
	lastLog    time.Time
	unlogged   uint64 // local decisions since the last log line
	loggedOnce bool

	// Local decisions to charge, by requestor and second, and the charge
	// in progress; under pendMu.
	pendMu      sync.Mutex
	pending     map[charge]int64
	flight      *flight
	forgetTimer *time.Timer
	closed      bool

	hasPending   atomic.Bool   // pending is not empty
	reconciled   atomic.Uint64 // requests charged to the store
	unreconciled atomic.Uint64 // requests dropped: too many pending, or out of the window
}

// charge is one requestor's second of local decisions.
type charge struct {
	scope, requestor string
	window           time.Duration
	sec              int64
}

// knower, charger and forgetter are what a Fallback uses of its primary
// when it has them; limiter.Sliding has all three.
type knower interface {
	Known(req limiter.Request, now time.Time) (int64, time.Duration)
}
type charger interface {
	Charge(ctx context.Context, req limiter.Request, sec, n int64) error
}
type forgetter interface{ Forget() }

var _ limiter.Strategy = (*Fallback)(nil)

// NewFallback returns a Fallback that asks primary first and local when
// primary fails with limiter.ErrStoreUnavailable.
func NewFallback(primary, local limiter.Strategy, cfg FallbackConfig) *Fallback {
	f := &Fallback{
		primary: primary, local: local,
		reason: cfg.Reason, overload: cfg.OverloadReason,
		log: cfg.Logger, now: cfg.Now,
		maxPending: cfg.MaxPending, grace: cfg.ReconcileGrace,
		pending: map[charge]int64{},
	}
	if f.reason == "" {
		f.reason = DefaultReason
	}
	if f.overload == "" {
		f.overload = DefaultOverloadReason
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	if f.now == nil {
		f.now = time.Now
	}
	if f.maxPending <= 0 {
		f.maxPending = DefaultMaxPending
	}
	if f.grace <= 0 {
		f.grace = DefaultReconcileGrace
	}
	return f
}

// Allow implements limiter.Strategy: AllowDegraded without the reason.
func (f *Fallback) Allow(ctx context.Context, req limiter.Request, now time.Time) (limiter.Decision, error) {
	d, _, err := f.AllowDegraded(ctx, req, now)
	return d, err
}

// AllowDegraded decides like Allow and also says which strategy decided:
// reason is "" for the primary, FallbackConfig.Reason for the local
// strategy when the store failed, and FallbackConfig.OverloadReason when
// this process waited too long for it. When both fail, the error holds both
// errors and wraps the primary's.
func (f *Fallback) AllowDegraded(ctx context.Context, req limiter.Request, now time.Time) (d limiter.Decision, reason string, err error) {
	if f.hasPending.Load() {
		// Charge what was allowed locally before the store decides again,
		// so that its counts include it.
		err = f.reconcile(ctx)
	}
	if err == nil {
		d, err = f.primary.Allow(ctx, req, now)
	}
	if err == nil {
		return d, "", nil
	}
	if !errors.Is(err, limiter.ErrStoreUnavailable) {
		return d, "", err
	}
	reason = f.reason
	if errors.Is(err, limiter.ErrOverloaded) {
		reason = f.overload
	}
	d, lerr := f.decideLocally(ctx, req, now)
	if lerr != nil {
		return limiter.Decision{}, "", fmt.Errorf("%w; local fallback: %w", err, lerr)
	}
	if d.Allowed {
		f.remember(req, now)
	}
	f.locals.Add(1)
	f.noteFailure(err, reason)
	return d, reason, nil
}

// decideLocally asks the local strategy, with the limit less what the
// primary knows the requestor used.
func (f *Fallback) decideLocally(ctx context.Context, req limiter.Request, now time.Time) (limiter.Decision, error) {
	local := req
	if k, ok := f.primary.(knower); ok && req.Validate() == nil {
		n, retry := k.Known(req, now)
		if n >= req.Limit {
			return limiter.Decision{Limit: req.Limit, Window: req.Window, RetryAfter: retry}, nil
		}
		local.Limit -= n
	}
	d, err := f.local.Allow(context.WithoutCancel(ctx), local, now)
	d.Limit = req.Limit
	return d, err
}

// remember keeps a local allowed decision to charge to the store later.
func (f *Fallback) remember(req limiter.Request, now time.Time) {
	if _, ok := f.primary.(charger); !ok {
		return
	}
	c := charge{scope: req.Scope, requestor: req.Requestor, window: req.Window, sec: now.Unix()}
	f.pendMu.Lock()
	if _, ok := f.pending[c]; ok || len(f.pending) < f.maxPending {
		f.pending[c]++
		f.hasPending.Store(true)
	} else {
		f.unreconciled.Add(1)
	}
	f.pendMu.Unlock()
}

// reconcile charges the pending local decisions, or waits for the
// decision that is charging them; it returns that charge's error.
func (f *Fallback) reconcile(ctx context.Context) error {
	f.pendMu.Lock()
	if fl := f.flight; fl != nil {
		f.pendMu.Unlock()
		select {
		case <-fl.done:
			return fl.err
		case <-ctx.Done():
			return fmt.Errorf("wait for the charge of local decisions: %w: %w", limiter.ErrStoreUnavailable, ctx.Err())
		}
	}
	if !f.hasPending.Load() {
		f.pendMu.Unlock()
		return nil
	}
	fl := &flight{done: make(chan struct{})}
	f.flight = fl
	batch := f.pending
	f.pending = map[charge]int64{}
	f.hasPending.Store(false)
	f.pendMu.Unlock()

	fl.err = f.charge(context.WithoutCancel(ctx), batch)
	f.pendMu.Lock()
	f.flight = nil
	f.pendMu.Unlock()
	close(fl.done)
	return fl.err
}

// flight is a charge of the pending local decisions in progress.
type flight struct {
	done chan struct{}
	err  error
}

// charge charges batch's decisions still in their window; on a store error
// it keeps those not charged for the next try and returns the error.
func (f *Fallback) charge(ctx context.Context, batch map[charge]int64) error {
	ctx, cancel := context.WithTimeout(ctx, reconcileTimeout)
	defer cancel()
	ch := f.primary.(charger)
	now := f.now().Unix()
	var done, dropped int64
	var failed error
	for c, n := range batch {
		if failed != nil {
			f.keep(c, n)
			continue
		}
		if c.sec <= now-int64(c.window/time.Second) {
			dropped += n // left the window: nothing to charge
			continue
		}
		req := limiter.Request{Scope: c.scope, Requestor: c.requestor, Limit: 1, Window: c.window}
		if err := ch.Charge(ctx, req, c.sec, n); err != nil {
			failed = err
			f.keep(c, n)
			continue
		}
		done += n
	}
	f.reconciled.Add(uint64(done))
	f.unreconciled.Add(uint64(dropped))
	if failed != nil {
		return fmt.Errorf("charge the requests allowed locally: %w", failed)
	}
	if done > 0 {
		f.log.Info("charged the requests allowed locally while the counter store failed", "requests", done, "out_of_window", dropped)
	}
	if fg, ok := f.primary.(forgetter); ok {
		fg.Forget()
		f.pendMu.Lock()
		if f.forgetTimer != nil {
			f.forgetTimer.Stop()
		}
		if !f.closed {
			f.forgetTimer = time.AfterFunc(f.grace, fg.Forget)
		}
		f.pendMu.Unlock()
	}
	return nil
}

// keep puts a charge back among the pending ones.
func (f *Fallback) keep(c charge, n int64) {
	f.pendMu.Lock()
	if _, ok := f.pending[c]; ok || len(f.pending) < f.maxPending {
		f.pending[c] += n
		f.hasPending.Store(true)
	} else {
		f.unreconciled.Add(uint64(n))
	}
	f.pendMu.Unlock()
}

// Close stops the timer that forgets the primary's cache after an outage.
// It always returns nil.
func (f *Fallback) Close() error {
	f.pendMu.Lock()
	f.closed = true
	if f.forgetTimer != nil {
		f.forgetTimer.Stop()
	}
	f.pendMu.Unlock()
	return nil
}

// Locals returns how many decisions the local strategy has made.
func (f *Fallback) Locals() uint64 { return f.locals.Load() }

// Reconciled returns how many locally allowed requests were charged to the
// store.
func (f *Fallback) Reconciled() uint64 { return f.reconciled.Load() }

// Unreconciled returns how many locally allowed requests were never charged:
// past MaxPending, or out of the window by the time the store answered.
func (f *Fallback) Unreconciled() uint64 { return f.unreconciled.Load() }

// noteFailure logs a failure of the primary, at most once per LogInterval.
// Failures because the breaker is open are only counted.
func (f *Fallback) noteFailure(err error, reason string) {
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
		"reason", reason, "local_decisions_since_last_log", n, "error", err)
}
