package resilient

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/floodgate-rl/floodgate/limiter"
)

// ErrOpen is returned, without calling the store, by a Breaker that is open
// or half-open. It wraps
// limiter.ErrStoreUnavailable, so callers apply their failure handling as for
// any store failure.
var ErrOpen = fmt.Errorf("store circuit breaker open: %w", limiter.ErrStoreUnavailable)

// Defaults of BreakerConfig.
const (
	// DefaultFailures is how many consecutive failed calls open a breaker.
	DefaultFailures = 5
	// DefaultMinBackoff is the first open period.
	DefaultMinBackoff = 100 * time.Millisecond
	// DefaultMaxBackoff is the longest open period: while the store is
	// down it is probed at least this often, with or without calls, so a
	// store that comes back is used again within about this long.
	DefaultMaxBackoff = 500 * time.Millisecond
	// DefaultProbeKey is the key a probe reads.
	DefaultProbeKey = "fg1:breaker:probe"
	// DefaultProbeTimeout bounds a probe through its context; the memcached
	// store bounds each round trip with its own timeout anyway.
	DefaultProbeTimeout = time.Second
)

// State is the state of a Breaker.
type State int32

const (
	// Closed: every call goes to the store.
	Closed State = iota
	// Open: every call fails at once with ErrOpen; when the backoff ends
	// the breaker probes the store.
	Open
	// HalfOpen: the backoff has ended and a probe is in flight; calls
	// still fail at once with ErrOpen until it succeeds.
	HalfOpen
)

// String returns "closed", "open" or "half_open" (the spelling of metric
// labels and log attributes).
func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case Open:
		return "open"
	case HalfOpen:
		return "half_open"
	}
	return fmt.Sprintf("State(%d)", int32(s))
}

// Transition describes one change of a Breaker's state, for logs and
// metrics.
type Transition struct {
	From, To State
	// At is when it happened, by the Breaker's clock.
	At time.Time
	// Failures is the number of consecutive failed calls that opened the
	// breaker (Closed to Open only).
	Failures int
	// Err is the failure that opened or reopened the breaker (To == Open).
	Err error
	// Backoff is how long the breaker stays open before it probes
	// (To == Open).
	Backoff time.Duration
	// OutageStart is when the breaker last left Closed; with To == Closed,
	// At minus OutageStart is how long the store was not used.
	OutageStart time.Time
	// Rejected is how many calls failed with ErrOpen since the breaker left
	// Closed (To == Closed).
	Rejected uint64
}

// BreakerConfig tunes a Breaker. The zero value uses the defaults.
type BreakerConfig struct {
	// Failures is how many consecutive failed calls open the breaker. A
	// success while closed starts the count again. Zero means
	// DefaultFailures (5).
	Failures int
	// MinBackoff is the open period after the breaker opens; after each
	// failed probe the period doubles, up to MaxBackoff. Each period is
	// drawn at random from [d/2, d] for the current d, so that replicas
	// that opened together do not probe together. Zero values mean
	// DefaultMinBackoff (100ms) and DefaultMaxBackoff (1s); MaxBackoff is
	// raised to MinBackoff if lower.
	MinBackoff, MaxBackoff time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// AfterFunc schedules the probe at the end of each open period: it
	// calls f in a goroutine of its own after d, as time.AfterFunc does,
	// and returns a function that cancels that call. nil means
	// time.AfterFunc. A fake Now needs an AfterFunc on the same fake
	// clock (or testing/synctest, where both defaults are fake).
	AfterFunc func(d time.Duration, f func()) (stop func() bool)
	// Rand returns a number in [0, 1) for the jitter; nil means
	// math/rand/v2.Float64. It is called with the breaker's lock held.
	Rand func() float64
	// ProbeKey is the key a probe reads with Get; empty means
	// DefaultProbeKey. Its value does not matter.
	ProbeKey string
	// ProbeTimeout is the deadline of a probe's context; zero means
	// DefaultProbeTimeout (1s).
	ProbeTimeout time.Duration
	// OnTransition, when set, is called on every state change, in order,
	// with the breaker's lock held: it must be quick and must not call the
	// Breaker, except State and Rejected, which do not lock.
	OnTransition func(Transition)
}

