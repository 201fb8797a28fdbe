package memory

import (
	"math"
	"math/bits"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
)

// checkTable verifies t's invariants: n counts the occupied slots, every key
// is found where it is, and the Robin Hood order holds (a key is never more
// than one slot further from its home than the key before it, and a key
// right after an empty slot is at its home).
func checkTable(tb testing.TB, t *memTable) {
	tb.Helper()
	c := len(t.slots)
	n := 0
	for i := range t.slots {
		s := &t.slots[i]
		if s.key[1] == 0 {
			if s.key[0] != 0 || s.value != 0 || s.expires != 0 {
				tb.Fatalf("slot %d: empty slot not zeroed: %+v", i, *s)
			}
			continue
		}
		n++
		if j := t.find(s.key); j != i {
			tb.Fatalf("slot %d: find(%x) = %d", i, s.key, j)
		}
		prev := &t.slots[(i+c-1)%c]
		d := t.dist(i, s.key[1])
		switch {
		case prev.key[1] == 0 && d != 0:
			tb.Fatalf("slot %d: %d slots from home after an empty slot", i, d)
		case prev.key[1] != 0 && d > t.dist((i+c-1)%c, prev.key[1])+1:
			tb.Fatalf("slot %d: %d slots from home, the key before it %d", i, d, t.dist((i+c-1)%c, prev.key[1]))
		}
	}
	if n != t.n {
		tb.Fatalf("n = %d, but %d slots are occupied", t.n, n)
	}
}

// keyAt returns the i-th of the keys whose home is slot h in a table of
// capacity slots, for i well below 2^64/capacity.
func keyAt(h, capacity int, i uint64) memKey {
	q, _ := bits.Div64(uint64(h), 0, uint64(capacity)) // floor(h * 2^64 / capacity)
	return memKey{i + 1, q + 1 + i}
}

func TestMemTableHome(t *testing.T) {
	for _, c := range []int{1, 16, 17, 1000, 1 << 20} {
		for _, h := range []int{0, c / 2, c - 1} {
			for _, i := range []uint64{0, 1, 100} {
				if k := keyAt(h, c, i); home(k[1], c) != h {
					t.Fatalf("home(keyAt(%d, %d, %d)) = %d", h, c, i, home(k[1], c))
				}
			}
		}
	}
	if h := home(math.MaxUint64, 12345); h != 12344 {
		t.Fatalf("home(MaxUint64, 12345) = %d, want the last slot", h)
	}
}

