package resilient_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/resilient"
)

// gaugeStore is a limiter.Store that records the most calls it saw at once;
// each call lasts a moment, or until release is closed when it is set.
type gaugeStore struct {
	inFlight, peak atomic.Int64
	release        chan struct{}
}

func (g *gaugeStore) call() {
	n := g.inFlight.Add(1)
	for {
		p := g.peak.Load()
		if n <= p || g.peak.CompareAndSwap(p, n) {
			break
		}
	}
	if g.release != nil {
		<-g.release
	} else {
		time.Sleep(100 * time.Microsecond) // the call's duration; tests that use it run in a synctest bubble
	}
	g.inFlight.Add(-1)
}

func (g *gaugeStore) Add(context.Context, string, int64, time.Duration) (int64, error) {
	g.call()
	return 1, nil
}

func (g *gaugeStore) Get(context.Context, []string) (map[string]int64, error) {
	g.call()
	return map[string]int64{}, nil
}

// TestBulkheadBoundsCalls runs in a synctest bubble, where every call
// lasts exactly 100µs of the bubble's clock: 200 calls at once fill the 4
// slots, and never more.
func TestBulkheadBoundsCalls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &gaugeStore{}
		st := resilient.NewBulkhead(g, 4, time.Minute)
		var wg sync.WaitGroup
		for i := range 200 {
			wg.Go(func() {
				var err error
				if i%2 == 0 {
					_, err = st.Add(context.Background(), "k", 1, time.Minute)
				} else {
					_, err = st.Get(context.Background(), []string{"k"})
				}
				if err != nil {
					t.Errorf("call: %v", err)
				}
			})
		}
		wg.Wait()
		if p := g.peak.Load(); p != 4 {
			t.Errorf("%d calls in flight at once, want 4: at most the slots, and all of them under load", p)
		}
		if b := resilient.BulkheadOf(st); b.Busy() != 0 || b.InFlight() != 0 {
			t.Errorf("Busy %d, InFlight %d after all calls; want 0, 0", b.Busy(), b.InFlight())
		}
	})
}

// TestBulkheadBusy runs in a synctest bubble: synctest.Wait returns once
// the calls hold their slots or wait for one, and the queue timeout passes
// on the bubble's clock.
func TestBulkheadBusy(t *testing.T) {
	synctest.Test(t, testBulkheadBusy)
}

