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

// member returns m: a group that embeds a swapMember lends it to swapAll.
func (m *swapMember) member() *swapMember { return m }

// swapGroup is what swapAll needs of a value strategy's group G: the key
// of its value (reqGroup's) and its swapMember, both embedded.
type swapGroup[G any] interface {
	*G
	valueKey() string
	member() *swapMember
}

// swapAll is the set flow TokenBucket and SlidingLog share, over the
// groups gs of a set in key order, named name in errors. Unless the set is
// doomed (some group can have no room whatever the store says), it holds
// the set's keys in tr's turns, in key order, for the whole set. It then
// runs step, the read-modify-write that decides a group (writing only when
// write is true and the group has room, and setting wrote), on every group
// not skipped, in key order, writing while every group so far had room;
// once one has not (or the set is doomed), the rest are only read, and the
// writes already applied are undone with undo, one compensating
// compare-and-swap each. A failed store call undoes what was written, as
// far as the store lets it, and fails: that group's own write may or may
// not have been applied, and is not undone (that could undo another
// decision's).
func swapAll[G any, P swapGroup[G]](ctx context.Context, store Store, tr *turns, name string, gs []G, doomed bool, step func(g P, write bool) swap, undo func(g P) swap) error {
	if !doomed {
		release, err := tr.takeAll(ctx, len(gs), func(i int) string { return P(&gs[i]).valueKey() })
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		defer release()
	}
	write := !doomed
	for i := range gs {
		g := P(&gs[i])
		m := g.member()
		if m.skip {
			continue
		}
		if err := update(ctx, store, g.valueKey(), step(g, write)); err != nil {
			undoTaken(ctx, store, gs, undo)
			return fmt.Errorf("%s: %w", name, err)
		}
		m.taken = m.wrote // only now: a write whose swap lost was never applied
		write = write && m.taken
	}
	if !write {
		undoTaken(ctx, store, gs, undo)
	}
	return nil
}

// undoTaken undoes the writes of the groups that are taken, even when ctx
// is done. One that fails stays taken: its write stays, which errs on the
// safe side.
func undoTaken[G any, P swapGroup[G]](ctx context.Context, store Store, gs []G, undo func(g P) swap) {
	for i := range gs {
		g := P(&gs[i])
		if !g.member().taken {
			continue
		}
		if err := update(context.WithoutCancel(ctx), store, g.valueKey(), undo(g)); err == nil {
			g.member().taken = false
		}
	}
}
