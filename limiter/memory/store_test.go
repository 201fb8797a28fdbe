package memory_test

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/internal/testutil"

	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/memory"
	"github.com/floodgate-rl/floodgate/limiter/storetest"
)

// t0 is the fixed instant the clock-driven tests start at.
var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func newMemoryStore(t testing.TB, now func() time.Time) *memory.Store {
	s := memory.New(now)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestStoreConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) limiter.Store {
		return newMemoryStore(t, nil)
	})
}

// TestStoreClock drives expiry with an injected clock, without sleeping.
func TestStoreClock(t *testing.T) {
	// op is an Add of delta, or with get set a Get, at t0+at.
	type op struct {
		at     time.Duration
		delta  int64
		ttl    time.Duration
		get    bool
		want   int64 // Add's result or the value Get finds
		absent bool  // Get finds no counter
	}
	const hour = time.Hour
	tests := []struct {
		name string
		ops  []op
	}{
		{
			name: "counter lives exactly its ttl",
			ops: []op{
				{at: 0, delta: 1, ttl: 10 * time.Second, want: 1},
				{at: 10*time.Second - 1, get: true, want: 1},
				{at: 10 * time.Second, get: true, absent: true},
			},
		},
		{
			name: "ttl is rounded up to whole seconds",
			ops: []op{
				{at: 0, delta: 1, ttl: 1500 * time.Millisecond, want: 1},
				{at: 2*time.Second - 1, get: true, want: 1},
				{at: 2 * time.Second, get: true, absent: true},
			},
		},
		{
			name: "zero ttl lives one second",
			ops: []op{
				{at: 0, delta: 1, ttl: 0, want: 1},
				{at: time.Second - 1, get: true, want: 1},
				{at: time.Second, get: true, absent: true},
			},
		},
		{
			name: "negative ttl lives one second",
			ops: []op{
				{at: 0, delta: 1, ttl: -hour, want: 1},
				{at: time.Second - 1, get: true, want: 1},
				{at: time.Second, get: true, absent: true},
			},
		},
		{
			name: "adding does not extend the ttl",
			ops: []op{
				{at: 0, delta: 1, ttl: 10 * time.Second, want: 1},
				{at: 9 * time.Second, delta: 1, ttl: hour, want: 2},
				{at: 10 * time.Second, get: true, absent: true},
			},
		},
		{
			name: "expired counter is created anew with the new ttl",
			ops: []op{
				{at: 0, delta: 5, ttl: time.Second, want: 5},
				{at: time.Second, delta: 2, ttl: 10 * time.Second, want: 2},
				{at: 11*time.Second - 1, get: true, want: 2},
				{at: 11 * time.Second, get: true, absent: true},
			},
		},
		{
			name: "decrement of an expired counter creates nothing",
			ops: []op{
				{at: 0, delta: 5, ttl: time.Second, want: 5},
				{at: 2 * time.Second, delta: -1, ttl: hour, want: 0},
				{at: 2 * time.Second, get: true, absent: true},
			},
		},
		{
			name: "value saturates at the largest int64",
			ops: []op{
				{at: 0, delta: math.MaxInt64 - 1, ttl: hour, want: math.MaxInt64 - 1},
				{at: 0, delta: 5, ttl: hour, want: math.MaxInt64},
				{at: 0, delta: math.MaxInt64, ttl: hour, want: math.MaxInt64},
				{at: 0, delta: math.MinInt64, ttl: hour, want: 0},
			},
		},
		{
			name: "ttl of centuries does not overflow",
			ops: []op{
				{at: 0, delta: 1, ttl: math.MaxInt64, want: 1},
				{at: 200 * 365 * 24 * hour, get: true, want: 1},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clock := testutil.NewClock(t0)
			s := newMemoryStore(t, clock.Now)
			ctx := context.Background()
			const key = "fg1:requestor:1"
			for i, o := range tt.ops {
				clock.Set(t0.Add(o.at))
				if !o.get {
					got, err := s.Add(ctx, key, o.delta, o.ttl)
					if err != nil {
						t.Fatalf("op %d at +%v: Add(%d, %v): %v", i, o.at, o.delta, o.ttl, err)
					}
					if got != o.want {
						t.Fatalf("op %d at +%v: Add(%d, %v) = %d, want %d", i, o.at, o.delta, o.ttl, got, o.want)
					}
					continue
				}
				got, err := s.Get(ctx, []string{key})
				if err != nil {
					t.Fatalf("op %d at +%v: Get: %v", i, o.at, err)
				}
				v, ok := got[key]
				switch {
				case o.absent && ok:
					t.Fatalf("op %d at +%v: Get found %d, want no counter", i, o.at, v)
				case !o.absent && !ok:
					t.Fatalf("op %d at +%v: Get found no counter, want %d", i, o.at, o.want)
				case !o.absent && v != o.want:
					t.Fatalf("op %d at +%v: Get found %d, want %d", i, o.at, v, o.want)
				}
			}
		})
	}
}

func TestStoreLen(t *testing.T) {
	clock := testutil.NewClock(t0)
	s := newMemoryStore(t, clock.Now)
	ctx := context.Background()
	add := func(key string, delta int64, ttl time.Duration) {
		t.Helper()
		if _, err := s.Add(ctx, key, delta, ttl); err != nil {
			t.Fatalf("Add(%q): %v", key, err)
		}
	}
	if n := s.Len(); n != 0 {
		t.Fatalf("empty store: Len = %d, want 0", n)
	}
	for i := range 100 {
		add("short:"+strconv.Itoa(i), 1, time.Second)
	}
	for i := range 10 {
		add("long:"+strconv.Itoa(i), 1, time.Minute)
	}
	add("long:0", 1, time.Minute) // the same counter again
	add("never", -1, time.Minute) // creates nothing
	if n := s.Len(); n != 110 {
		t.Errorf("Len = %d, want 110", n)
	}
	clock.Set(t0.Add(time.Second))
	if n := s.Len(); n != 10 {
		t.Errorf("after the short ttl: Len = %d, want 10", n)
	}
	clock.Set(t0.Add(time.Minute))
	if n := s.Len(); n != 0 {
		t.Errorf("after the long ttl: Len = %d, want 0", n)
	}
}

func TestStoreCloseTwice(t *testing.T) {
	s := memory.New(nil)
	for i := range 2 {
		if err := s.Close(); err != nil {
			t.Fatalf("Close #%d: %v", i+1, err)
		}
	}
	// The store still answers after Close.
	if v, err := s.Add(context.Background(), "k", 2, time.Minute); err != nil || v != 2 {
		t.Errorf("Add after Close = %d, %v; want 2, nil", v, err)
	}
}

func ExampleStore() {
	s := memory.New(nil)
	defer s.Close()
	ctx := context.Background()

	s.Add(ctx, "fg1:client-a:1732312345", 1, time.Hour)
	s.Add(ctx, "fg1:client-a:1732312345", 1, time.Hour)
	v, _ := s.Add(ctx, "fg1:client-a:1732312346", 1, time.Hour)
	fmt.Println("new bucket:", v)

	got, _ := s.Get(ctx, []string{"fg1:client-a:1732312345", "fg1:client-a:1732312346", "fg1:client-b:1732312345"})
	fmt.Println(got["fg1:client-a:1732312345"], got["fg1:client-a:1732312346"], len(got))
	// Output:
	// new bucket: 1
	// 2 1 2
}

// BenchmarkStore measures the in-memory store (Add and Get).
func BenchmarkStore(b *testing.B) {
	storetest.Benchmark(b, newMemoryStore(b, nil))
}
