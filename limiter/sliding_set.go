package limiter

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"
)

// Compile-time check that Sliding implements MultiStrategy.
var _ MultiStrategy = (*Sliding)(nil)

// slidingGroup is what one decision of Sliding does for one requestor: the
// requests of a set that share its counters (the same scope, requestor and
// window), whose hits are counted together.
type slidingGroup struct {
	key      requestorKey
	id       string
	w        int64
	window   time.Duration
	h        *history
	hits     int64 // of all its requests, saturated at math.MaxInt64
	limit    int64 // the smallest Limit of its requests
	maxLimit int64 // the largest
	t        int64 // the second it decides in

	// The current attempt.
	view settledView
	pend *pending
	decisionKeys
	// near: the count reads every fresh second, not only reads, as it
	// may take the last of the quota, whose retry time needs them all.
	near        bool
	settledSums                  // of the window
	vals        map[string]int64 // the fresh counts read
	v           int64            // what the count of second t returned
	total       int64            // after a count: what the window holds with its hits
	state       groupState
	err         error // of the last round
}

// groupState says what a group's fields tell after a round.
type groupState uint8

const (
	stRead    groupState = iota // sum and vals: the window without its hits
	stCounted                   // counted and not undone (the undo failed): total
	stSkip                      // left out of the rounds: decided without the store
	stUnknown                   // its read failed
)

// fits reports whether c requests already in the window leave room for the
// group's hits under limit. It cannot overflow: limit >= 1, hits >= 1.
func (g *slidingGroup) fits(c, limit int64) bool { return c <= limit-g.hits }

// oneHit is limit as for a request of one hit: a request of h hits fits
// under limit L exactly when one of one hit fits under L-h+1 (at most 0
// when it never does).
func (g *slidingGroup) oneHit(limit int64) int64 { return limit - g.hits + 1 }

// freshKeys returns g's fresh keys, built now if they were left for later
// (see Sliding.buildKeys). The group's own copy is set, never the keys a
// history shares.
func (g *slidingGroup) freshKeys(s *Sliding) []string {
	if g.fresh == nil {
		g.fresh = s.freshKeys(g.id, g.t, g.w)
	}
	return g.fresh
}

// counts is what the window holds after a read round, without g's hits.
func (g *slidingGroup) counts() int64 { return g.all + freshSum(g.vals, g.fresh) }

// add makes r one more request of g.
func (g *slidingGroup) add(r Request) {
	g.hits = satAdd(g.hits, r.HitsOf())
	g.limit = min(g.limit, r.Limit)
	g.maxLimit = max(g.maxLimit, r.Limit)
}

// satAdd returns a+b for non-negative a and b, or math.MaxInt64 when that
// overflows.
func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// release gives up the read of settled seconds that begin undertook, so
// that the decisions waiting for it plan their own.
func (g *slidingGroup) release() {
	if g.pend == nil {
		return
	}
	g.h.mu.Lock()
	g.h.loading = nil
	close(g.pend.l.done)
	g.h.mu.Unlock()
	g.pend = nil
}

// slidingSet is one decision of Sliding: its requests and their groups,
// ordered by requestor key so that decisions waiting for each other's
// reads (see begin) always wait in the same order and never deadlock.
type slidingSet struct {
	reqs   []Request
	groups []slidingGroup
	of     []int // of[i] is the index of reqs[i]'s group; nil: groups[0]
}

func (set *slidingSet) groupOf(i int) *slidingGroup {
	if set.of == nil {
		return &set.groups[0]
	}
	return &set.groups[set.of[i]]
}

// name names the set's requestors in errors.
func (set *slidingSet) name() string {
	if len(set.groups) == 1 {
		return set.groups[0].id
	}
	return fmt.Sprintf("%s and %d more requestors", set.groups[0].id, len(set.groups)-1)
}

