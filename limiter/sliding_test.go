package limiter

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// t0 is an arbitrary instant on a minute boundary; tests count from it.
var t0 = time.Unix(1_800_000_000-1_800_000_000%60, 0)

func sec(n int) time.Time { return t0.Add(time.Duration(n) * time.Second) }

// clock is a test clock shared by a testStore and the decisions of a test.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.now = t; c.mu.Unlock() }

// rig is a store and some Sliding replicas sharing it, on a test clock.
type rig struct {
	clock    *clock
	store    *countingStore
	replicas []*Sliding
}

func newRig(t *testing.T, replicas int) *rig {
	t.Helper()
	c := &clock{now: t0}
	mem := newTestStore(c.Now)
	t.Cleanup(func() { mem.Close() })
	r := &rig{clock: c, store: &countingStore{Store: mem}}
	for range replicas {
		s := NewSliding(r.store, SlidingConfig{})
		t.Cleanup(func() { s.Close() })
		r.replicas = append(r.replicas, s)
	}
	return r
}

// at decides one request on replica i at instant now.
func (r *rig) at(t *testing.T, i int, req Request, now time.Time) Decision {
	t.Helper()
	r.clock.Set(now)
	d, err := r.replicas[i].Allow(context.Background(), req, now)
	if err != nil {
		t.Fatalf("Allow(%+v, %v): %v", req, now, err)
	}
	return d
}

// countingStore counts round trips and keys read; it wraps a real Store.
type countingStore struct {
	Store
	gets, adds, keys, swaps atomic.Int64
}

// calls returns every round trip made through c.
func (c *countingStore) calls() int64 { return c.gets.Load() + c.adds.Load() + c.swaps.Load() }

func (c *countingStore) GetVersioned(ctx context.Context, key string) ([]byte, uint64, error) {
	c.swaps.Add(1)
	return c.Store.GetVersioned(ctx, key)
}

func (c *countingStore) CompareAndSwap(ctx context.Context, key string, value []byte, version uint64, ttl time.Duration) (bool, error) {
	c.swaps.Add(1)
	return c.Store.CompareAndSwap(ctx, key, value, version, ttl)
}

func (c *countingStore) Add(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	c.adds.Add(1)
	return c.Store.Add(ctx, key, delta, ttl)
}

func (c *countingStore) Get(ctx context.Context, keys []string) (map[string]int64, error) {
	c.gets.Add(1)
	c.keys.Add(int64(len(keys)))
	return c.Store.Get(ctx, keys)
}

// Batch makes countingStore a store that cannot batch: each add and the
// read are a round trip of their own, counted as such.
func (c *countingStore) Batch(ctx context.Context, gets []string, adds []Increment) (map[string]int64, []int64, error) {
	return BatchSequentially(ctx, c, gets, adds)
}

// failingStore fails every call, like an unreachable memcached.
type failingStore struct{}

func (failingStore) Batch(context.Context, []string, []Increment) (map[string]int64, []int64, error) {
	return nil, nil, fmt.Errorf("batch: %w: connection refused", ErrStoreUnavailable)
}

func (failingStore) GetVersioned(context.Context, string) ([]byte, uint64, error) {
	return nil, 0, fmt.Errorf("gets: %w: connection refused", ErrStoreUnavailable)
}

func (failingStore) CompareAndSwap(context.Context, string, []byte, uint64, time.Duration) (bool, error) {
	return false, fmt.Errorf("cas: %w: connection refused", ErrStoreUnavailable)
}

func (failingStore) Add(context.Context, string, int64, time.Duration) (int64, error) {
	return 0, fmt.Errorf("add: %w: connection refused", ErrStoreUnavailable)
}

func (failingStore) Get(context.Context, []string) (map[string]int64, error) {
	return nil, fmt.Errorf("get: %w: connection refused", ErrStoreUnavailable)
}

var hourly = Request{Requestor: "ip:192.0.2.1", Limit: 100, Window: time.Hour}

