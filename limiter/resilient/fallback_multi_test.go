package resilient_test

import (
	"context"
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/resilient"
)

// TestFallbackAllowAll: a set is decided by the primary while the store
// answers, and locally when it fails, each request starting from what the
// primary knows of its requestor; a set allowed locally is charged to the
// store with its hits, request by request, when it answers again.
func TestFallbackAllowAll(t *testing.T) {
	shared := limiter.Request{Requestor: "shared", Limit: 5, Window: time.Hour}
	own := limiter.Request{Requestor: "own", Limit: 100, Window: time.Hour, Hits: 2}
	steps := []struct {
		name       string
		down       bool
		reqs       []limiter.Request
		wantReason string
		want       []bool // allowed, per request
		remaining  []int64
	}{
		{name: "through the store", reqs: []limiter.Request{shared, own}, want: []bool{true, true}, remaining: []int64{4, 98}},
		{name: "through the store again", reqs: []limiter.Request{shared, own}, want: []bool{true, true}, remaining: []int64{3, 96}},
		// Known: shared has 2 of 5 used, own 4 of 100: the local limits are 3 and 96.
		{name: "locally, from what the primary knows", down: true, reqs: []limiter.Request{shared, own}, wantReason: "down", want: []bool{true, true}, remaining: []int64{2, 94}},
		{name: "locally, hits beyond the room left", down: true, reqs: []limiter.Request{own, {Requestor: "shared", Limit: 5, Window: time.Hour, Hits: 3}}, wantReason: "down", want: []bool{true, false}, remaining: []int64{94, 0}},
		{name: "locally, the rest of the room", down: true, reqs: []limiter.Request{{Requestor: "shared", Limit: 5, Window: time.Hour, Hits: 2}}, wantReason: "down", want: []bool{true}, remaining: []int64{0}},
		{name: "locally, at the limit", down: true, reqs: []limiter.Request{shared, own}, wantReason: "down", want: []bool{false, true}, remaining: []int64{0, 94}},
		// Back: the local sets were charged (shared 3, own 2), so shared is full.
		{name: "back on the store, charged", reqs: []limiter.Request{own, shared}, want: []bool{true, false}, remaining: []int64{94, 0}},
		{name: "an empty set", reqs: nil},
	}
	r := newFallbackRig(t, resilient.FallbackConfig{Reason: "down"})
	for _, st := range steps {
		r.store.down.Store(st.down)
		ds, reason, err := r.f.AllowAllDegraded(context.Background(), st.reqs, r.clk.Now())
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if reason != st.wantReason || len(ds) != len(st.want) {
			t.Fatalf("%s: %d decisions, reason %q; want %d, %q", st.name, len(ds), reason, len(st.want), st.wantReason)
		}
		for i, d := range ds {
			if d.Allowed != st.want[i] || d.Remaining != st.remaining[i] || d.Limit != st.reqs[i].Limit {
				t.Errorf("%s: request %d: %+v, want allowed=%v remaining %d", st.name, i, d, st.want[i], st.remaining[i])
			}
		}
		r.clk.Advance(time.Second)
	}
	if n := r.f.Reconciled(); n != 3+2 {
		t.Errorf("Reconciled = %d, want 5 (the hits of the one local set that was allowed whole, and the single request)", n)
	}
}
