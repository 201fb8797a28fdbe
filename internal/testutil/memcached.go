// Package testutil starts the real servers that integration tests run
// against, through internal/supervisor (the one process supervisor of the
// tests and the benchmark): it fails the test where the supervisor returns
// an error, kills each process in the test's cleanup and prints its output
// when the test failed. It also builds floodgate once per test binary and
// issues test certificates.
package testutil

import (
	"os"
	"testing"

	"github.com/floodgate-rl/floodgate/internal/supervisor"
)

// Memcached is a memcached server process that a test started on a loopback
// port. StartMemcached returns one; the test's cleanup kills it.
//
// Its methods call tb.Fatalf on failure, so call them from the test's own
// goroutine. They are safe to call in any order and more than once.
type Memcached struct {
	tb testing.TB
	m  *supervisor.Memcached
}

// StartMemcached starts a memcached on a free 127.0.0.1 TCP port, waits until
// it answers, and registers a cleanup on tb that kills it. It looks for the
// memcached binary in PATH, /usr/bin and /usr/local/bin. When there is none,
// the test is skipped, or fails when the CI environment variable is set:
// under CI a missing server is an error, never a skip.
func StartMemcached(tb testing.TB) *Memcached {
	tb.Helper()
	bin := supervisor.FindMemcached()
	if bin == "" {
		const msg = "memcached not found: run `make deps` (or apt-get install memcached) to run tests against a real memcached"
		if os.Getenv("CI") != "" {
			tb.Fatalf("%s", msg)
		}
		tb.Skip(msg)
	}
	m, err := supervisor.StartMemcached(bin, supervisor.MemcachedOptions{})
	if err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Cleanup(m.Stop)
	return &Memcached{tb: tb, m: m}
}

// Addr returns the server's address, "127.0.0.1:PORT". It stays the same
// across Stop and Restart.
func (m *Memcached) Addr() string { return m.m.Addr() }

// Stop kills the server and waits for it to exit. Counters are lost. Stopping
// a stopped server does nothing.
func (m *Memcached) Stop() { m.m.Stop() }

// Restart stops the server if it runs and starts a new, empty one on the same
// port.
func (m *Memcached) Restart() {
	m.tb.Helper()
	if err := m.m.Restart(); err != nil {
		m.tb.Fatalf("%v", err)
	}
}

// Freeze suspends the server with SIGSTOP: it keeps its connections and
// counters but answers nothing, as a hung or overloaded server would, so
// clients hit their timeouts. It returns once the kernel reports the process
// stopped. Thaw resumes it.
func (m *Memcached) Freeze() {
	m.tb.Helper()
	if err := m.m.Freeze(); err != nil {
		m.tb.Fatalf("%v", err)
	}
}

// Thaw resumes a server suspended by Freeze with SIGCONT.
func (m *Memcached) Thaw() {
	m.tb.Helper()
	if err := m.m.Thaw(); err != nil {
		m.tb.Fatalf("%v", err)
	}
}
