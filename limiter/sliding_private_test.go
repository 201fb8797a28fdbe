package limiter

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestSlowDecision: a decision whose store answered after MaxDecisionTime
// fails with ErrStoreUnavailable on a shared store (its increment, applied
// by then, stays counted: on the safe side); with StrategyConfig.Private's
// negative MaxDecisionTime (a store no other process shares) it is
// decided, and counted once.
func TestSlowDecision(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		cfg     StrategyConfig
		wantErr bool
	}{
		{"shared store", StrategyConfig{MaxClockSkew: -1}, true},
		{"private store", StrategyConfig{}.Private(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := newTestStore(func() time.Time { return t0 })
			defer mem.Close()
			st, err := NewStrategy(StrategySliding, mem, tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			s := st.(*Sliding)
			defer s.Close()
			s.since = func(time.Time) time.Duration { return time.Second } // every answer late
			req := Request{Requestor: "client", Limit: 2, Window: time.Minute}
			d, err := s.Allow(context.Background(), req, t0)
			if tc.wantErr {
				if !errors.Is(err, ErrStoreUnavailable) {
					t.Fatalf("Allow = %+v, %v; want ErrStoreUnavailable", d, err)
				}
			} else if err != nil || !d.Allowed || d.Remaining != 1 {
				t.Fatalf("Allow = %+v, %v; want allowed with 1 left", d, err)
			}
			vals, err := mem.Get(context.Background(), []string{secondKey(RequestorID("", 60, "client"), t0.Unix())})
			if err != nil {
				t.Fatal(err)
			}
			var counted int64
			for _, v := range vals {
				counted += v
			}
			if counted != 1 {
				t.Errorf("counted %d in the store, want 1", counted)
			}
		})
	}
}

// TestSlidingKeepsKeysOnlyForHotRequestors: a requestor's keys of a second
// are kept only once it is decided a second time in that second, so a
// stream of one-off requestors (a million clients, one request each) holds
// none of them.
func TestSlidingKeepsKeysOnlyForHotRequestors(t *testing.T) {
	mem := newTestStore(func() time.Time { return t0 })
	s := NewSliding(mem, SlidingConfig{})
	defer s.Close()
	req := Request{Requestor: "k", Limit: 100, Window: time.Hour}
	h := func() *history { return s.history(newRequestorKey("", 3600, "k"), 3600, t0.Unix()) }
	// Three decisions in one second, then one in each of the next two:
	// keys from the second decision of the first second, none once the
	// requestor is decided once in a second.
	for i, tc := range []struct {
		sec  int
		want bool
	}{{0, false}, {0, true}, {0, true}, {1, false}, {2, false}} {
		if _, err := s.Allow(context.Background(), req, sec(tc.sec)); err != nil {
			t.Fatal(err)
		}
		if got := h().keys.Load() != nil; got != tc.want {
			t.Fatalf("after decision %d (second %d): keys kept %v, want %v", i+1, tc.sec, got, tc.want)
		}
	}
}
