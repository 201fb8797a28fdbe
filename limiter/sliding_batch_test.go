package limiter

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// batchingStore batches over a countingStore's Store: a Batch is
// one round trip, counted in batches and not in gets or adds.
type batchingStore struct {
	*countingStore
	batches atomic.Int64
}

func (b *batchingStore) Batch(ctx context.Context, gets []string, adds []Increment) (map[string]int64, []int64, error) {
	b.batches.Add(1)
	return BatchSequentially(ctx, b.countingStore.Store, gets, adds)
}

// trips is every round trip the rig's store has made.
func (b *batchingStore) trips() int64 {
	return b.batches.Load() + b.gets.Load() + b.adds.Load()
}

// newBatchRig is newRig with replicas on a store that batches; replicas listed in
// plain use the same counters without batching.
func newBatchRig(t *testing.T, replicas int, plain ...int) (*rig, *batchingStore) {
	t.Helper()
	r := newRig(t, 0)
	bs := &batchingStore{countingStore: r.store}
	for i := range replicas {
		var st Store = bs
		for _, p := range plain {
			if p == i {
				st = r.store
			}
		}
		s := NewSliding(st, SlidingConfig{})
		t.Cleanup(func() { s.Close() })
		r.replicas = append(r.replicas, s)
	}
	return r, bs
}

// TestSlidingBatchRoundTrips pins the cost model with a store that batches: one
// round trip per counted request, cold, returning or in a new second; none
// for a denial within a second; one small read per second for a requestor
// that keeps being denied.
func TestSlidingBatchRoundTrips(t *testing.T) {
	r, bs := newBatchRig(t, 1)
	other := NewSliding(r.store, SlidingConfig{})
	for s := 0; s < 3600; s += 40 {
		r.clock.Set(sec(s))
		if _, err := other.Allow(context.Background(), hourly, sec(s)); err != nil {
			t.Fatal(err)
		}
	}
	step := func(name string, at int, wantAllowed bool, want int64) {
		t.Helper()
		before := bs.trips()
		if d := r.at(t, 0, hourly, sec(at)); d.Allowed != wantAllowed {
			t.Fatalf("%s: allowed = %v, want %v", name, d.Allowed, wantAllowed)
		}
		if got := bs.trips() - before; got != want {
			t.Fatalf("%s: %d round trips, want %d", name, got, want)
		}
	}
	keys0 := r.store.keys.Load()
	step("cold requestor", 3610, true, 1)
	step("returning, new second", 3611, true, 1)
	step("returning, same second", 3611, true, 1)
	if keys := r.store.keys.Load() - keys0; keys != 0 {
		t.Fatalf("batches read through Get: %d keys", keys)
	}
	for r.at(t, 0, hourly, sec(3612)).Allowed {
	}
	// A denied requestor is read, not counted, while its count is fresh;
	// once the limit is reached on settled seconds alone, it costs nothing.
	step("denied, same second", 3612, false, 1)
	step("denied again in a new second", 3613, false, 1)
	step("denied, same second again", 3613, false, 1)
	step("denied on settled seconds, first in its second", 3612+int(r.replicas[0].lag), false, 2)
	step("denied on settled seconds, known retry", 3612+int(r.replicas[0].lag), false, 0)
}

// TestSlidingBatchConcurrentReplicas is the exactness guarantee with
// batching replicas, and checks that no denied request left a count.
func TestSlidingBatchConcurrentReplicas(t *testing.T) {
	r, _ := newBatchRig(t, 3)
	// Each replica has seen the requestor, so the concurrent decisions of
	// the next second read and count in one batch.
	for i := range 3 {
		r.at(t, i, Request{Requestor: hourly.Requestor, Limit: 1000, Window: time.Hour}, sec(0))
	}
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for i := range 300 {
		wg.Go(func() {
			d, err := r.replicas[i%3].Allow(context.Background(), hourly, sec(2))
			if err != nil {
				t.Error(err)
			}
			if d.Allowed {
				allowed.Add(1)
			}
		})
	}
	wg.Wait()
	if n := allowed.Load(); n != 97 {
		t.Fatalf("%d allowed, want exactly 97 (100 minus the 3 of second 0)", n)
	}
	fresh := NewSliding(r.store, SlidingConfig{})
	d, err := fresh.Allow(context.Background(), hourly, sec(5))
	if err != nil || d.Allowed || d.RetryAfter != 3595*time.Second {
		t.Fatalf("fresh replica: %+v, %v; want denied with retry 3595s", d, err)
	}
	id := RequestorID("", 3600, hourly.Requestor)
	vals, err := r.store.Store.Get(context.Background(), []string{secondKey(id, t0.Unix()+2), minuteKey(id, t0.Unix()/60)})
	if err != nil {
		t.Fatal(err)
	}
	if s, m := vals[secondKey(id, t0.Unix()+2)], vals[minuteKey(id, t0.Unix()/60)]; s != 97 || m != 100 {
		t.Fatalf("counters: second %d, minute %d; want 97 and 100", s, m)
	}
}