// TestSlidingScenarios plays the request patterns of the core issue and
// checks every decision.
func TestSlidingScenarios(t *testing.T) {
	type hit struct {
		at      int // seconds after t0
		allowed bool
		retry   int // expected RetryAfter in seconds; -1: don't check
	}
	spread := func(n, from, every, allowedFirst, retryBase int) []hit {
		var hs []hit
		for i := range n {
			h := hit{at: from + i*every, allowed: i < allowedFirst, retry: -1}
			if !h.allowed {
				// The oldest counted request is the first one.
				h.retry = from + 3600 - h.at
				if retryBase >= 0 {
					h.retry = retryBase - h.at
				}
			}
			hs = append(hs, h)
		}
		return hs
	}
	tests := []struct {
		name string
		hits []hit
	}{
		{"burst of 101, the 101st denied for the whole hour", spread(101, 0, 0, 100, -1)},
		{"200 evenly over 30 minutes: first 100 allowed", spread(200, 0, 9, 100, -1)},
		{"100 evenly over the hour: all allowed", spread(100, 0, 36, 100, -1)},
		{"200 evenly over the hour: first 100 allowed", spread(200, 0, 18, 100, -1)},
		{"window edge: second 3599 denied, 3600 allowed", append(spread(100, 0, 0, 100, -1),
			hit{at: 3599, allowed: false, retry: 1},
			hit{at: 3600, allowed: true, retry: -1},
		)},
		{"retry points at the second the oldest bucket leaves", append(
			append(spread(40, 10, 0, 40, -1), spread(60, 70, 1, 60, -1)...),
			hit{at: 200, allowed: false, retry: 10 + 3600 - 200},
			hit{at: 3609, allowed: false, retry: 1},
			hit{at: 3610, allowed: true, retry: -1},
			hit{at: 3611, allowed: true, retry: -1},
		)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, 1)
			for i, h := range tc.hits {
				d := r.at(t, 0, hourly, sec(h.at))
				if d.Allowed != h.allowed {
					t.Fatalf("hit %d at +%ds: allowed=%v, want %v (%+v)", i, h.at, d.Allowed, h.allowed, d)
				}
				if h.retry >= 0 && d.RetryAfter != time.Duration(h.retry)*time.Second {
					t.Fatalf("hit %d at +%ds: RetryAfter=%v, want %ds", i, h.at, d.RetryAfter, h.retry)
				}
				if !d.Allowed && d.Remaining != 0 {
					t.Fatalf("hit %d: denied with Remaining=%d", i, d.Remaining)
				}
			}
		})
	}
}

func TestSlidingInterleavedClients(t *testing.T) {
	r := newRig(t, 1)
	allowed := map[string]int{}
	for i := range 330 {
		req := hourly
		req.Requestor = fmt.Sprintf("ip:198.51.100.%d", i%3)
		if r.at(t, 0, req, sec(i/10)).Allowed {
			allowed[req.Requestor]++
		}
	}
	for who, n := range allowed {
		if n != 100 {
			t.Errorf("%s: %d allowed, want 100", who, n)
		}
	}
	if len(allowed) != 3 {
		t.Errorf("%d clients allowed anything, want 3", len(allowed))
	}
}