// Allow decides whether req's requestor may make req's hits more requests
// at now and counts them when allowed. It implements Strategy, and is
// AllowAll of req alone.
//
// A decision at second t counts its hits in second t (and in a window of
// three minutes or more, then in t's minute) and, in the same round trip,
// reads the seconds that may still change: those after the settled part of
// the window up to t+ahead, but for those in t's minute when the minute's
// count stands for them. It is allowed when its total (see counted) is at
// most Limit, else it is undone. As memcached applies one connection's
// commands in order, and every decision increments before it reads, the
// last decision to count of any set sees all the others (doc.go has the
// proof), so no window ever holds more than Limit. A denial whose undo
// shows room after all (the requests it saw were themselves being denied)
// tries again, at most maxAttempts times in all.
func (s *Sliding) Allow(ctx context.Context, req Request, now time.Time) (Decision, error) {
	if err := req.Validate(); err != nil {
		return Decision{}, fmt.Errorf("sliding window: %w", err)
	}
	reqs := [1]Request{req}
	var gs [1]slidingGroup
	var out [1]Decision
	start := time.Now()
	set := slidingSet{reqs: reqs[:], groups: gs[:]}
	w := int64(req.Window / time.Second)
	s.initGroup(&gs[0], newRequestorKey(req.Scope, w, req.Requestor), req, now.Unix())
	if err := s.decide(ctx, &set, out[:], start); err != nil {
		return Decision{}, err
	}
	return out[0], nil
}

// AllowAll implements MultiStrategy. Each requestor of the set is decided
// as Allow decides one request, the requestors at once: their counts are
// made together (one round trip each, concurrently), and when any of them
// has no room all are undone together, read again, and tried again while
// every one shows room, as Allow does. The exactness of doc.go holds for
// every requestor, as an undo only ever lowers a count. Under-admission has
// one more, bounded, cause: a set denied by one requestor briefly holds
// counts in the others, which a concurrent decision for those may see
// before the undo; it is denied only if its own read after its undo still
// shows them, within the same round trip.
func (s *Sliding) AllowAll(ctx context.Context, reqs []Request, now time.Time) ([]Decision, error) {
	if len(reqs) == 0 {
		return nil, nil
	}
	start := time.Now()
	set := slidingSet{reqs: reqs}
	if err := s.groupAll(&set, now.Unix()); err != nil {
		return nil, err
	}
	out := make([]Decision, len(reqs))
	if err := s.decide(ctx, &set, out, start); err != nil {
		return nil, err
	}
	return out, nil
}

// initGroup starts g as the group of key with r alone.
func (s *Sliding) initGroup(g *slidingGroup, key requestorKey, r Request, t int64) {
	w := int64(r.Window / time.Second)
	h := s.history(key, w, t)
	*g = slidingGroup{
		key: key, id: idOf(h, key), w: w, window: r.Window, h: h,
		hits: r.HitsOf(), limit: r.Limit, maxLimit: r.Limit, t: t,
	}
}

// groupAll validates the set's requests and puts each in its requestor's
// group, the groups in key order.
func (s *Sliding) groupAll(set *slidingSet, t int64) error {
	keys := make([]requestorKey, len(set.reqs))
	for i, r := range set.reqs {
		if err := r.Validate(); err != nil {
			return fmt.Errorf("sliding window: request %d: %w", i, err)
		}
		keys[i] = newRequestorKey(r.Scope, int64(r.Window/time.Second), r.Requestor)
	}
	cmpKey := func(a, b requestorKey) int { return bytes.Compare(a[:], b[:]) }
	uniq := slices.Clone(keys)
	slices.SortFunc(uniq, cmpKey)
	uniq = slices.Compact(uniq)
	set.groups = make([]slidingGroup, len(uniq))
	set.of = make([]int, len(set.reqs))
	for i, r := range set.reqs {
		j, _ := slices.BinarySearchFunc(uniq, keys[i], cmpKey)
		set.of[i] = j
		if g := &set.groups[j]; g.h == nil {
			s.initGroup(g, keys[i], r, t)
		} else {
			g.add(r)
		}
	}
	return nil
}

