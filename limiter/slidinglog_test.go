package limiter

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"
)

func newSlidingLog(st Store) Strategy { return NewSlidingLog(st, StrategyConfig{MaxClockSkew: -1}) }

// TestSlidingLogScenarios plays request patterns at injected instants and
// checks every decision.
func TestSlidingLogScenarios(t *testing.T) {
	type hit = scenarioHit
	tests := []struct {
		name   string
		limit  int64
		window time.Duration
		hits   []hit
	}{
		{
			name: "the window is exact to the millisecond", limit: 2, window: 10 * time.Second,
			hits: []hit{
				{1500 * time.Millisecond, true, 1, 0},
				{4 * time.Second, true, 0, 8 * time.Second}, // the oldest leaves at 11.5s: 7.5s, promised 8s
				{11499 * time.Millisecond, false, 0, time.Second},
				{11500 * time.Millisecond, true, 0, 3 * time.Second}, // the next leaves at 14s
				{13999 * time.Millisecond, false, 0, time.Second},
				{14 * time.Second, true, 0, 8 * time.Second},
			},
		},
		{
			name: "retry waits for the oldest request that must leave", limit: 3, window: time.Minute,
			hits: []hit{
				{0, true, 2, 0},
				{0, true, 1, 0},
				{30 * time.Second, true, 0, 30 * time.Second},
				{45 * time.Second, false, 0, 15 * time.Second},
				{60 * time.Second, true, 1, 0}, // both of +0s left
				{61 * time.Second, true, 0, 29 * time.Second},
				{62 * time.Second, false, 0, 28 * time.Second},
			},
		},
		{
			name: "a quiet window starts afresh", limit: 2, window: time.Second,
			hits: []hit{
				{0, true, 1, 0},
				{0, true, 0, time.Second},
				{999 * time.Millisecond, false, 0, time.Second},
				{time.Hour, true, 1, 0},
			},
		},
		{
			name: "the largest limit", limit: MaxSlidingLogLimit, window: time.Hour,
			hits: []hit{
				{0, true, MaxSlidingLogLimit - 1, 0},
				{time.Hour - time.Millisecond, true, MaxSlidingLogLimit - 2, 0},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			playScenario(t, newSlidingLog, Request{Limit: tc.limit, Window: tc.window}, tc.hits)
		})
	}
}

// TestSlidingLogFull fills a log of the largest limit and checks the
// thousandth-and-first request.
func TestSlidingLogFull(t *testing.T) {
	r := newStrategyRig(t, 2, newSlidingLog)
	req := Request{Requestor: "busy", Limit: MaxSlidingLogLimit, Window: time.Hour}
	for i := range MaxSlidingLogLimit {
		if d := r.at(t, i%2, req, ms(int64(i)*3000)); !d.Allowed {
			t.Fatalf("request %d denied: %+v", i, d)
		}
	}
	now := ms(3000 * MaxSlidingLogLimit)
	d := r.at(t, 0, req, now)
	if d.Allowed || d.RetryAfter != time.Hour-3000*time.Second {
		t.Fatalf("request %d: %+v; want denied until the first leaves", MaxSlidingLogLimit, d)
	}
	if d := r.at(t, 1, req, now.Add(d.RetryAfter)); !d.Allowed || d.Remaining != 0 {
		t.Fatalf("after the promised wait: %+v", d)
	}
}

func TestSlidingLogRejectsLargeLimits(t *testing.T) {
	r := newStrategyRig(t, 1, newSlidingLog)
	req := Request{Requestor: "k", Limit: MaxSlidingLogLimit + 1, Window: time.Minute}
	_, err := r.insts[0].Allow(context.Background(), req, sec(0))
	if err == nil || !strings.Contains(err.Error(), "at most 1000") {
		t.Fatalf("err = %v, want one naming the largest limit", err)
	}
}

