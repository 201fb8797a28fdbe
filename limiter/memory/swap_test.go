package memory_test

import (
	"context"
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/internal/testutil"
)

// TestStoreSwapClock drives the expiry of values with an injected
// clock, without sleeping.
func TestStoreSwapClock(t *testing.T) {
	clock := testutil.NewClock(t0)
	s := newMemoryStore(t, clock.Now)
	ctx := context.Background()
	swap := func(value string, ver uint64, ttl time.Duration, want bool) {
		t.Helper()
		ok, err := s.CompareAndSwap(ctx, "k", []byte(value), ver, ttl)
		if err != nil || ok != want {
			t.Fatalf("at +%v: CompareAndSwap(%q, %d, %v) = %v, %v; want %v", clock.Now().Sub(t0), value, ver, ttl, ok, err, want)
		}
	}
	get := func() (string, uint64) {
		t.Helper()
		b, v, err := s.GetVersioned(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		return string(b), v
	}

	swap("a", 0, 1500*time.Millisecond, true) // lives 2s
	_, v1 := get()
	clock.Set(t0.Add(2*time.Second - 1))
	if b, v := get(); b != "a" || v != v1 {
		t.Fatalf("just before expiry: %q, %d; want %q, %d", b, v, "a", v1)
	}
	swap("b", v1, 10*time.Second, true) // the ttl starts again
	_, v2 := get()
	clock.Set(t0.Add(12*time.Second - 2))
	if b, _ := get(); b != "b" {
		t.Fatalf("before the new ttl ends: %q, want %q", b, "b")
	}
	if n := s.Len(); n != 1 {
		t.Fatalf("Len = %d, want 1", n)
	}
	clock.Set(t0.Add(12 * time.Second))
	if b, v := get(); b != "" || v != 0 {
		t.Fatalf("after the ttl: %q, %d; want missing", b, v)
	}
	if n := s.Len(); n != 0 {
		t.Fatalf("after the ttl: Len = %d, want 0", n)
	}
	swap("c", v2, time.Minute, false) // the old incarnation's version
	swap("c", 0, time.Minute, true)
	if _, v3 := get(); v3 == v1 || v3 == v2 {
		t.Fatalf("recreated key reuses version %d", v3)
	}
}

// TestStoreCountersAndValuesApart checks that a counter and a value of
// the same key do not see each other.
func TestStoreCountersAndValuesApart(t *testing.T) {
	s := newMemoryStore(t, nil)
	ctx := context.Background()
	if _, err := s.Add(ctx, "k", 5, time.Minute); err != nil {
		t.Fatal(err)
	}
	if b, v, err := s.GetVersioned(ctx, "k"); err != nil || v != 0 || b != nil {
		t.Fatalf("GetVersioned of a counter's key = %q, %d, %v; want missing", b, v, err)
	}
	if ok, err := s.CompareAndSwap(ctx, "k", []byte("x"), 0, time.Minute); err != nil || !ok {
		t.Fatalf("CompareAndSwap = %v, %v", ok, err)
	}
	if got, err := s.Get(ctx, []string{"k"}); err != nil || got["k"] != 5 {
		t.Fatalf("Get = %v, %v; want k=5", got, err)
	}
}
