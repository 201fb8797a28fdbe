package k8s_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/floodgate-rl/floodgate/internal/supervisor"
	"github.com/floodgate-rl/floodgate/internal/testutil"
)

// floodgateEnv returns the configuration floodgate runs with in fc: every
// FLOODGATE_* variable of `floodgate --help`, at its default unless the
// container sets it. A FLOODGATE_* variable that floodgate does not know
// fails the test, as does configuration floodgate would not see.
func floodgateEnv(t *testing.T, fc floodgateContainer) map[string]string {
	t.Helper()
	defaults := envDefaults(t)
	env := maps.Clone(defaults)
	for _, e := range fc.C.Env {
		if e.ValueFrom != nil {
			t.Errorf("%s: env %s comes from valueFrom; the tests can only check literal values", fc, e.Name)
			continue
		}
		if _, ok := defaults[e.Name]; strings.HasPrefix(e.Name, "FLOODGATE_") && !ok {
			t.Errorf("%s: env %s: floodgate --help names no such variable", fc, e.Name)
		}
		env[e.Name] = e.Value
	}
	if len(fc.C.Command) > 0 {
		t.Errorf("%s: command %q replaces the image's entrypoint, /floodgate", fc, fc.C.Command)
	}
	return env
}

// splitAddr splits a listen address host:port; host "" means every address.
func splitAddr(t *testing.T, where, addr string) (string, int32) {
	t.Helper()
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s: address %q: %v", where, addr, err)
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil || port == 0 {
		t.Fatalf("%s: address %q: bad port", where, addr)
	}
	return host, int32(port)
}

// isLoopback reports whether a listener on host is reachable only from
// inside the pod.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// floodgateAddrs returns the gRPC and admin listen addresses of fc.
func floodgateAddrs(t *testing.T, fc floodgateContainer) (grpcHost string, grpcPort int32, adminHost string, adminPort int32) {
	t.Helper()
	env := floodgateEnv(t, fc)
	grpcHost, grpcPort = splitAddr(t, fc.String()+" FLOODGATE_GRPC_ADDR", env["FLOODGATE_GRPC_ADDR"])
	adminHost, adminPort = splitAddr(t, fc.String()+" FLOODGATE_ADMIN_ADDR", env["FLOODGATE_ADMIN_ADDR"])
	return grpcHost, grpcPort, adminHost, adminPort
}

// envDuration parses a duration variable of env.
func envDuration(t *testing.T, where string, env map[string]string, name string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(env[name])
	if err != nil {
		t.Fatalf("%s: %s=%q: %v", where, name, env[name], err)
	}
	return d
}

