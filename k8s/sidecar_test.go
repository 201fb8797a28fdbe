package k8s_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/floodgate-rl/floodgate/internal/testutil"
)

// The parts of an Envoy bootstrap the wiring checks read. encoding/json
// skips the rest.
type envoyBootstrap struct {
	Admin struct {
		Address envoyAddress `json:"address"`
	} `json:"admin"`
	StaticResources struct {
		Listeners []struct {
			Name         string       `json:"name"`
			Address      envoyAddress `json:"address"`
			FilterChains []struct {
				Filters []struct {
					Name        string          `json:"name"`
					TypedConfig json.RawMessage `json:"typed_config"`
				} `json:"filters"`
			} `json:"filter_chains"`
		} `json:"listeners"`
		Clusters []envoyCluster `json:"clusters"`
	} `json:"static_resources"`
}

type envoyAddress struct {
	SocketAddress struct {
		Address   string `json:"address"`
		PortValue int32  `json:"port_value"`
	} `json:"socket_address"`
}

type envoyCluster struct {
	Name                          string                     `json:"name"`
	TypedExtensionProtocolOptions map[string]json.RawMessage `json:"typed_extension_protocol_options"`
	LoadAssignment                struct {
		Endpoints []struct {
			LbEndpoints []struct {
				Endpoint struct {
					Address envoyAddress `json:"address"`
				} `json:"endpoint"`
			} `json:"lb_endpoints"`
		} `json:"endpoints"`
	} `json:"load_assignment"`
}

type envoyHCM struct {
	RouteConfig struct {
		VirtualHosts []struct {
			Name                 string                    `json:"name"`
			Domains              []string                  `json:"domains"`
			Routes               []envoyRoute              `json:"routes"`
			TypedPerFilterConfig map[string]envoyPerFilter `json:"typed_per_filter_config"`
		} `json:"virtual_hosts"`
	} `json:"route_config"`
	HTTPFilters []struct {
		Name        string          `json:"name"`
		TypedConfig json.RawMessage `json:"typed_config"`
	} `json:"http_filters"`
}

type envoyRoute struct {
	Match struct {
		Path                string `json:"path"`
		Prefix              string `json:"prefix"`
		PathSeparatedPrefix string `json:"path_separated_prefix"`
	} `json:"match"`
	TypedPerFilterConfig map[string]envoyPerFilter `json:"typed_per_filter_config"`
}

type envoyPerFilter struct {
	Disabled *bool `json:"disabled"`
}

type envoyExtAuthz struct {
	GrpcService struct {
		EnvoyGrpc struct {
			ClusterName string `json:"cluster_name"`
		} `json:"envoy_grpc"`
		Timeout string `json:"timeout"`
	} `json:"grpc_service"`
	FailureModeAllow bool `json:"failure_mode_allow"`
}

const extAuthzFilter = "envoy.filters.http.ext_authz"

// matches reports whether route r matches path, for Envoy's path, prefix
// and path_separated_prefix matchers.
func (r envoyRoute) matches(path string) bool {
	m := r.Match
	switch {
	case m.Path != "":
		return path == m.Path
	case m.PathSeparatedPrefix != "":
		return path == m.PathSeparatedPrefix || strings.HasPrefix(path, m.PathSeparatedPrefix+"/")
	default:
		return strings.HasPrefix(path, m.Prefix)
	}
}

// envoyInPod is the Envoy container of a pod and the config it runs.
type envoyInPod struct {
	C      *corev1.Container
	Source []byte // the config file's bytes
	Config envoyBootstrap
	HCMs   []envoyHCM // one per listener, in the order of the listeners
}