func testBulkheadBusy(t *testing.T) {
	g := &gaugeStore{release: make(chan struct{})}
	st := resilient.NewBulkhead(g, 2, 20*time.Millisecond)
	b := resilient.BulkheadOf(st)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { st.Add(context.Background(), "k", 1, time.Minute) })
	}
	synctest.Wait()
	if n := b.InFlight(); n != 2 {
		t.Fatalf("InFlight = %d with two calls in the store, want 2", n)
	}
	// Full: a call waits for the queue timeout, or its context.
	if _, err := st.Get(context.Background(), []string{"k"}); !errors.Is(err, resilient.ErrBusy) || !errors.Is(err, limiter.ErrStoreUnavailable) {
		t.Errorf("Get on a full bulkhead: %v, want ErrBusy wrapping ErrStoreUnavailable", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := st.Add(ctx, "k", 1, time.Minute); !errors.Is(err, resilient.ErrBusy) {
		t.Errorf("Add with a done context on a full bulkhead: %v, want ErrBusy", err)
	}
	if n := b.Busy(); n != 2 {
		t.Errorf("Busy = %d, want 2", n)
	}
	// A waiting call gets the slot a finished call frees.
	done := make(chan error)
	patient := resilient.NewBulkhead(g, 2, time.Minute)
	for range 2 {
		wg.Go(func() { patient.Add(context.Background(), "k", 1, time.Minute) })
	}
	synctest.Wait()
	if n := resilient.BulkheadOf(patient).InFlight(); n != 2 {
		t.Fatalf("InFlight = %d with two calls in the store, want 2", n)
	}
	go func() {
		_, err := patient.Get(context.Background(), []string{"k"})
		done <- err
	}()
	synctest.Wait() // the third call waits for a slot
	select {
	case err := <-done:
		t.Fatalf("a call on a full bulkhead returned (%v) before a slot was freed", err)
	default:
	}
	close(g.release) // the calls end; the waiting one gets a slot
	if err := <-done; err != nil {
		t.Errorf("waiting call: %v", err)
	}
	wg.Wait()
}

func TestBulkheadSwapStore(t *testing.T) {
	mem := limiter.NewMemoryStore(time.Now)
	defer mem.Close()
	st := resilient.NewBulkhead(mem, 1, 0)
	ss, ok := st.(limiter.SwapStore)
	if !ok {
		t.Fatalf("NewBulkhead(SwapStore) = %T, not a SwapStore", st)
	}
	ctx := context.Background()
	if ok, err := ss.CompareAndSwap(ctx, "v", []byte("x"), 0, time.Minute); !ok || err != nil {
		t.Fatalf("CompareAndSwap = %v, %v", ok, err)
	}
	if v, _, err := ss.GetVersioned(ctx, "v"); string(v) != "x" || err != nil {
		t.Fatalf("GetVersioned = %q, %v", v, err)
	}
	if _, ok := resilient.NewBulkhead(plainStore{mem}, 1, 0).(limiter.SwapStore); ok {
		t.Error("NewBulkhead of a plain Store is a SwapStore")
	}
	if resilient.BulkheadOf(plainStore{mem}) != nil {
		t.Error("BulkheadOf found a Bulkhead where there is none")
	}
}

// TestBreakerIgnoresBusy: calls refused by a Bulkhead under a Breaker are
// not store failures.
// In a synctest bubble: synctest.Wait returns once the first call holds the
// only slot.
func TestBreakerIgnoresBusy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &gaugeStore{release: make(chan struct{})}
		defer close(g.release)
		bh := resilient.NewBulkhead(g, 1, time.Millisecond)
		b := resilient.BreakerOf(resilient.NewBreaker(bh, resilient.BreakerConfig{Failures: 2}))
		defer b.Close()
		go b.Add(context.Background(), "k", 1, time.Minute)
		synctest.Wait()
		if n := resilient.BulkheadOf(bh).InFlight(); n != 1 {
			t.Fatalf("InFlight = %d with a call in the store, want 1", n)
		}
		for range 10 {
			if _, err := b.Get(context.Background(), []string{"k"}); !errors.Is(err, resilient.ErrBusy) {
				t.Fatalf("Get: %v, want ErrBusy", err)
			}
		}
		if s := b.State(); s != resilient.Closed {
			t.Errorf("state %v after 10 ErrBusy, want closed", s)
		}
	})
}

func TestNewBulkheadPanicsOnZero(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("NewBulkhead(store, 0, 0) did not panic")
		}
	}()
	resilient.NewBulkhead(&gaugeStore{}, 0, 0)
}

// TestValueBulkheadPassesCounterCalls: with NewValueBulkhead, counter calls
// take no slot (a pipelined store bounds and coalesces them itself): with
// one slot, ten of them are in the store at once, and none is refused. In a
// synctest bubble, synctest.Wait returns once each call is in the store or
// waits for a slot.
func TestValueBulkheadPassesCounterCalls(t *testing.T) {
	synctest.Test(t, testValueBulkheadPassesCounterCalls)
}

func testValueBulkheadPassesCounterCalls(t *testing.T) {
	g := &gaugeStore{release: make(chan struct{})}
	st := resilient.NewValueBulkhead(g, 1, time.Millisecond)
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			var err error
			if i%2 == 0 {
				_, err = st.Add(context.Background(), "k", 1, time.Minute)
			} else {
				_, err = st.Get(context.Background(), []string{"k"})
			}
			if err != nil {
				t.Errorf("call: %v", err)
			}
		})
	}
	synctest.Wait()
	if n := g.inFlight.Load(); n != 10 {
		close(g.release)
		t.Fatalf("%d counter calls in the store at once, want 10: they wait for the one slot", n)
	}
	close(g.release)
	wg.Wait()
	if b := resilient.BulkheadOf(st); b.Busy() != 0 {
		t.Errorf("Busy %d: counter calls were refused a slot", b.Busy())
	}
}
