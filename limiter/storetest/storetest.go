// Package storetest is the conformance suite every limiter.Store passes. A
// store's tests call Run with a constructor; the suite checks the contract
// documented on limiter.Store (counters, batches and versioned values)
// against the store running for real. Benchmark measures a store.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/internal/testutil"
	"github.com/floodgate-rl/floodgate/limiter"
)

// ttl is the time to live of counters in the tests that do not wait for
// expiry: long enough that none expires while the suite runs.
const ttl = time.Minute

// expired bounds how long a value written with a 1s ttl may still be read:
// memcached's clock ticks once a second, so such a value lives up to 2s.
const expired = 2100 * time.Millisecond

// Run runs the conformance suite against the stores newStore returns: the
// counters (Add, Get, Batch) and the values (GetVersioned,
// CompareAndSwap). It calls newStore once per subtest, with that subtest's
// t; each store must be empty, used by that subtest only, and released by
// newStore's own t.Cleanup. Subtests run in parallel with each other. Two
// subtests wait up to about two seconds for counters and values to expire,
// because a real memcached cannot be given a fake clock.
func Run(t *testing.T, newStore func(t *testing.T) limiter.Store) {
	t.Helper()
	runSuite(t, newStore, "Sequences", sequences, map[string]func(*testing.T, limiter.Store){
		"ConcurrentAdds":   testConcurrentAdds,
		"Expiry":           testExpiry,
		"DoneContext":      testDoneContext,
		"Batch":            testBatch,
		"BatchDoneContext": testBatchDoneContext,
	})
	runSuite(t, newStore, "SwapSequences", swapSequences, map[string]func(*testing.T, limiter.Store){
		"SwapValuesAreCopies": testSwapCopies,
		"ConcurrentSwaps":     testConcurrentSwaps,
		"SwapExpiry":          testSwapExpiry,
		"SwapDoneContext":     testSwapDoneContext,
	})
}

// testBatch checks that a Batch applies its adds in order, as Add does,
// then reads, seeing them: counts, floors at zero, missing keys absent.
func testBatch(t *testing.T, s limiter.Store) {
	ctx := context.Background()
	adds := []limiter.Increment{
		{Key: "fg1:b:a", Delta: 2, TTL: ttl},
		{Key: "fg1:b:b", Delta: 3, TTL: ttl},
		{Key: "fg1:b:a", Delta: 1, TTL: ttl},
		{Key: "fg1:b:b", Delta: -5, TTL: ttl}, // floors at 0
		{Key: "fg1:b:n", Delta: -1, TTL: ttl}, // creates nothing
	}
	vals, counts, err := s.Batch(ctx, []string{"fg1:b:a", "fg1:b:b", "fg1:b:n", "fg1:b:missing"}, adds)
	if err != nil {
		t.Fatalf("Batch: %v", err)
	}
	if want := []int64{2, 3, 3, 0, 0}; !slices.Equal(counts, want) {
		t.Errorf("Batch counts = %v, want %v", counts, want)
	}
	if want := map[string]int64{"fg1:b:a": 3, "fg1:b:b": 0}; !maps.Equal(vals, want) {
		t.Errorf("Batch read = %v, want %v (a counter at zero present, missing keys absent)", vals, want)
	}
	// Reads only, as Get; adds only, with no read.
	if vals, counts, err := s.Batch(ctx, []string{"fg1:b:a"}, nil); err != nil || len(counts) != 0 || !maps.Equal(vals, map[string]int64{"fg1:b:a": 3}) {
		t.Errorf("read-only Batch = %v, %v, %v; want a=3, no counts", vals, counts, err)
	}
	if vals, counts, err := s.Batch(ctx, nil, adds[:1]); err != nil || !slices.Equal(counts, []int64{5}) || len(vals) != 0 {
		t.Errorf("add-only Batch = %v, %v, %v; want [5] and nothing read", vals, counts, err)
	}
	if got, err := s.Get(ctx, []string{"fg1:b:a"}); err != nil || got["fg1:b:a"] != 5 {
		t.Errorf("Get after the batches = %v, %v; want a=5", got, err)
	}
}

// testBatchDoneContext checks that a Batch with a done context fails with
// an error wrapping the context's and limiter.ErrStoreUnavailable.
func testBatchDoneContext(t *testing.T, s limiter.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err := s.Batch(ctx, []string{"k"}, []limiter.Increment{{Key: "k", Delta: 1, TTL: ttl}})
	if !errors.Is(err, limiter.ErrStoreUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("Batch with a cancelled context: error %v, want one wrapping context.Canceled and limiter.ErrStoreUnavailable", err)
	}
}