// envoyOf returns the Envoy container of w and the config it loads: the
// file its -c/--config-path names, found through its volume mounts in the
// ConfigMap of the rendering.
func envoyOf(t *testing.T, w *workload) *envoyInPod {
	t.Helper()
	var c *corev1.Container
	for _, pc := range podContainers(w.Pod()) {
		if strings.HasPrefix(pc.Image, "envoyproxy/envoy") {
			c = pc
		}
	}
	if c == nil {
		t.Fatalf("%s: no Envoy container", w)
	}
	var args []string
	if len(c.Command) > 0 {
		args = append(args, c.Command[1:]...)
	}
	args = append(args, c.Args...)
	var path string
	for i, a := range args {
		if (a == "-c" || a == "--config-path") && i+1 < len(args) {
			path = args[i+1]
		} else if v, ok := strings.CutPrefix(a, "--config-path="); ok {
			path = v
		}
	}
	if path == "" {
		t.Fatalf("%s: Envoy container %s names no config file (-c)", w, c.Name)
	}
	var data []byte
	for _, m := range c.VolumeMounts {
		rel, err := filepath.Rel(m.MountPath, path)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		for _, v := range w.Pod().Volumes {
			if v.Name != m.Name || v.ConfigMap == nil {
				continue
			}
			cm := find[*corev1.ConfigMap](t, w.Render, v.ConfigMap.Name)
			s, ok := cm.Data[rel]
			if !ok {
				t.Fatalf("%s: Envoy loads %s, but ConfigMap %s has no key %q", w, path, cm.Name, rel)
			}
			data = []byte(s)
		}
	}
	if data == nil {
		t.Fatalf("%s: Envoy loads %s, which no ConfigMap volume mount provides", w, path)
	}
	e := &envoyInPod{C: c, Source: data}
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatalf("%s: Envoy config: %v", w, err)
	}
	if err := json.Unmarshal(j, &e.Config); err != nil {
		t.Fatalf("%s: Envoy config: %v", w, err)
	}
	for _, l := range e.Config.StaticResources.Listeners {
		var hcm envoyHCM
		for _, fc := range l.FilterChains {
			for _, f := range fc.Filters {
				if f.Name == "envoy.filters.network.http_connection_manager" {
					if err := json.Unmarshal(f.TypedConfig, &hcm); err != nil {
						t.Fatalf("%s: listener %s: %v", w, l.Name, err)
					}
				}
			}
		}
		e.HCMs = append(e.HCMs, hcm)
	}
	return e
}

