package topk

import (
	"encoding/json"
	"fmt"
)

// Truncate returns a copy of s keeping its n largest entries (all when n <
// 1 or s has no more). The dropped entries' largest Count joins the Floor,
// so the copy keeps the error bounds of Summary.
func Truncate(s *Summary, n int) *Summary {
	out := NewSummary(s.capacity)
	out.total, out.floor = s.total, s.floor
	top := s.Top(0)
	if n > 0 && len(top) > n {
		out.floor = max(out.floor, top[n].Count)
		top = top[:n]
	}
	for _, e := range top {
		out.heap = append(out.heap, e)
		out.idx[e.Item] = len(out.heap) - 1
		out.up(len(out.heap) - 1)
	}
	return out
}

// wireSummary is a Summary as replicas publish it (JSON).
type wireSummary struct {
	Capacity int         `json:"k"`
	Total    uint64      `json:"n"`
	Floor    uint64      `json:"f,omitempty"`
	Entries  []wireEntry `json:"e,omitempty"`
}

// wireEntry is an Entry as published; instants in Unix milliseconds.
type wireEntry struct {
	Item  string `json:"i"`
	Count uint64 `json:"c"`
	Err   uint64 `json:"x,omitempty"`
	First int64  `json:"a"`
	Last  int64  `json:"b"`
	Until int64  `json:"u,omitempty"`
	Rule  string `json:"r,omitempty"`
}

// MarshalJSON encodes s for another replica (see Cluster).
func (s *Summary) MarshalJSON() ([]byte, error) {
	w := wireSummary{Capacity: s.capacity, Total: s.total, Floor: s.floor}
	for _, e := range s.Top(0) {
		w.Entries = append(w.Entries, wireEntry{
			Item: e.Item, Count: e.Count, Err: e.Err,
			First: e.First / 1e6, Last: e.Last / 1e6, Until: e.RetryUntil / 1e6, Rule: e.Rule,
		})
	}
	return json.Marshal(w)
}

// UnmarshalJSON decodes what MarshalJSON encoded. It refuses a summary
// with more entries than its capacity, an entry whose error exceeds its
// count, or an item listed twice, so a corrupt value cannot break the
// bounds of a merge.
func (s *Summary) UnmarshalJSON(b []byte) error {
	var w wireSummary
	if err := json.Unmarshal(b, &w); err != nil {
		return fmt.Errorf("decode summary: %w", err)
	}
	if w.Capacity < 1 || w.Capacity > maxWireCapacity || len(w.Entries) > w.Capacity {
		return fmt.Errorf("decode summary: %d entries for a capacity of %d (at most %d)", len(w.Entries), w.Capacity, maxWireCapacity)
	}
	out := NewSummary(w.Capacity)
	out.total, out.floor = w.Total, w.Floor
	for _, e := range w.Entries {
		if e.Err > e.Count || len(e.Item) > MaxItemLen {
			return fmt.Errorf("decode summary: invalid entry for %.40q", e.Item)
		}
		if _, dup := out.idx[e.Item]; dup {
			return fmt.Errorf("decode summary: %.40q listed twice", e.Item)
		}
		out.heap = append(out.heap, Entry{
			Item: e.Item, Count: e.Count, Err: e.Err,
			First: e.First * 1e6, Last: e.Last * 1e6, RetryUntil: e.Until * 1e6, Rule: e.Rule,
		})
		out.idx[e.Item] = len(out.heap) - 1
		out.up(len(out.heap) - 1)
	}
	*s = *out
	return nil
}

// maxWireCapacity bounds the capacity a decoded summary may claim.
const maxWireCapacity = 10000
