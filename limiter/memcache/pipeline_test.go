package memcache

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/floodgate-rl/floodgate/internal/testutil"
	"github.com/floodgate-rl/floodgate/limiter"
)

// generous is the memcached timeout of calls that must succeed: a loaded
// machine is not a latency test.
const generous = 10 * time.Second

func TestBatch(t *testing.T) {
	mc := testutil.StartMemcached(t)
	s := newStore(t, []string{mc.Addr()}, Config{Timeout: generous})
	ctx := context.Background()
	inc := func(key string, delta int64) limiter.Increment {
		return limiter.Increment{Key: key, Delta: delta, TTL: time.Minute}
	}
	// Many keys: the get line and the answers outgrow the 4 KiB buffers.
	var many []string
	for i := range 300 {
		many = append(many, fmt.Sprintf("fg1:many:%d", 1800000000+i))
	}
	tests := []struct {
		name       string
		gets       []string
		adds       []limiter.Increment
		wantVals   map[string]int64
		wantCounts []int64
	}{
		{"nothing", nil, nil, map[string]int64{}, nil},
		{"adds create, then increment", nil,
			[]limiter.Increment{inc("fg1:a:1", 3), inc("fg1:a:m1", 1), inc("fg1:a:1", 2)},
			map[string]int64{}, []int64{3, 1, 5}},
		{"reads come after the adds", []string{"fg1:a:1", "fg1:a:2", "fg1:a:m1"},
			[]limiter.Increment{inc("fg1:a:1", 1), inc("fg1:a:2", 1)},
			map[string]int64{"fg1:a:1": 6, "fg1:a:2": 1, "fg1:a:m1": 1}, []int64{6, 1}},
		{"decrement, clamped at zero, and of a missing key", nil,
			[]limiter.Increment{inc("fg1:a:1", -4), inc("fg1:a:1", -9), inc("fg1:a:gone", -1)},
			map[string]int64{}, []int64{2, 0, 0}},
		{"zero delta reads and creates nothing", []string{"fg1:a:none"},
			[]limiter.Increment{inc("fg1:a:2", 0), inc("fg1:a:none", 0)},
			map[string]int64{}, []int64{1, 0}},
		{"a decremented value, padded by memcached, reads as a number", []string{"fg1:a:1", "fg1:a:2"}, nil,
			map[string]int64{"fg1:a:1": 0, "fg1:a:2": 1}, nil},
		{"many keys", many, []limiter.Increment{inc(many[7], 1<<40)},
			map[string]int64{many[7]: 1 << 40}, []int64{1 << 40}},
	}
	for _, tc := range tests {
		vals, counts, err := s.Batch(ctx, tc.gets, tc.adds)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !maps.Equal(vals, tc.wantVals) || fmt.Sprint(counts) != fmt.Sprint(tc.wantCounts) {
			t.Fatalf("%s: got %v %v, want %v %v", tc.name, vals, counts, tc.wantVals, tc.wantCounts)
		}
	}
	// Counters made by a Batch are ordinary ones to Get and Add.
	vals, err := s.Get(ctx, []string{"fg1:a:m1", many[7]})
	if err != nil || vals["fg1:a:m1"] != 1 || vals[many[7]] != 1<<40 {
		t.Fatalf("Get = %v, %v", vals, err)
	}
}

// TestBatchExpiry checks that a counter a Batch creates lives its TTL.
func TestBatchExpiry(t *testing.T) {
	mc := testutil.StartMemcached(t)
	s := newStore(t, []string{mc.Addr()}, Config{Timeout: generous})
	ctx := context.Background()
	if _, _, err := s.Batch(ctx, nil, []limiter.Increment{{Key: "fg1:e:1", Delta: 1, TTL: time.Second}, {Key: "fg1:e:2", Delta: 1, TTL: time.Hour}}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		vals, err := s.Get(ctx, []string{"fg1:e:1", "fg1:e:2"})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := vals["fg1:e:1"]; ok {
			return errors.New("a counter with one second to live is still there")
		}
		if vals["fg1:e:2"] != 1 {
			t.Fatalf("the counter with an hour to live is gone too: %v", vals)
		}
		return nil
	})
}

