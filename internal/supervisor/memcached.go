package supervisor

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// memcachedReady bounds how long a started memcached may take to answer.
const memcachedReady = 5 * time.Second

// MemcachedOptions sizes a memcached. The zero value is a test's
// memcached: 64 MiB, 2 threads, memcached's default connection limit.
type MemcachedOptions struct {
	MemoryMB int // -m; 0 means 64
	Threads  int // -t; 0 means 2
	MaxConns int // -c; 0 means memcached's default (1024)
}

// args returns the command line for port.
func (o MemcachedOptions) args(port int) []string {
	mem, threads := cmp0(o.MemoryMB, 64), cmp0(o.Threads, 2)
	args := []string{"-l", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "0",
		"-m", strconv.Itoa(mem), "-t", strconv.Itoa(threads)}
	if o.MaxConns > 0 {
		args = append(args, "-c", strconv.Itoa(o.MaxConns))
	}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "root") // memcached refuses to run as root otherwise
	}
	return args
}

// cmp0 returns v, or def when v is 0.
func cmp0(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// Memcached is a memcached server process on a loopback port, started by
// StartMemcached. It keeps its port across Stop and Restart.
//
// Its methods are safe for concurrent use.
type Memcached struct {
	bin  string
	opts MemcachedOptions
	port int

	mu   sync.Mutex
	proc *Process // nil when stopped
}

// StartMemcached starts memcached (bin, see FindMemcached) on a free
// 127.0.0.1 TCP port and waits until it answers "version".
func StartMemcached(bin string, opts MemcachedOptions) (*Memcached, error) {
	return RetryBind(func() (*Memcached, *Process, error) {
		port, err := FreePort()
		if err != nil {
			return nil, nil, fmt.Errorf("memcached: %w", err)
		}
		m := &Memcached{bin: bin, opts: opts, port: port}
		p, err := m.start()
		if err != nil {
			return nil, p, err
		}
		return m, p, nil
	})
}

// Addr returns the server's address, "127.0.0.1:PORT".
func (m *Memcached) Addr() string { return Loopback(m.port) }

// Process returns the running process, or nil when the server is stopped.
func (m *Memcached) Process() *Process {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.proc
}

// Pid returns the PID of the running process, or 0 when stopped.
func (m *Memcached) Pid() int {
	if p := m.Process(); p != nil {
		return p.Pid()
	}
	return 0
}

// Stop kills the server and waits for it to exit. Counters are lost.
// Stopping a stopped server does nothing.
func (m *Memcached) Stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.proc.Stop()
	m.proc = nil
}

// Restart stops the server if it runs and starts a new, empty one on the
// same port.
func (m *Memcached) Restart() error {
	m.Stop()
	if _, err := m.start(); err != nil {
		return fmt.Errorf("memcached: restart on %s: %w", m.Addr(), err)
	}
	return nil
}

// Freeze suspends the server with SIGSTOP: it keeps its connections and
// counters but answers nothing, as a hung or overloaded server would.
// SIGSTOP is asynchronous: Freeze returns once the kernel reports the
// process stopped, so a request sent after it is never answered. Thaw
// resumes it.
func (m *Memcached) Freeze() error {
	p, err := m.signal(syscall.SIGSTOP)
	if err != nil {
		return err
	}
	err = Poll(memcachedReady, func() error {
		if !processStopped(p.Pid()) {
			return errors.New("still running after SIGSTOP")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("memcached %s: %w", m.Addr(), err)
	}
	return nil
}

// Thaw resumes a server suspended by Freeze with SIGCONT.
func (m *Memcached) Thaw() error {
	_, err := m.signal(syscall.SIGCONT)
	return err
}

// signal sends sig to the running server.
func (m *Memcached) signal(sig syscall.Signal) (*Process, error) {
	p := m.Process()
	if p == nil {
		return nil, fmt.Errorf("memcached %s: send %v: server is stopped", m.Addr(), sig)
	}
	if err := p.Signal(sig); err != nil {
		return nil, fmt.Errorf("memcached %s: %w", m.Addr(), err)
	}
	return p, nil
}

// processStopped reports whether /proc says pid is stopped (state T).
// Where there is no /proc it reports true, trusting the signal.
func processStopped(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name, which is in parentheses.
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && (b[i+2] == 'T' || b[i+2] == 't')
}

// start runs memcached on m.port and waits until it answers. On failure it
// returns the process (stopped; its output says whether the port was
// taken) and why.
func (m *Memcached) start() (*Process, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, err := Start("memcached", nil, m.bin, m.opts.args(m.port)...)
	if err != nil {
		return nil, err
	}
	err = Poll(memcachedReady, func() error {
		if err := p.ExitErr(); err != nil {
			return Permanent(err)
		}
		return ping(m.Addr())
	})
	if err != nil {
		p.Stop()
		return p, fmt.Errorf("memcached on %s did not answer: %w: %s", m.Addr(), err, strings.TrimSpace(p.Tail()))
	}
	m.proc = p
	return p, nil
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
