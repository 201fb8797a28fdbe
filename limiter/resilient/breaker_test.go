package resilient_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/floodgate-rl/floodgate/internal/testutil"
	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/memory"
	"github.com/floodgate-rl/floodgate/limiter/resilient"
	"github.com/floodgate-rl/floodgate/limiter/storetest"
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

// clock is a settable clock with timers, safe for concurrent use.
type clock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

// fakeTimer is a function that Advance calls at its time, once, unless
// stopped.
type fakeTimer struct {
	at   time.Time
	f    func()
	done bool // fired or stopped
}

func newClock() *clock { return &clock{now: t0} }

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

// AfterFunc is a BreakerConfig.AfterFunc on the clock: f runs when Advance
// reaches now+d, in Advance's goroutine.
func (c *clock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	tm := &fakeTimer{at: c.now.Add(d), f: f}
	c.timers = append(c.timers, tm)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		stopped := !tm.done
		tm.done = true
		return stopped
	}
}

// Advance moves the clock on by d and then calls, in order of their times,
// the functions of the timers that became due.
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*fakeTimer
	for _, tm := range c.timers {
		if !tm.done && !tm.at.After(c.now) {
			tm.done = true
			due = append(due, tm)
		}
	}
	c.mu.Unlock()
	slices.SortStableFunc(due, func(a, b *fakeTimer) int { return a.at.Compare(b.at) })
	for _, tm := range due {
		tm.f()
	}
}

// neverFires is a BreakerConfig.AfterFunc whose timers never fire: only
// calls start probes.
func neverFires(time.Duration, func()) func() bool { return func() bool { return true } }

// errDown is what flakyStore returns while down.
var errDown = fmt.Errorf("fake store: %w: connection refused", limiter.ErrStoreUnavailable)

// flakyStore is a hand-written limiter.Store: a memory.Store that fails
// every call with errDown while down is set, and counts the calls that
// reached it.
type flakyStore struct {
	mem   *memory.Store
	down  atomic.Bool
	calls atomic.Int64
	// block, when set, is received from before each call.
	block chan struct{}

	mu      sync.Mutex
	lastGet []string // the keys of the last Get
}

func newFlakyStore(t testing.TB, now func() time.Time) *flakyStore {
	mem := memory.New(now)
	t.Cleanup(func() { mem.Close() })
	return &flakyStore{mem: mem}
}

func (f *flakyStore) enter() error {
	block := f.block // read before counting the call: tests change it when they see the count
	f.calls.Add(1)
	if block != nil {
		<-block
	}
	if f.down.Load() {
		return errDown
	}
	return nil
}

func (f *flakyStore) Add(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	if err := f.enter(); err != nil {
		return 0, err
	}
	return f.mem.Add(ctx, key, delta, ttl)
}

func (f *flakyStore) Get(ctx context.Context, keys []string) (map[string]int64, error) {
	f.mu.Lock()
	f.lastGet = keys
	f.mu.Unlock()
	if err := f.enter(); err != nil {
		return nil, err
	}
	return f.mem.Get(ctx, keys)
}

func (f *flakyStore) Batch(ctx context.Context, gets []string, adds []limiter.Increment) (map[string]int64, []int64, error) {
	if err := f.enter(); err != nil {
		return nil, nil, err
	}
	return f.mem.Batch(ctx, gets, adds)
}

func (f *flakyStore) GetVersioned(ctx context.Context, key string) ([]byte, uint64, error) {
	if err := f.enter(); err != nil {
		return nil, 0, err
	}
	return f.mem.GetVersioned(ctx, key)
}

func (f *flakyStore) CompareAndSwap(ctx context.Context, key string, value []byte, version uint64, ttl time.Duration) (bool, error) {
	if err := f.enter(); err != nil {
		return false, err
	}
	return f.mem.CompareAndSwap(ctx, key, value, version, ttl)
}

// transitions records a breaker's transitions.
type transitions struct {
	mu  sync.Mutex
	all []resilient.Transition
}

func (r *transitions) record(tr resilient.Transition) {
	r.mu.Lock()
	r.all = append(r.all, tr)
	r.mu.Unlock()
}

func (r *transitions) list() []resilient.Transition {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]resilient.Transition(nil), r.all...)
}

