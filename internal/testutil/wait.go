package testutil

import (
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/internal/supervisor"
)

// WaitFor polls cond until it returns nil, and fails the test with cond's
// last error when that has not happened within d. It is the one way a test
// waits for something a real process or a real network connection does
// (a server's metric, a file it wrote, a reloaded policy): the deadline only
// bounds a failing test, and the polls start 1ms apart, so a condition that
// holds soon is seen soon.
//
// A test of goroutines in its own process needs no polling: run it in a
// testing/synctest bubble and use synctest.Wait.
func WaitFor(tb testing.TB, d time.Duration, cond func() error) {
	tb.Helper()
	if err := supervisor.Poll(d, cond); err != nil {
		tb.Fatalf("%v", err)
	}
}
