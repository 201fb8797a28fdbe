package memory

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"
)

// stored returns how many counters m holds in memory, expired or not, and
// the sum of its shards' table capacities.
func (m *Store) stored() (n, capacity int) {
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		n += sh.tab.n
		capacity += len(sh.tab.slots)
		sh.mu.Unlock()
	}
	return n, capacity
}

// TestStoreSweep checks that the janitor's sweep frees expired counters,
// keeps live ones, and rebuilds shards that emptied out.
func TestStoreSweep(t *testing.T) {
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	now := t0
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	m := New(clock)
	t.Cleanup(func() { m.Close() })
	ctx := context.Background()

	// Enough short-lived counters that every shard passes shrinkMin.
	const short, long = memShards * shrinkMin * 2, 100
	for i := range short {
		if _, err := m.Add(ctx, "short:"+strconv.Itoa(i), 1, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	for i := range long {
		if _, err := m.Add(ctx, "long:"+strconv.Itoa(i), 1, time.Hour); err != nil {
			t.Fatal(err)
		}
	}

	m.sweep() // nothing has expired yet
	n, peak := m.stored()
	if n != short+long {
		t.Fatalf("sweep before expiry: %d counters stored, want %d", n, short+long)
	}

	mu.Lock()
	now = t0.Add(time.Second)
	mu.Unlock()
	m.sweep()
	n, capacity := m.stored()
	if n != long {
		t.Errorf("sweep after the short ttl: %d counters stored, want %d", n, long)
	}
	// Every shard shrinks to the smallest table that holds its few
	// counters.
	if capacity > memShards*tableMinCap*2 || capacity*100 > peak {
		t.Errorf("sweep after the short ttl: tables hold %d slots (%d before), want them rebuilt small", capacity, peak)
	}
	got, err := m.Get(ctx, []string{"long:0", "long:99", "short:0"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["long:0"] != 1 || got["long:99"] != 1 {
		t.Errorf("after sweep: Get = %v, want long:0 and long:99 at 1", got)
	}
}

func TestExpiry(t *testing.T) {
	const now = int64(1_000_000_000_000)
	tests := []struct {
		ttl  time.Duration
		want time.Duration
	}{
		{-time.Hour, time.Second},
		{0, time.Second},
		{1, time.Second},
		{time.Second, time.Second},
		{time.Second + 1, 2 * time.Second},
		{90 * time.Minute, 90 * time.Minute},
		{3601*time.Second - 1, 3601 * time.Second},
	}
	for _, tt := range tests {
		if got := time.Duration(expiry(now, tt.ttl) - now); got != tt.want {
			t.Errorf("expiry(now, %v) = now+%v, want now+%v", tt.ttl, got, tt.want)
		}
	}
}
