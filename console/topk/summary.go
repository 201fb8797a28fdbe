package topk

import (
	"cmp"
	"slices"
)

// Entry is one requestor of a Summary. Its true number of denials lies in
// [Count-Err, Count]: Count never underestimates it, and overestimates it by
// at most Err, which is at most the Summary's Floor when the requestor
// entered it.
type Entry struct {
	// Item is the requestor, as the Recorder kept it (see Recorder).
	Item string
	// Count is an upper bound on the requestor's denials.
	Count uint64
	// Err bounds how much Count may overestimate them: Count-Err is a
	// lower bound.
	Err uint64
	// First and Last are when the requestor was first and last denied
	// while the Summary listed it (Unix nanoseconds): a requestor that
	// was evicted and came back has the First of its return.
	First, Last int64
	// RetryUntil is the latest instant (Unix nanoseconds) at which a
	// denial said the requestor would be let in: the denial's time plus
	// its RetryAfter.
	RetryUntil int64
	// Rule is the rule of the requestor's last denial ("" for none).
	Rule string
}

// Summary is a Space-Saving summary (Metwally, Agrawal and El Abbadi,
// "Efficient computation of frequent and top-k elements in data streams",
// 2005) of at most Capacity requestors: the heavy hitters of a stream of
// denials, in memory proportional to Capacity whatever the number of
// distinct requestors.
//
// Error bounds, with N the denials added (Total) and k the capacity:
//
//   - every listed Entry's true count lies in [Count-Err, Count];
//   - every requestor not listed has a true count of at most Floor;
//   - Err <= Floor <= N/k, so every requestor denied more than N/k times
//     is listed, and the first j entries of Top are the true top j
//     whenever their Count-Err exceeds the next one's Count.
//
// Merge keeps the first two bounds (Floor then bounds the sum of the
// inputs' errors) and Floor <= N/k where N is the merged Total.
//
// The zero Summary is not usable; create one with NewSummary. A Summary is
// not safe for concurrent use.
type Summary struct {
	capacity int
	idx      map[string]int // item -> position in heap
	heap     []Entry        // min-heap on Count
	total    uint64
	floor    uint64
}

// NewSummary returns an empty Summary of at most capacity entries; a
// capacity below 1 is taken as 1.
func NewSummary(capacity int) *Summary {
	capacity = max(capacity, 1)
	return &Summary{capacity: capacity, idx: make(map[string]int)}
}

// Capacity returns the most entries s keeps.
func (s *Summary) Capacity() int { return s.capacity }

// Total returns the number of denials added to s (exact).
func (s *Summary) Total() uint64 { return s.total }

// Floor returns the bound on the true count of any requestor s does not
// list.
func (s *Summary) Floor() uint64 { return s.floor }

// Len returns the number of requestors s lists.
func (s *Summary) Len() int { return len(s.heap) }

// Reset empties s, keeping its memory for reuse.
func (s *Summary) Reset() {
	clear(s.idx)
	s.heap = s.heap[:0]
	s.total, s.floor = 0, 0
}

// Add counts n denials of item at instant at (Unix nanoseconds), under
// rule, each saying the item would be let in at retryUntil. A new item
// takes the place of the entry with the smallest count when s is full,
// inheriting that count as its error.
func (s *Summary) Add(item string, n uint64, at, retryUntil int64, rule string) {
	if n == 0 {
		return
	}
	s.total += n
	if i, ok := s.idx[item]; ok {
		e := &s.heap[i]
		e.Count += n
		e.Last = max(e.Last, at)
		e.First = min(e.First, at)
		e.RetryUntil = max(e.RetryUntil, retryUntil)
		e.Rule = rule
		s.down(i)
		return
	}
	base := s.floor
	if len(s.heap) >= s.capacity {
		// Evict the smallest: its count bounds any item no longer listed.
		old := s.heap[0]
		delete(s.idx, old.Item)
		base = old.Count
		s.floor = max(s.floor, old.Count)
		s.heap[0] = Entry{Item: item, Count: base + n, Err: base, First: at, Last: at, RetryUntil: retryUntil, Rule: rule}
		s.idx[item] = 0
		s.down(0)
		return
	}
	s.heap = append(s.heap, Entry{Item: item, Count: base + n, Err: base, First: at, Last: at, RetryUntil: retryUntil, Rule: rule})
	s.idx[item] = len(s.heap) - 1
	s.up(len(s.heap) - 1)
}

