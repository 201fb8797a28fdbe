package topk

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// MaxItemLen is the longest item (requestor) a Recorder passes to its
// Tracker; longer ones are shortened by BoundItem.
const MaxItemLen = 200

// DefaultQueue is the Recorder's queue length when NewRecorder is given 0.
const DefaultQueue = 4096

// drainBatch is the most denials the Recorder applies under one lock.
const drainBatch = 256

// BoundItem returns item when it is at most MaxItemLen bytes, else its
// first 150 bytes (fewer, to end on a whole UTF-8 character), "~" and a
// 16-hex-digit fingerprint of the whole (the
// first 64 bits of its SHA-256), so that two long items that differ stay
// apart while the summaries' memory stays bounded.
func BoundItem(item string) string {
	if len(item) <= MaxItemLen {
		return item
	}
	sum := sha256.Sum256([]byte(item))
	cut := 150
	for cut > 0 && !utf8.RuneStart(item[cut]) {
		cut--
	}
	return item[:cut] + "~" + hex.EncodeToString(sum[:8])
}

// Recorder takes denials from the decision path and applies them to a
// Tracker from a goroutine of its own (Run), so that a decision never
// waits for the summaries: Denied puts the denial in a bounded queue
// without blocking, and counts it as dropped when the queue is full.
// Create one with NewRecorder; it is safe for concurrent use.
type Recorder struct {
	t       *Tracker
	q       chan Denial
	show    func(scope, item string) string
	dropped atomic.Uint64
	applied atomic.Uint64
}

// NewRecorder returns a Recorder feeding t through a queue of queue
// denials (DefaultQueue when queue < 1). show, when not nil, turns each
// requestor of a scope into the form the summaries keep (a fingerprint of
// an API key, say); it runs on Run's goroutine, on an item already bounded
// by BoundItem.
func NewRecorder(t *Tracker, queue int, show func(scope, item string) string) *Recorder {
	if queue < 1 {
		queue = DefaultQueue
	}
	return &Recorder{t: t, q: make(chan Denial, queue), show: show}
}

// Denied records that identity was denied in scope under rule at now, and
// told to retry after retryAfter. It never blocks: when the queue is full
// the denial is dropped and counted (Dropped). Its signature is the one
// authz.Config.OnDenied and rls.Config.OnDenied take.
func (r *Recorder) Denied(scope, rule, identity string, retryAfter time.Duration, now time.Time) {
	d := Denial{Scope: scope, Rule: rule, Item: BoundItem(identity), At: now, RetryAfter: retryAfter}
	select {
	case r.q <- d:
	default:
		r.dropped.Add(1)
	}
}

// Dropped returns how many denials Denied dropped because the queue was
// full.
func (r *Recorder) Dropped() uint64 { return r.dropped.Load() }

// Applied returns how many denials Run has applied to the Tracker.
func (r *Recorder) Applied() uint64 { return r.applied.Load() }

// Run applies queued denials to the Tracker, in batches, until ctx is
// done; it then applies what is still queued and returns.
func (r *Recorder) Run(ctx context.Context) {
	batch := make([]Denial, 0, drainBatch)
	for {
		select {
		case d := <-r.q:
			batch = r.fill(append(batch[:0], r.prepare(d)))
			r.apply(batch)
		case <-ctx.Done():
			for {
				batch = r.fill(batch[:0])
				if len(batch) == 0 {
					return
				}
				r.apply(batch)
			}
		}
	}
}

// fill appends to batch what is queued now, up to drainBatch.
func (r *Recorder) fill(batch []Denial) []Denial {
	for len(batch) < drainBatch {
		select {
		case d := <-r.q:
			batch = append(batch, r.prepare(d))
		default:
			return batch
		}
	}
	return batch
}

// prepare turns d's requestor into its kept form.
func (r *Recorder) prepare(d Denial) Denial {
	if r.show != nil {
		d.Item = BoundItem(r.show(d.Scope, d.Item))
	}
	return d
}

func (r *Recorder) apply(batch []Denial) {
	r.t.RecordAll(batch)
	r.applied.Add(uint64(len(batch)))
}