func TestSlidingRemainingAndRetry(t *testing.T) {
	r := newRig(t, 1)
	req := Request{Requestor: "k", Limit: 5, Window: 10 * time.Second}
	// Buckets: second 0 holds 2, second 3 holds 1, second 7 holds 2.
	for _, s := range []int{0, 0, 3, 7} {
		r.at(t, 0, req, sec(s))
	}
	d := r.at(t, 0, req, sec(7))
	if !d.Allowed || d.Remaining != 0 || d.RetryAfter != 3*time.Second {
		t.Fatalf("5th request: %+v, want allowed, remaining 0, retry 3s", d)
	}
	d = r.at(t, 0, req, sec(8))
	if d.Allowed || d.RetryAfter != 2*time.Second {
		t.Fatalf("at +8s: %+v, want denied, retry 2s", d)
	}
	if d := r.at(t, 0, req, sec(9)); d.Allowed || d.RetryAfter != time.Second {
		t.Fatalf("at +9s: %+v, want denied, retry 1s", d)
	}
	// A stricter rule on the same counters: 3 per 10s must wait until 3
	// requests left the window (seconds 0 and 3), i.e. second 13.
	strict := req
	strict.Limit = 3
	// Different limits share counters (same scope and window).
	if d := r.at(t, 0, strict, sec(9)); d.Allowed || d.RetryAfter != 4*time.Second {
		t.Fatalf("limit 3 at +9s: %+v, want denied, retry 4s", d)
	}
	if d := r.at(t, 0, req, sec(10)); !d.Allowed || d.Remaining != 1 {
		t.Fatalf("at +10s: %+v, want allowed, remaining 1", d)
	}
}

// TestSlidingScopesAndWindowsDoNotMix checks that counters are separate per
// scope and per window length.
func TestSlidingScopesAndWindowsDoNotMix(t *testing.T) {
	r := newRig(t, 1)
	req := Request{Requestor: "k", Limit: 1, Window: time.Minute}
	variants := []Request{req, {Scope: "login", Requestor: "k", Limit: 1, Window: time.Minute}, {Requestor: "k", Limit: 1, Window: time.Hour}}
	checkApart(t, func(v Request, at time.Time) Decision { return r.at(t, 0, v, at) }, variants)
}

// model is the definition of the sliding window, by brute force over a log
// of allowed requests.
type model struct {
	limit, window int
	log           []int
}

func (m *model) count(from, to int) int {
	n := 0
	for _, s := range m.log {
		if s >= from && s <= to {
			n++
		}
	}
	return n
}

func (m *model) allow(t int) (allowed bool, remaining, retry int) {
	in := m.count(t-m.window+1, t)
	if in < m.limit {
		m.log = append(m.log, t)
		in++
		allowed = true
		remaining = m.limit - in
		if remaining > 0 {
			return true, remaining, 0
		}
	}
	for d := 1; ; d++ {
		if m.count(t+d-m.window+1, t) < m.limit {
			return allowed, remaining, d
		}
	}
}

// TestSlidingMatchesModel drives replicas sharing one store with random
// request times and checks every decision, including the promised retry
// time, against the brute-force definition: three replicas on a store that
// cannot batch (each add and read a round trip), three that batch, and two
// that batch sharing counters with one that does not.
func TestSlidingMatchesModel(t *testing.T) {
	cases := []struct {
		limit  int
		window time.Duration
		gapMax int // seconds between requests, random in [0, gapMax]
		n      int
	}{
		{limit: 20, window: time.Hour, gapMax: 200, n: 600},
		{limit: 20, window: time.Hour, gapMax: 30, n: 800},
		{limit: 100, window: time.Hour, gapMax: 60, n: 800},
		{limit: 3, window: 10 * time.Second, gapMax: 4, n: 500},
		{limit: 1, window: time.Second, gapMax: 2, n: 200},
		{limit: 5, window: 2 * time.Second, gapMax: 1, n: 300},
		{limit: 7, window: 5 * time.Minute, gapMax: 20, n: 600},
	}
	rigs := []struct {
		name string
		new  func(t *testing.T) *rig
	}{
		{"plain", func(t *testing.T) *rig { return newRig(t, 3) }},
		{"batch", func(t *testing.T) *rig { r, _ := newBatchRig(t, 3); return r }},
		{"mixed", func(t *testing.T) *rig { r, _ := newBatchRig(t, 3, 2); return r }},
	}
	for _, rg := range rigs {
		for _, tc := range cases {
			for seed := uint64(1); seed <= 3; seed++ {
				name := fmt.Sprintf("%s/limit=%d/window=%s/gap=%d/seed=%d", rg.name, tc.limit, tc.window, tc.gapMax, seed)
				t.Run(name, func(t *testing.T) {
					rng := rand.New(rand.NewPCG(seed, 42))
					r := rg.new(t)
					req := Request{Requestor: "model", Limit: int64(tc.limit), Window: tc.window}
					m := &model{limit: tc.limit, window: int(tc.window / time.Second)}
					now := 0
					for i := range tc.n {
						// Bursts: sometimes several requests share a second.
						if rng.IntN(3) > 0 {
							now += rng.IntN(tc.gapMax + 1)
						}
						d := r.at(t, rng.IntN(3), req, sec(now))
						allowed, remaining, retry := m.allow(now)
						got := fmt.Sprintf("allowed=%v remaining=%d retry=%v", d.Allowed, d.Remaining, d.RetryAfter)
						want := fmt.Sprintf("allowed=%v remaining=%d retry=%v", allowed, remaining, time.Duration(retry)*time.Second)
						if got != want {
							t.Fatalf("request %d at +%ds: %s, want %s", i, now, got, want)
						}
					}
				})
			}
		}
	}
}

