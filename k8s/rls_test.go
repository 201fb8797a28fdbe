package k8s_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/floodgate-rl/floodgate/internal/testutil"
	rlsconf "github.com/floodgate-rl/floodgate/policy/rls"
)

// rlsGateway is what k8s/istio/rls/gateway inserts into the ingress
// gateway: the fields the tests check, and the two patch values as written
// for an Envoy bootstrap, which the real Envoy validates strictly (an
// unknown field there is an error). (Decoding them into go-control-plane's
// route and filter types would pull in a module floodgate does not build
// with.)
type rlsGateway struct {
	filterJSON, vhostJSON json.RawMessage
	filter                struct {
		Name        string `json:"name"`
		TypedConfig struct {
			Type                           string `json:"@type"`
			Domain                         string `json:"domain"`
			Timeout                        string `json:"timeout"`
			FailureModeDeny                bool   `json:"failure_mode_deny"`
			RateLimitedAsResourceExhausted bool   `json:"rate_limited_as_resource_exhausted"`
			RateLimitService               struct {
				GRPCService struct {
					EnvoyGRPC struct {
						ClusterName string `json:"cluster_name"`
					} `json:"envoy_grpc"`
				} `json:"grpc_service"`
			} `json:"rate_limit_service"`
		} `json:"typed_config"`
	}
	vhost struct {
		RateLimits []struct {
			Actions []map[string]struct {
				DescriptorKey   string `json:"descriptor_key"`
				DescriptorValue string `json:"descriptor_value"`
			} `json:"actions"`
		} `json:"rate_limits"`
	}
}

// istioRLSGateway decodes the EnvoyFilter of k8s/istio/rls/gateway: one
// HTTP_FILTER patch inserting the ratelimit filter before the router and
// one VIRTUAL_HOST patch merging rate_limits, both in the GATEWAY context
// of a selected workload.
func istioRLSGateway(t *testing.T) *rlsGateway {
	t.Helper()
	r := mustRender(t, "istio/rls/gateway")
	var efs []*networkingv1alpha3.EnvoyFilter
	for _, o := range typed[*istioObject](r) {
		if ef, ok := o.Spec.(*networkingv1alpha3.EnvoyFilter); ok {
			efs = append(efs, ef)
			if o.Namespace != "istio-system" {
				t.Errorf("EnvoyFilter %s in namespace %q: the ingress gateway's is istio-system", o.Name, o.Namespace)
			}
		}
	}
	if len(efs) != 1 {
		t.Fatalf("k8s/istio/rls/gateway: %d EnvoyFilters, want 1", len(efs))
	}
	ef := efs[0]
	if len(ef.GetWorkloadSelector().GetLabels()) == 0 {
		t.Error("EnvoyFilter without workloadSelector: it would patch every proxy of its namespace")
	}
	g := &rlsGateway{}
	for i, p := range ef.GetConfigPatches() {
		if ctx := p.GetMatch().GetContext(); ctx != networkingv1alpha3.EnvoyFilter_GATEWAY {
			t.Errorf("configPatches[%d]: context %v, want GATEWAY", i, ctx)
		}
		raw, err := protojson.Marshal(p.GetPatch().GetValue())
		if err != nil {
			t.Fatal(err)
		}
		switch p.GetApplyTo() {
		case networkingv1alpha3.EnvoyFilter_HTTP_FILTER:
			sub := p.GetMatch().GetListener().GetFilterChain().GetFilter()
			if sub.GetName() != "envoy.filters.network.http_connection_manager" || sub.GetSubFilter().GetName() != "envoy.filters.http.router" ||
				p.GetPatch().GetOperation() != networkingv1alpha3.EnvoyFilter_Patch_INSERT_BEFORE {
				t.Errorf("configPatches[%d]: want INSERT_BEFORE the router of the HTTP connection manager", i)
			}
			g.filterJSON = raw
			if err := json.Unmarshal(raw, &g.filter); err != nil {
				t.Fatalf("configPatches[%d].patch.value: %v", i, err)
			}
			if g.filter.Name != "envoy.filters.http.ratelimit" || g.filter.TypedConfig.Type != "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit" {
				t.Errorf("configPatches[%d]: filter %s of type %s, want Envoy's ratelimit filter", i, g.filter.Name, g.filter.TypedConfig.Type)
			}
		case networkingv1alpha3.EnvoyFilter_VIRTUAL_HOST:
			if p.GetPatch().GetOperation() != networkingv1alpha3.EnvoyFilter_Patch_MERGE {
				t.Errorf("configPatches[%d]: operation %v, want MERGE", i, p.GetPatch().GetOperation())
			}
			g.vhostJSON = raw
			if err := json.Unmarshal(raw, &g.vhost); err != nil {
				t.Fatalf("configPatches[%d].patch.value: %v", i, err)
			}
		default:
			t.Errorf("configPatches[%d]: applyTo %v", i, p.GetApplyTo())
		}
	}
	if g.filterJSON == nil || len(g.vhost.RateLimits) == 0 {
		t.Fatal("k8s/istio/rls/gateway: want the ratelimit filter and the virtual host's rate_limits")
	}
	return g
}

