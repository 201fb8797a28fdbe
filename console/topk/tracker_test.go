package topk

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
	"unicode/utf8"
)

// t0 is the start of a minute that starts a five-minute period.
const t0 = 1_800_000_000 // 2027-01-15T08:00:00Z

func unix(sec int64) time.Time { return time.Unix(sec, 0) }

// counts returns a summary's items with their counts, "a=3 b=1".
func counts(s *Summary) string {
	var b strings.Builder
	for i, e := range s.Top(0) {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", e.Item, e.Count)
	}
	return b.String()
}

func TestTrackerWindows(t *testing.T) {
	// denial is an item denied at second offset from t0.
	type denial struct {
		item string
		at   int64
	}
	for _, tc := range []struct {
		name      string
		denials   []denial
		now       int64
		five, hr  string
		wantScope bool
	}{
		{"nothing", nil, 0, "", "", false},
		{"this minute", []denial{{"a", 0}, {"a", 10}, {"b", 59}}, 59, "a=2 b=1", "a=2 b=1", true},
		{"four minutes ago still in 5m", []denial{{"a", 0}}, 4*60 + 59, "a=1", "a=1", true},
		{"five minutes ago left 5m, not 1h", []denial{{"a", 0}}, 5 * 60, "", "a=1", true},
		{"minutes add up", []denial{{"a", 0}, {"a", 61}, {"b", 125}, {"a", 250}}, 250, "a=3 b=1", "a=3 b=1", true},
		{"55 minutes ago still in 1h", []denial{{"a", 0}}, 59*60 + 59, "", "a=1", true},
		{"an hour ago gone", []denial{{"a", 0}}, 60 * 60, "", "", false},
		{"slot reused after a rotation", []denial{{"a", 0}, {"b", 5 * 60}}, 5*60 + 1, "b=1", "b=1 a=1", true},
		{"slot reused after an hour", []denial{{"a", 0}, {"b", 3600}}, 3600, "b=1", "b=1", true},
		{"late denial for a reused slot dropped", []denial{{"b", 5 * 60}, {"a", 0}}, 5*60 + 1, "b=1", "b=1", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := NewTracker(Config{Capacity: 10})
			for _, d := range tc.denials {
				tr.Record(Denial{Scope: "api", Item: d.item, At: unix(t0 + d.at)})
			}
			now := unix(t0 + tc.now)
			if got := counts(tr.Summary("api", FiveMinutes, now)); got != tc.five {
				t.Errorf("5m = %q, want %q", got, tc.five)
			}
			if got := counts(tr.Summary("api", Hour, now)); got != tc.hr {
				t.Errorf("1h = %q, want %q", got, tc.hr)
			}
			if got := len(tr.Scopes(now)) == 1; got != tc.wantScope {
				t.Errorf("Scopes = %v, want the scope listed: %v", tr.Scopes(now), tc.wantScope)
			}
		})
	}
}

func TestTrackerLate(t *testing.T) {
	tr := NewTracker(Config{})
	tr.Record(Denial{Scope: "s", Item: "b", At: unix(t0 + 300)})
	tr.Record(Denial{Scope: "s", Item: "a", At: unix(t0)}) // its minute slot holds t0+300's now
	if tr.Late() != 1 {
		t.Errorf("Late = %d, want 1", tr.Late())
	}
}

func TestTrackerScopesBounded(t *testing.T) {
	tr := NewTracker(Config{MaxScopes: 2})
	for _, s := range []string{"a", "b", "c", "d", "a"} {
		tr.Record(Denial{Scope: s, Item: "x", At: unix(t0)})
	}
	now := unix(t0)
	if got := fmt.Sprint(tr.Scopes(now)); got != "[(other) a b]" {
		t.Errorf("Scopes = %s, want [(other) a b]", got)
	}
	if got := counts(tr.Summary(OtherScopes, Hour, now)); got != "x=2" {
		t.Errorf("(other) = %q, want x=2 (c and d)", got)
	}
	if got := counts(tr.Summary("a", Hour, now)); got != "x=2" {
		t.Errorf("a = %q, want x=2", got)
	}
	if got := counts(tr.Summary("zzz", Hour, now)); got != "" {
		t.Errorf("unknown scope = %q, want empty", got)
	}
}

func TestTrackerRetryAndRule(t *testing.T) {
	tr := NewTracker(Config{})
	tr.Record(Denial{Scope: "s", Rule: "r1", Item: "a", At: unix(t0), RetryAfter: 100 * time.Second})
	tr.Record(Denial{Scope: "s", Rule: "r2", Item: "a", At: unix(t0 + 10), RetryAfter: 30 * time.Second})
	e := tr.Summary("s", FiveMinutes, unix(t0+10)).Top(1)[0]
	if e.RetryUntil != unix(t0+100).UnixNano() || e.Rule != "r2" || e.First != unix(t0).UnixNano() || e.Last != unix(t0+10).UnixNano() {
		t.Errorf("entry = %+v", e)
	}
}

