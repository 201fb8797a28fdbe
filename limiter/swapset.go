package limiter

import (
	"context"
	"fmt"
)

// swapMember is the part of a value strategy's group that swapAll keeps:
// embedded in TokenBucket's and SlidingLog's groups.
type swapMember struct {
	skip  bool // decided without the store: remembered denied, or never fits
	taken bool // its write was applied (and not yet undone)
	wrote bool // the last call of its step asked for a write
}

// swapSet is a set decision of a value strategy, as swapAll runs it: n
// groups in key order, each with the key of its value, its swapMember, the
// read-modify-write step that decides it (writing only when write is
// true and it has room, and setting wrote), and the compensating step
// that undoes its write.
type swapSet struct {
	name string // the strategy, for errors
	n    int
	key  func(i int) string
	m    func(i int) *swapMember
	step func(i int, write bool) swap
	undo func(i int) swap
}

// swapAll is the set flow TokenBucket and SlidingLog share. Unless the
// set is doomed (some group can have no room whatever the store says), it
// holds the set's keys in tr's turns, in key order, for the whole set. It
// then runs the step of every group not skipped, in key order, writing
// while every group so far had room; once one has not (or the set is
// doomed), the rest are only read, and the writes already applied are
// undone, one compensating compare-and-swap each. A failed store call
// undoes what was written, as far as the store lets it, and fails: that
// group's own write may or may not have been applied, and is not undone
// (that could undo another decision's).
func swapAll(ctx context.Context, store Store, tr *turns, s swapSet, doomed bool) error {
	if !doomed {
		release, err := tr.takeAll(ctx, s.n, s.key)
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		defer release()
	}
	write := !doomed
	for i := range s.n {
		m := s.m(i)
		if m.skip {
			continue
		}
		if err := update(ctx, store, s.key(i), s.step(i, write)); err != nil {
			s.undoTaken(ctx, store)
			return fmt.Errorf("%s: %w", s.name, err)
		}
		m.taken = m.wrote // only now: a write whose swap lost was never applied
		write = write && m.taken
	}
	if !write {
		s.undoTaken(ctx, store)
	}
	return nil
}

// undoTaken undoes the writes of the groups that are taken, even when ctx
// is done. One that fails stays taken: its write stays, which errs on the
// safe side.
func (s swapSet) undoTaken(ctx context.Context, store Store) {
	for i := range s.n {
		m := s.m(i)
		if !m.taken {
			continue
		}
		if err := update(context.WithoutCancel(ctx), store, s.key(i), s.undo(i)); err == nil {
			m.taken = false
		}
	}
}