// TestIstioRLS checks the wiring of k8s/istio/rls and its gateway: the
// filter fails open with a short timeout above floodgate's memcached
// timeout, answers gRPC clients RESOURCE_EXHAUSTED, and calls, through the
// gateway's outbound cluster of a Service, the floodgate of
// k8s/istio/rls; that floodgate loads the ConfigMap's limits (the real
// configuration parser), which have the filter's domain and a rule for
// every descriptor the virtual host's actions send.
func TestIstioRLS(t *testing.T) {
	g := istioRLSGateway(t)
	rl := &g.filter.TypedConfig
	timeout, err := time.ParseDuration(rl.Timeout)
	if err != nil || timeout <= 0 || timeout > time.Second {
		t.Errorf("timeout %q: set one up to 1s (the filter's default is 20ms)", rl.Timeout)
	}
	if rl.FailureModeDeny {
		t.Error("failure_mode_deny: true: every request of the gateway fails while floodgate is unreachable")
	}
	if !rl.RateLimitedAsResourceExhausted {
		t.Error("rate_limited_as_resource_exhausted is false: denied gRPC calls would get UNAVAILABLE, which clients retry at once")
	}
	cluster := rl.RateLimitService.GRPCService.EnvoyGRPC.ClusterName
	port, host, ok := outboundCluster(cluster)
	if !ok {
		t.Fatalf("cluster %q: want Istio's outbound|PORT||HOST of a Service", cluster)
	}
	svc, ns, _ := strings.Cut(strings.TrimSuffix(host, ".svc.cluster.local"), ".")
	checked := 0
	for _, fc := range serviceTargets(t, svc, ns, port) {
		if fc.W.Render.Dir != "istio/rls" {
			continue
		}
		checked++
		env := floodgateEnv(t, fc)
		if mt := envDuration(t, fc.String(), env, "FLOODGATE_MEMCACHE_TIMEOUT"); mt >= timeout {
			t.Errorf("%s: FLOODGATE_MEMCACHE_TIMEOUT %v is not below the filter's timeout %v", fc, mt, timeout)
		}
		cfg, err := rlsconf.Load(configMapFiles(t, fc, env["FLOODGATE_RLS_CONFIG"]))
		if err != nil {
			t.Fatalf("%s: FLOODGATE_RLS_CONFIG: %v", fc, err)
		}
		for i, lim := range g.vhost.RateLimits {
			entries := descriptorOf(t, lim.Actions)
			if m := cfg.Match(rl.Domain, entries); m == nil || m.Unlimited {
				t.Errorf("%s: rate_limits[%d] sends %v in domain %q, which has no limit in the ConfigMap (domains %q)", fc, i, entries, rl.Domain, cfg.Domains())
			}
		}
	}
	if checked == 0 {
		t.Fatalf("cluster %s leads to no floodgate of k8s/istio/rls", cluster)
	}
}

// outboundCluster parses Istio's name of a Service's outbound cluster,
// "outbound|PORT||HOST".
func outboundCluster(name string) (int32, string, bool) {
	parts := strings.Split(name, "|")
	if len(parts) != 4 || parts[0] != "outbound" || parts[2] != "" {
		return 0, "", false
	}
	port, err := strconv.ParseUint(parts[1], 10, 16)
	return int32(port), parts[3], err == nil && strings.HasSuffix(parts[3], ".svc.cluster.local")
}