// TestSlidingLogSeparation checks that scopes, windows and requestors have
// logs of their own, while limits share them.
func TestSlidingLogSeparation(t *testing.T) {
	r, loose := checkSeparation(t, newSlidingLog)
	if d := r.at(t, 0, loose, sec(20)); !d.Allowed || d.Remaining != 0 || d.RetryAfter != 40*time.Second {
		t.Fatalf("limit 3, third request: %+v, want allowed, none remaining, retry 40s", d)
	}
	// A stricter limit on the same log (0s, 2s, 20s) must wait until two
	// requests have left, the second at 62s.
	strict := loose
	strict.Limit = 2
	if d := r.at(t, 0, strict, sec(30)); d.Allowed || d.RetryAfter != 32*time.Second {
		t.Fatalf("limit 2 on a log of 3: %+v, want denied with retry 32s", d)
	}
}

// TestSlidingLogClockBehind: a replica whose clock is behind the newest
// entry records its request at that entry, so no window ever holds more than
// Limit.
func TestSlidingLogClockBehind(t *testing.T) {
	r := newStrategyRig(t, 2, newSlidingLog)
	req := Request{Requestor: "k", Limit: 2, Window: 10 * time.Second}
	r.at(t, 0, req, sec(5))
	r.at(t, 0, req, sec(12)) // log: 5s, 12s
	// Replica 1 reads 3s: by its own window (-7s, 3s] the log is empty, but
	// recording 3s would put three requests in (2s, 12s].
	d := r.at(t, 1, req, sec(3))
	if d.Allowed {
		t.Fatalf("a clock 9s behind got a request in: %+v", d)
	}
	// At 15s the window (5s, 15s] holds only 12s.
	if d := r.at(t, 1, req, sec(15)); !d.Allowed {
		t.Fatalf("at 15s: %+v, want allowed", d)
	}
}

func TestLogEncoding(t *testing.T) {
	logs := [][]int64{
		nil,
		{1_800_000_000_000},
		{-5, 0, 0, 7},
		{1_800_000_000_000, 1_800_000_000_000, 1_800_000_000_001, 1_800_003_600_000},
	}
	for _, log := range logs {
		got, err := decodeLog(encodeLog(log))
		if err != nil || !slices.Equal(got, log) {
			t.Errorf("decode(encode(%v)) = %v, %v", log, got, err)
		}
	}
	long := make([]int64, MaxSlidingLogLimit)
	for i := range long {
		long[i] = 1_800_000_000_000 + int64(i)*3_600
	}
	if n := len(encodeLog(long)); n > 4096 {
		t.Errorf("a log of %d entries takes %d bytes", len(long), n)
	}
	for _, b := range [][]byte{{0x80}, {0x02, 0xff}, {0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}} {
		if _, err := decodeLog(b); err == nil {
			t.Errorf("decodeLog(%x) accepted a corrupt value", b)
		}
	}
}

// logModel is the definition of the sliding log: the instants of allowed
// requests, counted over (t-Window, t].
type logModel struct {
	limit, window int64 // window in milliseconds
	log           []int64
}

func (m *logModel) wouldAllow(at int64) bool {
	n := int64(0)
	for _, e := range m.log {
		if e > at-m.window && e <= at {
			n++
		}
	}
	return n < m.limit
}

func (m *logModel) take(at int64) int64 {
	m.log = append(m.log, at)
	n := int64(0)
	for _, e := range m.log {
		if e > at-m.window && e <= at {
			n++
		}
	}
	return m.limit - n
}

func TestSlidingLogMatchesModel(t *testing.T) {
	testMatchesModel(t, newSlidingLog, func(req Request) refModel {
		return &logModel{limit: req.Limit, window: req.Window.Milliseconds()}
	}, []modelCase{
		{req: Request{Requestor: "m", Limit: 20, Window: time.Hour}, gapMax: 200_000, n: 500},
		{req: Request{Requestor: "m", Limit: 3, Window: 10 * time.Second}, gapMax: 4000, n: 500},
		{req: Request{Requestor: "m", Limit: 1, Window: time.Second}, gapMax: 2000, n: 300},
		{req: Request{Requestor: "m", Limit: 5, Window: 2 * time.Second}, gapMax: 700, n: 500},
		{req: Request{Requestor: "m", Limit: 100, Window: time.Minute}, gapMax: 1000, n: 800},
	})
}