// TestFloodgateContainers checks each floodgate container against floodgate
// itself: it is configured through FLOODGATE_* variables floodgate knows;
// the ports it declares are the ones floodgate listens on from outside the
// pod (and every such port is declared); its readiness and liveness probes
// hit the admin port, on /readyz and /healthz, and that port listens on the
// pod's address, where the kubelet connects; Prometheus is pointed at the
// admin port; the pod's grace period covers the preStop sleep and
// floodgate's drain; replicas share their counters through memcached; and
// every floodgate runs the same image.
func TestFloodgateContainers(t *testing.T) {
	var image string
	for _, fc := range floodgateContainers(t) {
		t.Run(fc.W.Render.Dir+"/"+fc.W.Name, func(t *testing.T) {
			env := floodgateEnv(t, fc)
			grpcHost, grpcPort, adminHost, adminPort := floodgateAddrs(t, fc)
			if image == "" {
				image = fc.C.Image
			} else if fc.C.Image != image {
				t.Errorf("%s: image %s, another floodgate runs %s", fc, fc.C.Image, image)
			}
			if isLoopback(adminHost) {
				t.Errorf("%s: FLOODGATE_ADMIN_ADDR=%s: the kubelet's probes and Prometheus connect to the pod's address", fc, env["FLOODGATE_ADMIN_ADDR"])
			}
			if env["FLOODGATE_MEMCACHE_SERVERS"] == "" {
				t.Errorf("%s: no FLOODGATE_MEMCACHE_SERVERS: each pod would count on its own, and a client get the limit once per pod", fc)
			}

			// Declared ports: exactly floodgate's listeners on the pod's
			// address.
			want := map[int32]string{}
			if !isLoopback(grpcHost) {
				want[grpcPort] = "gRPC (FLOODGATE_GRPC_ADDR)"
			}
			if !isLoopback(adminHost) {
				want[adminPort] = "admin (FLOODGATE_ADMIN_ADDR)"
			}
			for _, p := range fc.C.Ports {
				if _, ok := want[p.ContainerPort]; !ok {
					t.Errorf("%s: declares port %d (%s), on which floodgate does not listen from outside the pod", fc, p.ContainerPort, p.Name)
				}
				if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
					t.Errorf("%s: port %d protocol %s, want TCP", fc, p.ContainerPort, p.Protocol)
				}
				delete(want, p.ContainerPort)
			}
			for port, what := range want {
				t.Errorf("%s: floodgate listens for %s on port %d, which the container does not declare", fc, what, port)
			}

			// Probes.
			for kind, wantPath := range map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"} {
				p := probes(fc.C)[kind]
				if p == nil {
					t.Errorf("%s: no %s", fc, kind)
					continue
				}
				port, err := probePort(fc.C, p)
				if err != nil {
					t.Errorf("%s %s: %v", fc, kind, err)
					continue
				}
				switch {
				case p.HTTPGet != nil:
					if port != adminPort {
						t.Errorf("%s %s: GET port %d, but the admin server (/healthz, /readyz) listens on %d", fc, kind, port, adminPort)
					}
					if p.HTTPGet.Path != wantPath {
						t.Errorf("%s %s: path %q, want %q", fc, kind, p.HTTPGet.Path, wantPath)
					}
					if p.HTTPGet.Scheme != "" && p.HTTPGet.Scheme != corev1.URISchemeHTTP {
						t.Errorf("%s %s: scheme %s, but the admin server speaks HTTP", fc, kind, p.HTTPGet.Scheme)
					}
				case p.GRPC != nil:
					if port != grpcPort || isLoopback(grpcHost) {
						t.Errorf("%s %s: gRPC health on port %d, but floodgate's gRPC listens on %s:%d", fc, kind, port, grpcHost, grpcPort)
					}
				default:
					t.Errorf("%s %s: use httpGet on the admin port or grpc on the gRPC port: a TCP or exec probe does not see floodgate's health", fc, kind)
				}
			}

			// Prometheus annotations lead to /metrics.
			ann := fc.W.Template.Annotations
			if ann["prometheus.io/scrape"] != "true" {
				t.Errorf("%s: pod annotation prometheus.io/scrape is not \"true\"", fc)
			}
			if ann["prometheus.io/port"] != strconv.Itoa(int(adminPort)) || ann["prometheus.io/path"] != "/metrics" {
				t.Errorf("%s: prometheus.io/port %q path %q, want %d and /metrics", fc, ann["prometheus.io/port"], ann["prometheus.io/path"], adminPort)
			}

			// Termination: preStop sleep, then SIGTERM and a drain of up to
			// FLOODGATE_SHUTDOWN_TIMEOUT, all within the grace period.
			grace := 30 * time.Second // the API's default
			if g := fc.W.Pod().TerminationGracePeriodSeconds; g != nil {
				grace = time.Duration(*g) * time.Second
			}
			var sleep time.Duration
			if l := fc.C.Lifecycle; l != nil && l.PreStop != nil && l.PreStop.Sleep != nil {
				sleep = time.Duration(l.PreStop.Sleep.Seconds) * time.Second
			}
			if l := fc.C.Lifecycle; l != nil && l.PreStop != nil && l.PreStop.Exec != nil {
				t.Errorf("%s: exec preStop hook: floodgate's image has no shell or programs besides floodgate", fc)
			}
			// A native sidecar gets SIGTERM only once the regular
			// containers have exited (after their preStop sleeps) and the
			// sidecars started after it have stopped.
			if isSidecar(fc.C) {
				sleep += stopsBefore(fc.W.Pod(), fc.C)
			}
			drain := envDuration(t, fc.String(), env, "FLOODGATE_SHUTDOWN_TIMEOUT")
			if sleep+drain+time.Second > grace {
				t.Errorf("%s: terminationGracePeriodSeconds %v < preStop sleep %v + FLOODGATE_SHUTDOWN_TIMEOUT %v + 1s: the kubelet would kill floodgate mid-drain",
					fc, grace, sleep, drain)
			}
		})
	}
}