func TestBoundItem(t *testing.T) {
	long := "header:x-api-key:" + strings.Repeat("k", 70000)
	other := "header:x-api-key:" + strings.Repeat("k", 69999) + "j"
	for _, tc := range []struct {
		name, in string
		want     int
		same     bool
	}{
		{"short kept", "ip:203.0.113.7", len("ip:203.0.113.7"), true},
		{"exactly the bound kept", strings.Repeat("a", MaxItemLen), MaxItemLen, true},
		{"long shortened", long, 150 + 1 + 16, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := BoundItem(tc.in)
			if len(got) != tc.want || (got == tc.in) != tc.same {
				t.Errorf("BoundItem: %d bytes (same %v), want %d (same %v)", len(got), got == tc.in, tc.want, tc.same)
			}
		})
	}
	if BoundItem(long) == BoundItem(other) {
		t.Error("two long items that differ at the end share a bounded form")
	}
	// A cut inside a character backs off to its start: the bounded form
	// stays UTF-8, so it survives JSON between replicas unchanged.
	for pad := range 4 {
		in := strings.Repeat("a", 149-pad) + strings.Repeat("é€😀", 100)
		got := BoundItem(in)
		if !utf8.ValidString(got) || !strings.HasPrefix(in, strings.SplitN(got, "~", 2)[0]) {
			t.Errorf("pad %d: BoundItem = %q: not UTF-8 or not a prefix", pad, got)
		}
	}
}

// TestRecorder runs the Recorder's goroutine in a synctest bubble: what
// Denied queues is applied once the goroutine is idle, shown through the
// show function, and a full queue drops instead of blocking.
func TestRecorder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr := NewTracker(Config{})
		rec := NewRecorder(tr, 8, func(_, s string) string { return strings.ToUpper(s) })
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { rec.Run(ctx); close(done) }()
		now := time.Now()
		for range 5 {
			rec.Denied("api", "rule", "ip:a", time.Second, now)
		}
		synctest.Wait()
		if got := counts(tr.Summary("api", FiveMinutes, now)); got != "IP:A=5" || rec.Applied() != 5 {
			t.Fatalf("after 5 denials: %q, applied %d", got, rec.Applied())
		}
		cancel()
		<-done
		// With nobody draining, the queue takes 8 and drops the rest.
		for range 12 {
			rec.Denied("api", "rule", "ip:b", time.Second, now)
		}
		if rec.Dropped() != 4 {
			t.Errorf("Dropped = %d, want 4", rec.Dropped())
		}
		// Run drains what is queued when its context is already done.
		rec.Run(ctx)
		if got := counts(tr.Summary("api", FiveMinutes, now)); got != "IP:B=8 IP:A=5" {
			t.Errorf("after draining: %q", got)
		}
	})
}

// TestRecorderConcurrent: many goroutines deny while Run applies and
// readers read; with a queue large enough nothing is lost (-race checks the
// locking).
func TestRecorderConcurrent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr := NewTracker(Config{})
		rec := NewRecorder(tr, 10000, nil)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go rec.Run(ctx)
		now := time.Now()
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				for i := range 500 {
					rec.Denied("api", "", fmt.Sprintf("ip:%d", (g*500+i)%50), time.Second, now)
					if i%100 == 0 {
						tr.Summary("api", Hour, now)
					}
				}
			})
		}
		wg.Wait()
		synctest.Wait()
		if s := tr.Summary("api", Hour, now); s.Total() != 4000 || rec.Dropped() != 0 {
			t.Errorf("total %d dropped %d, want 4000 and 0", s.Total(), rec.Dropped())
		}
	})
}

// BenchmarkRecorderDenied is the cost on a decision's path: a non-blocking
// send into the queue, drained concurrently.
func BenchmarkRecorderDenied(b *testing.B) {
	tr := NewTracker(Config{})
	rec := NewRecorder(tr, 0, nil)
	ctx, cancel := context.WithCancel(b.Context())
	defer cancel()
	go rec.Run(ctx)
	now := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rec.Denied("api", "rule", "ip:203.0.113.7", time.Second, now)
		}
	})
}

func TestParseWindow(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Window
		ok   bool
	}{
		{"5m", FiveMinutes, true},
		{"1h", Hour, true},
		{"", 0, false},
		{"1H", 0, false},
		{"60m", 0, false},
	} {
		got, ok := ParseWindow(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParseWindow(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
		if ok && got.String() != tt.in {
			t.Errorf("%q: String() = %q", tt.in, got.String())
		}
	}
	if got := Window(7).String(); got != "5m" {
		t.Errorf("Window(7).String() = %q, want 5m (any Window but Hour)", got)
	}
}
