// Package storetest is the conformance suite every limiter.Store passes. A
// store's tests call Run with a constructor; the suite checks the contract
// documented on limiter.Store against the store running for real.
package storetest

import (
	"context"
	"errors"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/limiter"
)

// ttl is the time to live of counters in the tests that do not wait for
// expiry: long enough that none expires while the suite runs.
const ttl = time.Minute

// Run runs the conformance suite against the stores newStore returns. It
// calls newStore once per subtest, with that subtest's t; each store must be
// empty, used by that subtest only, and released by newStore's own t.Cleanup.
// Subtests run in parallel with each other. One subtest waits about two
// seconds for counters to expire, because a real memcached cannot be given a
// fake clock.
func Run(t *testing.T, newStore func(t *testing.T) limiter.Store) {
	t.Helper()
	t.Run("Sequences", func(t *testing.T) {
		t.Parallel()
		testSequences(t, newStore)
	})
	t.Run("ConcurrentAdds", func(t *testing.T) {
		t.Parallel()
		testConcurrentAdds(t, newStore(t))
	})
	t.Run("Expiry", func(t *testing.T) {
		t.Parallel()
		testExpiry(t, newStore(t))
	})
	t.Run("DoneContext", func(t *testing.T) {
		t.Parallel()
		testDoneContext(t, newStore(t))
	})
}

// step is one Add and the value it must return.
type step struct {
	key   string
	delta int64
	want  int64
}

// printable holds every byte a memcached key may contain, '!' to '~'.
var printable = func() string {
	var b strings.Builder
	for c := byte('!'); c <= '~'; c++ {
		b.WriteByte(c)
	}
	return b.String()
}()

// longKey is a key of memcached's maximum length, 250 bytes.
var longKey = strings.Repeat(printable, 3)[:250]

func testSequences(t *testing.T, newStore func(t *testing.T) limiter.Store) {
	tests := []struct {
		name  string
		steps []step
		get   []string
		want  map[string]int64
	}{
		{
			name: "missing key counts as zero",
			get:  []string{"fg1:nobody:1"},
			want: map[string]int64{},
		},
		{
			name: "get of no keys",
			get:  nil,
			want: map[string]int64{},
		},
		{
			name:  "add creates the counter with delta",
			steps: []step{{"fg1:a:1", 3, 3}},
			get:   []string{"fg1:a:1"},
			want:  map[string]int64{"fg1:a:1": 3},
		},
		{
			name:  "adds increment",
			steps: []step{{"k", 1, 1}, {"k", 2, 3}, {"k", 5, 8}},
			get:   []string{"k"},
			want:  map[string]int64{"k": 8},
		},
		{
			name:  "zero delta reads an existing counter",
			steps: []step{{"k", 4, 4}, {"k", 0, 4}},
			get:   []string{"k"},
			want:  map[string]int64{"k": 4},
		},
		{
			name:  "zero delta does not create a counter",
			steps: []step{{"k", 0, 0}},
			get:   []string{"k"},
			want:  map[string]int64{},
		},
		{
			name:  "decrement",
			steps: []step{{"k", 10, 10}, {"k", -3, 7}},
			get:   []string{"k"},
			want:  map[string]int64{"k": 7},
		},
		{
			name:  "decrement clamps at zero",
			steps: []step{{"k", 2, 2}, {"k", -5, 0}, {"k", -1, 0}, {"k", 1, 1}},
			get:   []string{"k"},
			want:  map[string]int64{"k": 1},
		},
		{
			name:  "decrement of a missing key returns zero and creates nothing",
			steps: []step{{"k", -3, 0}},
			get:   []string{"k"},
			want:  map[string]int64{},
		},
		{
			name:  "counter at zero still exists",
			steps: []step{{"k", 2, 2}, {"k", -2, 0}},
			get:   []string{"k"},
			want:  map[string]int64{"k": 0},
		},
		{
			name: "get of many keys with missing ones in one call",
			steps: []step{
				{"fg1:a:100", 1, 1},
				{"fg1:a:101", 2, 2},
				{"fg1:b:100", 3, 3},
				{"fg1:a:m5", 40, 40},
			},
			get: []string{"fg1:a:99", "fg1:a:100", "fg1:a:101", "fg1:a:102", "fg1:b:100", "fg1:a:m5", "fg1:c:100"},
			want: map[string]int64{
				"fg1:a:100": 1,
				"fg1:a:101": 2,
				"fg1:b:100": 3,
				"fg1:a:m5":  40,
			},
		},
		{
			name:  "get of a key listed twice",
			steps: []step{{"k", 1, 1}},
			get:   []string{"k", "k"},
			want:  map[string]int64{"k": 1},
		},
		{
			name:  "large values",
			steps: []step{{"k", 1 << 40, 1 << 40}, {"k", 1 << 40, 1 << 41}, {"k", -(1 << 41), 0}},
			get:   []string{"k"},
			want:  map[string]int64{"k": 0},
		},
		{
			name: "keys of every byte memcached allows are distinct",
			steps: []step{
				{printable, 1, 1},
				{longKey, 2, 2},
				{longKey[:249], 3, 3},
				{longKey[:249] + "!", 4, 4},
				{"a:b:c:d", 5, 5},
				{"a:b:c", 6, 6},
				{"~", 7, 7},
			},
			get: []string{printable, longKey, longKey[:249], longKey[:249] + "!", "a:b:c:d", "a:b:c", "~", "a:b"},
			want: map[string]int64{
				printable:           1,
				longKey:             2,
				longKey[:249]:       3,
				longKey[:249] + "!": 4,
				"a:b:c:d":           5,
				"a:b:c":             6,
				"~":                 7,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t)
			ctx := context.Background()
			for i, st := range tt.steps {
				got, err := s.Add(ctx, st.key, st.delta, ttl)
				if err != nil {
					t.Fatalf("step %d: Add(%q, %d): %v", i, st.key, st.delta, err)
				}
				if got != st.want {
					t.Fatalf("step %d: Add(%q, %d) = %d, want %d", i, st.key, st.delta, got, st.want)
				}
			}
			got, err := s.Get(ctx, tt.get)
			if err != nil {
				t.Fatalf("Get(%q): %v", tt.get, err)
			}
			if got == nil {
				t.Fatalf("Get(%q) returned a nil map", tt.get)
			}
			if !maps.Equal(got, tt.want) {
				t.Errorf("Get(%q) = %v, want %v", tt.get, got, tt.want)
			}
		})
	}
}