// decide runs a decision begun at start: probe, count, undo and try again,
// as Allow describes, and writes one Decision per request into out.
func (s *Sliding) decide(ctx context.Context, set *slidingSet, out []Decision, start time.Time) error {
	gs := set.groups
	probed := false
	for attempt := 1; ; {
		if err := s.beginAll(ctx, gs); err != nil {
			return err
		}
		if doomed(gs) {
			// Some request can have no room whatever the store says: read
			// the others for their answers, and count nothing.
			for i := range gs {
				if gs[i].state == stSkip {
					gs[i].release()
				}
			}
			_ = s.round(ctx, gs, opRead) // a failed read answers "no room"
			return s.deny(ctx, set, out)
		}
		if !probed && wantsProbe(gs) {
			// Denied here a moment ago, or over the limit on settled data:
			// read before counting, so a requestor hammering at its limit
			// costs one read, not an increment, a read and a decrement.
			probed = true
			if err := s.round(ctx, gs, opRead); err != nil {
				return fmt.Errorf("sliding window: %w", err)
			}
			if !roomForAll(gs) {
				return s.deny(ctx, set, out)
			}
			continue
		}
		if err := s.round(ctx, gs, opCount); err != nil {
			s.undoCounted(ctx, gs)
			return fmt.Errorf("sliding window: %w", err)
		}
		if took := s.since(start); s.failSlow && took > s.maxDecision {
			// A decision this late could have counted in a second other
			// replicas already hold as settled: it must not decide.
			return fmt.Errorf("sliding window: count %s: %w: the store answered after %v, over the %v that keeps replicas exact", set.name(), ErrStoreUnavailable, took.Round(time.Millisecond), s.maxDecision)
		}
		if countedAll(gs) {
			return s.allowed(ctx, set, out)
		}
		// Over the limit: undo, and read again to see whether the
		// requests that made it so were themselves being denied.
		undone := s.round(ctx, gs, opUndo) == nil
		attempt++
		if undone && roomForAll(gs) && attempt <= maxAttempts && s.since(start) < s.maxDecision/2 && s.pause(ctx) {
			probed = true // the read just made is fresher than a probe
			continue
		}
		return s.deny(ctx, set, out)
	}
}

// beginAll begins an attempt for every group, in key order (see begin).
// When one fails, the reads the others undertook are given up.
func (s *Sliding) beginAll(ctx context.Context, gs []slidingGroup) error {
	for i := range gs {
		g := &gs[i]
		var err error
		g.t, g.view, g.pend, err = s.begin(ctx, g.h, g.id, g.t, g.w)
		if err != nil {
			for j := range gs[:i] {
				gs[j].release()
			}
			return err
		}
		g.decisionKeys = s.keysFor(g.h, g.id, g.t, g.w, g.hits, g.window, g.view.again)
		g.near = g.view.all+g.view.fresh >= g.limit-g.hits
		g.state, g.err = stRead, nil
	}
	return nil
}

// doomed marks the groups that can be decided without the store (stSkip)
// and reports whether any group has no room whatever the store says: hits
// beyond the smallest limit, or a denial on settled data alone, which no
// replica can change, with its retry time known.
func doomed(gs []slidingGroup) bool {
	found := false
	for i := range gs {
		g := &gs[i]
		never := g.hits > g.limit
		settled := g.limit == g.maxLimit && g.pend == nil && g.view.all >= g.oneHit(g.limit) &&
			g.view.retryTill > g.t && g.view.retryLimit == g.oneHit(g.limit)
		if g.hits > g.maxLimit || settled {
			g.state = stSkip
		}
		found = found || never || settled
	}
	return found
}

// wantsProbe reports whether a group was denied here a moment ago or is
// over its limit on settled data.
func wantsProbe(gs []slidingGroup) bool {
	for i := range gs {
		g := &gs[i]
		if g.view.deniedAt >= g.t-1 || g.pend == nil && g.view.all >= g.oneHit(g.limit) {
			return true
		}
	}
	return false
}

// roomForAll reports, after a read round, whether every group has room.
func roomForAll(gs []slidingGroup) bool {
	for i := range gs {
		if !gs[i].fits(gs[i].counts(), gs[i].limit) {
			return false
		}
	}
	return true
}

// countedAll reports, after a count round, whether every group's total is
// within its limit.
func countedAll(gs []slidingGroup) bool {
	for i := range gs {
		if gs[i].total > gs[i].limit {
			return false
		}
	}
	return true
}

// roundOp is what a round does for each group.
type roundOp uint8

const (
	opRead  roundOp = iota // read what may still change
	opCount                // count the hits, then read
	opUndo                 // take the count back, then read
)

// round does op for every group not skipped, concurrently when there are
// several (each is its own round trip), and returns the first error.
func (s *Sliding) round(ctx context.Context, gs []slidingGroup, op roundOp) error {
	if len(gs) == 1 {
		if gs[0].state != stSkip {
			s.step(ctx, &gs[0], op)
		}
		return gs[0].err
	}
	s.roundTogether(ctx, gs, op)
	for i := range gs {
		if gs[i].err != nil {
			return gs[i].err
		}
	}
	return nil
}

