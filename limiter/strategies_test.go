package limiter

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/internal/testutil"
)

// builders makes each strategy of this file's tests on a Store.
var builders = []struct {
	name  string
	build func(Store) Strategy
}{
	{StrategyFixed, func(st Store) Strategy { return NewFixed(st, StrategyConfig{MaxClockSkew: -1}) }},
	{StrategyTokenBucket, func(st Store) Strategy { return NewTokenBucket(st, StrategyConfig{MaxClockSkew: -1}) }},
	{StrategySlidingLog, func(st Store) Strategy { return NewSlidingLog(st, StrategyConfig{MaxClockSkew: -1}) }},
}

// strategyRig is a testStore on a test clock and some instances of one
// strategy sharing it, as replicas would.
type strategyRig struct {
	clock *clock
	store *countingStore
	insts []Strategy
}

func newStrategyRig(t testing.TB, n int, build func(Store) Strategy) *strategyRig {
	t.Helper()
	c := &clock{now: t0}
	mem := newTestStore(c.Now)
	t.Cleanup(func() { mem.Close() })
	r := &strategyRig{clock: c, store: &countingStore{Store: mem}}
	for range n {
		r.insts = append(r.insts, build(r.store))
	}
	return r
}

// at decides one request on instance i at now, with the store's clock at now.
func (r *strategyRig) at(t testing.TB, i int, req Request, now time.Time) Decision {
	t.Helper()
	r.clock.Set(now)
	d, err := r.insts[i].Allow(context.Background(), req, now)
	if err != nil {
		t.Fatalf("Allow(%+v) at %v: %v", req, now.Sub(t0), err)
	}
	return d
}

// scenarioHit is one request of a scenario: when, and the decision it must
// get.
type scenarioHit struct {
	at      time.Duration // after t0
	allowed bool
	remain  int64
	retry   time.Duration
}

// playScenario decides req for one requestor at each hit's instant on one
// instance of build, and checks every decision.
func playScenario(t *testing.T, build func(Store) Strategy, req Request, hits []scenarioHit) {
	t.Helper()
	r := newStrategyRig(t, 1, build)
	req.Requestor = "ip:198.51.100.7"
	for i, h := range hits {
		d := r.at(t, 0, req, t0.Add(h.at))
		want := Decision{Allowed: h.allowed, Limit: req.Limit, Window: req.Window, Remaining: h.remain, RetryAfter: h.retry}
		if d != want {
			t.Fatalf("hit %d at +%v: %+v, want %+v", i, h.at, d, want)
		}
	}
}

// checkApart checks that each of variants, each a limit of 1, has a value
// or counter of its own: each is allowed at sec(0) and denied at sec(1).
func checkApart(t *testing.T, decide func(Request, time.Time) Decision, variants []Request) {
	t.Helper()
	for _, v := range variants {
		if d := decide(v, sec(0)); !d.Allowed {
			t.Fatalf("%+v: first request denied", v)
		}
	}
	for _, v := range variants {
		if d := decide(v, sec(1)); d.Allowed {
			t.Fatalf("%+v: second request allowed", v)
		}
	}
}

// checkSeparation checks that scopes, windows and requestors have values
// of their own under build's strategy, while limits share them: a limit of
// 3 after one request has 1 remaining. It returns the rig and that
// request, for checks of the strategy's own.
func checkSeparation(t *testing.T, build func(Store) Strategy) (*strategyRig, Request) {
	t.Helper()
	r := newStrategyRig(t, 1, build)
	base := Request{Requestor: "k", Limit: 1, Window: time.Minute}
	variants := []Request{
		base,
		{Scope: "login", Requestor: "k", Limit: 1, Window: time.Minute},
		{Requestor: "k", Limit: 1, Window: time.Hour},
		{Requestor: "other", Limit: 1, Window: time.Minute},
	}
	checkApart(t, func(v Request, at time.Time) Decision { return r.at(t, 0, v, at) }, variants)
	// A looser limit on the same counter sees the request already counted.
	loose := base
	loose.Limit = 3
	if d := r.at(t, 0, loose, sec(2)); !d.Allowed || d.Remaining != 1 {
		t.Fatalf("limit 3 after one request: %+v, want allowed with 1 remaining", d)
	}
	return r, loose
}

// ms returns the instant n milliseconds after t0.
func ms(n int64) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }

// contendedStore loses every CompareAndSwap, as if other replicas always
// wrote first.
type contendedStore struct{ Store }