// stopsBefore returns the preStop sleeps that pass, when pod stops, before
// the kubelet sends SIGTERM to its native sidecar c: the longest of the
// regular containers' (which stop together), then those of the sidecars
// after c (which stop one by one, in reverse order).
func stopsBefore(pod *corev1.PodSpec, c *corev1.Container) time.Duration {
	sleepOf := func(c *corev1.Container) time.Duration {
		if l := c.Lifecycle; l != nil && l.PreStop != nil && l.PreStop.Sleep != nil {
			return time.Duration(l.PreStop.Sleep.Seconds) * time.Second
		}
		return 0
	}
	var d time.Duration
	for i := range pod.Containers {
		d = max(d, sleepOf(&pod.Containers[i]))
	}
	after := false
	for i := range pod.InitContainers {
		s := &pod.InitContainers[i]
		if after && isSidecar(s) {
			d += sleepOf(s)
		}
		after = after || s == c
	}
	return d
}

// TestFloodgateRunsWithManifestConfig runs the real floodgate with the
// environment of each floodgate container (listen ports moved to free
// loopback ports, memcached servers to loopback addresses where nothing
// listens) and checks that it accepts the configuration, counts in
// memcached (not the in-memory store), and answers each of the container's
// probes, and /metrics where the pod's annotations point Prometheus.
func TestFloodgateRunsWithManifestConfig(t *testing.T) {
	for _, fc := range floodgateContainers(t) {
		t.Run(fc.W.Render.Dir+"/"+fc.W.Name, func(t *testing.T) {
			t.Parallel()
			_, grpcPort, _, adminPort := floodgateAddrs(t, fc)
			p := startFloodgateEnv(t, fc, true)

			serving := p.startupLine(t)
			if serving["store"] != "memcache" {
				t.Errorf("floodgate serving with store %v, want memcache: %v", serving["store"], serving)
			}
			// The test port standing for each port of the manifest.
			ports := map[int32]int{grpcPort: p.grpcPort, adminPort: p.adminPort}
			for kind, probe := range probes(fc.C) {
				port, err := probePort(fc.C, probe)
				if err != nil {
					t.Fatalf("%s: %v", kind, err)
				}
				local, ok := ports[port]
				if !ok {
					t.Errorf("%s: port %d is neither floodgate's gRPC nor its admin port", kind, port)
					continue
				}
				switch {
				case probe.HTTPGet != nil:
					url := fmt.Sprintf("http://127.0.0.1:%d%s", local, probe.HTTPGet.Path)
					if code, body := httpGet(t, url); code != http.StatusOK {
						t.Errorf("%s: GET %s (the manifest's port %d) = %d %q, want 200", kind, url, port, code, body)
					}
				case probe.GRPC != nil:
					service := ""
					if probe.GRPC.Service != nil {
						service = *probe.GRPC.Service
					}
					if st := grpcHealth(t, fmt.Sprintf("127.0.0.1:%d", local), service); st != healthpb.HealthCheckResponse_SERVING {
						t.Errorf("%s: gRPC health of %q = %v, want SERVING", kind, service, st)
					}
				default:
					t.Errorf("%s: not an httpGet or grpc probe", kind)
				}
			}
			ann := fc.W.Template.Annotations
			if promPort, err := strconv.Atoi(ann["prometheus.io/port"]); err == nil {
				local, ok := ports[int32(promPort)]
				if !ok {
					t.Fatalf("prometheus.io/port %d is not floodgate's admin port", promPort)
				}
				url := fmt.Sprintf("http://127.0.0.1:%d%s", local, ann["prometheus.io/path"])
				code, body := httpGet(t, url)
				if code != http.StatusOK || !strings.Contains(body, "floodgate_decisions_total") {
					t.Errorf("GET %s (Prometheus's scrape) = %d, want 200 with floodgate_decisions_total", url, code)
				}
			}
		})
	}
}

// floodgateProc is the real floodgate run with a container's environment.
type floodgateProc struct {
	*supervisor.Process
	grpcPort  int
	adminPort int
}

// startFloodgateEnv runs the real floodgate with exactly the environment
// and arguments of fc's container, except: FLOODGATE_GRPC_ADDR and
// FLOODGATE_ADMIN_ADDR move to free ports on 127.0.0.1, and each server of
// FLOODGATE_MEMCACHE_SERVERS becomes a loopback address where nothing
// listens (floodgate does not connect before the first check), or, when
// withMemcache is false, the variable is dropped and floodgate counts in
// memory. It returns once /readyz answers 200; the test's cleanup kills
// the process by its PID.
func startFloodgateEnv(t *testing.T, fc floodgateContainer, withMemcache bool) *floodgateProc {
	t.Helper()
	bin := testutil.BuildFloodgate(t)
	p, err := supervisor.RetryBind(func() (*floodgateProc, *supervisor.Process, error) {
		p := &floodgateProc{grpcPort: testutil.FreePort(t), adminPort: testutil.FreePort(t)}
		env := containerEnv(t, fc, withMemcache, p)
		proc, err := supervisor.Start("floodgate ("+strings.Join(env, " ")+")", env, bin, fc.C.Args...)
		if err != nil {
			return nil, nil, err
		}
		p.Process = proc
		if err := supervisor.WaitHTTP(proc, fmt.Sprintf("http://127.0.0.1:%d/readyz", p.adminPort)); err != nil {
			proc.Stop()
			return nil, proc, err
		}
		return p, proc, nil
	})
	if err != nil {
		t.Fatalf("%s: floodgate did not get ready with the container's environment: %v", fc, err)
	}
	testutil.Supervise(t, p.Process)
	return p
}

