package limiter

import (
	"context"
	"math/big"
	"strings"
	"testing"
	"time"
)

func newTokenBucket(st Store) Strategy {
	return NewTokenBucket(st, StrategyConfig{MaxClockSkew: -1})
}

// TestTokenBucketScenarios plays request patterns at injected instants and
// checks every decision.
func TestTokenBucketScenarios(t *testing.T) {
	type hit = scenarioHit
	tests := []struct {
		name string
		req  Request
		hits []hit
	}{
		{
			name: "burst of Limit, then one token per Window/Limit",
			req:  Request{Limit: 3, Window: time.Minute}, // a token every 20s
			hits: []hit{
				{0, true, 2, 0},
				{0, true, 1, 0},
				{0, true, 0, 20 * time.Second},
				{0, false, 0, 20 * time.Second},
				{19 * time.Second, false, 0, time.Second},
				{20 * time.Second, true, 0, 20 * time.Second},
				{50 * time.Second, true, 0, 10 * time.Second}, // 1.5 tokens there, 0.5 left
				{60 * time.Second, true, 0, 20 * time.Second},
				{3 * time.Minute, true, 2, 0}, // full again: never more than Burst
			},
		},
		{
			name: "burst 1 spaces requests evenly",
			req:  Request{Limit: 2, Window: 10 * time.Second, Burst: 1},
			hits: []hit{
				{0, true, 0, 5 * time.Second},
				{4 * time.Second, false, 0, time.Second},
				{5 * time.Second, true, 0, 5 * time.Second},
				{time.Minute, true, 0, 5 * time.Second},
			},
		},
		{
			name: "burst above the limit",
			req:  Request{Limit: 1, Window: time.Second, Burst: 5},
			hits: []hit{
				{0, true, 4, 0},
				{0, true, 3, 0},
				{0, true, 2, 0},
				{0, true, 1, 0},
				{0, true, 0, time.Second},
				{500 * time.Millisecond, false, 0, time.Second},
				{time.Second, true, 0, time.Second},
				{10 * time.Second, true, 4, 0},
			},
		},
		{
			// 3 per second is a token every 333⅓ ms, kept exact: the
			// fractions a request on a whole millisecond leaves add up.
			name: "fractional interval is exact",
			req:  Request{Limit: 3, Window: time.Second},
			hits: []hit{
				{0, true, 2, 0},
				{0, true, 1, 0},
				{0, true, 0, time.Second}, // next token at 333⅓
				{333 * time.Millisecond, false, 0, time.Second},
				{334 * time.Millisecond, true, 0, time.Second}, // next at 666⅔
				{666 * time.Millisecond, false, 0, time.Second},
				{667 * time.Millisecond, true, 0, time.Second}, // next at 1000
				{999 * time.Millisecond, false, 0, time.Second},
				{1000 * time.Millisecond, true, 0, time.Second}, // next at 1333⅓
				{1333 * time.Millisecond, false, 0, time.Second},
				{1334 * time.Millisecond, true, 0, time.Second},
			},
		},
		{
			name: "retry rounds the wait up to whole seconds",
			req:  Request{Limit: 2, Window: 3 * time.Second, Burst: 1}, // a token every 1.5s
			hits: []hit{
				{100 * time.Millisecond, true, 0, 2 * time.Second},
				{200 * time.Millisecond, false, 0, 2 * time.Second}, // 1.4s to wait
				{1600 * time.Millisecond, true, 0, 2 * time.Second},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			playScenario(t, newTokenBucket, tc.req, tc.hits)
		})
	}
}

// TestTokenBucketSteadyRate: a requestor that asks every millisecond gets
// the initial burst and then exactly Limit per Window, with no drift from
// rounding Window/Limit (1000/7 ms) to milliseconds either way: a 142ms
// interval would allow 1063 requests here, a 143ms one 1055.
func TestTokenBucketSteadyRate(t *testing.T) {
	r := newStrategyRig(t, 2, newTokenBucket)
	req := Request{Requestor: "greedy", Limit: 7, Window: time.Second}
	allowed := 0
	const span = 150 * time.Second
	for at := time.Duration(0); at < span; at += time.Millisecond {
		if r.at(t, int(at/time.Millisecond)%2, req, t0.Add(at)).Allowed {
			allowed++
		}
	}
	// 7 at once, then one at each 1000/7 ms up to the last millisecond of
	// the span: 149,999*7/1000 = 1049.99…
	if want := 7 + 1049; allowed != want {
		t.Fatalf("%d allowed in %v, want %d", allowed, span, want)
	}
}

// TestTokenBucketSeparation checks that rates and bursts have buckets of
// their own.
func TestTokenBucketSeparation(t *testing.T) {
	r := newStrategyRig(t, 1, newTokenBucket)
	variants := []Request{
		{Requestor: "k", Limit: 1, Window: time.Minute},
		{Requestor: "k", Limit: 2, Window: time.Minute, Burst: 1},
		{Requestor: "k", Limit: 1, Window: time.Hour},
		{Scope: "login", Requestor: "k", Limit: 1, Window: time.Minute},
	}
	checkApart(t, func(v Request, at time.Time) Decision { return r.at(t, 0, v, at) }, variants)
	// Burst 0 means Limit: the same bucket as an explicit Burst of Limit.
	if d := r.at(t, 0, Request{Requestor: "k", Limit: 1, Window: time.Minute, Burst: 1}, sec(2)); d.Allowed {
		t.Fatalf("Burst 1 with Limit 1 did not share the bucket of Burst 0: %+v", d)
	}
}