func (contendedStore) CompareAndSwap(context.Context, string, []byte, uint64, time.Duration) (bool, error) {
	return false, nil
}

// refModel is the brute-force definition of a strategy, in milliseconds.
type refModel interface {
	// wouldAllow reports whether a request at ms would be allowed, without
	// counting it.
	wouldAllow(ms int64) bool
	// take counts a request at ms that wouldAllow allowed, and returns how
	// many more would be allowed at ms.
	take(ms int64) (remaining int64)
}

// modelDecide is what the definition m says of a request at ms: whether it
// is allowed (and then counted), the remaining count, and the retry time:
// the smallest whole number of seconds after which, with no other request
// meanwhile, a request would be allowed.
func modelDecide(t testing.TB, m refModel, at int64) Decision {
	t.Helper()
	var d Decision
	if m.wouldAllow(at) {
		d.Allowed = true
		d.Remaining = m.take(at)
		if d.Remaining > 0 {
			return d
		}
	}
	for s := int64(1); ; s++ {
		if m.wouldAllow(at + s*1000) {
			d.RetryAfter = time.Duration(s) * time.Second
			return d
		}
		if s > int64(maxRetryAfter/time.Second) {
			t.Fatalf("model: no request allowed within %v of +%dms", maxRetryAfter, at)
		}
	}
}

// modelCase is one random-sequence test of a strategy against its model.
type modelCase struct {
	req    Request
	gapMax int64 // milliseconds between requests, random in [0, gapMax]
	n      int
}

// testMatchesModel drives three instances sharing one store with random
// request instants and checks every decision against the definition,
// including the promised retry time: after a denial the sequence often
// jumps to exactly the promised instant, where the request must be allowed.
func testMatchesModel(t *testing.T, build func(Store) Strategy, newModel func(Request) refModel, cases []modelCase) {
	for _, tc := range cases {
		for seed := uint64(1); seed <= 4; seed++ {
			name := fmt.Sprintf("limit=%d/burst=%d/window=%s/gap=%dms/seed=%d", tc.req.Limit, tc.req.Burst, tc.req.Window, tc.gapMax, seed)
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				rng := rand.New(rand.NewPCG(seed, 7))
				r := newStrategyRig(t, 3, build)
				m := newModel(tc.req)
				var at int64            // milliseconds after t0
				var nanos time.Duration // within the millisecond
				var promise time.Duration
				for i := range tc.n {
					switch {
					case promise > 0:
						// Come back exactly when a denial promised, with the
						// same sub-millisecond offset.
						at += promise.Milliseconds()
					case i > 0 && rng.IntN(3) == 0:
						// A burst: another request in the same millisecond.
					default:
						at += rng.Int64N(tc.gapMax + 1)
						nanos = time.Duration(rng.IntN(1_000_000))
					}
					got := r.at(t, rng.IntN(3), tc.req, ms(at).Add(nanos))
					want := modelDecide(t, m, at)
					want.Limit, want.Window = tc.req.Limit, tc.req.Window
					if got != want {
						t.Fatalf("request %d at +%dms: got %+v, want %+v", i, at, got, want)
					}
					if promise > 0 && !got.Allowed {
						t.Fatalf("request %d at +%dms: denied after waiting the promised %v", i, at, promise)
					}
					promise = 0
					if !got.Allowed && rng.IntN(2) == 0 {
						promise = got.RetryAfter
					}
				}
			})
		}
	}
}

// TestStrategiesConcurrentReplicas is the exactness guarantee: 300
// concurrent checks over 3 instances sharing one store allow exactly the
// limit, and then every instance denies.
func TestStrategiesConcurrentReplicas(t *testing.T) {
	for _, b := range builders {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			r := newStrategyRig(t, 3, b.build)
			req := Request{Requestor: "ip:192.0.2.1", Limit: 100, Window: time.Hour}
			now := sec(30)
			allowed := testutil.Burst(t, 300, func(i int) (bool, error) {
				d, err := r.insts[i%3].Allow(context.Background(), req, now)
				return d.Allowed, err
			})
			if n := allowed; n != 100 {
				t.Fatalf("%d allowed, want exactly 100", n)
			}
			fresh := b.build(r.store)
			for i, s := range append(r.insts, fresh) {
				if d, err := s.Allow(context.Background(), req, now.Add(time.Second)); err != nil || d.Allowed || d.RetryAfter < time.Second {
					t.Fatalf("instance %d a second later: %+v, %v; want denied", i, d, err)
				}
			}
		})
	}
}

