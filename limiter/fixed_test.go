package limiter

import (
	"testing"
	"time"
)

func newFixed(st Store) Strategy { return NewFixed(st, StrategyConfig{MaxClockSkew: -1}) }

// TestFixedScenarios plays request patterns at injected instants and checks
// every decision. t0 is a multiple of 60 seconds (and of an hour), but not of
// 7 seconds: windows align to the Unix epoch, not to the first request.
func TestFixedScenarios(t *testing.T) {
	type hit = scenarioHit
	tests := []struct {
		name   string
		limit  int64
		window time.Duration
		hits   []hit
	}{
		{
			name: "limit reached: retry at the boundary", limit: 3, window: time.Minute,
			hits: []hit{
				{0, true, 2, 0},
				{10 * time.Second, true, 1, 0},
				{20 * time.Second, true, 0, 40 * time.Second},
				{30 * time.Second, false, 0, 30 * time.Second},
				{59*time.Second + 999*time.Millisecond, false, 0, time.Second},
				{60 * time.Second, true, 2, 0},
			},
		},
		{
			name: "twice the limit across a boundary", limit: 2, window: time.Minute,
			hits: []hit{
				{59 * time.Second, true, 1, 0},
				{59 * time.Second, true, 0, time.Second},
				{59 * time.Second, false, 0, time.Second},
				{60 * time.Second, true, 1, 0},
				{61 * time.Second, true, 0, 59 * time.Second},
			},
		},
		{
			name: "sub-second instants round the retry up", limit: 1, window: 10 * time.Second,
			hits: []hit{
				{1500 * time.Millisecond, true, 0, 9 * time.Second}, // boundary at +10s: 8.5s, promised 9s
				{9100 * time.Millisecond, false, 0, time.Second},
				{10 * time.Second, true, 0, 10 * time.Second},
			},
		},
		{
			// 1_800_000_000 = 7*257142857 + 1, so t0 is 1s into a window.
			name: "windows align to the epoch", limit: 1, window: 7 * time.Second,
			hits: []hit{
				{0, true, 0, 6 * time.Second},
				{5 * time.Second, false, 0, time.Second},
				{6 * time.Second, true, 0, 7 * time.Second},
			},
		},
		{
			name: "a quiet window starts afresh", limit: 2, window: time.Hour,
			hits: []hit{
				{0, true, 1, 0},
				{0, true, 0, time.Hour},
				{5 * time.Hour, true, 1, 0},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			playScenario(t, newFixed, Request{Limit: tc.limit, Window: tc.window}, tc.hits)
		})
	}
}

// TestFixedSeparation checks that scopes, windows and requestors have
// counters of their own, while limits share them.
func TestFixedSeparation(t *testing.T) {
	checkSeparation(t, newFixed)
}

// fixedModel is the definition of the fixed window: a count per window of
// whole seconds aligned to the epoch.
type fixedModel struct {
	limit, window int64 // window in seconds
	counts        map[int64]int64
}

func (m *fixedModel) index(at int64) int64 {
	return floorDiv(floorDiv(t0.UnixMilli()+at, 1000), m.window)
}

func (m *fixedModel) wouldAllow(at int64) bool { return m.counts[m.index(at)] < m.limit }

func (m *fixedModel) take(at int64) int64 {
	m.counts[m.index(at)]++
	return m.limit - m.counts[m.index(at)]
}

func TestFixedMatchesModel(t *testing.T) {
	testMatchesModel(t, newFixed, func(req Request) refModel {
		return &fixedModel{limit: req.Limit, window: int64(req.Window / time.Second), counts: map[int64]int64{}}
	}, []modelCase{
		{req: Request{Requestor: "m", Limit: 20, Window: time.Hour}, gapMax: 200_000, n: 500},
		{req: Request{Requestor: "m", Limit: 3, Window: 10 * time.Second}, gapMax: 4000, n: 500},
		{req: Request{Requestor: "m", Limit: 1, Window: time.Second}, gapMax: 2000, n: 300},
		{req: Request{Requestor: "m", Limit: 5, Window: 7 * time.Second}, gapMax: 1500, n: 500},
		{req: Request{Requestor: "m", Limit: 50, Window: time.Minute}, gapMax: 500, n: 800},
	})
}