// TestBatchConcurrent checks that concurrent batches, many of them sharing
// a round trip, count every increment once.
func TestBatchConcurrent(t *testing.T) {
	mc := testutil.StartMemcached(t)
	s := newStore(t, []string{mc.Addr()}, Config{Timeout: generous})
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			for range 20 {
				_, _, err := s.Batch(ctx, []string{"fg1:c:1", "fg1:c:m1"},
					[]limiter.Increment{{Key: "fg1:c:1", Delta: 1, TTL: time.Minute}, {Key: "fg1:c:m1", Delta: 2, TTL: time.Minute}})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	vals, err := s.Get(ctx, []string{"fg1:c:1", "fg1:c:m1"})
	if err != nil || vals["fg1:c:1"] != 1000 || vals["fg1:c:m1"] != 2000 {
		t.Fatalf("Get = %v, %v; want 1000 and 2000", vals, err)
	}
}

// TestBatchAcrossServers checks a batch whose keys live on two servers.
func TestBatchAcrossServers(t *testing.T) {
	a, b := testutil.StartMemcached(t), testutil.StartMemcached(t)
	s := newStore(t, []string{a.Addr(), b.Addr()}, Config{Timeout: generous})
	ctx := context.Background()
	// Requestors until both servers are used.
	var keys []string
	servers := map[*server]bool{}
	for i := 0; len(servers) < 2; i++ {
		k := fmt.Sprintf("fg1:r%d:1", i)
		keys = append(keys, k)
		servers[s.set.Load().pick(serverKey(k))] = true
	}
	var adds []limiter.Increment
	for _, k := range keys {
		adds = append(adds, limiter.Increment{Key: k, Delta: 2, TTL: time.Minute})
	}
	_, counts, err := s.Batch(ctx, keys, adds)
	if err != nil {
		t.Fatal(err)
	}
	vals, _, err := s.Batch(ctx, keys, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range keys {
		if counts[i] != 2 || vals[k] != 2 {
			t.Fatalf("key %q: count %d, read %d; want 2 and 2", k, counts[i], vals[k])
		}
	}
}

// TestBatchErrors checks that a batch fails with limiter.ErrStoreUnavailable
// on a malformed key, a value that is not a counter, a stopped server and a
// frozen one, and that a connection that failed mid-exchange is never
// reused: later answers match their questions.
func TestBatchErrors(t *testing.T) {
	mc := testutil.StartMemcached(t)
	// Generous for the calls that must succeed on a loaded machine; quick
	// is the same server with a short timeout, for the frozen one.
	s := newStore(t, []string{mc.Addr()}, Config{Timeout: generous})
	quick := newStore(t, []string{mc.Addr()}, Config{Timeout: 100 * time.Millisecond})
	ctx := context.Background()
	one := func(key string) []limiter.Increment {
		return []limiter.Increment{{Key: key, Delta: 1, TTL: time.Minute}}
	}
	for _, key := range []string{"has space", "has\nnewline", strings.Repeat("k", 251), ""} {
		_, _, err := s.Batch(ctx, []string{"fg1:ok:1"}, one(key))
		wantUnavailable(t, fmt.Sprintf("Batch with key %q", key), err, "batch", key)
	}
	direct := memcache.New(mc.Addr())
	if err := direct.Set(&memcache.Item{Key: "fg1:text:1", Value: []byte("abc"), Expiration: 60}); err != nil {
		t.Fatal(err)
	}
	_, _, err := s.Batch(ctx, nil, one("fg1:text:1"))
	wantUnavailable(t, "Batch incrementing a text value", err, "batch", "fg1:text:1")
	_, _, err = s.Batch(ctx, []string{"fg1:text:1", "fg1:ok:1"}, nil)
	wantUnavailable(t, "Batch reading a text value", err, "batch of 2 keys from", "fg1:text:1")

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, _, err = s.Batch(cctx, nil, one("fg1:ok:1"))
	wantUnavailable(t, "Batch with a done context", err, "batch", "fg1:ok:1")

	if _, _, err := quick.Batch(ctx, nil, one("fg1:seq:1")); err != nil {
		t.Fatal(err)
	}
	mc.Freeze()
	_, _, err = quick.Batch(ctx, []string{"fg1:seq:1"}, one("fg1:seq:1"))
	wantUnavailable(t, "Batch on a frozen server", err, "batch of 2 keys from", "fg1:seq:1")
	mc.Thaw()
	// The frozen call's answers arrive late, on a connection that must not
	// be reused: every later answer on quick must be its own. quick's
	// timeout may also strike on a loaded machine, so a call that fails is
	// tried again; only the answers are checked.
	for i := range 5 {
		key := fmt.Sprintf("fg1:answer:%d", i)
		if _, _, err := s.Batch(ctx, nil, []limiter.Increment{{Key: key, Delta: int64(i) + 1, TTL: time.Minute}}); err != nil {
			t.Fatal(err)
		}
		for attempt := 0; ; attempt++ {
			vals, counts, err := quick.Batch(ctx, []string{key}, one("fg1:seq:1"))
			if err != nil {
				if attempt == 50 {
					t.Fatalf("call %d on quick: %v", i, err)
				}
				continue
			}
			if vals[key] != int64(i)+1 || len(counts) != 1 || counts[0] < 1 {
				t.Fatalf("call %d on quick: read %v, counts %v; want %s=%d and one count (another call's answer?)", i, vals, counts, key, i+1)
			}
			break
		}
	}

	mc.Stop()
	_, _, err = s.Batch(ctx, nil, one("fg1:seq:1"))
	wantUnavailable(t, "Batch on a stopped server", err, "batch", "fg1:seq:1")
}

// BenchmarkBatch is a returning requestor's decision on memcached: read the
// previous second and count in the second and its minute, in one round trip.
func BenchmarkBatch(b *testing.B) {
	mc := testutil.StartMemcached(b)
	s := newStore(b, []string{mc.Addr()}, Config{})
	ctx := context.Background()
	gets := []string{"fg1:bench:1800000000"}
	adds := []limiter.Increment{{Key: "fg1:bench:1800000001", Delta: 1, TTL: time.Hour}, {Key: "fg1:bench:m30000000", Delta: 1, TTL: time.Hour}}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := s.Batch(ctx, gets, adds); err != nil {
			b.Fatal(err)
		}
	}
}

// TestBatchAfterRestart checks that connections a restarted server closed
// while idle are replaced without failing a call: the server never saw
// what was sent on them.
func TestBatchAfterRestart(t *testing.T) {
	mc := testutil.StartMemcached(t)
	s := newStore(t, []string{mc.Addr()}, Config{Timeout: generous, MaxConns: 8})
	ctx := context.Background()
	one := []limiter.Increment{{Key: "fg1:r:1", Delta: 1, TTL: time.Minute}}
	// Eight calls at once leave up to eight idle connections.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, _, err := s.Batch(ctx, nil, one); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	mc.Restart()
	for i := range 10 {
		_, counts, err := s.Batch(ctx, []string{"fg1:r:2"}, one)
		if err != nil {
			t.Fatalf("call %d after restart: %v", i, err)
		}
		if counts[0] != int64(i)+1 {
			t.Fatalf("call %d after restart: count %d, want %d (counted once, on the new server)", i, counts[0], i+1)
		}
	}
}

// counts returns how many round trips p made and how many calls they
// carried.
func (p *pipeline) counts() (roundTrips, calls uint64) {
	return p.stats.RoundTrips.Load(), p.stats.Calls.Load()
}

// hold makes every connection of p busy, so that calls queue, and returns
// a function that waits until n calls are queued and then frees one
// connection: the queue goes out in exchanges of its own.
func hold(t *testing.T, p *pipeline) (release func(n int)) {
	t.Helper()
	p.mu.Lock()
	p.busy = p.conns
	p.mu.Unlock()
	return func(n int) {
		t.Helper()
		waitQueued(t, p, n)
		p.mu.Lock()
		p.busy = 1 // the connection released below
		p.mu.Unlock()
		p.release(nil)
	}
}

// waitQueued waits until n calls are queued in p.
func waitQueued(t *testing.T, p *pipeline, n int) {
	t.Helper()
	testutil.WaitFor(t, generous, func() error {
		p.mu.Lock()
		q := len(p.queue)
		p.mu.Unlock()
		if q != n {
			return fmt.Errorf("%d calls queued, want %d", q, n)
		}
		return nil
	})
}

// pipe returns the pipeline of the one server of s.
func pipe(t *testing.T, s *Store) *pipeline {
	t.Helper()
	servers := s.set.Load().servers
	if len(servers) != 1 {
		t.Fatalf("%d servers, want 1", len(servers))
	}
	return servers[0].pipe
}

// TestPipelineCoalesces checks that calls queued while every connection is
// busy go out together, in one round trip, and each gets its own answers.
func TestPipelineCoalesces(t *testing.T) {
	mc := testutil.StartMemcached(t)
	s := newStore(t, []string{mc.Addr()}, Config{Timeout: generous, MaxConns: 1})
	p := pipe(t, s)
	ctx := context.Background()
	if _, err := s.Add(ctx, "fg1:q:seed", 7, time.Minute); err != nil {
		t.Fatal(err)
	}
	ex0, calls0 := p.counts()
	release := hold(t, p)

	const n = 50
	counts := make([]int64, n)
	seeds := make([]int64, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			vals, c, err := s.Batch(ctx, []string{"fg1:q:seed"}, []limiter.Increment{
				{Key: "fg1:q:shared", Delta: 1, TTL: time.Minute},
				{Key: fmt.Sprintf("fg1:q:own%d", i), Delta: int64(i) + 1, TTL: time.Minute},
			})
			if err != nil {
				t.Error(err)
				return
			}
			counts[i] = c[0]
			seeds[i] = vals["fg1:q:seed"]
			if c[1] != int64(i)+1 {
				t.Errorf("call %d: its own counter is %d, want %d", i, c[1], i+1)
			}
		})
	}
	release(n)
	wg.Wait()

	ex, calls := p.counts()
	if ex-ex0 != 1 || calls-calls0 != n {
		t.Fatalf("%d calls went out in %d exchanges, want %d in 1", calls-calls0, ex-ex0, n)
	}
	if st := s.PipelineStats(); st.RoundTrips.Load() != ex || st.Calls.Load() != calls {
		t.Fatalf("Store.PipelineStats = %d round trips, %d calls; the pipeline counted %d, %d", st.RoundTrips.Load(), st.Calls.Load(), ex, calls)
	}
	// The shared counter was incremented once per call, in some order.
	seen := map[int64]bool{}
	for i, c := range counts {
		if c < 1 || c > n || seen[c] {
			t.Fatalf("call %d: shared count %d, want a distinct count in 1..%d; all: %v", i, c, n, counts)
		}
		seen[c] = true
		if seeds[i] != 7 {
			t.Fatalf("call %d read %d, want 7", i, seeds[i])
		}
	}
}

