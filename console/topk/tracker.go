package topk

import (
	"slices"
	"sync"
	"time"
)

// Window is a span of recent time over which the Tracker reports denials.
type Window int

const (
	// FiveMinutes covers the current minute and the four before it:
	// between 4 and 5 minutes of denials.
	FiveMinutes Window = iota
	// Hour covers the current five-minute period (aligned to the clock)
	// and the eleven before it: between 55 and 60 minutes of denials.
	Hour
)

// String returns "5m" or "1h", as ParseWindow reads them.
func (w Window) String() string {
	if w == Hour {
		return "1h"
	}
	return "5m"
}

// ParseWindow parses "5m" or "1h".
func ParseWindow(s string) (Window, bool) {
	switch s {
	case "5m":
		return FiveMinutes, true
	case "1h":
		return Hour, true
	}
	return 0, false
}

// Ring sizes: FiveMinutes merges minute summaries, Hour five-minute ones.
const (
	minuteSlots = 5
	fiveSlots   = 12
)

// Defaults of Config.
const (
	// DefaultCapacity is the entries of each summary when
	// Config.Capacity is zero.
	DefaultCapacity = 100
	// DefaultMaxScopes bounds the scopes tracked when Config.MaxScopes is
	// zero.
	DefaultMaxScopes = 64
)

// OtherScopes is the scope under which the denials of scopes past
// Config.MaxScopes are tracked.
const OtherScopes = "(other)"

// Config sizes a Tracker. The zero value is usable.
type Config struct {
	// Capacity is the most requestors each summary keeps (see Summary);
	// zero means DefaultCapacity.
	Capacity int
	// MaxScopes bounds how many scopes have summaries; the denials of any
	// further scope are tracked under OtherScopes. Zero means
	// DefaultMaxScopes.
	MaxScopes int
}

// Tracker keeps, per scope, the requestors denied most often over the
// last five minutes and the last hour: 5 minute summaries and 12
// five-minute summaries per scope, rotated as the clock moves and merged
// when read. Its memory is bounded whatever the number of distinct
// requestors: at most (MaxScopes+1) × 17 × Capacity entries, each
// holding an item of at most MaxItemLen bytes (see Recorder), about
// 150 bytes plus the item's.
//
// Times come from the caller (the denial's instant, the reader's now), so
// a Tracker has no clock of its own. It is safe for concurrent use; every
// method takes one mutex, which the Recorder holds only while it applies
// a batch of denials, never on a decision's path.
type Tracker struct {
	mu        sync.Mutex
	capacity  int
	maxScopes int
	scopes    map[string]*scopeRing
	late      uint64 // denials older than their slot's current period
}

// scopeRing is the rotating summaries of one scope.
type scopeRing struct {
	minutes [minuteSlots]slot
	fives   [fiveSlots]slot
}

// slot is the summary of one period: minute or five-minute number period.
type slot struct {
	period int64
	s      *Summary // nil until the first denial
}

// NewTracker returns an empty Tracker sized by cfg.
func NewTracker(cfg Config) *Tracker {
	if cfg.Capacity <= 0 {
		cfg.Capacity = DefaultCapacity
	}
	if cfg.MaxScopes <= 0 {
		cfg.MaxScopes = DefaultMaxScopes
	}
	return &Tracker{capacity: cfg.Capacity, maxScopes: cfg.MaxScopes, scopes: make(map[string]*scopeRing)}
}

// Capacity returns the entries each of t's summaries keeps.
func (t *Tracker) Capacity() int { return t.capacity }

// Denial is one denied request, as the Recorder passes it to the Tracker.
type Denial struct {
	Scope, Rule, Item string
	// At is the instant of the decision; RetryAfter what it told the
	// requestor to wait.
	At         time.Time
	RetryAfter time.Duration
}

// Record adds one denial.
func (t *Tracker) Record(d Denial) {
	t.mu.Lock()
	t.record(d)
	t.mu.Unlock()
}

// RecordAll adds denials under one acquisition of the lock.
func (t *Tracker) RecordAll(ds []Denial) {
	t.mu.Lock()
	for _, d := range ds {
		t.record(d)
	}
	t.mu.Unlock()
}

// record adds d; t.mu is held.
func (t *Tracker) record(d Denial) {
	r := t.ring(d.Scope)
	at := d.At.UnixNano()
	until := d.At.Add(d.RetryAfter).UnixNano()
	minute := floorDiv(d.At.Unix(), 60)
	if !t.slotFor(&r.minutes[floorMod(minute, minuteSlots)], minute) {
		t.late++
		return
	}
	r.minutes[floorMod(minute, minuteSlots)].s.Add(d.Item, 1, at, until, d.Rule)
	five := floorDiv(minute, 5)
	if t.slotFor(&r.fives[floorMod(five, fiveSlots)], five) {
		r.fives[floorMod(five, fiveSlots)].s.Add(d.Item, 1, at, until, d.Rule)
	}
}

// slotFor prepares sl to count in period: emptied when it held an older
// one. It returns false when sl already holds a newer period (the denial
// is too old to count).
func (t *Tracker) slotFor(sl *slot, period int64) bool {
	switch {
	case sl.s == nil:
		sl.s = NewSummary(t.capacity)
	case sl.period > period:
		return false
	case sl.period < period:
		sl.s.Reset()
	}
	sl.period = period
	return true
}

// ring returns the summaries of scope, creating them, or OtherScopes'
// when MaxScopes scopes are tracked already.
func (t *Tracker) ring(scope string) *scopeRing {
	r := t.scopes[scope]
	if r != nil {
		return r
	}
	if len(t.scopes) >= t.maxScopes {
		scope = OtherScopes
		if r = t.scopes[scope]; r != nil {
			return r
		}
	}
	r = new(scopeRing)
	t.scopes[scope] = r
	return r
}

// Late returns how many denials were dropped because they arrived after
// their period's summary had been reused for a newer one.
func (t *Tracker) Late() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.late
}

// Scopes returns the scopes with denials in the last hour at now, sorted.
func (t *Tracker) Scopes(now time.Time) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for name, r := range t.scopes {
		if len(live(r.fives[:], periodOf(Hour, now), fiveSlots)) > 0 {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// Summary returns the merged summary of scope over w at now: a new
// Summary the caller owns (empty when the scope had no denials).
func (t *Tracker) Summary(scope string, w Window, now time.Time) *Summary {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.scopes[scope]
	if r == nil {
		return NewSummary(t.capacity)
	}
	if w == Hour {
		return Merge(t.capacity, live(r.fives[:], periodOf(Hour, now), fiveSlots)...)
	}
	return Merge(t.capacity, live(r.minutes[:], periodOf(FiveMinutes, now), minuteSlots)...)
}

// periodOf returns the number of the period of w's ring that holds now.
func periodOf(w Window, now time.Time) int64 {
	minute := floorDiv(now.Unix(), 60)
	if w == Hour {
		return floorDiv(minute, 5)
	}
	return minute
}

// live returns the summaries of slots whose period is one of the n up to
// cur.
func live(slots []slot, cur int64, n int) []*Summary {
	var out []*Summary
	for _, sl := range slots {
		if sl.s != nil && sl.period <= cur && sl.period > cur-int64(n) && sl.s.Total() > 0 {
			out = append(out, sl.s)
		}
	}
	return out
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

func floorMod(a, b int64) int64 { return a - floorDiv(a, b)*b }
