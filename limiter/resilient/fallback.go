package resilient

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"slices"
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
// memory.Store.
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
// (a decision charges its own requestor's before it asks the primary, so
// that the primary decides on counts that include them, and starts charging
// every other requestor's in the background), in the
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

	// Local decisions to charge, by requestor; under pendMu, with the
	// number of requestor-seconds they hold.
	pendMu      sync.Mutex
	pending     map[requestor]*owed
	pendingSecs int
	forgetTimer *time.Timer
	closed      bool

	hasPending   atomic.Bool // pending is not empty
	background   atomic.Bool // a goroutine charges the pending requestors
	again        atomic.Bool // the store answered while it ran: run once more
	wg           sync.WaitGroup
	stop         chan struct{}
	reconciled   atomic.Uint64 // requests charged to the store
	unreconciled atomic.Uint64 // requests dropped: too many pending, or out of the window
}

// requestor names one requestor's counts: what limiter.Sliding keys them by.
type requestor struct {
	scope, id string
	window    time.Duration
}

// owed is what one requestor was allowed locally, by second, and the
// charge of it in progress, if any (closed when it ends, with err set).
type owed struct {
	secs     map[int64]int64
	charging chan struct{}
	err      error
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

var _ limiter.MultiStrategy = (*Fallback)(nil)

// NewFallback returns a Fallback that asks primary first and local when
// primary fails with limiter.ErrStoreUnavailable.
func NewFallback(primary, local limiter.Strategy, cfg FallbackConfig) *Fallback {
	f := &Fallback{
		primary: primary, local: local,
		reason: cfg.Reason, overload: cfg.OverloadReason,
		log: cfg.Logger, now: cfg.Now,
		maxPending: cfg.MaxPending, grace: cfg.ReconcileGrace,
		pending: map[requestor]*owed{}, stop: make(chan struct{}),
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

// AllowAll implements limiter.MultiStrategy: AllowAllDegraded without the
// reason.
func (f *Fallback) AllowAll(ctx context.Context, reqs []limiter.Request, now time.Time) ([]limiter.Decision, error) {
	ds, _, err := f.AllowAllDegraded(ctx, reqs, now)
	return ds, err
}

// AllowDegraded decides like Allow and also says which strategy decided:
// reason is "" for the primary, FallbackConfig.Reason for the local
// strategy when the store failed, and FallbackConfig.OverloadReason when
// this process waited too long for it. When both fail, the error holds both
// errors and wraps the primary's. It is AllowAllDegraded of req alone,
// without a slice.
func (f *Fallback) AllowDegraded(ctx context.Context, req limiter.Request, now time.Time) (limiter.Decision, string, error) {
	return degrade(f, ctx, now, func(yield func(limiter.Request) bool) { yield(req) },
		func() (limiter.Decision, error) { return f.primary.Allow(ctx, req, now) },
		func() (limiter.Decision, bool, error) {
			d, err := f.decideOne(ctx, req, now)
			return d, d.Allowed, err
		})
}

// AllowAllDegraded decides a set of requests as limiter.MultiStrategy's
// AllowAll does, first with the primary and, when that fails with
// limiter.ErrStoreUnavailable, with the local strategy, and says which
// decided as AllowDegraded does. The local decisions start from what the
// primary knows of each request's requestor; when all of them are allowed,
// each is remembered, with its hits, to be charged to the store later. A
// primary or local strategy that is not a limiter.MultiStrategy decides
// only sets of one request; a larger set fails with an error naming it.
func (f *Fallback) AllowAllDegraded(ctx context.Context, reqs []limiter.Request, now time.Time) ([]limiter.Decision, string, error) {
	if len(reqs) == 0 {
		return nil, "", nil
	}
	return degrade(f, ctx, now, slices.Values(reqs),
		func() ([]limiter.Decision, error) { return allowAll(ctx, f.primary, reqs, now) },
		func() ([]limiter.Decision, bool, error) {
			ds, err := f.decideLocally(ctx, reqs, now)
			return ds, allAllowed(ds), err
		})
}

// degrade is the one flow of AllowDegraded and AllowAllDegraded: charge
// what the requests' requestors were allowed locally (so that the store
// decides on counts that include it), ask the primary, and when the store
// fails decide locally, remembering the requests to charge when all were
// allowed. each yields the requests; primary and local decide them, local
// also telling whether all were allowed.
func degrade[T any](f *Fallback, ctx context.Context, now time.Time, each iter.Seq[limiter.Request], primary func() (T, error), local func() (T, bool, error)) (T, string, error) {
	var zero T
	var err error
	if f.hasPending.Load() {
		for r := range each {
			if err = f.chargeRequestor(ctx, requestorOf(r)); err != nil {
				break
			}
		}
	}
	var out T
	if err == nil {
		out, err = primary()
	}
	if err == nil {
		// The store answers: charge the other requestors' in the background.
		f.reconcileRest()
		return out, "", nil
	}
	if !errors.Is(err, limiter.ErrStoreUnavailable) {
		return out, "", err
	}
	reason := f.reason
	if errors.Is(err, limiter.ErrOverloaded) {
		reason = f.overload
	}
	out, all, lerr := local()
	if lerr != nil {
		return zero, "", fmt.Errorf("%w; local fallback: %w", err, lerr)
	}
	if all {
		for r := range each {
			f.remember(r, now)
		}
	}
	f.locals.Add(1)
	f.noteFailure(err, reason)
	return out, reason, nil
}

// allowAll decides reqs with s: Allow for a single request (which is
// AllowAll of it), AllowAll for more when s is a limiter.MultiStrategy.
func allowAll(ctx context.Context, s limiter.Strategy, reqs []limiter.Request, now time.Time) ([]limiter.Decision, error) {
	if len(reqs) == 1 {
		d, err := s.Allow(ctx, reqs[0], now)
		return []limiter.Decision{d}, err
	}
	ms, ok := s.(limiter.MultiStrategy)
	if !ok {
		return nil, fmt.Errorf("fallback: %T decides one request at a time, not a set of %d", s, len(reqs))
	}
	return ms.AllowAll(ctx, reqs, now)
}

// allAllowed reports whether every decision of a set is allowed, so that
// the set was counted.
func allAllowed(ds []limiter.Decision) bool {
	for _, d := range ds {
		if !d.Allowed {
			return false
		}
	}
	return true
}

// localRequest is r as the local strategy is asked it: its limit less what
// the primary knows its requestor used. When that leaves no room for its
// hits, room is false, and the request is one the local strategy can never
// allow (more hits than its limit), so that a set of it counts nothing;
// retry is then the primary's wait, when it knows one for a request of one
// hit.
func (f *Fallback) localRequest(r limiter.Request, now time.Time) (local limiter.Request, retry time.Duration, room bool) {
	k, ok := f.primary.(knower)
	if !ok || r.Validate() != nil {
		return r, 0, true // the local strategy names an invalid request
	}
	n, retry := k.Known(r, now)
	left := r.Limit - n
	if left >= r.HitsOf() {
		r.Limit = left
		return r, 0, true
	}
	if r.HitsOf() != 1 {
		retry = 0
	}
	r.Limit = max(left, 1)
	r.Hits = r.Limit + 1
	return r, retry, false
}

// decideOne asks the local strategy about one request (see localRequest);
// one with no room left is denied without asking.
func (f *Fallback) decideOne(ctx context.Context, req limiter.Request, now time.Time) (limiter.Decision, error) {
	local, retry, room := f.localRequest(req, now)
	if !room {
		return limiter.Decision{Limit: req.Limit, Window: req.Window, RetryAfter: cmp.Or(retry, req.Window)}, nil
	}
	d, err := f.local.Allow(context.WithoutCancel(ctx), local, now)
	d.Limit = req.Limit
	return d, err
}

// decideLocally asks the local strategy about a set (see localRequest).
func (f *Fallback) decideLocally(ctx context.Context, reqs []limiter.Request, now time.Time) ([]limiter.Decision, error) {
	if len(reqs) == 1 {
		d, err := f.decideOne(ctx, reqs[0], now)
		return []limiter.Decision{d}, err
	}
	locals := make([]limiter.Request, len(reqs))
	retries := make([]time.Duration, len(reqs))
	for i, r := range reqs {
		locals[i], retries[i], _ = f.localRequest(r, now)
	}
	ds, err := allowAll(context.WithoutCancel(ctx), f.local, locals, now)
	if err != nil {
		return nil, err
	}
	for i := range ds {
		ds[i].Limit = reqs[i].Limit
		if retries[i] > 0 {
			ds[i].Remaining, ds[i].RetryAfter = 0, retries[i]
		}
	}
	return ds, nil
}

// requestorOf returns what req's counts are keyed by.
func requestorOf(req limiter.Request) requestor {
	return requestor{scope: req.Scope, id: req.Requestor, window: req.Window}
}

// remember keeps a local allowed decision, with its hits, to charge to the
// store later.
func (f *Fallback) remember(req limiter.Request, now time.Time) {
	if _, ok := f.primary.(charger); !ok {
		return
	}
	k, sec, hits := requestorOf(req), now.Unix(), req.HitsOf()
	f.pendMu.Lock()
	defer f.pendMu.Unlock()
	o := f.pending[k]
	if o != nil && o.secs[sec] > 0 {
		o.secs[sec] += hits
		return
	}
	if f.pendingSecs >= f.maxPending {
		f.unreconciled.Add(uint64(hits))
		return
	}
	if o == nil {
		o = &owed{secs: map[int64]int64{}}
		f.pending[k] = o
	}
	o.secs[sec] += hits
	f.pendingSecs++
	f.hasPending.Store(true)
}

// chargeRequestor charges what k was allowed locally, or waits for the
// charge of it in progress; it returns that charge's error.
func (f *Fallback) chargeRequestor(ctx context.Context, k requestor) error {
	f.pendMu.Lock()
	o := f.pending[k]
	if o == nil {
		f.pendMu.Unlock()
		return nil
	}
	if ch := o.charging; ch != nil {
		f.pendMu.Unlock()
		select {
		case <-ch:
			return o.err
		case <-ctx.Done():
			return fmt.Errorf("wait for the charge of local decisions: %w: %w", limiter.ErrStoreUnavailable, ctx.Err())
		}
	}
	o.charging = make(chan struct{})
	secs := o.secs
	o.secs = map[int64]int64{} // for local decisions meanwhile
	f.pendingSecs -= len(secs)
	f.pendMu.Unlock()

	err := f.charge(ctx, k, secs)
	f.pendMu.Lock()
	for sec, n := range secs { // those not charged, after an error
		if n > 0 {
			if o.secs[sec] == 0 {
				f.pendingSecs++
			}
			o.secs[sec] += n
		}
	}
	ch := o.charging
	o.err, o.charging = err, nil
	if len(o.secs) == 0 {
		delete(f.pending, k)
	}
	f.hasPending.Store(len(f.pending) > 0)
	f.pendMu.Unlock()
	close(ch)
	return err
}

// charge charges k's seconds still in the window.
func (f *Fallback) charge(ctx context.Context, k requestor, secs map[int64]int64) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reconcileTimeout)
	defer cancel()
	req := limiter.Request{Scope: k.scope, Requestor: k.id, Limit: 1, Window: k.window}
	oldest := f.now().Unix() - int64(k.window/time.Second)
	for sec, n := range secs {
		if sec <= oldest {
			f.unreconciled.Add(uint64(n)) // left the window: nothing to charge
			secs[sec] = 0
			continue
		}
		if err := f.primary.(charger).Charge(ctx, req, sec, n); err != nil {
			return fmt.Errorf("charge the requests allowed locally: %w", err)
		}
		f.reconciled.Add(uint64(n))
		secs[sec] = 0 // charged: not again if a later second fails
	}
	return nil
}

// reconcileRest starts a goroutine, unless one runs, that charges every
// pending requestor, four at a time, and then has the primary forget its
// cache, at once and again ReconcileGrace later. A call while the goroutine
// runs has it make one more pass when it ends, so that a pass that failed
// because it began before the store came back is not the last one.
func (f *Fallback) reconcileRest() {
	if !f.hasPending.Load() {
		return
	}
	f.again.Store(true)
	if !f.background.CompareAndSwap(false, true) {
		return
	}
	f.pendMu.Lock()
	defer f.pendMu.Unlock()
	if f.closed {
		f.background.Store(false)
		return
	}
	f.wg.Go(func() {
		for {
			for f.again.Swap(false) && !f.closing() {
				f.reconcilePass()
			}
			f.background.Store(false)
			// A call between the last Swap and the Store above saw a
			// running goroutine and left its pass to it: take it back.
			if !f.again.Load() || !f.background.CompareAndSwap(false, true) {
				return
			}
		}
	})
}

// closing reports whether Close was called.
func (f *Fallback) closing() bool {
	select {
	case <-f.stop:
		return true
	default:
		return false
	}
}

// reconcilePass charges every pending requestor once, four at a time, and
// when none is left has the primary forget its cache.
func (f *Fallback) reconcilePass() {
	f.pendMu.Lock()
	keys := make(chan requestor, len(f.pending))
	for k := range f.pending {
		keys <- k
	}
	f.pendMu.Unlock()
	close(keys)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-f.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	var failed atomic.Bool
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for k := range keys {
				if failed.Load() || ctx.Err() != nil {
					return
				}
				if err := f.chargeRequestor(ctx, k); err != nil {
					failed.Store(true)
				}
			}
		})
	}
	wg.Wait()
	if failed.Load() || f.hasPending.Load() {
		return // the next decision that reaches the store tries again
	}
	f.log.Info("charged the requests allowed locally while the counter store failed", "requests_charged_ever", f.reconciled.Load())
	fg, ok := f.primary.(forgetter)
	if !ok {
		return
	}
	fg.Forget()
	f.pendMu.Lock()
	defer f.pendMu.Unlock()
	if f.forgetTimer != nil {
		f.forgetTimer.Stop()
	}
	if !f.closed {
		f.forgetTimer = time.AfterFunc(f.grace, fg.Forget)
	}
}

// peeker is what Peek uses of the primary: limiter.Sliding has it.
type peeker interface {
	Peek(ctx context.Context, req limiter.Request, now time.Time) (limiter.Usage, error)
}

// ErrNoPeek is Peek's error when the primary has no read-only lookup.
var ErrNoPeek = errors.New("the strategy has no read-only lookup")

// Peek reads req's requestor's usage from the primary (limiter.Sliding's
// Peek), for the console: it counts nothing and never decides locally, so
// a store that fails gives its error, and a primary without a lookup
// ErrNoPeek.
func (f *Fallback) Peek(ctx context.Context, req limiter.Request, now time.Time) (limiter.Usage, error) {
	p, ok := f.primary.(peeker)
	if !ok {
		return limiter.Usage{}, fmt.Errorf("%T: %w", f.primary, ErrNoPeek)
	}
	return p.Peek(ctx, req, now)
}

// Close ends the background charging and stops the timer that forgets the
// primary's cache after an outage. It always returns nil.
func (f *Fallback) Close() error {
	f.pendMu.Lock()
	if !f.closed {
		f.closed = true
		close(f.stop)
	}
	f.pendMu.Unlock()
	f.wg.Wait()
	f.pendMu.Lock()
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
