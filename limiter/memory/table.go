package memory

import (
	"math/bits"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"
)

// memTable is the counter table of one Store shard: an open-addressing
// hash table of fixed-size slots without pointers, with linear probing in
// Robin Hood order (a key is never further from its home slot than the key it
// passes, so a search for a missing key stops early) and deletion by backward
// shift, so there are no tombstones and a table never degrades however many
// counters come and go.
//
// The capacity is any number of slots, not a power of two (a key's home slot
// is a multiply-shift of its hash), so the table grows by half when it is
// 85% full and its load stays between about 57% and 85%: a counter costs 38
// to 56 bytes. A sweep that leaves it under a quarter of that rebuilds it
// smaller. Slot arrays of mmapMin bytes or more are allocated outside the Go
// heap (an anonymous private mapping, as VictoriaMetrics' fastcache does)
// where the platform allows: the garbage collector never scans them and, more
// importantly, they do not count toward the heap growth that GOGC allows, so
// a million counters do not make the process keep a million counters' worth
// of garbage besides. Memory that cannot be mapped comes from the Go heap.
//
// A memTable is not safe for concurrent use; the shard's mutex guards it.
type memTable struct {
	slots []memSlot // len(slots) is the capacity; nil when nothing was ever stored
	n     int       // occupied slots, expired or not
	mem   *offHeap  // owns slots when they live outside the Go heap; else nil
}

// memSlot is one counter of a memTable, 32 bytes.
type memSlot struct {
	key     memKey // the key's 128-bit hash; key[1] == 0 marks an empty slot
	value   int64
	expires int64 // Unix nanoseconds
}

const (
	// slotSize is the size of a memSlot in bytes.
	slotSize = int(unsafe.Sizeof(memSlot{}))

	// tableMinCap is the capacity of a table's first slot array and the
	// smallest a sweep shrinks one to.
	tableMinCap = 16

	// A table grows when an insert would take it past growNum/growDen of
	// its capacity, and is rebuilt with rebuildNum/rebuildDen slots per
	// counter (a load of 4/7, 57%, after growing by half). A sweep rebuilds
	// a table that holds fewer than a quarter of its growth threshold.
	growNum, growDen       = 17, 20
	rebuildNum, rebuildDen = 7, 4
)

// mmapMin is the smallest slot array, in bytes, allocated outside the Go
// heap: smaller ones are not worth a system call and a page's rounding. A
// variable so that tests can move it.
var mmapMin = 64 << 10

// mappedBytes is the size of all slot arrays currently mapped outside the Go
// heap, by all tables of all stores.
var mappedBytes atomic.Int64

// OffHeapBytes returns how many bytes the counter tables of all Stores
// in the process hold outside the Go heap. Go's memory limit
// (runtime/debug.SetMemoryLimit, GOMEMLIMIT) does not count them, so a
// process that derives its memory limit from a container's should leave
// this much room besides.
func OffHeapBytes() int64 { return mappedBytes.Load() }

// home returns the slot where the search for a key whose hash ends in k1
// starts, in a table of capacity slots.
func home(k1 uint64, capacity int) int {
	hi, _ := bits.Mul64(k1, uint64(capacity))
	return int(hi)
}

// add adds delta to the counter at key and returns the new value, as
// Store.Add does: a missing counter, or one expired by now, is created
// with value delta and the given ttl when delta > 0; otherwise add returns 0,
// removes the expired counter and creates nothing.
func (t *memTable) add(key memKey, delta int64, ttl time.Duration, now int64) int64 {
	i := t.find(key)
	switch {
	case i >= 0 && t.slots[i].expires > now:
		s := &t.slots[i]
		s.value = addClamped(s.value, delta)
		return s.value
	case delta <= 0:
		if i >= 0 {
			t.remove(i)
		}
		return 0
	case i >= 0:
		// Expired: created anew in its slot.
		t.slots[i].value = delta
		t.slots[i].expires = expiry(now, ttl)
	default:
		t.insert(key, delta, expiry(now, ttl), now)
	}
	return delta
}

// get returns the value of the counter at key and whether it exists and has
// not expired by now.
func (t *memTable) get(key memKey, now int64) (int64, bool) {
	i := t.find(key)
	if i < 0 || t.slots[i].expires <= now {
		return 0, false
	}
	return t.slots[i].value, true
}

// find returns the index of key's slot, or -1 when key is not in the table.
func (t *memTable) find(key memKey) int {
	c := len(t.slots)
	if c == 0 {
		return -1
	}
	i := home(key[1], c)
	for d := 0; ; d++ {
		s := &t.slots[i]
		if s.key == key {
			return i
		}
		if s.key[1] == 0 || t.dist(i, s.key[1]) < d {
			// An empty slot, or a key closer to its home than key would
			// be here: Robin Hood order would have put key before it.
			return -1
		}
		if i++; i == c {
			i = 0
		}
	}
}

// dist returns how far slot i is from the home of the key ending in k1 that
// occupies it.
func (t *memTable) dist(i int, k1 uint64) int {
	h := home(k1, len(t.slots))
	if i >= h {
		return i - h
	}
	return i + len(t.slots) - h
}