// usedUpRig returns a rig of one instance built by build, and a request
// whose limit of 3 a minute that instance has used up at sec(1).
func usedUpRig(t *testing.T, build func(Store) Strategy) (*strategyRig, Request) {
	t.Helper()
	r := newStrategyRig(t, 1, build)
	req := Request{Requestor: "k", Limit: 3, Window: time.Minute}
	for range 3 {
		r.at(t, 0, req, sec(1))
	}
	return r, req
}

// TestStrategiesDeniedCostNothing pins the cost model: once an instance has
// seen a requestor's quota used up, its further denials cost no store round
// trip until the promised retry time.
func TestStrategiesDeniedCostNothing(t *testing.T) {
	for _, b := range builders {
		t.Run(b.name, func(t *testing.T) {
			r, req := usedUpRig(t, b.build)
			calls := r.store.calls()
			var retry time.Duration
			for i := range 50 {
				d := r.at(t, 0, req, sec(1).Add(time.Duration(i)*time.Millisecond))
				if d.Allowed {
					t.Fatalf("request %d past the limit allowed", i)
				}
				retry = d.RetryAfter
			}
			if n := r.store.calls() - calls; n != 0 {
				t.Fatalf("50 denials made %d store calls, want 0", n)
			}
			if d := r.at(t, 0, req, sec(1).Add(retry)); !d.Allowed {
				t.Fatalf("after the promised %v: %+v, want allowed", retry, d)
			}
		})
	}
}

func TestStrategiesStoreFailure(t *testing.T) {
	for _, b := range builders {
		t.Run(b.name, func(t *testing.T) {
			_, err := b.build(failingStore{}).Allow(context.Background(), hourly, sec(0))
			if !errors.Is(err, ErrStoreUnavailable) {
				t.Fatalf("err = %v, want ErrStoreUnavailable", err)
			}
			if want := strings.ReplaceAll(b.name, "-", " "); !strings.Contains(err.Error(), want) {
				t.Errorf("err = %q does not name the strategy", err)
			}
		})
	}
}

func TestStrategiesRejectBadRequests(t *testing.T) {
	bad := []Request{
		{Requestor: "k", Limit: 0, Window: time.Hour},
		{Requestor: "k", Limit: -1, Window: time.Hour},
		{Requestor: "k", Limit: 1, Window: 500 * time.Millisecond},
		{Requestor: "k", Limit: 1, Window: 1500 * time.Millisecond},
		{Requestor: "k", Limit: 1, Window: MaxWindow + time.Second},
		{Requestor: "k", Limit: 1, Window: time.Hour, Burst: -1},
	}
	for _, b := range builders {
		t.Run(b.name, func(t *testing.T) {
			r := newStrategyRig(t, 1, b.build)
			for _, req := range bad {
				if _, err := r.insts[0].Allow(context.Background(), req, sec(0)); err == nil {
					t.Errorf("%+v: no error", req)
				}
			}
			if r.store.calls() != 0 {
				t.Errorf("bad requests reached the store")
			}
		})
	}
}

// TestSwapStrategiesContention: a decision that keeps losing the
// compare-and-swap race gives up with ErrContention, which is also an
// ErrStoreUnavailable so the failure mode applies.
func TestSwapStrategiesContention(t *testing.T) {
	for _, b := range builders[1:] {
		t.Run(b.name, func(t *testing.T) {
			mem := newTestStore(nil)
			defer mem.Close()
			_, err := b.build(contendedStore{mem}).Allow(context.Background(), hourly, time.Now())
			if !errors.Is(err, ErrContention) || !errors.Is(err, ErrStoreUnavailable) {
				t.Fatalf("err = %v, want ErrContention and ErrStoreUnavailable", err)
			}
		})
	}
}

// TestSwapStrategiesCancelledWhileWaiting: a decision waiting for its turn
// gives up when its context ends.
func TestSwapStrategiesCancelledWhileWaiting(t *testing.T) {
	for _, b := range builders[1:] {
		t.Run(b.name, func(t *testing.T) {
			gate := &gatedStore{Store: newTestStore(nil), entered: make(chan struct{}), release: make(chan struct{})}
			defer gate.Store.(*testStore).Close()
			s := b.build(gate)
			first := make(chan error)
			go func() {
				_, err := s.Allow(context.Background(), hourly, time.Now())
				first <- err
			}()
			<-gate.entered // the first decision holds the turn
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			_, err := s.Allow(ctx, hourly, time.Now())
			if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrStoreUnavailable) {
				t.Errorf("waiting decision: err = %v, want DeadlineExceeded and ErrStoreUnavailable", err)
			}
			close(gate.release)
			if err := <-first; err != nil {
				t.Errorf("first decision: %v", err)
			}
		})
	}
}