// testConcurrentAdds races 50 goroutines on fresh keys, so that several of
// them find each counter missing and try to create it at once.
func testConcurrentAdds(t *testing.T, s limiter.Store) {
	const (
		goroutines = 50
		adds       = 20
	)
	keys := []string{"fg1:race:1", "fg1:race:2"}
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			for i := range adds {
				// Alternate the key order so goroutines create both.
				if _, err := s.Add(ctx, keys[(g+i)%2], 1, ttl); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Add: %v", err)
	}
	got, err := s.Get(ctx, keys)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	want := map[string]int64{keys[0]: goroutines * adds / 2, keys[1]: goroutines * adds / 2}
	if !maps.Equal(got, want) {
		t.Errorf("after %d concurrent Adds of 1: Get = %v, want %v", goroutines*adds, got, want)
	}
}

// testExpiry checks, in one wait, that counters expire their ttl after they
// were created, that adding does not extend the ttl, and that an expired
// counter is created anew by the next Add.
func testExpiry(t *testing.T, s limiter.Store) {
	ctx := context.Background()
	mustAdd := func(key string, delta int64, ttl time.Duration, want int64) {
		t.Helper()
		got, err := s.Add(ctx, key, delta, ttl)
		if err != nil {
			t.Fatalf("Add(%q, %d, %v): %v", key, delta, ttl, err)
		}
		if got != want {
			t.Fatalf("Add(%q, %d, %v) = %d, want %d", key, delta, ttl, got, want)
		}
	}
	mustAdd("short", 1, time.Second, 1)
	mustAdd("short", 1, time.Hour, 2) // must not extend the TTL
	mustAdd("long", 5, time.Hour, 5)

	// memcached's clock ticks once a second, so a 1s counter lives up to 2s.
	time.Sleep(2100 * time.Millisecond)

	got, err := s.Get(ctx, []string{"short", "long"})
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if want := map[string]int64{"long": 5}; !maps.Equal(got, want) {
		t.Errorf("after the 1s TTL: Get = %v, want %v", got, want)
	}
	mustAdd("short", 3, time.Hour, 3)
}

// testDoneContext checks that a store refuses work for a cancelled context
// and reports why.
func testDoneContext(t *testing.T, s limiter.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Add(ctx, "k", 1, ttl); !errors.Is(err, context.Canceled) || !errors.Is(err, limiter.ErrStoreUnavailable) {
		t.Errorf("Add with a cancelled context: error %v, want one wrapping context.Canceled and limiter.ErrStoreUnavailable", err)
	}
	if _, err := s.Get(ctx, []string{"k"}); !errors.Is(err, context.Canceled) || !errors.Is(err, limiter.ErrStoreUnavailable) {
		t.Errorf("Get with a cancelled context: error %v, want one wrapping context.Canceled and limiter.ErrStoreUnavailable", err)
	}
	got, err := s.Get(context.Background(), []string{"k"})
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if len(got) != 0 {
		t.Errorf("Add with a cancelled context changed the store: Get = %v", got)
	}
}
