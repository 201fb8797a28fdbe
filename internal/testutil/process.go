package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/floodgate-rl/floodgate/internal/supervisor"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. Another
// process may take it before the caller binds it; the Start functions of this
// package retry with new ports when that happens.
func FreePort(tb testing.TB) int {
	tb.Helper()
	port, err := supervisor.FreePort()
	if err != nil {
		tb.Fatalf("%v", err)
	}
	return port
}

// Process is a server process started by a test: floodgate or Envoy. Its
// combined stdout and stderr are kept, and printed when the test fails. The
// test's cleanup kills it by its PID.
type Process = supervisor.Process

// Supervise registers the cleanup that kills p, a process the test started
// with supervisor.Start, at the end of the test and, when the test failed,
// prints the tail of p's output. The Start functions of this package call
// it.
func Supervise(tb testing.TB, p *Process) {
	tb.Cleanup(func() {
		p.Stop()
		if tb.Failed() {
			tb.Logf("%s (pid %d, %s) output:\n%s", p.Name(), p.Pid(), p.CommandLine(), p.Tail())
		}
	})
}

// moduleRoot returns the directory holding floodgate's go.mod, found by
// walking up from the working directory (a test runs in its package's
// directory).
var moduleRoot = sync.OnceValues(func() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	return supervisor.ModuleRoot(dir)
})

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

// Main runs the tests of m, deletes what BuildFloodgate built, and exits
// with the tests' status: the TestMain of a package whose tests start the
// floodgate binary.
func Main(m *testing.M) {
	code := m.Run()
	RemoveBuilds()
	os.Exit(code)
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
type Floodgate = supervisor.Floodgate

// StartFloodgate builds floodgate (once per test binary), runs it with
// --grpc-addr and --admin-addr on free 127.0.0.1 ports followed by args, and
// waits until /readyz answers 200. FLOODGATE_* variables of the test's
// environment are not passed on, so a developer's shell cannot change what
// the test runs. The test's cleanup kills the process.
func StartFloodgate(tb testing.TB, args ...string) *Floodgate {
	tb.Helper()
	f, err := supervisor.StartFloodgate(BuildFloodgate(tb), supervisor.ServerEnv(), args...)
	if err != nil {
		tb.Fatalf("floodgate did not become ready: %v", err)
	}
	Supervise(tb, f.Process)
	return f
}
