// Package periodic runs a function at a fixed interval in a goroutine of its
// own, until stopped.
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
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				fn()
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}