// TestPipelineCoalescesValues checks that value reads and swaps queued
// with counter calls go out in the same round trip, each with its own
// answer: its own value and version, a swap stored only with the version
// still current.
func TestPipelineCoalescesValues(t *testing.T) {
	mc := testutil.StartMemcached(t)
	s := newStore(t, []string{mc.Addr()}, Config{Timeout: generous, MaxConns: 1})
	p := pipe(t, s)
	ctx := context.Background()
	const n = 30 // of each kind
	// Keys 0..n-1 are read, n..2n-1 swapped: within the exchange, the
	// calls come in any order.
	versions := make([]uint64, 2*n)
	for i := range 2 * n {
		key := fmt.Sprintf("fg1:cv:%d", i)
		if ok, err := s.CompareAndSwap(ctx, key, []byte(key), 0, time.Minute); err != nil || !ok {
			t.Fatalf("add %s = %v, %v", key, ok, err)
		}
		var err error
		if _, versions[i], err = s.GetVersioned(ctx, key); err != nil {
			t.Fatal(err)
		}
	}
	ex0, calls0 := p.counts()
	release := hold(t, p)
	var wg sync.WaitGroup
	for i := range n {
		key := fmt.Sprintf("fg1:cv:%d", i)
		wg.Go(func() {
			v, ver, err := s.GetVersioned(ctx, key)
			if err != nil || string(v) != key || ver != versions[i] {
				t.Errorf("GetVersioned(%s) = %q, %d, %v; want its own value, version %d", key, v, ver, err, versions[i])
			}
		})
		wg.Go(func() {
			// Every other swap names a stale version, refused.
			w := fmt.Sprintf("fg1:cv:%d", n+i)
			ver, want := versions[n+i], i%2 == 0
			if !want {
				ver--
			}
			if ok, err := s.CompareAndSwap(ctx, w, []byte("new"), ver, time.Minute); err != nil || ok != want {
				t.Errorf("CompareAndSwap(%s) = %v, %v; want %v", w, ok, err, want)
			}
		})
		wg.Go(func() {
			if c, err := s.Add(ctx, fmt.Sprintf("fg1:cc:%d", i), int64(i)+1, time.Minute); err != nil || c != int64(i)+1 {
				t.Errorf("Add = %d, %v; want %d", c, err, i+1)
			}
		})
	}
	release(3 * n)
	wg.Wait()
	if ex, calls := p.counts(); ex-ex0 != 1 || calls-calls0 != 3*n {
		t.Fatalf("%d calls went out in %d exchanges, want %d in 1", calls-calls0, ex-ex0, 3*n)
	}
	for i := range n {
		key := fmt.Sprintf("fg1:cv:%d", n+i)
		want := key
		if i%2 == 0 {
			want = "new"
		}
		if v, _, err := s.GetVersioned(ctx, key); err != nil || string(v) != want {
			t.Errorf("%s after = %q, %v; want %q", key, v, err, want)
		}
	}
}

