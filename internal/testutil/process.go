package testutil

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	// startTimeout bounds how long a started floodgate or Envoy may take to
	// report ready.
	startTimeout = 20 * time.Second
	// outputTail is how much of a process's output a failed test prints.
	outputTail = 16 << 10
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. Another
// process may take it before the caller binds it; the Start functions of this
// package retry with new ports when that happens.
func FreePort(tb testing.TB) int {
	tb.Helper()
	port, err := freePort()
	if err != nil {
		tb.Fatalf("pick a free port: %v", err)
	}
	return port
}

// Process is a server process started by a test: floodgate or Envoy. Its
// combined stdout and stderr are kept, and printed when the test fails. The
// test's cleanup kills it by its PID.
//
// Its methods are safe for concurrent use.
type Process struct {
	name   string
	cmd    *exec.Cmd
	output *lockedBuffer
	exited chan struct{} // closed when cmd has exited

	stopOnce sync.Once
}

// startProcess starts bin with args and environment env (nil: the test's
// own). name labels the output a failed test prints. The cleanup registered
// on tb kills the process; it also ends with the test binary (see
// setParentDeath), so an interrupted test leaves nothing running.
func startProcess(tb testing.TB, name string, env []string, bin string, args ...string) (*Process, error) {
	tb.Helper()
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
	tb.Cleanup(func() {
		p.Stop()
		if tb.Failed() {
			tb.Logf("%s (pid %d, %s) output:\n%s", name, cmd.Process.Pid, strings.Join(cmd.Args, " "), p.tail())
		}
	})
	return p, nil
}

// Pid returns the process ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Output returns everything the process wrote to stdout and stderr so far.
func (p *Process) Output() string { return p.output.String() }

// Exited is closed when the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Stop kills the process with SIGKILL, as a crash would end it, and waits
// until it has exited. Stopping a stopped process does nothing.
func (p *Process) Stop() {
	p.stopOnce.Do(func() {
		// Kill signals the PID of the process we started, and only that.
		// The error only says that it had already exited.
		_ = p.cmd.Process.Kill()
	})
	<-p.exited
}

// tail returns the last outputTail bytes of the output.
func (p *Process) tail() string {
	out := p.Output()
	if len(out) > outputTail {
		out = "...\n" + out[len(out)-outputTail:]
	}
	if out == "" {
		return "(none)"
	}
	return out
}

// exitedEarly reports whether p has exited, with its output as the reason.
func (p *Process) exitedEarly() (string, bool) {
	select {
	case <-p.exited:
		return fmt.Sprintf("%s exited (%v): %s", p.name, p.cmd.ProcessState, strings.TrimSpace(p.tail())), true
	default:
		return "", false
	}
}

// addrInUse reports whether a process's output says that it could not bind
// its port: another process took the free port first, so try other ports.
func addrInUse(output string) bool {
	return strings.Contains(output, "address already in use") || strings.Contains(output, "Address already in use")
}

// waitHTTP polls url until it answers 200, p exits, or startTimeout passes.
func waitHTTP(p *Process, url string) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(startTimeout)
	var last string
	for {
		if why, ok := p.exitedEarly(); ok {
			return errors.New(why)
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
			return fmt.Errorf("%s: GET %s did not answer 200 within %v: %s", p.name, url, startTimeout, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// moduleRoot returns the directory holding floodgate's go.mod, found by
// walking up from the working directory (a test runs in its package's
// directory).
var moduleRoot = sync.OnceValues(func() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if isModuleRoot(dir) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of module github.com/floodgate-rl/floodgate above the working directory")
		}
		dir = parent
	}
})

// isModuleRoot reports whether dir holds floodgate's go.mod.
func isModuleRoot(dir string) bool {
	f, err := os.Open(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if fields := strings.Fields(s.Text()); len(fields) == 2 && fields[0] == "module" {
			return fields[1] == "github.com/floodgate-rl/floodgate"
		}
	}
	return false
}

// ModuleRoot returns the directory of floodgate's go.mod.
func ModuleRoot(tb testing.TB) string {
	tb.Helper()
	root, err := moduleRoot()
	if err != nil {
		tb.Fatalf("find module root: %v", err)
	}
	return root
}

// build holds the result of the one floodgate build of this test binary.
var build struct {
	once sync.Once
	dir  string // temporary directory holding the binary
	bin  string
	err  error
}

// BuildFloodgate builds ./cmd/floodgate once per test binary, into a
// temporary directory, and returns the binary's path. Call RemoveBuilds
// from TestMain after m.Run to delete it.
func BuildFloodgate(tb testing.TB) string {
	tb.Helper()
	build.once.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			build.err = err
			return
		}
		build.dir, err = os.MkdirTemp("", "floodgate-test-")
		if err != nil {
			build.err = err
			return
		}
		bin := filepath.Join(build.dir, "floodgate")
		cmd := exec.Command(goTool(), "build", "-o", bin, "./cmd/floodgate")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("go build ./cmd/floodgate: %v\n%s", err, out)
			return
		}
		build.bin = bin
	})
	if build.err != nil {
		tb.Fatalf("%v", build.err)
	}
	return build.bin
}

// RemoveBuilds deletes what BuildFloodgate built. Call it from TestMain
// after m.Run; it is safe to call when nothing was built.
func RemoveBuilds() {
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
}

// goTool returns the go command: the one of the toolchain running the tests
// when it exists, else the one in PATH.
func goTool() string {
	//lint:ignore SA1019 a test binary runs where it was built, so its GOROOT is the toolchain running the tests.
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return "go"
}

// Floodgate is a floodgate server started by StartFloodgate on free loopback
// ports.
type Floodgate struct {
	*Process
	grpcPort  int
	adminPort int
}

// StartFloodgate builds floodgate (once per test binary), runs it with
// --grpc-addr and --admin-addr on free 127.0.0.1 ports followed by args, and
// waits until /readyz answers 200. FLOODGATE_* variables of the test's
// environment are not passed on, so a developer's shell cannot change what
// the test runs. The test's cleanup kills the process.
func StartFloodgate(tb testing.TB, args ...string) *Floodgate {
	tb.Helper()
	bin := BuildFloodgate(tb)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FLOODGATE_") {
			env = append(env, kv)
		}
	}
	var last error
	for range bindAttempts {
		f := &Floodgate{grpcPort: FreePort(tb), adminPort: FreePort(tb)}
		all := append([]string{
			"--grpc-addr", f.GRPCAddr(),
			"--admin-addr", net.JoinHostPort("127.0.0.1", strconv.Itoa(f.adminPort)),
		}, args...)
		p, err := startProcess(tb, "floodgate", env, bin, all...)
		if err != nil {
			tb.Fatalf("%v", err)
		}
		f.Process = p
		if last = waitHTTP(p, f.AdminURL()+"/readyz"); last == nil {
			return f
		}
		p.Stop()
		if !addrInUse(p.Output()) {
			break
		}
	}
	tb.Fatalf("floodgate did not become ready: %v", last)
	return nil
}

// GRPCAddr returns the address of floodgate's gRPC server, "127.0.0.1:PORT".
func (f *Floodgate) GRPCAddr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(f.grpcPort))
}

// GRPCPort returns the port of floodgate's gRPC server.
func (f *Floodgate) GRPCPort() int { return f.grpcPort }

// AdminURL returns the base URL of floodgate's admin server,
// "http://127.0.0.1:PORT".
func (f *Floodgate) AdminURL() string {
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(f.adminPort))
}