// insert stores a counter whose key is not in the table, growing the table
// first when it is full; growing drops the counters expired by now.
func (t *memTable) insert(key memKey, value, expires, now int64) {
	if (t.n+1)*growDen > len(t.slots)*growNum {
		t.rebuild(capacityFor(t.n+1), now)
	}
	t.place(memSlot{key: key, value: value, expires: expires})
}

// place puts e in the first slot of its probe sequence that is empty or
// holds a key nearer its home, and moves that key on the same way. The table
// must have an empty slot.
func (t *memTable) place(e memSlot) {
	c := len(t.slots)
	i := home(e.key[1], c)
	for d := 0; ; d++ {
		s := &t.slots[i]
		if s.key[1] == 0 {
			*s = e
			t.n++
			return
		}
		if sd := t.dist(i, s.key[1]); sd < d {
			e, *s = *s, e
			d = sd
		}
		if i++; i == c {
			i = 0
		}
	}
}

// remove empties slot i and shifts the run of displaced keys after it one
// slot back, so that no search needs a tombstone.
func (t *memTable) remove(i int) {
	c := len(t.slots)
	for {
		j := i + 1
		if j == c {
			j = 0
		}
		s := &t.slots[j]
		if s.key[1] == 0 || t.dist(j, s.key[1]) == 0 {
			t.slots[i] = memSlot{}
			t.n--
			return
		}
		t.slots[i] = *s
		i = j
	}
}

// sweep removes the counters expired by now, then rebuilds the table smaller
// when it has emptied out to under a quarter of its growth threshold, or
// releases it when nothing is left.
func (t *memTable) sweep(now int64) {
	for i := 0; i < len(t.slots); {
		if s := &t.slots[i]; s.key[1] != 0 && s.expires <= now {
			// The shift may bring an unvisited key into slot i: look
			// at it again. Keys it brings across the end of the array
			// were visited first and are live.
			t.remove(i)
			continue
		}
		i++
	}
	switch c := len(t.slots); {
	case t.n == 0:
		t.setSlots(nil, nil)
	case c > tableMinCap && t.n*growDen*4 < c*growNum:
		t.rebuild(capacityFor(t.n), now)
	}
}

// live returns the number of counters not expired by now.
func (t *memTable) live(now int64) int {
	n := 0
	for i := range t.slots {
		if s := &t.slots[i]; s.key[1] != 0 && s.expires > now {
			n++
		}
	}
	return n
}

// rebuild moves the counters not expired by now into a new slot array of
// capacity slots, which must be more than their number.
func (t *memTable) rebuild(capacity int, now int64) {
	old, oldMem := t.slots, t.mem
	slots, mem := allocSlots(capacity)
	t.slots, t.mem, t.n = slots, mem, 0
	for i := range old {
		if s := &old[i]; s.key[1] != 0 && s.expires > now {
			t.place(*s)
		}
	}
	oldMem.free()
}

// setSlots replaces the slot array, freeing the old one, and empties the
// table.
func (t *memTable) setSlots(slots []memSlot, mem *offHeap) {
	old := t.mem
	t.slots, t.mem, t.n = slots, mem, 0
	old.free()
}

// capacityFor returns the capacity of a table rebuilt for n counters: n
// times rebuildNum/rebuildDen, at least tableMinCap, and when it is to be
// mapped, rounded up to whole pages.
func capacityFor(n int) int {
	c := max(n*rebuildNum/rebuildDen+1, tableMinCap)
	if c*slotSize >= mmapMin {
		const perPage = 4096 / slotSize
		c = (c + perPage - 1) / perPage * perPage
	}
	return c
}

// allocSlots returns an empty slot array of n slots, outside the Go heap when
// it is large enough and the platform can map it (then with the offHeap
// that owns it), else from the heap.
func allocSlots(n int) ([]memSlot, *offHeap) {
	size := n * slotSize
	if size >= mmapMin {
		if b, err := mapAnon(size); err == nil {
			o := &offHeap{b: b}
			o.cleanup = runtime.AddCleanup(o, unmapAnon, b)
			mappedBytes.Add(int64(size))
			return unsafe.Slice((*memSlot)(unsafe.Pointer(&b[0])), n), o
		}
	}
	return make([]memSlot, n), nil
}

// offHeap owns a slot array mapped outside the Go heap. The array is unmapped
// by free, or when the offHeap becomes unreachable (the store it belongs to
// was dropped), by a cleanup.
type offHeap struct {
	b       []byte
	cleanup runtime.Cleanup
}

// free unmaps o's memory at once. It does nothing on a nil o.
func (o *offHeap) free() {
	if o == nil {
		return
	}
	o.cleanup.Stop()
	unmapAnon(o.b)
	o.b = nil
}

// unmapAnon returns a mapping made by mapAnon to the system. munmap fails
// only for an address range that is not a mapping, which b always is, so
// there is no error to report.
func unmapAnon(b []byte) {
	mappedBytes.Add(-int64(len(b)))
	_ = munmap(b)
}