// TestPipelineBatchBound checks that one exchange carries calls up to
// maxBatchKeys keys, a value written counting its bytes too, and always at
// least one call, however many keys it has.
func TestPipelineBatchBound(t *testing.T) {
	mc := testutil.StartMemcached(t)
	s := newStore(t, []string{mc.Addr()}, Config{Timeout: generous, MaxConns: 1})
	p := pipe(t, s)
	ctx := context.Background()
	keys := func(n int) []string {
		var ks []string
		for i := range n {
			ks = append(ks, fmt.Sprintf("fg1:b:%d", i))
		}
		return ks
	}
	tests := []struct {
		name          string
		op            string // batch (of keys keys), read (a value) or write (a value of keys bytes)
		calls, keys   int
		wantExchanges uint64
	}{
		{"small calls share one exchange", "batch", 8, 64, 1},       // 8 × 64 = 512 keys
		{"a ninth call of 64 keys does not fit", "batch", 9, 64, 2}, // 512 + 64
		{"calls over the bound go one by one", "batch", 3, maxBatchKeys + 1, 3},
		{"value reads count one key each", "read", maxBatchKeys, 0, 1},
		{"a value written counts a key per 128 bytes", "write", 4, (maxBatchKeys/2 - 1) * valueBytesPerKey, 2}, // 2 × 256
		{"a value of 64 KiB goes alone", "write", 3, 64 << 10, 3},
	}
	for _, tc := range tests {
		ex0, _ := p.counts()
		release := hold(t, p)
		var wg sync.WaitGroup
		for i := range tc.calls {
			wg.Go(func() {
				var err error
				switch tc.op {
				case "read":
					_, _, err = s.GetVersioned(ctx, fmt.Sprintf("fg1:v:%d", i))
				case "write":
					_, err = s.CompareAndSwap(ctx, fmt.Sprintf("fg1:w:%d", i), make([]byte, tc.keys), 0, time.Minute)
				default:
					_, _, err = s.Batch(ctx, keys(tc.keys), nil)
				}
				if err != nil {
					t.Error(err)
				}
			})
		}
		release(tc.calls)
		wg.Wait()
		if ex, _ := p.counts(); ex-ex0 != tc.wantExchanges {
			t.Errorf("%s: %d exchanges, want %d", tc.name, ex-ex0, tc.wantExchanges)
		}
	}
}

