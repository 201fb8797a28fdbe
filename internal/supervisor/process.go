// Package supervisor starts the server processes that floodgate's tests and
// benchmarks run against (floodgate, memcached, Envoy, or any binary) on
// free loopback ports, waits until each is ready, and kills each by its PID.
//
// It is the one implementation of that job: internal/testutil wraps it for
// tests (failing the test, killing the process in its cleanup) and
// internal/loadgen uses it as it is for the benchmark binary, so it returns
// errors and never imports package testing.
//
// A process started here dies with its parent on Linux (see Start), so an
// interrupted test or benchmark leaves nothing running.
package supervisor

import (
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
)

const (
	// keptOutput bounds the output a Process keeps: past it the oldest
	// half is dropped, so a chatty server cannot fill memory.
	keptOutput = 1 << 20
	// tailSize is how much of the output Tail and ExitErr give.
	tailSize = 16 << 10
)

// Process is a server process started by Start. Its combined stdout and
// stderr are kept. Stop kills it by its PID.
//
// Its methods are safe for concurrent use.
type Process struct {
	name   string
	cmd    *exec.Cmd
	output *lockedBuffer
	exited chan struct{} // closed when cmd has exited

	stopOnce sync.Once
}

// Start starts bin with args and environment env (nil: this process's
// own). name labels the process in errors. On Linux the kernel kills the
// process when its parent dies (Pdeathsig; the signal survives exec, so it
// holds for Envoy started through a wrapper script too); elsewhere only
// Stop ends it.
func Start(name string, env []string, bin string, args ...string) (*Process, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	output := &lockedBuffer{}
	cmd.Stdout = output
	cmd.Stderr = output
	setParentDeath(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: start %s: %w", name, bin, err)
	}
	p := &Process{name: name, cmd: cmd, output: output, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// Name returns the label given to Start.
func (p *Process) Name() string { return p.name }

// Pid returns the process ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// CommandLine returns the binary and its arguments, space-separated.
func (p *Process) CommandLine() string { return strings.Join(p.cmd.Args, " ") }

// Output returns what the process wrote to stdout and stderr so far (the
// last MiB or more of it).
func (p *Process) Output() string { return p.output.String() }

// Tail returns the last 16 KiB of the output, or "(none)".
func (p *Process) Tail() string {
	out := p.Output()
	if len(out) > tailSize {
		out = "...\n" + out[len(out)-tailSize:]
	}
	if strings.TrimSpace(out) == "" {
		return "(none)"
	}
	return out
}

// Exited is closed when the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// ExitErr returns an error naming the process, its exit status and the tail
// of its output when it has exited, and nil while it runs.
func (p *Process) ExitErr() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited (%v): %s", p.name, p.cmd.ProcessState, strings.TrimSpace(p.Tail()))
	default:
		return nil
	}
}

// Signal sends sig to the process (its PID, and only that).
func (p *Process) Signal(sig syscall.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("%s: send %v: %w", p.name, sig, err)
	}
	return nil
}

// Stop kills the process with SIGKILL, as a crash would end it (a process
// suspended by SIGSTOP too), and waits until it has exited. Stopping a
// stopped process, or a nil one, does nothing.
func (p *Process) Stop() {
	if p == nil {
		return
	}
	p.stopOnce.Do(func() {
		// Kill signals the PID of the process we started, and only that.
		// The error only says that it had already exited.
		_ = p.cmd.Process.Kill()
	})
	<-p.exited
}

// lockedBuffer keeps a process's output; exec's copying goroutine writes it
// while others read it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > keptOutput {
		b.buf = append(b.buf[:0], b.buf[len(b.buf)-keptOutput/2:]...)
	}
	return len(p), nil
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