// roundTogether does op for the groups not skipped, one goroutine each, on
// a copy of them, so that gs itself never escapes: a single decision keeps
// its group on the stack.
func (s *Sliding) roundTogether(ctx context.Context, gs []slidingGroup, op roundOp) {
	cps := slices.Clone(gs)
	var wg sync.WaitGroup
	for i := range cps {
		if g := &cps[i]; g.state != stSkip {
			wg.Go(func() { s.step(ctx, g, op) })
		}
	}
	wg.Wait()
	copy(gs, cps)
}

// step does op for g: one exchange, and what it tells recorded.
func (s *Sliding) step(ctx context.Context, g *slidingGroup, op roundOp) {
	var err error
	if op != opCount || g.near {
		g.freshKeys(s)
	}
	switch op {
	case opRead:
		g.settledSums, g.vals, _, err = s.exchange(ctx, g.h, g.pend, g.view.settledSums, g.fresh, nil, g.t, g.w)
		g.pend = nil
		if err != nil {
			g.state, g.err = stUnknown, fmt.Errorf("read %d buckets of %s: %w", len(g.fresh), g.id, err)
			return
		}
	case opCount:
		var counts []int64
		gets := g.reads
		if g.near {
			gets = g.fresh[:len(g.fresh)-1]
		}
		g.settledSums, g.vals, counts, err = s.exchange(ctx, g.h, g.pend, g.view.settledSums, gets, g.incs, g.t, g.w)
		g.pend = nil
		if err != nil {
			g.state, g.err = stUnknown, fmt.Errorf("count %s: %w", g.id, err)
			return
		}
		g.v, g.total = counts[0], g.counted(counts)
		if g.byMinute() && counts[1] < g.all-g.beforeMinute+g.hits {
			if err := s.recount(ctx, g, counts[1]); err != nil {
				g.state, g.err = stCounted, fmt.Errorf("count %s: %w", g.id, err)
				return
			}
		}
		g.state = stCounted
		g.h.observe(g.t, g.total-g.all)
		return
	case opUndo:
		var vals map[string]int64
		_, vals, _, err = s.exchange(ctx, g.h, nil, g.settledSums, g.fresh, undo(g.incs), g.t, g.w)
		if err != nil {
			// The counter may stay too high, which errs on the safe side
			// and heals when the bucket leaves the window.
			g.h.mu.Lock()
			g.h.deniedAt = max(g.h.deniedAt, g.t)
			g.h.mu.Unlock()
			g.err = fmt.Errorf("undo %s: %w", g.id, err)
			return
		}
		g.vals = vals
	}
	g.state = stRead
	g.h.observe(g.t, freshSum(g.vals, g.fresh))
}

// recount decides g, counted in a window with minute aggregates, on its
// fresh seconds instead of the minute's count, m, which is lower than the
// settled seconds of the minute this replica knows and g's own hits: the
// aggregate lost counts (memcached evicted it, or an earlier count's
// connection broke between its two increments). The fresh seconds are read
// after both increments, so g still sees every decision whose point came
// before its own (doc.go), and may see later ones too, erring on the safe
// side. What the minute lost is then added back to it, so that the
// decisions after it, on every replica, count it again.
func (s *Sliding) recount(ctx context.Context, g *slidingGroup, m int64) error {
	vals, err := s.store.Get(ctx, g.freshKeys(s))
	if err != nil {
		return fmt.Errorf("read %d buckets after the minute's count %d: %w", len(g.fresh), m, err)
	}
	g.vals = vals
	g.total = g.all + freshSum(vals, g.fresh)
	inMinute := g.total - g.beforeMinute - freshSum(vals, g.reads)
	if lost := inMinute - m; lost > 0 {
		inc := g.incs[1]
		if _, err := s.store.Add(ctx, inc.Key, lost, inc.TTL); err != nil {
			return fmt.Errorf("restore %d lost counts to the minute's aggregate: %w", lost, err)
		}
	}
	return nil
}

