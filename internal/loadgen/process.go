package loadgen

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

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