// gatedStore blocks the first GetVersioned until release is closed.
type gatedStore struct {
	Store
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (g *gatedStore) GetVersioned(ctx context.Context, key string) ([]byte, uint64, error) {
	g.once.Do(func() {
		close(g.entered)
		<-g.release
	})
	return g.Store.GetVersioned(ctx, key)
}

// TestSwapStrategiesCorruptValue: a value that is not what the strategy
// wrote is reported as a store failure, not guessed at.
func TestSwapStrategiesCorruptValue(t *testing.T) {
	req := Request{Requestor: "k", Limit: 10, Window: time.Minute}
	keys := map[string]string{
		StrategyTokenBucket: valueKey(strategyID("token-bucket/10/10", "", 60, "k"), tokenBucketKind),
		StrategySlidingLog:  valueKey(strategyID(slidingLogTag, "", 60, "k"), slidingLogKind),
	}
	for _, b := range builders[1:] {
		t.Run(b.name, func(t *testing.T) {
			r := newStrategyRig(t, 1, b.build)
			if d := r.at(t, 0, req, sec(0)); !d.Allowed {
				t.Fatalf("first request: %+v", d)
			}
			key := keys[b.name]
			_, v, err := r.store.GetVersioned(context.Background(), key)
			if err != nil || v == 0 {
				t.Fatalf("the strategy wrote no value at %s: %v", key, err)
			}
			if ok, err := r.store.CompareAndSwap(context.Background(), key, []byte("\xff\xff\xff"), v, time.Hour); !ok || err != nil {
				t.Fatalf("corrupting the value: %v %v", ok, err)
			}
			_, err = r.insts[0].Allow(context.Background(), req, sec(1))
			if !errors.Is(err, ErrStoreUnavailable) || !errors.Is(err, errCorruptValue) {
				t.Fatalf("err = %v, want a corrupt-value ErrStoreUnavailable", err)
			}
		})
	}
}

// TestStrategyKeys checks the key formats: short, printable, and distinct
// per strategy for one requestor.
func TestStrategyKeys(t *testing.T) {
	hostile := []string{"", "a b", "\r\nset x 0 0 1\r\n", strings.Repeat("x", 65536), "\x00\xff\x7f", "ключ"}
	seen := map[string]string{}
	for _, h := range hostile {
		id := RequestorID("", 3600, h)
		keys := map[string]string{
			"sliding":      secondKey(id, 1_800_000_000),
			"fixed":        fixedKey(strategyID(fixedTag, "", 3600, h), 500_000),
			"token-bucket": valueKey(strategyID("token-bucket/100/100", "", 3600, h), tokenBucketKind),
			"sliding-log":  valueKey(strategyID(slidingLogTag, "", 3600, h), slidingLogKind),
		}
		for kind, k := range keys {
			if len(k) > 64 {
				t.Errorf("%s key %q is %d bytes", kind, k, len(k))
			}
			for _, c := range []byte(k) {
				if c <= ' ' || c >= 0x7f {
					t.Errorf("%s key %q has byte %#x", kind, k, c)
				}
			}
			prefix := k[:strings.LastIndexByte(k, ':')]
			if other, ok := seen[prefix]; ok {
				t.Errorf("%s key %q shares its identity with %s", kind, k, other)
			}
			seen[prefix] = kind + " of " + fmt.Sprintf("%.10q", h)
		}
	}
	if got := fixedKey("ID", 42); got != "fg1:ID:f42" {
		t.Errorf("fixedKey = %q", got)
	}
	if got := valueKey("ID", 'g'); got != "fg1:ID:g" {
		t.Errorf("valueKey = %q", got)
	}
}

func TestRetryAfter(t *testing.T) {
	tests := []struct {
		until, now int64
		want       time.Duration
	}{
		{1000, 0, time.Second},
		{1001, 0, 2 * time.Second},
		{1, 0, time.Second},
		{0, 0, time.Second},
		{-5000, 0, time.Second},
		{3_600_000, 1, time.Hour},
		{1 << 62, 0, maxRetryAfter},
		{-1 << 62, 1 << 62, time.Second},
	}
	for _, tt := range tests {
		if got := retryAfter(tt.until, tt.now); got != tt.want {
			t.Errorf("retryAfter(%d, %d) = %v, want %v", tt.until, tt.now, got, tt.want)
		}
	}
}

func TestDenialsBounded(t *testing.T) {
	d := newDenials(640)
	for i := range 5000 {
		d.deny(denyKey{id: fmt.Sprint("ip:", i), limit: 1}, int64(i+100), int64(i))
	}
	n := 0
	for i := range d.shards {
		n += len(d.shards[i].m)
	}
	if n > 640 {
		t.Fatalf("%d remembered denials, want at most 640", n)
	}
	if _, ok := d.until(denyKey{id: "ip:4999", limit: 1}, 5000); !ok {
		t.Error("the newest denial was evicted")
	}
	// The instant only moves later.
	k := denyKey{id: "x", limit: 1}
	d.deny(k, 100, 0)
	d.deny(k, 50, 0)
	if u, ok := d.until(k, 60); !ok || u != 100 {
		t.Errorf("until = %d, %v; want 100, true", u, ok)
	}
}

func TestTurns(t *testing.T) {
	tr := newTurns()
	var inside, most atomic.Int64
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			done, err := tr.take(context.Background(), "k")
			if err != nil {
				t.Error(err)
				return
			}
			n := inside.Add(1)
			for {
				m := most.Load()
				if n <= m || most.CompareAndSwap(m, n) {
					break
				}
			}
			time.Sleep(100 * time.Microsecond) // holds the turn a while: the overlap being looked for, not a wait
			inside.Add(-1)
			done()
		})
	}
	wg.Wait()
	if most.Load() != 1 {
		t.Fatalf("%d decisions held one key's turn at once", most.Load())
	}
	for i := range tr.shards {
		if n := len(tr.shards[i].m); n != 0 {
			t.Fatalf("shard %d keeps %d idle turns", i, n)
		}
	}
}

