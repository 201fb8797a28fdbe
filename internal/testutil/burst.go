package testutil

import (
	"sync"
	"sync/atomic"
	"testing"
)

// Burst runs decide(0) to decide(n-1) at once, each in a goroutine of its
// own released together, and returns how many reported allowed. An error
// fails the test (t.Error, from the goroutine) and counts as not allowed.
func Burst(t testing.TB, n int, decide func(i int) (allowed bool, err error)) int {
	t.Helper()
	var allowed atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			ok, err := decide(i)
			if err != nil {
				t.Error(err)
			}
			if ok {
				allowed.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	return int(allowed.Load())
}