// descriptorOf returns the descriptor entries Envoy builds from actions
// for a client at 192.0.2.1 whose request matches every
// header_value_match.
func descriptorOf(t *testing.T, actions []map[string]struct {
	DescriptorKey   string `json:"descriptor_key"`
	DescriptorValue string `json:"descriptor_value"`
}) []rlsconf.Entry {
	t.Helper()
	var entries []rlsconf.Entry
	for _, a := range actions {
		if len(a) != 1 {
			t.Fatalf("action %v: want one kind of action", a)
		}
		for kind, v := range a {
			switch kind {
			case "remote_address":
				entries = append(entries, rlsconf.Entry{Key: "remote_address", Value: "192.0.2.1"})
			case "generic_key":
				entries = append(entries, rlsconf.Entry{Key: cmpOr(v.DescriptorKey, "generic_key"), Value: v.DescriptorValue})
			case "header_value_match":
				entries = append(entries, rlsconf.Entry{Key: cmpOr(v.DescriptorKey, "header_match"), Value: v.DescriptorValue})
			case "request_headers":
				entries = append(entries, rlsconf.Entry{Key: v.DescriptorKey, Value: "value"})
			default:
				t.Fatalf("action %s: the test does not know the descriptor it makes", kind)
			}
		}
	}
	return entries
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// configMapFiles writes the files that fc's pod sees under dir (a mount of
// a ConfigMap volume, or a file in one) into a temporary directory, as the
// kubelet does, and returns the path there that stands for dir.
func configMapFiles(t *testing.T, fc floodgateContainer, dir string) string {
	t.Helper()
	for _, m := range fc.C.VolumeMounts {
		rel, err := filepath.Rel(m.MountPath, dir)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		var cm *corev1.ConfigMap
		for _, v := range fc.W.Pod().Volumes {
			if v.Name == m.Name && v.ConfigMap != nil {
				cm = find[*corev1.ConfigMap](t, fc.W.Render, v.ConfigMap.Name)
			}
		}
		if cm == nil {
			t.Fatalf("%s: %s is mounted from volume %s, which is not a ConfigMap of the rendering", fc, dir, m.Name)
		}
		out := t.TempDir()
		for k, v := range cm.Data {
			if err := os.WriteFile(filepath.Join(out, k), []byte(v), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return filepath.Join(out, rel)
	}
	t.Fatalf("%s: no volume is mounted at %s", fc, dir)
	return ""
}

// gatewayBootstrap writes an Envoy bootstrap with the gateway's patches
// applied as istiod applies them: an HTTP connection manager on port 10000
// trusting the TCP peer (an ingress gateway without proxies in front), the
// ratelimit filter before the router, one virtual host with the merged
// rate_limits routing to port 8080, and the outbound cluster the filter
// names, HTTP/2, on port 9001.
func gatewayBootstrap(t *testing.T, g *rlsGateway) string {
	t.Helper()
	var vhost map[string]any
	if err := json.Unmarshal(g.vhostJSON, &vhost); err != nil {
		t.Fatal(err)
	}
	vhost["name"], vhost["domains"] = "gateway", []string{"*"}
	vhost["routes"] = []any{map[string]any{"match": map[string]any{"prefix": "/"}, "route": map[string]any{"cluster": "app"}}}
	cluster := g.filter.TypedConfig.RateLimitService.GRPCService.EnvoyGRPC.ClusterName
	endpoint := func(port int) any {
		return map[string]any{"endpoints": []any{map[string]any{"lb_endpoints": []any{map[string]any{"endpoint": map[string]any{
			"address": map[string]any{"socket_address": map[string]any{"address": "127.0.0.1", "port_value": port}}}}}}}}
	}
	withName := func(m map[string]any, name string) map[string]any { m["cluster_name"] = name; return m }
	boot := map[string]any{
		"admin": map[string]any{"address": map[string]any{"socket_address": map[string]any{"address": "127.0.0.1", "port_value": 9901}}},
		"static_resources": map[string]any{
			"listeners": []any{map[string]any{
				"name":    "gateway",
				"address": map[string]any{"socket_address": map[string]any{"address": "127.0.0.1", "port_value": 10000}},
				"filter_chains": []any{map[string]any{"filters": []any{map[string]any{
					"name": "envoy.filters.network.http_connection_manager",
					"typed_config": map[string]any{
						"@type":              "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
						"stat_prefix":        "gateway",
						"use_remote_address": true,
						"route_config":       map[string]any{"virtual_hosts": []any{vhost}},
						"http_filters": []any{json.RawMessage(g.filterJSON), map[string]any{
							"name":         "envoy.filters.http.router",
							"typed_config": map[string]any{"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
						}},
					},
				}}}},
			}},
			"clusters": []any{
				map[string]any{
					"name": cluster, "type": "STATIC", "connect_timeout": "0.25s",
					"typed_extension_protocol_options": map[string]any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": map[string]any{
						"@type":                "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
						"explicit_http_config": map[string]any{"http2_protocol_options": map[string]any{}},
					}},
					"load_assignment": withName(endpoint(9001).(map[string]any), cluster),
				},
				map[string]any{"name": "app", "type": "STATIC", "connect_timeout": "1s", "load_assignment": withName(endpoint(8080).(map[string]any), "app")},
			},
		},
	}
	j, err := json.Marshal(boot)
	if err != nil {
		t.Fatal(err)
	}
	y, err := yaml.JSONToYAML(j)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(path, y, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestIstioRLSGatewayEnvoy validates the gateway's patches with the real
// Envoy, then runs them in front of the real floodgate serving the
// ConfigMap's limits: /login is limited to 5 per minute per client, with
// floodgate's 429, however the query is spelt, and other paths go on.
func TestIstioRLSGatewayEnvoy(t *testing.T) {
	t.Parallel()
	testutil.EnvoyPath(t)
	g := istioRLSGateway(t)
	boot := gatewayBootstrap(t, g)
	if err := testutil.ValidateEnvoyConfig(t, boot); err != nil {
		t.Fatal(err)
	}
	var fc *floodgateContainer
	for _, c := range floodgateContainers(t) {
		if c.W.Render.Dir == "istio/rls" {
			fc = &c
		}
	}
	if fc == nil {
		t.Fatal("no floodgate in k8s/istio/rls")
	}
	limits := configMapFiles(t, *fc, floodgateEnv(t, *fc)["FLOODGATE_RLS_CONFIG"])
	fg := testutil.StartFloodgate(t, "--rls-config", limits)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "app\n") }))
	t.Cleanup(app.Close)
	envoy := testutil.StartEnvoy(t, boot, map[int]int{9001: fg.GRPCPort(), 8080: app.Listener.Addr().(*net.TCPAddr).Port})
	c := &http.Client{Timeout: 10 * time.Second}
	get := func(path string) (*http.Response, string) {
		t.Helper()
		resp, err := c.Get(envoy.URL(10000) + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	for i, path := range []string{"/login", "/login?a=1", "/login/", "/login/x", "/login"} {
		if resp, body := get(path); resp.StatusCode != http.StatusOK {
			t.Fatalf("login %d (%s): %d %q, want 200", i+1, path, resp.StatusCode, body)
		}
	}
	resp, body := get("/login?b=2")
	ra := resp.Header.Get("Retry-After")
	if resp.StatusCode != http.StatusTooManyRequests || body != fmt.Sprintf("Rate limit exceeded. Try again in %s seconds", ra) {
		t.Fatalf("6th login: %d %q, Retry-After %q; want floodgate's 429", resp.StatusCode, body, ra)
	}
	if n, err := strconv.Atoi(ra); err != nil || n < 1 || n > 60 {
		t.Errorf("Retry-After %q, want 1..60", ra)
	}
	if resp, body := get("/"); resp.StatusCode != http.StatusOK || resp.Header.Get("X-RateLimit-Limit") == "" {
		t.Errorf("/ after the logins: %d %q, X-RateLimit-Limit %q; want 200 with Envoy's X-RateLimit headers", resp.StatusCode, body, resp.Header.Get("X-RateLimit-Limit"))
	}
}