// TestPipelineQueuedCancel checks that a call whose context ends while it
// waits in the queue fails with the context's error and is never sent.
func TestPipelineQueuedCancel(t *testing.T) {
	mc := testutil.StartMemcached(t)
	s := newStore(t, []string{mc.Addr()}, Config{Timeout: generous, MaxConns: 1})
	p := pipe(t, s)
	release := hold(t, p)

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := s.Add(ctx, "fg1:x:cancelled", 1, time.Minute)
		errc <- err
	}()
	var other error
	var wg sync.WaitGroup
	wg.Go(func() { _, other = s.Add(context.Background(), "fg1:x:kept", 1, time.Minute) })
	// Both calls queued; cancel the first and let the queue go.
	waitQueued(t, p, 2)
	if n := s.PipelineStats().InFlight.Load(); n != 2 {
		t.Errorf("%d calls in flight with two queued, want 2", n)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) || !errors.Is(err, limiter.ErrOverloaded) {
		t.Fatalf("cancelled call: %v, want context.Canceled wrapped in ErrOverloaded (and so ErrStoreUnavailable)", err)
	}
	release(1)
	wg.Wait()
	if other != nil {
		t.Fatal(other)
	}
	if st := s.PipelineStats(); st.Saturated.Load() != 1 || st.InFlight.Load() != 0 {
		t.Errorf("%d calls saturated and %d in flight, want the cancelled one and none", st.Saturated.Load(), st.InFlight.Load())
	}
	vals, err := s.Get(context.Background(), []string{"fg1:x:cancelled", "fg1:x:kept"})
	if err != nil {
		t.Fatal(err)
	}
	if _, sent := vals["fg1:x:cancelled"]; sent || vals["fg1:x:kept"] != 1 {
		t.Fatalf("counters %v: want only fg1:x:kept, at 1", vals)
	}
}