// path returns the transitions as "closed>open open>half_open ...".
func (r *transitions) path() string {
	s := ""
	for i, tr := range r.list() {
		if i > 0 {
			s += " "
		}
		s += tr.From.String() + ">" + tr.To.String()
	}
	return s
}

// rig is a Breaker around a flakyStore with a fake clock, its timers, and
// fixed jitter.
type rig struct {
	clk   *clock
	store *flakyStore
	st    limiter.Store
	b     *resilient.Breaker
	trs   *transitions
}

// newRig returns a breaker opening after 3 failures, backing off 100ms to
// 800ms; rnd is the jitter draw (0: half the backoff). Its timers fire when
// the clock is advanced.
func newRig(t *testing.T, rnd float64) *rig {
	t.Helper()
	clk := newClock()
	return newRigTimers(t, rnd, clk, clk.AfterFunc)
}

// newCallRig is newRig with timers that never fire: only calls start
// probes.
func newCallRig(t *testing.T, rnd float64) *rig {
	t.Helper()
	return newRigTimers(t, rnd, newClock(), neverFires)
}

func newRigTimers(t *testing.T, rnd float64, clk *clock, afterFunc func(time.Duration, func()) func() bool) *rig {
	t.Helper()
	r := &rig{clk: clk, store: newFlakyStore(t, clk.Now), trs: &transitions{}}
	r.b = resilient.NewBreaker(r.store, resilient.BreakerConfig{
		Failures:     3,
		MinBackoff:   100 * time.Millisecond,
		MaxBackoff:   800 * time.Millisecond,
		Now:          clk.Now,
		AfterFunc:    afterFunc,
		Rand:         func() float64 { return rnd },
		OnTransition: r.trs.record,
	})
	r.st = r.b
	t.Cleanup(func() { r.b.Close() })
	return r
}

// backedOffRig returns a call rig whose breaker three failures opened,
// with the store back up and the backoff over, its timer not fired.
func backedOffRig(t *testing.T) *rig {
	t.Helper()
	r := newCallRig(t, 0)
	r.store.down.Store(true)
	r.calls(t, 3, errDown)
	r.store.down.Store(false)
	r.clk.Advance(time.Second)
	return r
}

// call makes one Get and returns its error.
func (r *rig) call() error {
	_, err := r.st.Get(context.Background(), []string{"fg1:k:1"})
	return err
}

// waitProbe waits until the probe in flight has ended. The tests that call
// it run in a synctest bubble, where synctest.Wait returns once the probe's
// goroutine has ended or is blocked for good.
func (r *rig) waitProbe(t *testing.T) {
	t.Helper()
	synctest.Wait()
	if s := r.b.State(); s == resilient.HalfOpen {
		t.Fatal("the probe has not ended: it is blocked")
	}
}

// calls makes n calls and fails the test unless each returns want.
func (r *rig) calls(t *testing.T, n int, want error) {
	t.Helper()
	for i := range n {
		if err := r.call(); !errors.Is(err, want) || (want == nil && err != nil) {
			t.Fatalf("call %d: error %v, want %v (state %v)", i+1, err, want, r.b.State())
		}
	}
}

func TestBreakerOpensAfterConsecutiveFailures(t *testing.T) {
	r := newRig(t, 0)
	r.store.down.Store(true)
	r.calls(t, 2, errDown)
	r.store.down.Store(false)
	r.calls(t, 1, nil) // a success starts the count again
	r.store.down.Store(true)
	r.calls(t, 2, errDown)
	if s := r.b.State(); s != resilient.Closed {
		t.Fatalf("after 2 consecutive failures: state %v, want closed", s)
	}
	r.calls(t, 1, errDown)
	if s := r.b.State(); s != resilient.Open {
		t.Fatalf("after 3 consecutive failures: state %v, want open", s)
	}
	if got := r.trs.path(); got != "closed>open" {
		t.Errorf("transitions %q, want closed>open", got)
	}
	tr := r.trs.list()[0]
	if tr.Failures != 3 || !errors.Is(tr.Err, errDown) || tr.Backoff != 50*time.Millisecond || !tr.At.Equal(t0) || !tr.OutageStart.Equal(t0) {
		t.Errorf("transition %+v: want 3 failures, errDown, backoff 50ms (100ms with jitter 0), at and outage start t0", tr)
	}

	// Open: calls fail at once, without reaching the store.
	before := r.store.calls.Load()
	r.calls(t, 10, resilient.ErrOpen)
	if n := r.store.calls.Load() - before; n != 0 {
		t.Errorf("an open breaker let %d calls through", n)
	}
	if err := r.call(); !errors.Is(err, limiter.ErrStoreUnavailable) {
		t.Errorf("ErrOpen does not wrap limiter.ErrStoreUnavailable: %v", err)
	}
	if n := r.b.Rejected(); n != 11 {
		t.Errorf("Rejected = %d, want 11", n)
	}
}