// cluster returns the cluster named name.
func (e *envoyInPod) cluster(t *testing.T, name string) envoyCluster {
	t.Helper()
	for _, c := range e.Config.StaticResources.Clusters {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("Envoy config has no cluster %q", name)
	return envoyCluster{}
}

// endpoints returns the host:port endpoints of c.
func (c envoyCluster) endpoints() []string {
	var out []string
	for _, e := range c.LoadAssignment.Endpoints {
		for _, l := range e.LbEndpoints {
			a := l.Endpoint.Address.SocketAddress
			out = append(out, net.JoinHostPort(a.Address, strconv.Itoa(int(a.PortValue))))
		}
	}
	return out
}

// listener is a socket a container of a pod listens on.
type listener struct {
	Container string
	Host      string // "" or 0.0.0.0: every address of the pod
	Port      int32
	What      string
}

// podListeners returns every socket the containers of w listen on, read
// from each container's own configuration. An image it does not know fails
// the test: add it here.
func podListeners(t *testing.T, w *workload) []listener {
	t.Helper()
	var out []listener
	for _, c := range podContainers(w.Pod()) {
		switch {
		case isFloodgate(c):
			fc := floodgateContainer{w, c}
			gh, gp, ah, ap := floodgateAddrs(t, fc)
			out = append(out, listener{c.Name, gh, gp, "floodgate gRPC"}, listener{c.Name, ah, ap, "floodgate admin"})
		case strings.HasPrefix(c.Image, "envoyproxy/envoy"):
			e := envoyOf(t, w)
			a := e.Config.Admin.Address.SocketAddress
			out = append(out, listener{c.Name, a.Address, a.PortValue, "Envoy admin"})
			for _, l := range e.Config.StaticResources.Listeners {
				a := l.Address.SocketAddress
				out = append(out, listener{c.Name, a.Address, a.PortValue, "Envoy listener " + l.Name})
			}
		case strings.HasPrefix(c.Image, "hashicorp/http-echo:"):
			addr := ":5678" // http-echo's default
			for _, a := range c.Args {
				if v, ok := strings.CutPrefix(a, "-listen="); ok {
					addr = v
				}
			}
			h, p := splitAddr(t, c.Name, addr)
			out = append(out, listener{c.Name, h, p, "app"})
		case strings.HasPrefix(c.Image, "memcached:"):
			out = append(out, listener{c.Name, "", memcachedPort(t, c), "memcached"})
		default:
			t.Fatalf("%s: container %s: image %s unknown to podListeners", w, c.Name, c.Image)
		}
	}
	return out
}

// sidecarOverlays are the two forms of the sidecar example: native
// sidecars, and plain containers.
var sidecarOverlays = []string{"overlays/sidecar", "overlays/sidecar-plain"}

// sidecarPod returns the example application of the (native) sidecar
// overlay.
func sidecarPod(t *testing.T) *workload { return sidecarPodIn(t, sidecarOverlays[0]) }

// sidecarPodIn returns the example application of the overlay dir.
func sidecarPodIn(t *testing.T, dir string) *workload {
	t.Helper()
	for _, w := range workloads(mustRender(t, dir)) {
		if w.Name == "my-app" {
			return w
		}
	}
	t.Fatalf("%s: no Deployment my-app", dir)
	return nil
}

// TestSidecarWiring checks the pod of the sidecar overlay as one system:
// the Envoy config in its ConfigMap is envoy/sidecar.yaml; Envoy's ext_authz
// cluster leads to floodgate's gRPC address and is HTTP/2; its app cluster
// leads to the app, which listens on loopback only, so nothing reaches it
// around Envoy; the Service leads to Envoy's listener; Envoy's admin stays
// on loopback; no two containers listen on one port; every HTTP probe sent
// through Envoy's listener takes a route on which ext_authz is disabled, so
// the kubelet is never rate limited; Envoy fails open; and floodgate's
// memcached timeout is below Envoy's ext_authz timeout. Both forms of the
// example, native sidecars and plain containers, are checked.
func TestSidecarWiring(t *testing.T) {
	for _, dir := range sidecarOverlays {
		t.Run(dir, func(t *testing.T) { checkSidecarWiring(t, sidecarPodIn(t, dir)) })
	}
}

// checkSidecarWiring checks the pod of TestSidecarWiring.
func checkSidecarWiring(t *testing.T, w *workload) {
	t.Helper()
	e := envoyOf(t, w)
	ls := podListeners(t, w)

	want, err := os.ReadFile(filepath.Join(moduleRoot(t), "envoy", "sidecar.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if string(e.Source) != string(want) {
		t.Errorf("the Envoy config of the sidecar ConfigMap differs from envoy/sidecar.yaml: copy it to k8s/overlays/sidecar/envoy.yaml")
	}

	// No two sockets on one port (a wildcard and a loopback listener on the
	// same port collide too).
	seen := make(map[int32]listener)
	for _, l := range ls {
		if o, ok := seen[l.Port]; ok {
			t.Errorf("port %d: %s (%s) and %s (%s) both listen on it", l.Port, o.What, o.Container, l.What, l.Container)
		}
		seen[l.Port] = l
	}
	listensOn := func(hostport string) (listener, bool) {
		h, p := splitAddr(t, "Envoy endpoint", hostport)
		for _, l := range ls {
			if l.Port == p && (l.Host == h || l.Host == "" || l.Host == "0.0.0.0") {
				return l, true
			}
		}
		return listener{}, false
	}

	if a := e.Config.Admin.Address.SocketAddress.Address; !isLoopback(a) {
		t.Errorf("Envoy's admin interface listens on %s: it can change Envoy's state, keep it on 127.0.0.1", a)
	}

	// ext_authz → floodgate.
	if len(e.HCMs) != 1 {
		t.Fatalf("Envoy config has %d listeners, want 1", len(e.HCMs))
	}
	hcm := e.HCMs[0]
	var authz envoyExtAuthz
	for _, f := range hcm.HTTPFilters {
		if f.Name == extAuthzFilter {
			if err := json.Unmarshal(f.TypedConfig, &authz); err != nil {
				t.Fatal(err)
			}
		}
	}
	clusterName := authz.GrpcService.EnvoyGrpc.ClusterName
	if clusterName == "" {
		t.Fatal("no ext_authz filter with an envoy_grpc cluster in the Envoy config")
	}
	fg := e.cluster(t, clusterName)
	if _, ok := fg.TypedExtensionProtocolOptions["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]; !ok {
		t.Errorf("cluster %s: no HttpProtocolOptions: gRPC needs HTTP/2", fg.Name)
	}
	eps := fg.endpoints()
	if len(eps) == 0 {
		t.Fatalf("cluster %s has no endpoints", fg.Name)
	}
	for _, ep := range eps {
		l, ok := listensOn(ep)
		if !ok || l.What != "floodgate gRPC" {
			t.Errorf("ext_authz cluster %s: endpoint %s is not floodgate's gRPC address in the pod (listeners: %+v)", fg.Name, ep, ls)
		}
	}

	// The other clusters lead to the app, which listens on loopback only.
	for _, c := range e.Config.StaticResources.Clusters {
		if c.Name == clusterName {
			continue
		}
		for _, ep := range c.endpoints() {
			l, ok := listensOn(ep)
			switch {
			case !ok:
				t.Errorf("cluster %s: nothing in the pod listens on %s", c.Name, ep)
			case l.What != "app":
				t.Errorf("cluster %s: %s is %s, not the app", c.Name, ep, l.What)
			case !isLoopback(l.Host):
				t.Errorf("the app listens on %q: callers could reach it around Envoy, unlimited; listen on 127.0.0.1", l.Host)
			}
		}
	}

	// The Service leads to Envoy's listener.
	envoyPorts := make(map[int32]bool)
	for _, l := range e.Config.StaticResources.Listeners {
		envoyPorts[l.Address.SocketAddress.PortValue] = true
	}
	svc := find[*corev1.Service](t, w.Render, "my-app")
	for _, p := range svc.Spec.Ports {
		port, c, err := podPort(w.Pod(), p.TargetPort)
		if err != nil {
			t.Fatal(err)
		}
		if c == nil || c.Name != e.C.Name || !envoyPorts[port] {
			t.Errorf("Service %s port %d: target %s (port %d) is not Envoy's listener %v", svc.Name, p.Port, p.TargetPort.String(), port, envoyPorts)
		}
	}

	// Probes through Envoy are never rate limited.
	probed := 0
	for _, c := range podContainers(w.Pod()) {
		for kind, p := range probes(c) {
			port, err := probePort(c, p)
			if err != nil || !envoyPorts[port] {
				continue
			}
			if p.HTTPGet == nil {
				continue
			}
			probed++
			if !authzDisabled(t, hcm, p.HTTPGet.Path) {
				t.Errorf("container %s %s: GET %s goes through Envoy with ext_authz on: a busy pod would answer 429 to the kubelet", c.Name, kind, p.HTTPGet.Path)
			}
		}
	}
	if probed == 0 {
		t.Error("no HTTP probe goes through Envoy: the pod's readiness does not show whether the app is reachable")
	}

	// Timeouts and failure mode.
	timeout, err := time.ParseDuration(authz.GrpcService.Timeout)
	if err != nil {
		t.Fatalf("ext_authz timeout %q: %v", authz.GrpcService.Timeout, err)
	}
	for _, c := range podContainers(w.Pod()) {
		if isFloodgate(c) {
			fc := floodgateContainer{w, c}
			mt := envDuration(t, fc.String(), floodgateEnv(t, fc), "FLOODGATE_MEMCACHE_TIMEOUT")
			if mt >= timeout {
				t.Errorf("FLOODGATE_MEMCACHE_TIMEOUT %v is not below Envoy's ext_authz timeout %v: Envoy would give up before floodgate applies its fail mode", mt, timeout)
			}
		}
	}
	if !authz.FailureModeAllow {
		t.Error("ext_authz failure_mode_allow is false: every request of the pod fails while its floodgate restarts")
	}
}

// authzDisabled reports whether a request for path takes a route of hcm's
// catch-all virtual host on which ext_authz is disabled (the first route
// that matches decides; a route without a setting inherits the virtual
// host's).
func authzDisabled(t *testing.T, hcm envoyHCM, path string) bool {
	t.Helper()
	for _, vh := range hcm.RouteConfig.VirtualHosts {
		if !slices.Contains(vh.Domains, "*") {
			continue
		}
		disabled := false
		if pf, ok := vh.TypedPerFilterConfig[extAuthzFilter]; ok && pf.Disabled != nil {
			disabled = *pf.Disabled
		}
		for _, r := range vh.Routes {
			if !r.matches(path) {
				continue
			}
			if pf, ok := r.TypedPerFilterConfig[extAuthzFilter]; ok && pf.Disabled != nil {
				return *pf.Disabled
			}
			return disabled
		}
		t.Errorf("no route of virtual host %s matches %s", vh.Name, path)
		return false
	}
	t.Error("no virtual host with domain \"*\"")
	return false
}

// writeSidecarEnvoyConfig writes the Envoy config of the sidecar ConfigMap
// to a file and returns its path.
func writeSidecarEnvoyConfig(t *testing.T) string {
	t.Helper()
	e := envoyOf(t, sidecarPod(t))
	path := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(path, e.Source, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestSidecarEnvoyConfigValidates runs the real Envoy's --mode validate on
// the config the sidecar ConfigMap ships.
func TestSidecarEnvoyConfigValidates(t *testing.T) {
	t.Parallel()
	path := writeSidecarEnvoyConfig(t)
	if err := testutil.ValidateEnvoyConfig(t, path); err != nil {
		t.Fatal(err)
	}
}

// TestSidecarEndToEnd runs the sidecar pod's Envoy config from the
// ConfigMap with the real Envoy, in front of the real floodgate configured
// by the floodgate container's environment (in memory instead of memcached)
// and an app, on loopback: the first FLOODGATE_LIMIT requests reach the app
// with rate-limit headers, the next one gets floodgate's 429, and the paths
// the pod's probes send through Envoy still reach the app.
func TestSidecarEndToEnd(t *testing.T) {
	t.Parallel()
	testutil.EnvoyPath(t)
	w := sidecarPod(t)
	var fc floodgateContainer
	for _, c := range podContainers(w.Pod()) {
		if isFloodgate(c) {
			fc = floodgateContainer{w, c}
		}
	}
	limit, err := strconv.Atoi(floodgateEnv(t, fc)["FLOODGATE_LIMIT"])
	if err != nil || limit > 1000 {
		t.Fatalf("FLOODGATE_LIMIT %d (%v): this test sends that many requests", limit, err)
	}
	fg := startFloodgateEnv(t, fc, false)

	app := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		// Envoy marks a request it let through without floodgate's answer
		// (failure_mode_allow_header_add): tell the client.
		if r.Header.Get("X-Envoy-Auth-Failure-Mode-Allowed") != "" {
			rw.Header().Set("X-Test-Unchecked", "true")
		}
		io.WriteString(rw, "app "+r.URL.Path)
	}))
	t.Cleanup(app.Close)
	_, appPortStr, _ := net.SplitHostPort(app.Listener.Addr().String())
	appPort, _ := strconv.Atoi(appPortStr)

	// The ports of the config: floodgate's and the app's are those the
	// test started; Envoy's listener and admin get free ports.
	_, grpcPort, _, _ := floodgateAddrs(t, fc)
	var appInConfig int32
	for _, l := range podListeners(t, w) {
		if l.What == "app" {
			appInConfig = l.Port
		}
	}
	envoy := testutil.StartEnvoy(t, writeSidecarEnvoyConfig(t), map[int]int{
		int(grpcPort):    fg.grpcPort,
		int(appInConfig): appPort,
	})
	e := envoyOf(t, w)
	listenerPort := int(e.Config.StaticResources.Listeners[0].Address.SocketAddress.PortValue)
	base := envoy.URL(listenerPort)

	client := &http.Client{Timeout: 5 * time.Second}
	get := func(path string) (*http.Response, string) {
		t.Helper()
		resp, err := client.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	// Until the 429: every answer floodgate gave carries the limit and one
	// fewer remaining. On a loaded machine Envoy may give up on floodgate
	// (0.25s) and let a request through unchecked, failing open as
	// configured; such requests are not counted here, and floodgate may or
	// may not have counted them.
	checked, unchecked, remaining := 0, 0, limit
	for attempt := 1; ; attempt++ {
		if attempt > limit+20 {
			t.Fatalf("no 429 after %d requests (%d answered by floodgate, %d unchecked)", attempt-1, checked, unchecked)
		}
		resp, body := get("/")
		if resp.StatusCode == http.StatusTooManyRequests {
			if !strings.HasPrefix(body, "Rate limit exceeded. Try again in ") || resp.Header.Get("Retry-After") == "" {
				t.Fatalf("request %d: 429 %q without floodgate's body and Retry-After", attempt, body)
			}
			break
		}
		if resp.StatusCode != http.StatusOK || body != "app /" {
			t.Fatalf("request %d: %d %q, want 200 from the app", attempt, resp.StatusCode, body)
		}
		if resp.Header.Get("X-Test-Unchecked") != "" {
			unchecked++
			if unchecked > 10 {
				t.Fatalf("%d requests went through unchecked: floodgate does not answer Envoy in time", unchecked)
			}
			continue
		}
		checked++
		if got := resp.Header.Get("X-RateLimit-Limit"); got != strconv.Itoa(limit) {
			t.Fatalf("request %d: X-RateLimit-Limit %q, want FLOODGATE_LIMIT %d", attempt, got, limit)
		}
		r, err := strconv.Atoi(resp.Header.Get("X-RateLimit-Remaining"))
		if err != nil || r >= remaining || (unchecked == 0 && r != remaining-1) {
			t.Fatalf("request %d: X-RateLimit-Remaining %q after %d, want %d", attempt, resp.Header.Get("X-RateLimit-Remaining"), remaining, remaining-1)
		}
		remaining = r
	}
	if checked > limit || checked+unchecked < limit {
		t.Errorf("429 after %d requests answered by floodgate and %d unchecked, want %d in all", checked, unchecked, limit)
	}

	// The probes' paths, now that this client is over its limit.
	for _, c := range podContainers(w.Pod()) {
		for kind, p := range probes(c) {
			port, err := probePort(c, p)
			if err != nil || p.HTTPGet == nil || int(port) != listenerPort {
				continue
			}
			resp, body := get(p.HTTPGet.Path)
			if resp.StatusCode != http.StatusOK || body != "app "+p.HTTPGet.Path {
				t.Errorf("container %s %s: GET %s through Envoy over the limit = %d %q, want the app's 200",
					c.Name, kind, p.HTTPGet.Path, resp.StatusCode, body)
			}
		}
	}
}

// TestNativeSidecars checks the order the two forms of the sidecar example
// give the kubelet. Native: floodgate and then Envoy are init containers
// with restartPolicy Always, so they start before the app and stop after
// it, floodgate's startupProbe on /readyz holds Envoy back until floodgate
// answers, and only the app is a regular container. Plain: the same
// containers, all regular, Envoy and floodgate each with a preStop sleep to
// serve while the Service lets go of the pod, and no init container.
func TestNativeSidecars(t *testing.T) {
	native := sidecarPodIn(t, "overlays/sidecar").Pod()
	var order []string
	for i := range native.InitContainers {
		c := &native.InitContainers[i]
		if !isSidecar(c) {
			t.Errorf("init container %s is not a native sidecar (restartPolicy: Always)", c.Name)
		}
		order = append(order, c.Name)
	}
	if !slices.Equal(order, []string{"floodgate", "envoy"}) {
		t.Errorf("native sidecars %q, want floodgate then envoy", order)
	}
	fg := &native.InitContainers[0]
	if p := fg.StartupProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" {
		t.Errorf("floodgate sidecar: startupProbe %+v, want GET /readyz: without it Envoy starts before floodgate answers", p)
	} else if port, err := probePort(fg, p); err != nil || port != 9090 {
		t.Errorf("floodgate sidecar: startupProbe port %d (%v), want the admin port", port, err)
	}
	if len(native.Containers) != 1 || native.Containers[0].Name != "app" {
		t.Errorf("regular containers %d, want the app alone", len(native.Containers))
	}

	plain := sidecarPodIn(t, "overlays/sidecar-plain").Pod()
	if len(plain.InitContainers) != 0 {
		t.Errorf("sidecar-plain: %d init containers, want none", len(plain.InitContainers))
	}
	var names []string
	for i := range plain.Containers {
		c := &plain.Containers[i]
		names = append(names, c.Name)
		if c.RestartPolicy != nil {
			t.Errorf("sidecar-plain container %s: restartPolicy %s on a regular container", c.Name, *c.RestartPolicy)
		}
		if l := c.Lifecycle; c.Name != "app" && (l == nil || l.PreStop == nil || l.PreStop.Sleep == nil) {
			t.Errorf("sidecar-plain container %s: no preStop sleep: it would stop with the app, mid-request", c.Name)
		}
	}
	if !slices.Equal(names, []string{"app", "floodgate", "envoy"}) {
		t.Errorf("sidecar-plain containers %q, want app, floodgate, envoy", names)
	}
}