// Breaker is a circuit breaker around a limiter.Store. It is itself a
// limiter.Store, and every one of its methods is one call to the store.
//
// A call counts as failed when the store returns an error, unless the
// caller's context was done and the error is the context's (the store did
// not fail; the caller gave up) or the error is limiter.ErrOverloaded (the
// call waited in this process and was never sent). Every Failures consecutive failures open
// the breaker. While open, calls fail at once with ErrOpen. When the backoff
// ends, a timer turns the breaker half-open and starts a probe, a Get of
// ProbeKey in a goroutine of its own, whether calls come or not: an idle
// breaker closes within about MaxBackoff of the store's return, so the next
// burst finds it closed. (A call that finds the backoff over before the
// timer has fired starts the probe itself.) Calls fail at once while the
// probe runs: no caller ever waits for a probe, and no decision has some of
// its store calls sent and others refused. The probe's success closes the
// breaker; its failure opens it again for a longer backoff (up to
// MaxBackoff). The outcome of a call that started while the breaker was
// closed and ended after it opened is ignored.
//
// Close stops the timer and the probe in flight; a Breaker that is not
// closed keeps a timer while it is open, and nothing while it is closed.
//
// One Breaker covers the whole store: with several memcached servers, one
// dead server opens it only if its failures come in a run with no success
// from another server in between.
//
// A Breaker is safe for concurrent use. While closed, a call costs two
// atomic loads beyond the store's own work.
type Breaker struct {
	next limiter.Store
	cfg  BreakerConfig

	state    atomic.Int32 // a State
	failures atomic.Int64 // consecutive failures while closed
	rejected atomic.Uint64

	mu          sync.Mutex
	backoff     time.Duration // the current open period, before jitter
	probeAt     time.Time     // when an open breaker turns half-open
	outageStart time.Time
	rejectedAt  uint64 // rejected when the outage started
	opened      uint64 // counts the open periods; a timer probes only in its own
	stopTimer   func() bool
	closed      bool // by Close: no more timers or probes

	probeCtx    context.Context // the parent of every probe's; Close cancels it
	cancelProbe context.CancelFunc
	probes      sync.WaitGroup
}

var _ limiter.Store = (*Breaker)(nil)