// counted is what the window holds, g's hits included, after g's count,
// whose increments returned counts. In a window with minute aggregates it
// is the settled count before t's minute, the count the minute's increment
// returned (every replica's requests in that minute up to this one, as one
// atomic answer), and the fresh seconds outside the minute, read after it.
// Otherwise it is the settled count, the fresh seconds read after the
// count, and the count of t's second that its increment returned. Either
// way a decision observes after its last increment, and of any two
// concurrent decisions the one whose minute (or second) increment came last
// sees the other: doc.go has the proof.
func (g *slidingGroup) counted(counts []int64) int64 {
	if g.byMinute() {
		return g.beforeMinute + counts[1] + freshSum(g.vals, g.reads)
	}
	return g.all + freshSum(g.vals, g.reads) + counts[0]
}

// undoCounted takes back, as far as the store lets it, the counts of a set
// whose other counts failed; a failed count may or may not have been
// applied, and stays (erring on the safe side).
func (s *Sliding) undoCounted(ctx context.Context, gs []slidingGroup) {
	if len(gs) == 1 {
		return
	}
	for i := range gs {
		if gs[i].state != stCounted {
			gs[i].state = stSkip
		}
	}
	_ = s.round(ctx, gs, opUndo)
}

// allowed writes the decisions of a set that was counted.
func (s *Sliding) allowed(ctx context.Context, set *slidingSet, out []Decision) error {
	for i, r := range set.reqs {
		g := set.groupOf(i)
		d := Decision{Allowed: true, Limit: r.Limit, Window: r.Window, Remaining: r.Limit - g.total}
		if d.Remaining == 0 {
			if rd, err := s.lastOne(ctx, g, d, r.Limit); err == nil {
				d.RetryAfter = rd.RetryAfter
			} else {
				d.RetryAfter = r.Window // counted; only the retry time is missing
			}
		}
		out[i] = d
	}
	return nil
}

// lastOne completes d, allowed with the last of g's quota, with its retry
// time, from the fresh seconds: those the count read and the count of t's
// second its increment returned, or, when the count did not read them all
// (a window with minute aggregates, and a count not near the limit as this
// replica knew it), read now.
func (s *Sliding) lastOne(ctx context.Context, g *slidingGroup, d Decision, limit int64) (Decision, error) {
	if g.byMinute() && !g.near {
		vals, err := s.store.Get(ctx, g.freshKeys(s))
		if err != nil {
			return Decision{}, fmt.Errorf("sliding window: read %d buckets of %s: %w", len(g.fresh), g.id, err)
		}
		return s.denied(ctx, g.h, g.id, g.t, d, vals, limit)
	}
	if g.vals == nil {
		g.vals = map[string]int64{}
	}
	g.vals[g.fresh[len(g.fresh)-1]] = g.v
	return s.denied(ctx, g.h, g.id, g.t, d, g.vals, limit)
}

// deny writes the decisions of a set that was not counted, each from what
// its group's last round told. A request with room is allowed (it had
// room) only beside one without: when every request had room (the set gave
// up trying), all are denied, as nothing was counted.
func (s *Sliding) deny(ctx context.Context, set *slidingSet, out []Decision) error {
	denial := false
	for i := range set.reqs {
		d, err := s.denyOne(ctx, set, i, false)
		if err != nil {
			return err
		}
		out[i] = d
		denial = denial || !d.Allowed
	}
	for i := range set.reqs {
		if denial {
			break
		}
		d, err := s.denyOne(ctx, set, i, true)
		if err != nil {
			return err
		}
		out[i] = d
	}
	return nil
}

// denyOne is the decision for request i of a set that was not counted;
// force denies it even when it had room.
func (s *Sliding) denyOne(ctx context.Context, set *slidingSet, i int, force bool) (Decision, error) {
	r, g := set.reqs[i], set.groupOf(i)
	d := Decision{Limit: r.Limit, Window: r.Window}
	switch {
	case g.hits > r.Limit:
		d.RetryAfter = r.Window // never fits: no wait lets it in
	case g.state == stSkip:
		d.RetryAfter = time.Duration(g.view.retryTill-g.t) * time.Second
	case g.state == stCounted: // its undo failed: what its count saw
		if g.total <= r.Limit && !force {
			d.Allowed, d.Remaining = true, r.Limit-g.total
		}
		if d.Remaining == 0 {
			d.RetryAfter = r.Window
		}
	case g.state == stUnknown:
		d.RetryAfter = r.Window
	case g.fits(g.counts(), r.Limit) && !force:
		d.Allowed, d.Remaining = true, r.Limit-g.counts()
	default:
		return s.denied(ctx, g.h, g.id, g.t, d, g.vals, g.oneHit(r.Limit))
	}
	return d, nil
}