// TestBreakerProbeAndBackoff: the breaker's timer probes when each backoff
// ends, with calls or without.
func TestBreakerProbeAndBackoff(t *testing.T) {
	synctest.Test(t, testBreakerProbeAndBackoff)
}

func testBreakerProbeAndBackoff(t *testing.T) {
	r := newRig(t, 0.5) // waits are 3/4 of the backoff
	r.store.down.Store(true)
	r.calls(t, 3, errDown)

	// Each failed probe doubles the backoff up to 800ms.
	for i, backoff := range []time.Duration{100, 200, 400, 800, 800} {
		wait := backoff * time.Millisecond * 3 / 4
		r.clk.Advance(wait - time.Millisecond)
		before := r.store.calls.Load()
		r.calls(t, 1, resilient.ErrOpen)
		if s := r.b.State(); s != resilient.Open {
			t.Fatalf("before the backoff ended: state %v, want open", s)
		}
		r.clk.Advance(time.Millisecond) // the timer starts the probe
		if i%2 == 0 {
			r.calls(t, 1, resilient.ErrOpen) // does not wait for the probe
		}
		r.waitProbe(t)
		if n := r.store.calls.Load() - before; n != 1 {
			t.Fatalf("probe %d: %d calls reached the store, want 1", i+1, n)
		}
		if s := r.b.State(); s != resilient.Open {
			t.Fatalf("after failed probe %d: state %v, want open", i+1, s)
		}
	}
	trs := r.trs.list()
	last := trs[len(trs)-1]
	if last.From != resilient.HalfOpen || last.Backoff != 600*time.Millisecond || !errors.Is(last.Err, errDown) {
		t.Errorf("last transition %+v, want half_open>open with backoff 600ms and errDown", last)
	}

	// The store is back: the next probe closes the breaker, with no call.
	r.store.down.Store(false)
	r.clk.Advance(600 * time.Millisecond)
	r.waitProbe(t)
	if s := r.b.State(); s != resilient.Closed {
		t.Fatalf("after a successful probe: state %v, want closed", s)
	}
	r.store.mu.Lock()
	probed := r.store.lastGet
	r.store.mu.Unlock()
	if len(probed) != 1 || probed[0] != resilient.DefaultProbeKey {
		t.Errorf("the probe read %q, want [%s]", probed, resilient.DefaultProbeKey)
	}
	r.calls(t, 5, nil)
	trs = r.trs.list()
	closed := trs[len(trs)-1]
	if closed.To != resilient.Closed || !closed.OutageStart.Equal(t0) || closed.Rejected != 8 {
		t.Errorf("closing transition %+v: want outage start t0 and 8 rejected calls", closed)
	}
	want := "closed>open" + " open>half_open half_open>open" + " open>half_open half_open>open" +
		" open>half_open half_open>open" + " open>half_open half_open>open" + " open>half_open half_open>open" +
		" open>half_open half_open>closed"
	if got := r.trs.path(); got != want {
		t.Errorf("transitions\n got %s\nwant %s", got, want)
	}

	// Closed again: the count of failures starts from zero, and the
	// backoff from MinBackoff.
	r.store.down.Store(true)
	r.calls(t, 2, errDown)
	if s := r.b.State(); s != resilient.Closed {
		t.Fatalf("state %v after 2 failures, want closed", s)
	}
	r.calls(t, 1, errDown)
	trs = r.trs.list()
	if tr := trs[len(trs)-1]; tr.To != resilient.Open || tr.Backoff != 75*time.Millisecond {
		t.Errorf("reopening transition %+v, want open with backoff 75ms", tr)
	}
}