func TestStrategiesRegistry(t *testing.T) {
	if got, want := Strategies(), []string{"sliding", "fixed", "token-bucket", "sliding-log"}; !slices.Equal(got, want) {
		t.Fatalf("Strategies() = %q, want %q", got, want)
	}
	if Strategies()[0] != DefaultStrategy {
		t.Error("the default strategy is not listed first")
	}
	tests := []struct {
		in, want, wantErr string
	}{
		{in: "", want: "sliding"},
		{in: "sliding", want: "sliding"},
		{in: "fixed", want: "fixed"},
		{in: "token-bucket", want: "token-bucket"},
		{in: "sliding-log", want: "sliding-log"},
		{in: "Fixed", wantErr: `unknown strategy "Fixed": want one of sliding, fixed, token-bucket, sliding-log`},
		{in: "leaky", wantErr: `unknown strategy "leaky": want one of sliding, fixed, token-bucket, sliding-log`},
		{in: " fixed", wantErr: `unknown strategy " fixed"`},
	}
	for _, tt := range tests {
		got, err := ParseStrategy(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseStrategy(%q) = %q, %v; want error %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseStrategy(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}

	mem := newTestStore(nil)
	defer mem.Close()
	wantType := map[string]Strategy{"": &Sliding{}, "sliding": &Sliding{}, "fixed": &Fixed{}, "token-bucket": &TokenBucket{}, "sliding-log": &SlidingLog{}}
	for name, want := range wantType {
		s, err := NewStrategy(name, mem, StrategyConfig{MaxRequestors: 100})
		if err != nil {
			t.Fatalf("NewStrategy(%q, testStore): %v", name, err)
		}
		if reflect.TypeOf(s) != reflect.TypeOf(want) {
			t.Errorf("NewStrategy(%q) = %T, want %T", name, s, want)
		}
		if d, err := s.Allow(context.Background(), Request{Requestor: "r" + name, Limit: 1, Window: time.Minute}, time.Now()); err != nil || !d.Allowed {
			t.Errorf("NewStrategy(%q).Allow = %+v, %v", name, d, err)
		}
	}
	if _, err := NewStrategy("fixed", nil, StrategyConfig{}); err == nil {
		t.Error("NewStrategy with a nil store: no error")
	}
	if _, err := NewStrategy("nope", mem, StrategyConfig{}); err == nil || !strings.Contains(err.Error(), "sliding-log") {
		t.Errorf("NewStrategy of an unknown name: err = %v, want one listing the names", err)
	}
}
