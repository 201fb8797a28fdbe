// Package testutil starts the real servers that integration tests run
// against.
package testutil

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// readyTimeout bounds how long a started memcached may take to answer.
	readyTimeout = 5 * time.Second
	// bindAttempts is how many free ports StartMemcached tries: another
	// process may take the port between our probe and memcached's bind.
	bindAttempts = 5
)

// Memcached is a memcached server process that a test started on a loopback
// port. StartMemcached returns one; the test's cleanup kills it.
//
// Its methods call tb.Fatalf on failure, so call them from the test's own
// goroutine. They are safe to call in any order and more than once.
type Memcached struct {
	tb   testing.TB
	bin  string
	port int

	mu     sync.Mutex
	cmd    *exec.Cmd     // nil when stopped
	exited chan struct{} // closed when cmd has exited
}

// StartMemcached starts a memcached on a free 127.0.0.1 TCP port, waits until
// it answers, and registers a cleanup on tb that kills it. It looks for the
// memcached binary in PATH, /usr/bin and /usr/local/bin. When there is none,
// the test is skipped, or fails when the CI environment variable is set:
// under CI a missing server is an error, never a skip.
func StartMemcached(tb testing.TB) *Memcached {
	tb.Helper()
	bin := findMemcached()
	if bin == "" {
		const msg = "memcached not found: run `make deps` (or apt-get install memcached) to run tests against a real memcached"
		if os.Getenv("CI") != "" {
			tb.Fatalf("%s", msg)
		}
		tb.Skip(msg)
	}
	m := &Memcached{tb: tb, bin: bin}
	tb.Cleanup(m.Stop)

	var last string
	for range bindAttempts {
		port, err := freePort()
		if err != nil {
			tb.Fatalf("memcached: pick a free port: %v", err)
		}
		m.port = port
		if last = m.start(); last == "" {
			return m
		}
	}
	tb.Fatalf("memcached: no attempt of %d started: %s", bindAttempts, last)
	return nil
}

// Addr returns the server's address, "127.0.0.1:PORT". It stays the same
// across Stop and Restart.
func (m *Memcached) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(m.port))
}

// Stop kills the server and waits for it to exit. Counters are lost. Stopping
// a stopped server does nothing.
func (m *Memcached) Stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stopLocked()
}

// Restart stops the server if it runs and starts a new, empty one on the same
// port.
func (m *Memcached) Restart() {
	m.tb.Helper()
	m.Stop()
	if msg := m.start(); msg != "" {
		m.tb.Fatalf("memcached: restart on %s: %s", m.Addr(), msg)
	}
}

// Freeze suspends the server with SIGSTOP: it keeps its connections and
// counters but answers nothing, as a hung or overloaded server would, so
// clients hit their timeouts. Thaw resumes it.
func (m *Memcached) Freeze() {
	m.tb.Helper()
	m.signal(syscall.SIGSTOP)
	// SIGSTOP is asynchronous: wait until the kernel reports the process
	// stopped, so a request sent after Freeze returns is never answered.
	m.mu.Lock()
	pid := m.cmd.Process.Pid
	m.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for !processStopped(pid) {
		if time.Now().After(deadline) {
			m.tb.Fatalf("memcached %s: still running 5s after SIGSTOP", m.Addr())
		}
		time.Sleep(time.Millisecond)
	}
}

// processStopped reports whether /proc says pid is stopped (state T). Where
// there is no /proc it reports true, trusting the signal.
func processStopped(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name, which is in parentheses.
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && (b[i+2] == 'T' || b[i+2] == 't')
}

// Thaw resumes a server suspended by Freeze with SIGCONT.
func (m *Memcached) Thaw() {
	m.tb.Helper()
	m.signal(syscall.SIGCONT)
}

// signal sends sig to the server process.
func (m *Memcached) signal(sig syscall.Signal) {
	m.tb.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		m.tb.Fatalf("memcached %s: send %v: server is stopped", m.Addr(), sig)
	}
	// cmd.Process signals the PID of the process we started, and only that.
	if err := m.cmd.Process.Signal(sig); err != nil {
		m.tb.Fatalf("memcached %s: send %v: %v", m.Addr(), sig, err)
	}
}

// start runs memcached on m.port and waits until it answers. It returns ""
// on success, otherwise why it failed, with the process killed.
func (m *Memcached) start() string {
	m.mu.Lock()
	defer m.mu.Unlock()

	args := []string{"-l", "127.0.0.1", "-p", strconv.Itoa(m.port), "-U", "0", "-m", "64", "-t", "2"}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "root") // memcached refuses to run as root otherwise
	}
	cmd := exec.Command(m.bin, args...)
	output := &lockedBuffer{} // memcached says why it could not bind here
	cmd.Stdout = output
	cmd.Stderr = output
	if err := cmd.Start(); err != nil {
		return err.Error()
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	m.cmd, m.exited = cmd, exited

	if err := waitReady(m.Addr(), exited); err != nil {
		m.stopLocked()
		out := strings.TrimSpace(output.String())
		if out == "" {
			return err.Error()
		}
		return err.Error() + ": " + out
	}
	return ""
}

// stopLocked kills the process by its PID and waits until it has exited.
func (m *Memcached) stopLocked() {
	if m.cmd == nil {
		return
	}
	// SIGKILL ends a process suspended by SIGSTOP too. The error only says
	// it had already exited.
	_ = m.cmd.Process.Kill()
	<-m.exited
	m.cmd = nil
}

// waitReady dials addr until memcached answers "version", the process exits,
// or readyTimeout passes.
func waitReady(addr string, exited <-chan struct{}) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		err := ping(addr)
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return errors.New("memcached exited before answering")
		default:
		}
		if time.Now().After(deadline) {
			return errors.New("memcached did not answer within " + readyTimeout.String() + ": " + err.Error())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ping sends "version" to addr and checks the reply.
func ping(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(time.Second)); err != nil {
		return err
	}
	if _, err := conn.Write([]byte("version\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "VERSION ") {
		return errors.New("unexpected reply to version: " + strconv.Quote(line))
	}
	return nil
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}

// findMemcached returns the path of the memcached binary, or "".
func findMemcached() string {
	if p, err := exec.LookPath("memcached"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/bin/memcached", "/usr/local/bin/memcached"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// lockedBuffer is a bytes.Buffer that exec's copying goroutine can write
// while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