// TestBreakerJitter: every open period lies in [backoff/2, backoff], and
// while the store is down it is probed at least once per MaxBackoff.
func TestBreakerJitter(t *testing.T) {
	for _, rnd := range []float64{0, 0.25, 0.999999} {
		t.Run(fmt.Sprint(rnd), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRig(t, rnd)
				r.store.down.Store(true)
				r.calls(t, 3, errDown)
				backoff := 100 * time.Millisecond
				for range 6 {
					trs := r.trs.list()
					got := trs[len(trs)-1].Backoff
					if got < backoff/2 || got > backoff {
						t.Fatalf("open for %v with backoff %v: want within [%v, %v]", got, backoff, backoff/2, backoff)
					}
					r.clk.Advance(got)
					r.calls(t, 1, resilient.ErrOpen)
					r.waitProbe(t)
					backoff = min(2*backoff, 800*time.Millisecond)
				}
			})
		})
	}
}

// TestBreakerOneProbe: of many concurrent calls to a breaker whose backoff
// has ended before its timer fired, none waits and exactly one probe reaches
// the store.
func TestBreakerOneProbe(t *testing.T) {
	synctest.Test(t, testBreakerOneProbe)
}

func testBreakerOneProbe(t *testing.T) {
	r := backedOffRig(t)

	block := make(chan struct{})
	r.store.block = block
	before := r.store.calls.Load()
	var wg sync.WaitGroup
	var rejected atomic.Int64
	for range 50 {
		wg.Go(func() {
			if err := r.call(); errors.Is(err, resilient.ErrOpen) {
				rejected.Add(1)
			}
		})
	}
	wg.Wait() // while the probe is blocked in the store
	if n := rejected.Load(); n != 50 {
		t.Errorf("%d of 50 calls were rejected at once, want all", n)
	}
	if s := r.b.State(); s != resilient.HalfOpen {
		t.Fatalf("state %v with the probe in flight, want half_open", s)
	}
	close(block)
	r.waitProbe(t)
	if n := r.store.calls.Load() - before; n != 1 {
		t.Errorf("%d calls reached the store, want 1 probe", n)
	}
	if s := r.b.State(); s != resilient.Closed {
		t.Errorf("state %v after the probe succeeded, want closed", s)
	}
}

// TestBreakerCallerGaveUp: an error caused by the caller's own context is
// not a store failure.
func TestBreakerCallerGaveUp(t *testing.T) {
	r := newRig(t, 0)
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	// memory.Store fails with the context's error.
	for range 10 {
		if _, err := r.st.Add(canceled, "fg1:k:1", 1, time.Minute); !errors.Is(err, context.Canceled) {
			t.Fatalf("Add with a cancelled context: %v", err)
		}
	}
	if s := r.b.State(); s != resilient.Closed {
		t.Fatalf("state %v after cancelled calls, want closed", s)
	}
}

// TestBreakerProbeTimeout: a probe of a store that hangs ends with the
// probe's deadline, and counts as failed. In a synctest bubble, the 10ms
// pass on the bubble's clock.
func TestBreakerProbeTimeout(t *testing.T) {
	synctest.Test(t, testBreakerProbeTimeout)
}

func testBreakerProbeTimeout(t *testing.T) {
	clk := newClock()
	b := resilient.NewBreaker(hungStore, resilient.BreakerConfig{Failures: 1, Now: clk.Now, AfterFunc: clk.AfterFunc, ProbeTimeout: 10 * time.Millisecond})
	t.Cleanup(func() { b.Close() })
	if _, err := b.Get(context.Background(), []string{"k"}); !errors.Is(err, errHung) {
		t.Fatalf("Get on the hung store: %v", err)
	}
	if s := b.State(); s != resilient.Open {
		t.Fatalf("state %v, want open", s)
	}
	clk.Advance(time.Second) // the timer starts the probe
	if _, err := b.Get(context.Background(), []string{"k"}); !errors.Is(err, resilient.ErrOpen) {
		t.Fatalf("Get after the backoff: %v, want ErrOpen", err)
	}
	if s := b.State(); s != resilient.HalfOpen {
		t.Fatalf("state %v with the probe in flight, want half_open", s)
	}
	time.Sleep(10 * time.Millisecond) // the probe's timeout passes (the bubble's clock)
	synctest.Wait()
	if s := b.State(); s != resilient.Open {
		t.Fatalf("state %v after a probe with a 10ms timeout ended, want open again", s)
	}
}

var errHung = fmt.Errorf("hung store: %w: i/o timeout", limiter.ErrStoreUnavailable)

// hungStore is a limiter.Store that answers nothing: a call ends when its
// context does, or after a second (a store's own timeout).
var hungStore = storetest.Failing(func(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", errHung, ctx.Err())
	case <-time.After(time.Second):
		return errHung
	}
})