// Top returns up to n entries (all when n < 1), the largest Count first;
// ties are broken by the most recent Last, then by Item.
func (s *Summary) Top(n int) []Entry {
	out := slices.Clone(s.heap)
	sortEntries(out)
	if n > 0 && len(out) > n {
		out = out[:n]
	}
	return out
}

// Merge returns a Summary of capacity entries that summarises the denials
// of every summary in in, as if they had been added to one (see the error
// bounds of Summary). A requestor missing from an input that is full may
// have had up to that input's Floor there, so its Count and Err grow by it.
func Merge(capacity int, in ...*Summary) *Summary {
	out := NewSummary(capacity)
	merged := make(map[string]*Entry)
	var floors uint64
	for _, s := range in {
		out.total += s.total
		floors += s.floor
	}
	for k, s := range in {
		for _, e := range s.heap {
			m, ok := merged[e.Item]
			if !ok {
				m = &Entry{Item: e.Item, First: e.First, Last: e.Last}
				// Inputs that do not list it may have had up to their floor.
				for j, o := range in {
					if _, listed := o.idx[e.Item]; j != k && !listed {
						m.Count += o.floor
						m.Err += o.floor
					}
				}
				merged[e.Item] = m
			}
			combine(m, e)
		}
	}
	all := make([]Entry, 0, len(merged))
	for _, m := range merged {
		all = append(all, *m)
	}
	sortEntries(all)
	out.floor = floors
	if len(all) > out.capacity {
		out.floor = max(out.floor, all[out.capacity].Count)
		all = all[:out.capacity]
	}
	for _, e := range all {
		out.heap = append(out.heap, e)
		out.idx[e.Item] = len(out.heap) - 1
		out.up(len(out.heap) - 1)
	}
	return out
}

// combine adds e, an input's entry for m's item, to m.
func combine(m *Entry, e Entry) {
	m.Count += e.Count
	m.Err += e.Err
	if e.Last >= m.Last {
		m.Rule = e.Rule
	}
	m.First = min(m.First, e.First)
	m.Last = max(m.Last, e.Last)
	m.RetryUntil = max(m.RetryUntil, e.RetryUntil)
}

// sortEntries orders entries by Count, then Last, both descending, then by
// Item.
func sortEntries(es []Entry) {
	slices.SortFunc(es, func(a, b Entry) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		if c := cmp.Compare(b.Last, a.Last); c != 0 {
			return c
		}
		return cmp.Compare(a.Item, b.Item)
	})
}

// less orders the heap: the smallest Count at the root, and among equal
// counts the least recently denied, which is evicted first.
func (s *Summary) less(i, j int) bool {
	a, b := &s.heap[i], &s.heap[j]
	if a.Count != b.Count {
		return a.Count < b.Count
	}
	return a.Last < b.Last
}

func (s *Summary) swap(i, j int) {
	s.heap[i], s.heap[j] = s.heap[j], s.heap[i]
	s.idx[s.heap[i].Item] = i
	s.idx[s.heap[j].Item] = j
}

func (s *Summary) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !s.less(i, p) {
			return
		}
		s.swap(i, p)
		i = p
	}
}

func (s *Summary) down(i int) {
	n := len(s.heap)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		c := l
		if r := l + 1; r < n && s.less(r, l) {
			c = r
		}
		if !s.less(c, i) {
			return
		}
		s.swap(i, c)
		i = c
	}
}