func TestTokenBucketRejectsHugeBursts(t *testing.T) {
	r := newStrategyRig(t, 1, newTokenBucket)
	req := Request{Requestor: "k", Limit: 1, Window: MaxWindow, Burst: 1 << 40}
	_, err := r.insts[0].Allow(context.Background(), req, sec(0))
	if err == nil || !strings.Contains(err.Error(), "too large") {
		t.Fatalf("err = %v, want a too-large burst", err)
	}
	req.Burst = 1 << 30 // the largest arithmetic still fits
	if d := r.at(t, 0, req, sec(0)); !d.Allowed || d.Remaining != 1<<30-1 {
		t.Fatalf("burst 2^30 over 24h: %+v", d)
	}
}

// TestTokenBucketTTL: a bucket's value lives until it would be full again,
// plus SkewMargin, and an expired bucket is a full one.
func TestTokenBucketTTL(t *testing.T) {
	r := newStrategyRig(t, 1, newTokenBucket)
	req := Request{Requestor: "k", Limit: 4, Window: time.Minute, Burst: 2}
	r.at(t, 0, req, sec(0))
	r.at(t, 0, req, sec(0)) // TAT: +30s
	r.clock.Set(sec(30).Add(SkewMargin - time.Millisecond))
	if n := r.store.Store.(*testStore).Len(); n != 1 {
		t.Fatalf("before the TTL: %d values, want 1", n)
	}
	r.clock.Set(sec(30).Add(SkewMargin))
	if n := r.store.Store.(*testStore).Len(); n != 0 {
		t.Fatalf("after the TTL: %d values, want 0", n)
	}
	if d := r.at(t, 0, req, sec(30).Add(SkewMargin)); !d.Allowed || d.Remaining != 1 {
		t.Fatalf("after the TTL: %+v, want a full bucket", d)
	}
}

func TestTATEncoding(t *testing.T) {
	for _, tat := range []gcraInstant{{0, 0}, {1_800_000_000_123, 2}, {-5, 0}, {1 << 62, 6}} {
		got, err := decodeTAT(encodeTAT(tat), 7)
		if err != nil || got != tat {
			t.Errorf("decode(encode(%v)) = %v, %v", tat, got, err)
		}
	}
	for _, b := range [][]byte{nil, make([]byte, 15), make([]byte, 17), encodeTAT(gcraInstant{1, 7}), encodeTAT(gcraInstant{1, -1})} {
		if _, err := decodeTAT(b, 7); err == nil {
			t.Errorf("decodeTAT(%x) accepted a corrupt value", b)
		}
	}
}

// bucketModel is the definition of the token bucket in exact rational
// arithmetic: Burst tokens, refilled continuously at Limit per Window; a
// request needs a whole token and takes it. It shares no code with GCRA.
type bucketModel struct {
	burst, rate *big.Rat // rate in tokens per millisecond
	tokens      *big.Rat
	last        int64 // when tokens was last computed
	started     bool
}

func (m *bucketModel) at(ms int64) *big.Rat {
	if !m.started {
		return new(big.Rat).Set(m.burst)
	}
	tk := new(big.Rat).Mul(m.rate, new(big.Rat).SetInt64(ms-m.last))
	tk.Add(tk, m.tokens)
	if tk.Cmp(m.burst) > 0 {
		tk.Set(m.burst)
	}
	return tk
}

var one = big.NewRat(1, 1)

func (m *bucketModel) wouldAllow(ms int64) bool { return m.at(ms).Cmp(one) >= 0 }

func (m *bucketModel) take(ms int64) int64 {
	m.tokens = new(big.Rat).Sub(m.at(ms), one)
	m.last, m.started = ms, true
	return new(big.Int).Quo(m.tokens.Num(), m.tokens.Denom()).Int64()
}

func TestTokenBucketMatchesModel(t *testing.T) {
	testMatchesModel(t, newTokenBucket, func(req Request) refModel {
		burst := req.Burst
		if burst == 0 {
			burst = req.Limit
		}
		return &bucketModel{
			burst: big.NewRat(burst, 1),
			rate:  big.NewRat(req.Limit, req.Window.Milliseconds()),
		}
	}, []modelCase{
		{req: Request{Requestor: "m", Limit: 20, Window: time.Hour}, gapMax: 200_000, n: 500},
		{req: Request{Requestor: "m", Limit: 3, Window: time.Second}, gapMax: 700, n: 600},
		{req: Request{Requestor: "m", Limit: 3, Window: time.Second, Burst: 1}, gapMax: 700, n: 600},
		{req: Request{Requestor: "m", Limit: 7, Window: 10 * time.Second, Burst: 20}, gapMax: 3000, n: 600},
		{req: Request{Requestor: "m", Limit: 100, Window: time.Minute, Burst: 10}, gapMax: 1000, n: 800},
		{req: Request{Requestor: "m", Limit: 1, Window: 5 * time.Second}, gapMax: 8000, n: 300},
	})
}