// NewBreaker returns a closed Breaker around next.
func NewBreaker(next limiter.Store, cfg BreakerConfig) *Breaker {
	if cfg.Failures <= 0 {
		cfg.Failures = DefaultFailures
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	cfg.MaxBackoff = max(cfg.MaxBackoff, cfg.MinBackoff)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.AfterFunc == nil {
		cfg.AfterFunc = func(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	if cfg.ProbeKey == "" {
		cfg.ProbeKey = DefaultProbeKey
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = DefaultProbeTimeout
	}
	b := &Breaker{next: next, cfg: cfg}
	b.probeCtx, b.cancelProbe = context.WithCancel(context.Background())
	return b
}

// Close stops the breaker's probing: it cancels the timer of an open
// breaker and the probe in flight, and waits for that probe to end. The
// Breaker still passes calls on while closed; once open it stays open.
// Close always returns nil; closing twice does nothing more.
func (b *Breaker) Close() error {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		if b.stopTimer != nil {
			b.stopTimer()
			b.stopTimer = nil
		}
		b.cancelProbe()
	}
	b.mu.Unlock()
	b.probes.Wait()
	return nil
}

// State returns the breaker's current state.
func (b *Breaker) State() State { return State(b.state.Load()) }

// Rejected returns how many calls failed with ErrOpen since the Breaker was
// created.
func (b *Breaker) Rejected() uint64 { return b.rejected.Load() }

// Add implements limiter.Store.
func (b *Breaker) Add(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	if err := b.acquire(); err != nil {
		return 0, err
	}
	n, err := b.next.Add(ctx, key, delta, ttl)
	b.release(ctx, err)
	return n, err
}

// Get implements limiter.Store. A Get of no keys is passed on without
// counting: it makes no round trip.
func (b *Breaker) Get(ctx context.Context, keys []string) (map[string]int64, error) {
	if len(keys) == 0 {
		return b.next.Get(ctx, keys)
	}
	if err := b.acquire(); err != nil {
		return nil, err
	}
	vals, err := b.next.Get(ctx, keys)
	b.release(ctx, err)
	return vals, err
}

// Batch implements limiter.Store: one call, like Add or Get. A Batch of
// nothing is passed on without counting.
func (b *Breaker) Batch(ctx context.Context, gets []string, adds []limiter.Increment) (map[string]int64, []int64, error) {
	if len(gets) == 0 && len(adds) == 0 {
		return b.next.Batch(ctx, gets, adds)
	}
	if err := b.acquire(); err != nil {
		return nil, nil, err
	}
	vals, counts, err := b.next.Batch(ctx, gets, adds)
	b.release(ctx, err)
	return vals, counts, err
}

// GetVersioned implements limiter.Store.
func (b *Breaker) GetVersioned(ctx context.Context, key string) ([]byte, uint64, error) {
	if err := b.acquire(); err != nil {
		return nil, 0, err
	}
	v, ver, err := b.next.GetVersioned(ctx, key)
	b.release(ctx, err)
	return v, ver, err
}

// CompareAndSwap implements limiter.Store. A conflict (false, nil) is a
// success: the store answered.
func (b *Breaker) CompareAndSwap(ctx context.Context, key string, value []byte, version uint64, ttl time.Duration) (bool, error) {
	if err := b.acquire(); err != nil {
		return false, err
	}
	ok, err := b.next.CompareAndSwap(ctx, key, value, version, ttl)
	b.release(ctx, err)
	return ok, err
}

// acquire returns nil when a call may go to the store, ErrOpen otherwise.
// The first call after an open breaker's backoff starts the probe.
func (b *Breaker) acquire() error {
	if State(b.state.Load()) == Closed {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch State(b.state.Load()) {
	case Closed:
		return nil
	case Open:
		if now := b.cfg.Now(); !now.Before(b.probeAt) {
			b.startProbe(now)
		}
	}
	b.rejected.Add(1)
	return ErrOpen
}

// probeDue is the timer of the open period numbered opened: it starts the
// probe unless that period is over or the breaker was closed by Close.
func (b *Breaker) probeDue(opened uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.opened != opened || State(b.state.Load()) != Open {
		return // a later period has its own timer, or a call started the probe
	}
	b.startProbe(b.cfg.Now())
}

// startProbe turns an open breaker half-open and starts the probe, unless
// Close was called. Called with b.mu held.
func (b *Breaker) startProbe(now time.Time) {
	if b.closed {
		return
	}
	if b.stopTimer != nil {
		b.stopTimer() // a call came first; or this is the timer's own call
		b.stopTimer = nil
	}
	b.transition(Transition{From: Open, To: HalfOpen, At: now})
	b.probes.Add(1)
	go func() {
		defer b.probes.Done()
		b.probe()
	}()
}

// release records the outcome of a call that acquire let through.
func (b *Breaker) release(ctx context.Context, err error) {
	if State(b.state.Load()) != Closed {
		return // started before the breaker opened
	}
	if err == nil {
		if b.failures.Load() != 0 {
			b.failures.Store(0)
		}
		return
	}
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) || errors.Is(err, limiter.ErrOverloaded) {
		return // the caller gave up, or the call waited for a slot or a connection and was never sent: the store did not fail
	}
	n := b.failures.Add(1)
	if n < int64(b.cfg.Failures) {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if State(b.state.Load()) != Closed {
		return
	}
	now := b.cfg.Now()
	b.outageStart = now
	b.rejectedAt = b.rejected.Load()
	b.backoff = b.cfg.MinBackoff
	b.open(Transition{From: Closed, To: Open, At: now, Failures: int(n), Err: err})
}

// probe reads ProbeKey and closes the breaker when that succeeds, or opens
// it again for a longer backoff.
func (b *Breaker) probe() {
	ctx, cancel := context.WithTimeout(b.probeCtx, b.cfg.ProbeTimeout)
	_, err := b.next.Get(ctx, []string{b.cfg.ProbeKey})
	cancel()
	b.mu.Lock()
	defer b.mu.Unlock()
	if err == nil {
		b.failures.Store(0)
		b.transition(Transition{From: HalfOpen, To: Closed, At: b.cfg.Now(),
			OutageStart: b.outageStart, Rejected: b.rejected.Load() - b.rejectedAt})
		return
	}
	b.backoff = min(2*b.backoff, b.cfg.MaxBackoff)
	b.open(Transition{From: HalfOpen, To: Open, At: b.cfg.Now(), Err: err})
}

// open moves to Open for a jittered b.backoff and sets the timer that
// probes when it ends. Called with b.mu held.
func (b *Breaker) open(tr Transition) {
	d := b.backoff
	wait := d/2 + time.Duration(b.cfg.Rand()*float64(d-d/2))
	b.probeAt = tr.At.Add(wait)
	tr.Backoff = wait
	tr.OutageStart = b.outageStart
	b.transition(tr)
	if b.closed {
		return
	}
	b.opened++
	opened := b.opened
	b.stopTimer = b.cfg.AfterFunc(wait, func() { b.probeDue(opened) })
}

// transition sets the state and reports it. Called with b.mu held.
func (b *Breaker) transition(tr Transition) {
	b.state.Store(int32(tr.To))
	if tr.OutageStart.IsZero() {
		tr.OutageStart = b.outageStart
	}
	if b.cfg.OnTransition != nil {
		b.cfg.OnTransition(tr)
	}
}