// TestBreakerLateResults: calls that started while the breaker was closed
// and end after it opened change nothing. In a synctest bubble:
// synctest.Wait returns once the calls are blocked in the store.
func TestBreakerLateResults(t *testing.T) {
	synctest.Test(t, testBreakerLateResults)
}

func testBreakerLateResults(t *testing.T) {
	r := newRig(t, 0)
	block := make(chan struct{})
	r.store.block = block
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() { errs <- r.call() })
	}
	synctest.Wait()
	if n := r.store.calls.Load(); n != 4 {
		t.Fatalf("%d calls in the store, want 4", n)
	}
	r.store.block = nil
	r.store.down.Store(true)
	r.calls(t, 3, errDown) // opens
	r.store.down.Store(false)
	close(block) // the 4 old calls succeed
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("old call: %v", err)
		}
	}
	if s := r.b.State(); s != resilient.Open {
		t.Errorf("state %v after late successes, want still open", s)
	}
}

func TestBreakerValues(t *testing.T) {
	r := newRig(t, 0)
	ss := r.st
	ctx := context.Background()
	if ok, err := ss.CompareAndSwap(ctx, "fg1:v:g", []byte("a"), 0, time.Minute); !ok || err != nil {
		t.Fatalf("CompareAndSwap create = %v, %v", ok, err)
	}
	// Conflicts are answers, not failures.
	for range 5 {
		if ok, err := ss.CompareAndSwap(ctx, "fg1:v:g", []byte("b"), 0, time.Minute); ok || err != nil {
			t.Fatalf("conflicting CompareAndSwap = %v, %v; want false, nil", ok, err)
		}
	}
	if v, ver, err := ss.GetVersioned(ctx, "fg1:v:g"); string(v) != "a" || ver == 0 || err != nil {
		t.Fatalf("GetVersioned = %q, %d, %v", v, ver, err)
	}
	if s := r.b.State(); s != resilient.Closed {
		t.Fatalf("state %v, want closed", s)
	}
	r.store.down.Store(true)
	for range 3 {
		if _, _, err := ss.GetVersioned(ctx, "fg1:v:g"); !errors.Is(err, errDown) {
			t.Fatalf("GetVersioned with the store down: %v", err)
		}
	}
	if _, err := ss.CompareAndSwap(ctx, "fg1:v:g", []byte("c"), 0, time.Minute); !errors.Is(err, resilient.ErrOpen) {
		t.Errorf("CompareAndSwap on an open breaker: %v, want ErrOpen", err)
	}
}

func TestBreakerEmptyGetIsNotACall(t *testing.T) {
	r := backedOffRig(t)
	if _, err := r.st.Get(context.Background(), nil); err != nil {
		t.Errorf("Get of no keys on an open breaker: %v", err)
	}
	if s, n := r.b.State(), r.b.Rejected(); s != resilient.Open || n != 0 {
		t.Errorf("after a Get of no keys: state %v, %d rejected; want open, 0: it is no probe and no call", s, n)
	}
}

func TestStateString(t *testing.T) {
	for s, want := range map[resilient.State]string{
		resilient.Closed: "closed", resilient.Open: "open", resilient.HalfOpen: "half_open", 7: "State(7)",
	} {
		if got := s.String(); got != want {
			t.Errorf("State(%d).String() = %q, want %q", int32(s), got, want)
		}
	}
}

// TestBreakerConcurrent hammers a breaker over a store that flaps, with the
// real clock, for the race detector, and checks it ends closed once the
// store is up.
func TestBreakerConcurrent(t *testing.T) {
	store := newFlakyStore(t, time.Now)
	b := resilient.NewBreaker(store, resilient.BreakerConfig{MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	defer b.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			ctx := context.Background()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("fg1:k%d:%d", i, n%10)
				if _, err := b.Add(ctx, key, 1, time.Minute); err != nil && !errors.Is(err, limiter.ErrStoreUnavailable) {
					t.Errorf("Add: %v", err)
					return
				}
				_ = b.State()
			}
		})
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()
	for i := range 40 {
		store.down.Store(i%2 == 0)
		// Not a wait: the store flaps every 2ms of real time, against
		// the breaker's real backoff timers (1-5ms) and 8 callers that
		// never block, so a synctest bubble's clock would never move.
		time.Sleep(2 * time.Millisecond)
	}
	store.down.Store(false)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if s := b.State(); s != resilient.Closed {
			return fmt.Errorf("state %v with the store up, want closed", s)
		}
		return nil
	})
}