// TestSlidingConcurrentReplicas is the exactness guarantee: 300 concurrent
// checks over 3 replicas sharing one store allow exactly the limit.
func TestSlidingConcurrentReplicas(t *testing.T) {
	r := newRig(t, 3)
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for i := range 300 {
		wg.Go(func() {
			d, err := r.replicas[i%3].Allow(context.Background(), hourly, sec(0))
			if err != nil {
				t.Error(err)
			}
			if d.Allowed {
				allowed.Add(1)
			}
		})
	}
	wg.Wait()
	if n := allowed.Load(); n != 100 {
		t.Fatalf("%d allowed, want exactly 100", n)
	}
	// And a replica that never saw this requestor agrees.
	fresh := NewSliding(r.store, SlidingConfig{})
	d, err := fresh.Allow(context.Background(), hourly, sec(5))
	if err != nil || d.Allowed || d.RetryAfter != 3595*time.Second {
		t.Fatalf("fresh replica: %+v, %v; want denied with retry 3595s", d, err)
	}
}

// TestSlidingRoundTrips pins the cost model: a cold requestor costs one
// bounded read, a returning one a tiny read per new second, and a denied
// one nothing within a second.
func TestSlidingRoundTrips(t *testing.T) {
	r := newRig(t, 1)
	// An hour of history, one request per 40 s, written by another replica.
	other := NewSliding(r.store, SlidingConfig{})
	for s := 0; s < 3600; s += 40 {
		r.clock.Set(sec(s))
		if _, err := other.Allow(context.Background(), hourly, sec(s)); err != nil {
			t.Fatal(err)
		}
	}
	gets0, keys0 := r.store.gets.Load(), r.store.keys.Load()
	r.at(t, 0, hourly, sec(3610))
	if gets, keys := r.store.gets.Load()-gets0, r.store.keys.Load()-keys0; gets != 1 || keys > 180 {
		t.Fatalf("cold load: %d reads of %d keys; want 1 read of at most 180 keys", gets, keys)
	}
	gets, adds := r.store.gets.Load(), r.store.adds.Load()
	r.at(t, 0, hourly, sec(3611))
	if g, a := r.store.gets.Load()-gets, r.store.adds.Load()-adds; g != 1 || a != 2 {
		t.Fatalf("returning requestor: %d reads and %d adds; want 1 and 2", g, a)
	}
	// Use up the quota: a denied requestor then costs a read, and no
	// count, while its seconds are fresh, and nothing once they settled.
	for r.at(t, 0, hourly, sec(3612)).Allowed {
	}
	gets, adds = r.store.gets.Load(), r.store.adds.Load()
	for range 50 {
		if r.at(t, 0, hourly, sec(3612)).Allowed {
			t.Fatal("allowed past the limit")
		}
	}
	if g, a := r.store.gets.Load()-gets, r.store.adds.Load()-adds; g != 50 || a != 0 {
		t.Fatalf("denied within a second: %d reads, %d adds; want 50 and none", g, a)
	}
	settled := sec(3612 + int(r.replicas[0].lag))
	r.at(t, 0, hourly, settled)
	gets, adds = r.store.gets.Load(), r.store.adds.Load()
	for range 50 {
		if r.at(t, 0, hourly, settled).Allowed {
			t.Fatal("allowed past the limit")
		}
	}
	if g, a := r.store.gets.Load()-gets, r.store.adds.Load()-adds; g != 0 || a != 0 {
		t.Fatalf("denied on settled seconds: %d reads, %d adds; want none", g, a)
	}
}

