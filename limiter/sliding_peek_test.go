package limiter

import (
	"context"
	"slices"
	"testing"
	"time"
)

// TestPeek: what Peek reads is what a decision sees, for windows with and
// without minute aggregates: the count, the room left, the wait a denial
// gives, the counts per minute; and looking counts nothing.
func TestPeek(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		window time.Duration
		limit  int64
		at     []time.Duration // requests allowed at t0+at
		peek   time.Duration   // when to look, after t0
	}{
		{"nothing counted", time.Minute, 5, nil, 10 * time.Second},
		{"under the limit", time.Minute, 5, []time.Duration{0, time.Second, 2 * time.Second}, 3 * time.Second},
		{"at the limit", time.Minute, 3, []time.Duration{0, 20 * time.Second, 40 * time.Second}, 50 * time.Second},
		{"an hour, spread over minutes", time.Hour, 4, []time.Duration{0, 90 * time.Second, 10 * time.Minute, 30 * time.Minute}, 45 * time.Minute},
		{"an hour, a minute half out of the window", time.Hour, 3, []time.Duration{10 * time.Second, 50 * time.Second, 5 * time.Minute}, time.Hour + 30*time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := t0
			mem := newTestStore(func() time.Time { return now })
			defer mem.Close()
			s := NewSliding(mem, SlidingConfig{MaxClockSkew: -1})
			defer s.Close()
			req := Request{Requestor: "client", Limit: tc.limit, Window: tc.window}
			for _, at := range tc.at {
				now = t0.Add(at)
				if d, err := s.Allow(context.Background(), req, now); err != nil || !d.Allowed {
					t.Fatalf("Allow at %v: %+v, %v", at, d, err)
				}
			}
			now = t0.Add(tc.peek)
			// Another replica's view: a Sliding with an empty cache.
			other := NewSliding(mem, SlidingConfig{MaxClockSkew: -1})
			defer other.Close()
			u, err := other.Peek(context.Background(), req, now)
			if err != nil {
				t.Fatal(err)
			}
			again, err := other.Peek(context.Background(), req, now)
			if err != nil || !slices.Equal(again.Minutes, u.Minutes) || again.Count != u.Count {
				t.Errorf("a second Peek: %+v, %v; want %+v", again, err, u)
			}
			var inWindow int64
			for _, at := range tc.at {
				if t0.Add(at).Unix() > now.Unix()-int64(tc.window/time.Second) {
					inWindow++
				}
			}
			if u.Count != inWindow || u.Remaining != max(tc.limit-inWindow, 0) {
				t.Errorf("Peek = count %d, remaining %d; want %d, %d", u.Count, u.Remaining, inWindow, max(tc.limit-inWindow, 0))
			}
			var perMinute int64
			for _, n := range u.Minutes {
				perMinute += n
			}
			if perMinute != u.Count || len(u.Minutes) < int(tc.window/time.Minute) {
				t.Errorf("minutes %v: %d in %d minutes, want %d in at least %d", u.Minutes, perMinute, len(u.Minutes), u.Count, tc.window/time.Minute)
			}
			// The decision that comes next sees what Peek saw: allowed
			// with Remaining-1 left, or denied with the same wait.
			d, err := other.Allow(context.Background(), req, now)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case u.Remaining > 0 && (!d.Allowed || d.Remaining != u.Remaining-1):
				t.Errorf("after Peek %+v, Allow = %+v; want allowed with %d left", u, d, u.Remaining-1)
			case u.Remaining == 0 && (d.Allowed || d.RetryAfter != u.RetryAfter || u.RetryAfter <= 0):
				t.Errorf("after Peek %+v, Allow = %+v; want denied with the same wait", u, d)
			}
		})
	}
}
