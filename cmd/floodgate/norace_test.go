//go:build !race

package main

// raceEnabled reports whether the test binary has the race detector, so that
// the floodgate binary under test is built with it too.
const raceEnabled = false