func TestSlidingStoreFailure(t *testing.T) {
	s := NewSliding(failingStore{}, SlidingConfig{})
	_, err := s.Allow(context.Background(), hourly, sec(0))
	if !errors.Is(err, ErrStoreUnavailable) {
		t.Fatalf("err = %v, want ErrStoreUnavailable", err)
	}
	if !strings.Contains(err.Error(), "sliding window") {
		t.Errorf("err = %q lacks context", err)
	}
}

func TestSlidingRejectsBadRequests(t *testing.T) {
	r := newRig(t, 1)
	for _, req := range []Request{
		{Requestor: "k", Limit: 0, Window: time.Hour},
		{Requestor: "k", Limit: 1, Window: 500 * time.Millisecond},
		{Requestor: "k", Limit: 1, Window: 1500 * time.Millisecond},
	} {
		if _, err := r.replicas[0].Allow(context.Background(), req, sec(0)); err == nil {
			t.Errorf("%+v: no error", req)
		}
	}
}

func TestSlidingEvictsIdleRequestors(t *testing.T) {
	r := newRig(t, 0)
	s := NewSliding(r.store, SlidingConfig{MaxRequestors: 640})
	req := Request{Limit: 10, Window: time.Minute}
	for i := range 5000 {
		req.Requestor = fmt.Sprint("ip:", i)
		r.clock.Set(sec(i / 100))
		if _, err := s.Allow(context.Background(), req, sec(i/100)); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	for i := range s.shards {
		n += len(s.shards[i].m)
	}
	if n > 640 {
		t.Fatalf("%d cached histories, want at most 640", n)
	}
}

func TestRequestorIDAndKeys(t *testing.T) {
	hostile := []string{"", "a b", "\r\nset x 0 0 1\r\n", strings.Repeat("x", 65536), "\x00\xff\x7f", "ключ"}
	seen := map[string]bool{}
	for _, h := range hostile {
		id := RequestorID("", 3600, h)
		for _, k := range []string{secondKey(id, 1_800_000_000), minuteKey(id, 30_000_000)} {
			if len(k) > 250 {
				t.Errorf("key %q longer than memcached allows", k)
			}
			for _, c := range []byte(k) {
				if c <= ' ' || c == 0x7f {
					t.Errorf("key %q has byte %#x", k, c)
				}
			}
		}
		if seen[id] {
			t.Errorf("collision for %q", h)
		}
		seen[id] = true
	}
	if RequestorID("a", 60, "b") == RequestorID("", 60, "ab") || RequestorID("", 60, "k") == RequestorID("", 61, "k") {
		t.Error("scope or window does not separate identities")
	}
}

func FuzzRequestorID(f *testing.F) {
	f.Add("", "ip:127.0.0.1")
	f.Add("login", "header:x-api-key:\r\nquit\r\n")
	f.Fuzz(func(t *testing.T, scope, requestor string) {
		k := secondKey(RequestorID(scope, 3600, requestor), 1_800_000_000)
		if len(k) != len(KeyPrefix)+22+1+10 {
			t.Fatalf("key %q has length %d", k, len(k))
		}
		for _, c := range []byte(k) {
			if c <= ' ' || c >= 0x7f {
				t.Fatalf("key %q has byte %#x", k, c)
			}
		}
	})
}

func BenchmarkRequestorID(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = secondKey(RequestorID("", 3600, "ip:203.0.113.7"), 1_800_000_000)
	}
}