// runSuite runs a suite as parallel subtests of t, each on a store of its
// own from newStore: a subtest named table holding a subtest for each of
// cases, and a subtest for each of tests, named by their keys.
func runSuite[S any, C interface{ check(*testing.T, S) }](t *testing.T, newStore func(t *testing.T) S,
	table string, cases map[string]C, tests map[string]func(*testing.T, S)) {
	t.Helper()
	t.Run(table, func(t *testing.T) {
		t.Parallel()
		for _, name := range slices.Sorted(maps.Keys(cases)) {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				cases[name].check(t, newStore(t))
			})
		}
	})
	for _, name := range slices.Sorted(maps.Keys(tests)) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			tests[name](t, newStore(t))
		})
	}
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

// sequence is a conformance case: Adds in order, each with the value it must
// return, then one Get and the counters it must find.
type sequence struct {
	steps []step
	get   []string
	want  map[string]int64
}

// sequences are the cases of the Sequences subtest, by name.
var sequences = map[string]sequence{
	"missing key counts as zero": {
		get:  []string{"fg1:nobody:1"},
		want: map[string]int64{},
	},
	"get of no keys": {
		get:  nil,
		want: map[string]int64{},
	},
	"add creates the counter with delta": {
		steps: []step{{"fg1:a:1", 3, 3}},
		get:   []string{"fg1:a:1"},
		want:  map[string]int64{"fg1:a:1": 3},
	},
	"adds increment": {
		steps: []step{{"k", 1, 1}, {"k", 2, 3}, {"k", 5, 8}},
		get:   []string{"k"},
		want:  map[string]int64{"k": 8},
	},
	"zero delta reads an existing counter": {
		steps: []step{{"k", 4, 4}, {"k", 0, 4}},
		get:   []string{"k"},
		want:  map[string]int64{"k": 4},
	},
	"zero delta does not create a counter": {
		steps: []step{{"k", 0, 0}},
		get:   []string{"k"},
		want:  map[string]int64{},
	},
	"decrement": {
		steps: []step{{"k", 10, 10}, {"k", -3, 7}},
		get:   []string{"k"},
		want:  map[string]int64{"k": 7},
	},
	"decrement clamps at zero": {
		steps: []step{{"k", 2, 2}, {"k", -5, 0}, {"k", -1, 0}, {"k", 1, 1}},
		get:   []string{"k"},
		want:  map[string]int64{"k": 1},
	},
	"decrement of a missing key returns zero and creates nothing": {
		steps: []step{{"k", -3, 0}},
		get:   []string{"k"},
		want:  map[string]int64{},
	},
	"counter at zero still exists": {
		steps: []step{{"k", 2, 2}, {"k", -2, 0}},
		get:   []string{"k"},
		want:  map[string]int64{"k": 0},
	},
	"get of many keys with missing ones in one call": {
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
	"get of a key listed twice": {
		steps: []step{{"k", 1, 1}},
		get:   []string{"k", "k"},
		want:  map[string]int64{"k": 1},
	},
	"large values": {
		steps: []step{{"k", 1 << 40, 1 << 40}, {"k", 1 << 40, 1 << 41}, {"k", -(1 << 41), 0}},
		get:   []string{"k"},
		want:  map[string]int64{"k": 0},
	},
	"keys of every byte memcached allows are distinct": {
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

// check runs c against s.
func (c sequence) check(t *testing.T, s limiter.Store) {
	ctx := context.Background()
	for i, st := range c.steps {
		got, err := s.Add(ctx, st.key, st.delta, ttl)
		if err != nil {
			t.Fatalf("step %d: Add(%q, %d): %v", i, st.key, st.delta, err)
		}
		if got != st.want {
			t.Fatalf("step %d: Add(%q, %d) = %d, want %d", i, st.key, st.delta, got, st.want)
		}
	}
	got, err := s.Get(ctx, c.get)
	if err != nil {
		t.Fatalf("Get(%q): %v", c.get, err)
	}
	if got == nil {
		t.Fatalf("Get(%q) returned a nil map", c.get)
	}
	if !maps.Equal(got, c.want) {
		t.Errorf("Get(%q) = %v, want %v", c.get, got, c.want)
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

	testutil.WaitFor(t, expired, func() error {
		got, err := s.Get(ctx, []string{"short", "long"})
		if err != nil {
			return fmt.Errorf("Get: %w", err)
		}
		if want := map[string]int64{"long": 5}; !maps.Equal(got, want) {
			return fmt.Errorf("after the 1s TTL: Get = %v, want %v", got, want)
		}
		return nil
	})
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

// swapStep is one CompareAndSwap and its expected outcome. ver picks the
// version to pass: 0, the version the last successful write gave the key
// (-1), or the one before it (-2).
type swapStep struct {
	value string
	ver   int
	want  bool
}

const (
	create  = 0
	current = -1
	stale   = -2
	bogus   = -3 // a version the key never had
)

// swapSequence is a conformance case of a Store's values: CompareAndSwaps of one
// key in order, then the value GetVersioned must find.
type swapSequence struct {
	steps []swapStep
	want  string // the value GetVersioned finds at the end
	found bool
}

var (
	// binaryValue holds bytes of memcached's text protocol.
	binaryValue = "\x00\x01\r\nEND\r\n\xff" + strings.Repeat("\x00", 100)
	// bigValue is 64 KiB long.
	bigValue = strings.Repeat(printable, 64<<10/len(printable)+1)[:64<<10]
)

// swapSequences are the cases of the SwapSequences subtest, by name.
var swapSequences = map[string]swapSequence{
	"missing key has version 0 and no value": {},
	"create with version 0": {
		steps: []swapStep{{"a", create, true}},
		want:  "a", found: true,
	},
	"version 0 does not overwrite an existing value": {
		steps: []swapStep{{"a", create, true}, {"b", create, false}},
		want:  "a", found: true,
	},
	"swap with the current version": {
		steps: []swapStep{{"a", create, true}, {"b", current, true}, {"c", current, true}},
		want:  "c", found: true,
	},
	"swap with a stale version is refused": {
		steps: []swapStep{{"a", create, true}, {"b", current, true}, {"c", stale, false}},
		want:  "b", found: true,
	},
	"swap of a missing key is refused and creates nothing": {
		steps: []swapStep{{"a", bogus, false}},
	},
	"empty value": {
		steps: []swapStep{{"", create, true}},
		want:  "", found: true,
	},
	"binary value with protocol bytes": {
		steps: []swapStep{{binaryValue, create, true}, {"x" + binaryValue, current, true}},
		want:  "x" + binaryValue, found: true,
	},
	"64 KiB value": {
		steps: []swapStep{{"small", create, true}, {bigValue, current, true}},
		want:  bigValue, found: true,
	},
}

// check runs c against s.
func (c swapSequence) check(t *testing.T, s limiter.Store) {
	ctx := context.Background()
	const key = "fg1:swap:l"
	var versions []uint64 // of the successful writes, in order
	for i, st := range c.steps {
		var ver uint64
		switch st.ver {
		case current:
			ver = versions[len(versions)-1]
		case stale:
			ver = versions[len(versions)-2]
		case bogus:
			ver = 123456789
		}
		ok, err := s.CompareAndSwap(ctx, key, []byte(st.value), ver, ttl)
		if err != nil {
			t.Fatalf("step %d: CompareAndSwap(version %d): %v", i, ver, err)
		}
		if ok != st.want {
			t.Fatalf("step %d: CompareAndSwap(version %d) = %v, want %v", i, ver, ok, st.want)
		}
		if !ok {
			continue
		}
		_, v, err := s.GetVersioned(ctx, key)
		if err != nil {
			t.Fatalf("step %d: GetVersioned: %v", i, err)
		}
		if v == 0 || slices.Contains(versions, v) {
			t.Fatalf("step %d: write gave version %d; want non-zero and new (had %v)", i, v, versions)
		}
		versions = append(versions, v)
	}
	got, v, err := s.GetVersioned(ctx, key)
	if err != nil {
		t.Fatalf("GetVersioned: %v", err)
	}
	if (v != 0) != c.found {
		t.Fatalf("GetVersioned: version %d, want found=%v", v, c.found)
	}
	if !c.found && got != nil {
		t.Errorf("GetVersioned of a missing key = %q, want nil", got)
	}
	if string(got) != c.want {
		t.Errorf("GetVersioned = %.40q (%d bytes), want %.40q (%d bytes)", got, len(got), c.want, len(c.want))
	}
}

// testSwapCopies checks that neither the caller's slice nor the one
// GetVersioned returns aliases what the store keeps.
func testSwapCopies(t *testing.T, s limiter.Store) {
	ctx := context.Background()
	buf := []byte("original")
	if ok, err := s.CompareAndSwap(ctx, "k", buf, 0, ttl); err != nil || !ok {
		t.Fatalf("CompareAndSwap = %v, %v; want true, nil", ok, err)
	}
	copy(buf, "XXXXXXXX")
	got, _, err := s.GetVersioned(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "original" {
		t.Fatalf("after changing the written slice: GetVersioned = %q, want %q", got, "original")
	}
	copy(got, "YYYYYYYY")
	again, _, err := s.GetVersioned(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != "original" {
		t.Fatalf("after changing a read slice: GetVersioned = %q, want %q", again, "original")
	}
}

// testConcurrentSwaps has 20 goroutines increment a decimal value by
// read-modify-write, each retrying on conflicts: no increment may be lost,
// which holds only if at most one of concurrent swaps succeeds.
func testConcurrentSwaps(t *testing.T, s limiter.Store) {
	const (
		goroutines = 20
		increments = 25
	)
	ctx := context.Background()
	const key = "fg1:cas-race:l"
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for range goroutines {
		wg.Go(func() {
			for range increments {
				for {
					b, v, err := s.GetVersioned(ctx, key)
					if err != nil {
						errs <- err
						return
					}
					n := 0
					if v != 0 {
						if n, err = strconv.Atoi(string(b)); err != nil {
							errs <- fmt.Errorf("value %q: %w", b, err)
							return
						}
					}
					ok, err := s.CompareAndSwap(ctx, key, strconv.AppendInt(nil, int64(n+1), 10), v, ttl)
					if err != nil {
						errs <- err
						return
					}
					if ok {
						break
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("read-modify-write: %v", err)
	}
	b, _, err := s.GetVersioned(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if want := strconv.Itoa(goroutines * increments); string(b) != want {
		t.Errorf("after %d concurrent increments by compare-and-swap: value %q, want %q", goroutines*increments, b, want)
	}
}

// testSwapExpiry checks, in one wait, that a value expires its ttl after its
// last write, that each write sets the ttl anew, and that once expired a key
// counts as missing: a swap with its old version is refused and version 0
// creates it again.
func testSwapExpiry(t *testing.T, s limiter.Store) {
	ctx := context.Background()
	mustSwap := func(key, value string, ver uint64, ttl time.Duration) uint64 {
		t.Helper()
		ok, err := s.CompareAndSwap(ctx, key, []byte(value), ver, ttl)
		if err != nil || !ok {
			t.Fatalf("CompareAndSwap(%q, %q, %d, %v) = %v, %v; want true", key, value, ver, ttl, ok, err)
		}
		_, v, err := s.GetVersioned(ctx, key)
		if err != nil || v == 0 {
			t.Fatalf("GetVersioned(%q) after a write: version %d, %v", key, v, err)
		}
		return v
	}
	v := mustSwap("extended", "1", 0, time.Second)
	mustSwap("extended", "2", v, time.Hour) // sets the ttl anew
	// Written last, "short" expires no sooner than "extended" would have
	// without its rewrite: once "short" is gone, "extended" must have
	// outlived its first ttl.
	shortV := mustSwap("short", "1", 0, time.Second)

	testutil.WaitFor(t, expired, func() error {
		if b, v, err := s.GetVersioned(ctx, "short"); err != nil || v != 0 || b != nil {
			return fmt.Errorf("after the 1s TTL: GetVersioned = %q, %d, %v; want nil, 0, nil", b, v, err)
		}
		return nil
	})
	if b, _, err := s.GetVersioned(ctx, "extended"); err != nil || string(b) != "2" {
		t.Errorf("rewritten with a 1h TTL: GetVersioned = %q, %v; want %q", b, err, "2")
	}
	if ok, err := s.CompareAndSwap(ctx, "short", []byte("x"), shortV, time.Hour); err != nil || ok {
		t.Errorf("swap of an expired value with its old version = %v, %v; want false, nil", ok, err)
	}
	mustSwap("short", "3", 0, time.Hour)
}

// testSwapDoneContext checks that a cancelled context fails both methods and
// changes nothing.
func testSwapDoneContext(t *testing.T, s limiter.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	wantErr := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, context.Canceled) || !errors.Is(err, limiter.ErrStoreUnavailable) {
			t.Errorf("%s with a cancelled context: error %v, want one wrapping context.Canceled and limiter.ErrStoreUnavailable", op, err)
		}
	}
	ok, err := s.CompareAndSwap(ctx, "k", []byte("v"), 0, ttl)
	wantErr("CompareAndSwap", err)
	if ok {
		t.Error("CompareAndSwap with a cancelled context reported a write")
	}
	_, _, err = s.GetVersioned(ctx, "k")
	wantErr("GetVersioned", err)
	if b, v, err := s.GetVersioned(context.Background(), "k"); err != nil || v != 0 || b != nil {
		t.Errorf("CompareAndSwap with a cancelled context changed the store: GetVersioned = %q, %d, %v", b, v, err)
	}
}
