package loadgen

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// startTimeout bounds how long a server may take to become ready.
const startTimeout = 20 * time.Second

// Proc is a server process the benchmark started: floodgate, memcached,
// Envoy, or this binary as the no-op server or the upstream. Its output is
// kept for error messages. Stop kills it by its PID; it also dies with the
// benchmark (see setParentDeath), so an interrupted run leaves nothing
// running.
type Proc struct {
	Name   string
	cmd    *exec.Cmd
	out    *lockedBuffer
	exited chan struct{}
	once   sync.Once
}

// startProc starts bin with args; env nil means the benchmark's own.
func startProc(name string, env []string, bin string, args ...string) (*Proc, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	setParentDeath(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: start %s: %w", name, bin, err)
	}
	p := &Proc{Name: name, cmd: cmd, out: out, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// Pid returns the process ID.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Stop kills the process (SIGKILL to its PID, and only that) and waits until
// it has exited. Stopping a stopped process does nothing.
func (p *Proc) Stop() {
	if p == nil {
		return
	}
	p.once.Do(func() { _ = p.cmd.Process.Kill() })
	<-p.exited
}

// Output returns the last 4 KiB of what the process wrote.
func (p *Proc) Output() string {
	s := p.out.String()
	if len(s) > 4096 {
		s = "..." + s[len(s)-4096:]
	}
	return strings.TrimSpace(s)
}

// exitedErr returns an error with the output when the process has exited.
func (p *Proc) exitedErr() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited (%v): %s", p.Name, p.cmd.ProcessState, p.Output())
	default:
		return nil
	}
}

// CPU returns the user plus system CPU time the process has used, from
// /proc/PID/stat, in clock ticks of 10ms.
func (p *Proc) CPU() (time.Duration, error) { return procCPU(p.Pid()) }

// RSS returns the process's resident memory (VmRSS of /proc/PID/status).
func (p *Proc) RSS() (int64, error) { return procRSS(p.Pid()) }

// procCPU reads utime+stime of pid. Linux reports them in USER_HZ ticks,
// 100 per second on every architecture Go supports.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: fields count from
	// the last ')'. utime and stime are fields 14 and 15 of the line, so
	// the 12th and 13th after it.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields after the name", pid, len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %q: %w", pid, s, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// machineBusy returns the CPU time all CPUs of the machine spent busy
// (user, nice, system, irq, softirq and steal of /proc/stat), in ticks of
// 10ms.
func machineBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: first line %q", line)
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system irq softirq steal
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %q: %w", f[i], err)
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// cpuWatch measures, over a run, the CPU time of the machine that neither
// the benchmark nor the servers it started used: other people's work on a
// shared machine, which makes the run's numbers worth less.
type cpuWatch struct {
	pids        []int
	start       time.Time
	busy0, our0 time.Duration
}

// watchCPU starts a cpuWatch over the benchmark and procs.
func watchCPU(procs ...*Proc) *cpuWatch {
	w := &cpuWatch{pids: []int{os.Getpid()}}
	for _, p := range procs {
		if p != nil {
			w.pids = append(w.pids, p.Pid())
		}
	}
	w.busy0, _ = machineBusy()
	w.our0 = w.ours()
	w.start = time.Now()
	return w
}

func (w *cpuWatch) ours() time.Duration {
	var sum time.Duration
	for _, pid := range w.pids {
		d, _ := procCPU(pid)
		sum += d
	}
	return sum
}

// others returns the share of the machine's CPU capacity (0 to 1) that
// other processes used since watchCPU.
func (w *cpuWatch) others() float64 { return w.othersBut(0) }

// othersBut is others, not counting mine of CPU time used by processes of
// the benchmark's that have exited meanwhile (a wrk run).
func (w *cpuWatch) othersBut(mine time.Duration) float64 {
	busy, err := machineBusy()
	if err != nil {
		return 0
	}
	capacity := time.Since(w.start) * time.Duration(runtime.NumCPU())
	other := (busy - w.busy0) - (w.ours() - w.our0) - mine
	if capacity <= 0 || other < 0 {
		return 0
	}
	return min(float64(other)/float64(capacity), 1)
}

// procRSS reads VmRSS of pid, in bytes.
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	return parseVmRSS(b)
}

// parseVmRSS finds "VmRSS:  123456 kB" in a /proc/PID/status.
func parseVmRSS(status []byte) (int64, error) {
	s := bufio.NewScanner(bytes.NewReader(status))
	for s.Scan() {
		rest, ok := strings.CutPrefix(s.Text(), "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("VmRSS line %q", s.Text())
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("VmRSS line %q: %w", s.Text(), err)
		}
		return n << 10, nil
	}
	return 0, errors.New("no VmRSS in /proc/PID/status")
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

// loopback returns "127.0.0.1:port".
func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// waitHTTP polls url until it answers 200, p exits, or startTimeout passes.
func waitHTTP(p *Proc, url string) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(startTimeout)
	var last string
	for {
		if err := p.exitedErr(); err != nil {
			return err
		}
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: GET %s: no 200 within %v: %s", p.Name, url, startTimeout, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitTCP waits until addr accepts connections, p exits, or startTimeout
// passes.
func waitTCP(p *Proc, addr string) error {
	deadline := time.Now().Add(startTimeout)
	for {
		if err := p.exitedErr(); err != nil {
			return err
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: nothing accepts connections on %s within %v: %v", p.Name, addr, startTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lockedBuffer is a bytes.Buffer that exec's copying goroutine may write
// while the benchmark reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > 1<<20 { // a chatty server must not fill memory
		b.buf.Reset()
	}
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