// TestSlidingMinuteAggregateLost: a minute aggregate that memcached evicted
// (or that missed an increment) is recreated by the next count with only
// that count in it. The replica that knows the minute's settled seconds
// decides on the seconds instead and puts the lost counts back, so that a
// replica that knows nothing of the requestor is not fooled either.
func TestSlidingMinuteAggregateLost(t *testing.T) {
	c := &clock{now: t0}
	mem := newTestStore(c.Now)
	warm, cold := NewSliding(mem, SlidingConfig{}), NewSliding(mem, SlidingConfig{})
	req := Request{Requestor: "k", Limit: 10, Window: time.Hour}
	id := RequestorID("", 3600, "k")
	minute := minuteKey(id, floorDiv(sec(10).Unix(), minuteSeconds))
	decide := func(s *Sliding, at time.Time) Decision {
		t.Helper()
		c.Set(at)
		d, err := s.Allow(context.Background(), req, at)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	for i := range 8 {
		if d := decide(warm, sec(10)); !d.Allowed {
			t.Fatalf("request %d at second 10 denied", i)
		}
	}
	decide(warm, sec(30)) // the ninth; second 10 is settled and cached now
	mem.mu.Lock()
	delete(mem.counters, minute)
	mem.mu.Unlock()

	var got []bool
	for range 3 {
		got = append(got, decide(warm, sec(31)).Allowed)
	}
	if want := []bool{true, false, false}; !slices.Equal(got, want) {
		t.Errorf("after the minute's aggregate was lost, the warm replica allowed %v, want %v", got, want)
	}
	if d := decide(cold, sec(32)); d.Allowed {
		t.Errorf("a replica that had not seen the requestor allowed the 11th request: %+v", d)
	}
	mem.mu.Lock()
	n := mem.counters[minute].n
	mem.mu.Unlock()
	if n != 10 {
		t.Errorf("the minute's aggregate holds %d after the repair, want the 10 requests counted in it", n)
	}
}

// TestSlidingLastOfQuotaRetryTime: the request that takes the last of the
// quota learns when the next will be let in, also on a replica that did
// not know the requestor was near its limit (whose count read no second of
// the minute, the minute's aggregate answering for them), and at once
// with another replica's requests in the fresh seconds.
func TestSlidingLastOfQuotaRetryTime(t *testing.T) {
	for _, tc := range []struct {
		name  string
		early int // requests at second 10, on replica 0
		late  int // requests at second 19 on replica 0, fresh at replica 1's
		want  time.Duration
	}{
		{name: "the rest settled", early: 9, want: 3590 * time.Second},
		{name: "the rest fresh", late: 9, want: 3599 * time.Second},
		{name: "both", early: 4, late: 5, want: 3590 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &clock{now: t0}
			mem := newTestStore(c.Now)
			reps := []*Sliding{NewSliding(mem, SlidingConfig{}), NewSliding(mem, SlidingConfig{})}
			req := Request{Requestor: "k", Limit: 10, Window: time.Hour}
			decide := func(rep, at int) Decision {
				t.Helper()
				c.Set(sec(at))
				d, err := reps[rep].Allow(context.Background(), req, sec(at))
				if err != nil {
					t.Fatal(err)
				}
				return d
			}
			for range tc.early {
				decide(0, 10)
			}
			for range tc.late {
				decide(0, 19)
			}
			d := decide(1, 20)
			if !d.Allowed || d.Remaining != 0 || d.RetryAfter != tc.want {
				t.Errorf("the 10th request: %+v, want allowed, 0 remaining, retry after %v", d, tc.want)
			}
			next := decide(1, 20+int(tc.want/time.Second)-1)
			if next.Allowed {
				t.Errorf("a request a second before the retry time was allowed")
			}
			if next := decide(1, 20+int(tc.want/time.Second)); !next.Allowed {
				t.Errorf("a request at the retry time was denied: %+v", next)
			}
		})
	}
}