// containerEnv returns fc's environment for startFloodgateEnv, with the
// addresses moved to p's ports.
func containerEnv(t *testing.T, fc floodgateContainer, withMemcache bool, p *floodgateProc) []string {
	t.Helper()
	var env []string
	var tlsFiles map[string]string
	for _, e := range fc.C.Env {
		v := e.Value
		switch e.Name {
		case "FLOODGATE_GRPC_ADDR":
			v = fmt.Sprintf("127.0.0.1:%d", p.grpcPort)
		case "FLOODGATE_ADMIN_ADDR":
			v = fmt.Sprintf("127.0.0.1:%d", p.adminPort)
		case "FLOODGATE_MEMCACHE_SERVERS":
			if !withMemcache {
				continue
			}
			var servers []string
			for range strings.Split(v, ",") {
				servers = append(servers, fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)))
			}
			v = strings.Join(servers, ",")
		case "FLOODGATE_RLS_CONFIG", "FLOODGATE_POLICY":
			v = configMapFiles(t, fc, v) // the ConfigMap mounted there
		case "FLOODGATE_TLS_CERT", "FLOODGATE_TLS_KEY", "FLOODGATE_TLS_CLIENT_CA":
			// A Secret the chart's user provides: certificates made here.
			if tlsFiles == nil {
				tlsFiles = testTLSFiles(t)
			}
			v = tlsFiles[e.Name]
		}
		env = append(env, e.Name+"="+v)
	}
	for _, name := range []string{"FLOODGATE_GRPC_ADDR", "FLOODGATE_ADMIN_ADDR"} {
		if !strings.Contains(strings.Join(env, "\n"), name+"=") {
			t.Fatalf("%s: sets no %s: the test cannot move it to a free port", fc, name)
		}
	}
	return env
}

// testTLSFiles makes a CA and a server certificate it signs, writes them
// to a temporary directory, and returns their paths by the variable that
// names each.
func testTLSFiles(t *testing.T) map[string]string {
	t.Helper()
	dir := t.TempDir()
	ca := testutil.NewCA(t, "floodgate test CA")
	cert, key := ca.Issue(t, "floodgate", true)
	return map[string]string{
		"FLOODGATE_TLS_CERT":      testutil.WriteFile(t, dir, "tls.crt", cert),
		"FLOODGATE_TLS_KEY":       testutil.WriteFile(t, dir, "tls.key", key),
		"FLOODGATE_TLS_CLIENT_CA": testutil.WriteFile(t, dir, "ca.crt", ca.PEM),
	}
}

// startupLine returns the attributes of floodgate's "floodgate serving" log
// line, which the containers ask for in JSON (FLOODGATE_LOG_FORMAT=json).
func (p *floodgateProc) startupLine(t *testing.T) map[string]any {
	t.Helper()
	// /readyz, which startFloodgateEnv waited for, may answer a moment
	// before the line is written.
	var serving map[string]any
	testutil.WaitFor(t, 10*time.Second, func() error {
		s := bufio.NewScanner(strings.NewReader(p.Output()))
		for s.Scan() {
			var line map[string]any
			if json.Unmarshal(s.Bytes(), &line) == nil && line["msg"] == "floodgate serving" {
				serving = line
				return nil
			}
		}
		return fmt.Errorf("no JSON \"floodgate serving\" line in floodgate's output:\n%s", p.Output())
	})
	return serving
}

// httpGet returns the status and body of GET url, or 0 when it fails.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// grpcHealth asks the grpc.health.v1 service at addr about service, as the
// kubelet's grpc probe does.
func grpcHealth(t *testing.T, addr, service string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		t.Errorf("gRPC health check %s %q: %v", addr, service, err)
		return healthpb.HealthCheckResponse_UNKNOWN
	}
	return resp.Status
}
