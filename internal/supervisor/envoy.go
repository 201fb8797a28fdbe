package supervisor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// portValue matches a port in an Envoy config: "port_value: 10000".
var portValue = regexp.MustCompile(`(port_value:\s*)(\d+)`)

// anyAddress matches a listener bound to every IPv4 address.
var anyAddress = regexp.MustCompile(`(address:\s*)0\.0\.0\.0\b`)

// RenderEnvoyConfig returns the Envoy config src with every "port_value: N"
// replaced by "port_value: ports[N]" and every "address: 0.0.0.0" by
// "address: 127.0.0.1", so that the envoy/*.yaml files users read can run
// on free loopback ports. Every port in src must be in ports.
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

// ConfigPorts returns the ports in an Envoy config, in order, without
// repeats.
func ConfigPorts(src []byte) []int {
	var ports []int
	for _, m := range portValue.FindAllSubmatch(src, -1) {
		n, _ := strconv.Atoi(string(m[2]))
		if !slices.Contains(ports, n) {
			ports = append(ports, n)
		}
	}
	return ports
}

// envoyRuns numbers the Envoys of this process for --base-id.
var envoyRuns atomic.Uint32

// Envoy is an Envoy process started by StartEnvoy.
type Envoy struct {
	*Process
	ports  map[int]int // port in the config file -> port Envoy uses
	admin  string      // admin address, host:port
	config string      // path of the rendered config
}

// StartEnvoy runs Envoy (bin) with the config src, named name in errors
// and file names, on loopback.
//
// ports maps ports written in src to the ports of servers already started,
// for the clusters: e.g. {9001: floodgate.GRPCPort(), 8080: app}. Every
// other port in src (listeners and admin) gets a free port; Port says
// which. 0.0.0.0 becomes 127.0.0.1. The rendered copy is written to dir.
//
// Envoy runs with one worker thread, log level warning and hot restart
// disabled (so no shared memory, and any number of Envoys can run at once).
// StartEnvoy returns when the admin interface answers /ready with 200 and
// every listener accepts connections.
func StartEnvoy(bin, name string, src []byte, dir string, ports map[int]int) (*Envoy, error) {
	attempt := 0
	return RetryBind(func() (*Envoy, *Process, error) {
		attempt++
		e := &Envoy{ports: make(map[int]int)}
		var own []int // ports picked here: listeners and admin
		for _, n := range ConfigPorts(src) {
			if p, ok := ports[n]; ok {
				e.ports[n] = p
				continue
			}
			p, err := FreePort()
			if err != nil {
				return nil, nil, err
			}
			e.ports[n] = p
			own = append(own, n)
		}
		rendered, err := RenderEnvoyConfig(src, e.ports)
		if err != nil {
			return nil, nil, fmt.Errorf("envoy %s: %w", name, err)
		}
		e.config = filepath.Join(dir, fmt.Sprintf("%d-%s", attempt, name))
		if err := os.WriteFile(e.config, rendered, 0o644); err != nil {
			return nil, nil, fmt.Errorf("envoy %s: %w", name, err)
		}
		adminPath := filepath.Join(dir, fmt.Sprintf("%d-%s-admin-address", attempt, name))
		// --base-id only matters with hot restart; it is unique anyway, so
		// removing --disable-hot-restart cannot make two Envoys collide.
		baseID := os.Getpid()%10000*1000 + int(envoyRuns.Add(1))%1000
		p, err := Start("envoy "+name, nil, bin,
			"-c", e.config,
			"--concurrency", "1",
			"-l", "warning",
			"--disable-hot-restart",
			"--base-id", strconv.Itoa(baseID),
			"--admin-address-path", adminPath,
			// Access logs (stdout and files) are flushed every 100 ms,
			// not every 10 s, Envoy's default: a test that waits for a
			// request's access log line would otherwise wait up to 10 s
			// for the next flush, past its deadline under load.
			"--file-flush-interval-msec", "100",
		)
		if err != nil {
			return nil, nil, err
		}
		e.Process = p
		if err := e.waitReady(adminPath, own); err != nil {
			p.Stop()
			return nil, p, fmt.Errorf("envoy %s did not become ready: %w", name, err)
		}
		return e, p, nil
	})
}

// waitReady waits until Envoy has written its admin address to adminPath,
// answers /ready with 200, and accepts connections on the listener ports
// among own.
func (e *Envoy) waitReady(adminPath string, own []int) error {
	start := time.Now()
	err := Poll(StartTimeout, func() error {
		if err := e.ExitErr(); err != nil {
			return Permanent(err)
		}
		b, err := os.ReadFile(adminPath)
		if err != nil || len(strings.TrimSpace(string(b))) == 0 {
			return errors.New("no admin address written to " + adminPath)
		}
		e.admin = strings.TrimSpace(string(b))
		return nil
	})
	if err != nil {
		return err
	}
	if err := WaitHTTP(e.Process, e.AdminURL()+"/ready"); err != nil {
		return err
	}
	for _, n := range own {
		addr := Loopback(e.ports[n])
		if addr == e.admin {
			continue
		}
		if err := WaitTCP(e.Process, addr); err != nil {
			return fmt.Errorf("%w (port_value %d in the config, %v after the start): "+
				"if that is a cluster's port, pass the port of the server already started for it", err, n, time.Since(start).Round(time.Millisecond))
		}
	}
	return nil
}

// Port returns the port Envoy uses for the port written in its config
// file, e.g. Port(10000) for the listener of front-proxy.yaml, and whether
// the config has that port.
func (e *Envoy) Port(inConfig int) (int, bool) {
	p, ok := e.ports[inConfig]
	return p, ok
}

// AdminURL returns the base URL of Envoy's admin interface.
func (e *Envoy) AdminURL() string { return "http://" + e.admin }

// ConfigPath returns the path of the rendered config Envoy runs.
func (e *Envoy) ConfigPath() string { return e.config }
