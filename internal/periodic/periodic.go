// Package periodic runs a function at a fixed interval until stopped: in a
// goroutine of its own ([Start]) or on the caller's ([Run]); [Loop] lets
// each pause depend on what the last call found.
package periodic

import (
	"context"
	"time"
)

// Start calls fn every interval, in a new goroutine, until ctx is done or
// the returned stop is called; stop waits for the goroutine to exit, and
// may be called more than once. The first call comes one interval after
// Start; fn is never called concurrently with itself.
func Start(ctx context.Context, interval time.Duration, fn func()) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, interval, fn)
	}()
	return func() {
		cancel()
		<-done
	}
}

// Run calls fn every interval until ctx is done, on the calling goroutine:
// it returns when ctx is done. The first call comes one interval after
// Run, and each next one an interval after the previous one returned.
func Run(ctx context.Context, interval time.Duration, fn func()) {
	Loop(ctx, func() time.Duration { return interval }, fn)
}

// Loop calls fn until ctx is done, on the calling goroutine, after each
// pause that next returns: next is called before the first pause and after
// each call of fn, so a pause can depend on what fn found (a shorter one
// while it found nothing, say). It returns when ctx is done.
func Loop(ctx context.Context, next func() time.Duration, fn func()) {
	t := time.NewTimer(next())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fn()
		t.Reset(next())
	}
}