// TestPipelineFailureReachesTheQueue checks that when a server stops
// answering, every call of the exchange fails within the timeout, and the
// calls queued behind it get a connection of their own once it is back.
func TestPipelineFailureReachesTheQueue(t *testing.T) {
	mc := testutil.StartMemcached(t)
	const timeout = 300 * time.Millisecond
	s := newStore(t, []string{mc.Addr()}, Config{Timeout: timeout, MaxConns: 1})
	ctx := context.Background()
	if _, err := s.Add(ctx, "fg1:f:1", 1, time.Minute); err != nil {
		t.Fatal(err)
	}
	mc.Freeze()
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() { _, errs[i] = s.Add(ctx, "fg1:f:1", 1, time.Minute) })
	}
	wg.Wait()
	mc.Thaw()
	for i, err := range errs {
		if !errors.Is(err, limiter.ErrStoreUnavailable) {
			t.Fatalf("call %d against a frozen server: %v, want ErrStoreUnavailable", i, err)
		}
	}
	// The failed connections were closed, not reused: the next call dials.
	v, err := s.Add(ctx, "fg1:f:2", 1, time.Minute)
	if err != nil || v != 1 {
		t.Fatalf("Add after the server came back = %d, %v", v, err)
	}
}

// BenchmarkBatchParallel is many concurrent decisions on memcached, each a
// read and two increments: with one connection per call (conns=64) every
// call is a round trip of its own; with fewer connections, the calls that
// wait go out together. It reports the calls each round trip carried.
func BenchmarkBatchParallel(b *testing.B) {
	mc := testutil.StartMemcached(b)
	for _, conns := range []int{64, 4, 2, 1} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			// A generous timeout: other work on the machine may stall
			// memcached, and this measures throughput, not timeouts.
			s := newStore(b, []string{mc.Addr()}, Config{MaxConns: conns, Timeout: generous})
			p := s.set.Load().servers[0].pipe
			ctx := context.Background()
			ex0, calls0 := p.counts()
			b.ReportAllocs()
			b.SetParallelism(32) // × GOMAXPROCS goroutines
			b.RunParallel(func(pb *testing.PB) {
				gets := []string{"fg1:bench:1800000000"}
				adds := []limiter.Increment{{Key: "fg1:bench:1800000001", Delta: 1, TTL: time.Hour}, {Key: "fg1:bench:m30000000", Delta: 1, TTL: time.Hour}}
				for pb.Next() {
					if _, _, err := s.Batch(ctx, gets, adds); err != nil {
						b.Error(err)
						return
					}
				}
			})
			ex, calls := p.counts()
			if ex > ex0 {
				b.ReportMetric(float64(calls-calls0)/float64(ex-ex0), "calls/roundtrip")
			}
		})
	}
}

// TestPipelineQueuedTimeout checks that calls still queued when their
// timeout has passed fail when a connection comes free, and are not sent.
func TestPipelineQueuedTimeout(t *testing.T) {
	mc := testutil.StartMemcached(t)
	const timeout = 100 * time.Millisecond
	s := newStore(t, []string{mc.Addr()}, Config{Timeout: timeout, MaxConns: 1})
	p := pipe(t, s)
	release := hold(t, p)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Go(func() { _, errs[i] = s.Add(context.Background(), fmt.Sprintf("fg1:t:%d", i), 1, time.Minute) })
	}
	waitQueued(t, p, 2)
	// Not a wait for another goroutine: the calls' own deadline, on the
	// real clock of the socket they would be sent on, must pass while they
	// are queued.
	time.Sleep(timeout + 50*time.Millisecond)
	release(2)
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.Is(err, limiter.ErrOverloaded) {
			t.Errorf("call %d: %v, want a deadline error wrapped in ErrOverloaded (and so ErrStoreUnavailable)", i, err)
		}
	}
	if n := s.PipelineStats().Saturated.Load(); n != 2 {
		t.Errorf("%d calls saturated, want the 2 that timed out queued", n)
	}
	vals, err := s.Get(context.Background(), []string{"fg1:t:0", "fg1:t:1"})
	if err != nil || len(vals) != 0 {
		t.Fatalf("Get = %v, %v; want nothing sent", vals, err)
	}
	// The pipeline still serves calls.
	if v, err := s.Add(context.Background(), "fg1:t:2", 1, time.Minute); err != nil || v != 1 {
		t.Fatalf("Add after = %d, %v", v, err)
	}
}