func BenchmarkBreakerClosed(b *testing.B) {
	mem := memory.New(time.Now)
	defer mem.Close()
	st := resilient.NewBreaker(mem, resilient.BreakerConfig{})
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := st.Add(ctx, "fg1:bench:1", 1, time.Minute); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestBreakerProbesWithoutCalls: with the default clock and timers, in a
// synctest bubble, an open breaker probes a down store on its own about
// every MaxBackoff, closes within MaxBackoff of the store's return without
// any call, and stops probing at Close.
func TestBreakerProbesWithoutCalls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newFlakyStore(t, time.Now)
		trs := &transitions{}
		b := resilient.NewBreaker(store, resilient.BreakerConfig{Failures: 3, OnTransition: trs.record})
		defer b.Close()
		store.down.Store(true)
		for range 3 {
			if _, err := b.Get(context.Background(), []string{"fg1:k:1"}); !errors.Is(err, errDown) {
				t.Fatalf("Get with the store down: %v", err)
			}
		}

		// Down and idle for 10s: probed at least every MaxBackoff (500ms),
		// at most every half of it after the first doublings.
		before := store.calls.Load()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if n := store.calls.Load() - before; n < 20 || n > 45 {
			t.Errorf("%d probes in 10s of a down store, want 20 to 45 (every 250-500ms)", n)
		}
		if s := b.State(); s != resilient.Open {
			t.Fatalf("state %v with the store down, want open", s)
		}

		// Back, and still no call: closed within MaxBackoff.
		store.down.Store(false)
		time.Sleep(resilient.DefaultMaxBackoff)
		synctest.Wait()
		if s := b.State(); s != resilient.Closed {
			t.Fatalf("state %v %v after the store came back with no call, want closed (transitions %s)",
				s, resilient.DefaultMaxBackoff, trs.path())
		}
		if n := b.Rejected(); n != 0 {
			t.Errorf("Rejected = %d, want 0: no call was made while open", n)
		}

		// Closed: no timer probes. Open again, then Close: nothing more.
		before = store.calls.Load()
		time.Sleep(10 * time.Second)
		if n := store.calls.Load() - before; n != 0 {
			t.Errorf("%d store calls in 10s of a closed, idle breaker, want 0", n)
		}
		store.down.Store(true)
		for range 3 {
			b.Get(context.Background(), []string{"fg1:k:1"})
		}
		b.Close()
		before = store.calls.Load()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if n := store.calls.Load() - before; n != 0 {
			t.Errorf("%d probes in 10s after Close, want 0", n)
		}
		if err := b.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})
}

// TestBreakerCloseEndsProbe: Close cancels a probe that hangs in the store
// and waits for it, well before the probe's own timeout.
func TestBreakerCloseEndsProbe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := resilient.NewBreaker(hangStore, resilient.BreakerConfig{Failures: 1, ProbeTimeout: time.Minute})
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		if _, err := b.Get(ctx, []string{"k"}); err == nil {
			t.Fatal("Get on the hung store succeeded")
		}
		// The caller's deadline is not a store failure: open it with a
		// store error instead.
		if s := b.State(); s != resilient.Closed {
			t.Fatalf("state %v after the caller's own deadline, want closed", s)
		}
		if _, err := b.Get(context.Background(), []string{"k"}); !errors.Is(err, errHung) {
			t.Fatalf("Get: %v, want errHung", err)
		}
		time.Sleep(resilient.DefaultMinBackoff) // the probe starts and hangs
		synctest.Wait()
		if s := b.State(); s != resilient.HalfOpen {
			t.Fatalf("state %v with the probe hung, want half_open", s)
		}
		start := time.Now()
		b.Close()
		if d := time.Since(start); d != 0 {
			t.Errorf("Close took %v of the bubble's time, want none (the probe is cancelled)", d)
		}
	})
}

// hangStore answers nothing until the context is done, except a call with
// no deadline, which fails with errHung at once (a store's own timeout).
var hangStore = storetest.Failing(func(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		return errHung
	}
	<-ctx.Done()
	return fmt.Errorf("%w: %w", errHung, ctx.Err())
})