// TestMemTableCollisions fills a table of fixed capacity with keys that all
// share a few home slots, the last one's cluster wrapping around the end,
// then removes them in random order.
func TestMemTableCollisions(t *testing.T) {
	const c = 64
	var tab memTable
	tab.slots, tab.mem = allocSlots(c)
	var keys []memKey
	for i := range uint64(12) {
		keys = append(keys, keyAt(c-2, c, i), keyAt(3, c, i), keyAt(c/2, c, i), keyAt(4, c, i))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	for i, k := range keys {
		if tab.find(k) >= 0 {
			t.Fatalf("key %d found before it was placed", i)
		}
		tab.place(memSlot{key: k, value: int64(i), expires: math.MaxInt64})
		checkTable(t, &tab)
	}
	if tab.slots[0].key[1] == 0 || tab.slots[c-1].key[1] == 0 {
		t.Fatal("the cluster at the end did not wrap around")
	}
	for i, k := range keys {
		if v, ok := tab.get(k, 0); !ok || v != int64(i) {
			t.Fatalf("key %d: get = %d, %v", i, v, ok)
		}
	}
	// A missing key whose home is inside a cluster is not found.
	for _, h := range []int{c - 2, c - 1, 0, 3, 4, 5, c / 2} {
		if k := keyAt(h, c, 1000); tab.find(k) >= 0 {
			t.Fatalf("missing key with home %d found", h)
		}
	}
	rng.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	for i, k := range keys {
		j := tab.find(k)
		if j < 0 {
			t.Fatalf("key %d of the removal order not found", i)
		}
		tab.remove(j)
		checkTable(t, &tab)
		if tab.find(k) >= 0 {
			t.Fatalf("key %d found after its removal", i)
		}
		for _, o := range keys[i+1:] {
			if tab.find(o) < 0 {
				t.Fatalf("after removing key %d: key %x lost", i, o)
			}
		}
	}
	if tab.n != 0 {
		t.Fatalf("n = %d after removing everything", tab.n)
	}
}

// TestMemTableMatchesMap runs random adds, gets and sweeps on a table and on
// a Go map with the same meaning, with keys drawn from clusters that share a
// home slot at any capacity (the first and the last slot) and from random
// ones, while the table grows and shrinks.
func TestMemTableMatchesMap(t *testing.T) {
	type counter struct{ value, expires int64 }
	rng := rand.New(rand.NewPCG(3, 4))
	var pool []memKey
	for i := range uint64(300) {
		pool = append(pool,
			memKey{i + 1, 1 + i},              // home 0 at any capacity
			memKey{i + 1, math.MaxUint64 - i}, // the last slot at any capacity
			memKey{rng.Uint64(), rng.Uint64() | 1},
		)
	}
	var tab memTable
	ref := map[memKey]counter{}
	now := int64(1_000_000) * int64(time.Second)
	maxCap := 0
	for op := range 200_000 {
		k := pool[rng.IntN(len(pool))]
		switch r := rng.IntN(100); {
		case r < 60:
			delta := rng.Int64N(5) - 1
			ttl := time.Duration(rng.IntN(20)) * time.Second
			got := tab.add(k, delta, ttl, now)
			want := int64(0)
			c, ok := ref[k]
			switch {
			case ok && c.expires > now:
				c.value = addClamped(c.value, delta)
				ref[k] = c
				want = c.value
			case delta > 0:
				ref[k] = counter{value: delta, expires: expiry(now, ttl)}
				want = delta
			default:
				delete(ref, k)
			}
			if got != want {
				t.Fatalf("op %d: add(%x, %d) = %d, want %d", op, k, delta, got, want)
			}
		case r < 90:
			v, ok := tab.get(k, now)
			c, rok := ref[k]
			rok = rok && c.expires > now
			if ok != rok || (ok && v != c.value) {
				t.Fatalf("op %d: get(%x) = %d, %v; want %d, %v", op, k, v, ok, c.value, rok)
			}
		case r < 99:
			now += int64(rng.IntN(2000)) * int64(time.Millisecond)
		default:
			tab.sweep(now)
			for k, c := range ref {
				if c.expires <= now {
					delete(ref, k)
				}
			}
			if tab.n != len(ref) {
				t.Fatalf("op %d: after sweep, n = %d, want %d", op, tab.n, len(ref))
			}
		}
		maxCap = max(maxCap, len(tab.slots))
		if op%1000 == 0 {
			checkTable(t, &tab)
			live := 0
			for _, c := range ref {
				if c.expires > now {
					live++
				}
			}
			if got := tab.live(now); got != live {
				t.Fatalf("op %d: live = %d, want %d", op, got, live)
			}
		}
	}
	checkTable(t, &tab)
	if maxCap < 256 {
		t.Errorf("the table never grew past %d slots; the test does not exercise growth", maxCap)
	}
}

// TestMemTableGrowth checks the load a growing table keeps, and that growing
// drops expired counters.
func TestMemTableGrowth(t *testing.T) {
	var tab memTable
	rng := rand.New(rand.NewPCG(5, 6))
	const n = 100_000
	keys := make([]memKey, n)
	grows := 0
	for i := range keys {
		keys[i] = memKey{rng.Uint64(), rng.Uint64() | 1}
		c := len(tab.slots)
		tab.add(keys[i], 1, time.Hour, 0)
		if len(tab.slots) != c {
			grows++
			if c > 0 && (tab.n*100 < len(tab.slots)*50 || tab.n*100 > len(tab.slots)*60) {
				t.Fatalf("after growing from %d to %d slots with %d counters: load %.2f, want 0.5-0.6", c, len(tab.slots), tab.n, float64(tab.n)/float64(len(tab.slots)))
			}
		}
		if tab.n*growDen > len(tab.slots)*growNum {
			t.Fatalf("%d counters in %d slots: over the growth threshold", tab.n, len(tab.slots))
		}
	}
	checkTable(t, &tab)
	for i, k := range keys {
		if v, ok := tab.get(k, 0); !ok || v != 1 {
			t.Fatalf("key %d: get = %d, %v", i, v, ok)
		}
	}
	if grows < 15 || grows > 30 {
		t.Errorf("%d growths to %d counters, want growth by about half", grows, n)
	}

	// Counters expired by the time the table must grow are dropped.
	var exp memTable
	for i := range 1000 {
		exp.add(keys[i], 1, time.Second, 0)
	}
	c := len(exp.slots)
	now := int64(time.Second)
	for i := 1000; len(exp.slots) == c; i++ {
		exp.add(keys[i], 1, time.Hour, now)
	}
	checkTable(t, &exp)
	if exp.n != exp.live(now) {
		t.Errorf("after growing: %d counters stored, %d live; want expired ones dropped", exp.n, exp.live(now))
	}
}

// TestMemTableShrink checks that a sweep rebuilds a table that emptied out
// smaller, back onto the heap, and frees an empty one; and that large tables
// are mapped outside the heap.
func TestMemTableShrink(t *testing.T) {
	if _, err := mapAnon(4096); err != nil {
		t.Logf("no anonymous mappings here (%v): tables stay on the heap", err)
	}
	var tab memTable
	rng := rand.New(rand.NewPCG(7, 8))
	const long, short = 100, 50_000
	for i := range long + short {
		ttl := time.Second
		if i < long {
			ttl = time.Hour
		}
		tab.add(memKey{rng.Uint64(), rng.Uint64() | 1}, 1, ttl, 0)
	}
	big := len(tab.slots)
	mapped := tab.mem != nil
	if _, err := mapAnon(4096); err == nil && !mapped {
		t.Errorf("a table of %d bytes lives on the heap, want it mapped (mmapMin %d)", big*slotSize, mmapMin)
	}
	if mapped && mappedBytes.Load() < int64(big*slotSize) {
		t.Errorf("mappedBytes = %d, want at least the table's %d", mappedBytes.Load(), big*slotSize)
	}

	tab.sweep(0) // nothing expired: nothing changes
	if tab.n != long+short || len(tab.slots) != big {
		t.Fatalf("sweep before expiry: %d counters in %d slots, want %d in %d", tab.n, len(tab.slots), long+short, big)
	}
	tab.sweep(int64(time.Second))
	checkTable(t, &tab)
	if tab.n != long {
		t.Fatalf("sweep after expiry: %d counters, want %d", tab.n, long)
	}
	if len(tab.slots) != capacityFor(long) {
		t.Errorf("sweep after expiry: %d slots, want %d", len(tab.slots), capacityFor(long))
	}
	if tab.mem != nil {
		t.Errorf("a table of %d bytes is still mapped", len(tab.slots)*slotSize)
	}

	// A table just under a quarter of its growth threshold shrinks; one
	// just over does not.
	for _, keep := range []int{len(tab.slots) * growNum / growDen / 4, len(tab.slots)*growNum/growDen/4 + 1} {
		var small memTable
		for i := range 300 {
			ttl := time.Second
			if i < keep {
				ttl = time.Hour
			}
			small.add(memKey{rng.Uint64(), rng.Uint64() | 1}, 1, ttl, 0)
		}
		c := len(small.slots)
		small.sweep(int64(time.Second))
		shrunk := len(small.slots) < c
		if want := keep*growDen*4 < c*growNum; shrunk != want {
			t.Errorf("%d of 300 counters left in %d slots: shrunk = %v, want %v", keep, c, shrunk, want)
		}
	}

	tab.sweep(int64(2 * time.Hour))
	if tab.n != 0 || tab.slots != nil {
		t.Errorf("sweep of an expired table: %d counters in %d slots, want it freed", tab.n, len(tab.slots))
	}
	if tab.add(memKey{1, 1}, 1, time.Second, 0) != 1 || tab.n != 1 {
		t.Errorf("add to a freed table failed")
	}
}

// TestMemTableOffHeapCleanup checks that the mapping of a table dropped
// without a sweep (a store dropped after Close) is returned to the system
// once the garbage collector finds the table unreachable.
func TestMemTableOffHeapCleanup(t *testing.T) {
	if _, err := mapAnon(4096); err != nil {
		t.Skipf("no anonymous mappings here: %v", err)
	}
	// mappedBytes is the process's: tables of earlier tests may be
	// unmapped by their cleanups meanwhile, so the check is on what this
	// table adds while it lives and takes away once dropped.
	size, live := func() (int64, int64) {
		tab := new(memTable)
		rng := rand.New(rand.NewPCG(9, 10))
		for range 10_000 {
			tab.add(memKey{rng.Uint64(), rng.Uint64() | 1}, 1, time.Hour, 0)
		}
		if tab.mem == nil {
			t.Fatal("table not mapped")
		}
		live := mappedBytes.Load()
		runtime.KeepAlive(tab)
		return int64(len(tab.slots) * slotSize), live
	}()
	if live < size {
		t.Fatalf("mappedBytes = %d while the table lives, want at least its %d", live, size)
	}
	deadline := time.Now().Add(10 * time.Second)
	for mappedBytes.Load() > live-size {
		if time.Now().After(deadline) {
			t.Fatalf("mappedBytes = %d 10s after the table was dropped, want at most %d", mappedBytes.Load(), live-size)
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond) // the cleanup runs on the runtime's goroutine: nothing to wait on
	}
}

func BenchmarkMemTable(b *testing.B) {
	const n = 1 << 20
	rng := rand.New(rand.NewPCG(11, 12))
	keys := make([]memKey, n)
	for i := range keys {
		keys[i] = memKey{rng.Uint64(), rng.Uint64() | 1}
	}
	b.Run("insert", func(b *testing.B) {
		b.ReportAllocs()
		var tab memTable
		i := 0
		for b.Loop() {
			if i == n {
				tab.setSlots(nil, nil)
				i = 0
			}
			tab.add(keys[i], 1, time.Hour, 0)
			i++
		}
		tab.setSlots(nil, nil)
	})
	var tab memTable
	for _, k := range keys[:n/2] {
		tab.add(k, 1, time.Hour, 0)
	}
	b.Run("hit", func(b *testing.B) {
		i := 0
		for b.Loop() {
			tab.get(keys[i&(n/2-1)], 0)
			i++
		}
	})
	b.Run("miss", func(b *testing.B) {
		i := 0
		for b.Loop() {
			tab.get(keys[n/2+i&(n/2-1)], 0)
			i++
		}
	})
	tab.setSlots(nil, nil)
}
