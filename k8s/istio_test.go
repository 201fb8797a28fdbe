package k8s_test

import (
	"encoding/json"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networkingv1 "istio.io/api/networking/v1"
	securityv1 "istio.io/api/security/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// meshConfigs decodes the meshConfig of istio/istio-operator.yaml and of
// istio/istiod-values.yaml, each strictly: the wrapper into a struct that
// has no other fields, the meshConfig with protojson into Istio's MeshConfig
// (an unknown field is an error).
func meshConfigs(t *testing.T) (operator, values *meshv1alpha1.MeshConfig) {
	t.Helper()
	read := func(name string, v any) {
		t.Helper()
		b, err := os.ReadFile("istio/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if err := strictUnmarshal(b, v); err != nil {
			t.Fatalf("istio/%s: %v", name, err)
		}
	}
	var op struct {
		metav1.TypeMeta `json:",inline"`
		Metadata        metav1.ObjectMeta `json:"metadata"`
		Spec            struct {
			MeshConfig json.RawMessage `json:"meshConfig"`
		} `json:"spec"`
	}
	read("istio-operator.yaml", &op)
	if op.APIVersion != "install.istio.io/v1alpha1" || op.Kind != "IstioOperator" {
		t.Errorf("istio/istio-operator.yaml: %s %s, want install.istio.io/v1alpha1 IstioOperator", op.APIVersion, op.Kind)
	}
	var vals struct {
		MeshConfig json.RawMessage `json:"meshConfig"`
	}
	read("istiod-values.yaml", &vals)
	operator, values = &meshv1alpha1.MeshConfig{}, &meshv1alpha1.MeshConfig{}
	if err := protojson.Unmarshal(op.Spec.MeshConfig, operator); err != nil {
		t.Fatalf("istio/istio-operator.yaml: spec.meshConfig: %v", err)
	}
	if err := protojson.Unmarshal(vals.MeshConfig, values); err != nil {
		t.Fatalf("istio/istiod-values.yaml: meshConfig: %v", err)
	}
	return operator, values
}

// TestIstioMeshConfig checks the extension providers: the IstioOperator and
// the Helm values say the same; each is an envoyExtAuthzGrpc provider with a
// short timeout (Istio's default is 600s) above floodgate's memcached
// timeout, failing open, naming a service by host name (istiod refuses a
// bare 127.0.0.1) that leads to floodgate's gRPC port:
//
//   - a Kubernetes Service host (NAME.NAMESPACE.svc.cluster.local) must be a
//     Service of a kustomization whose port, marked gRPC for Istio's
//     protocol selection, leads to floodgate's gRPC listener on the pod's
//     address;
//   - any other host must be a ServiceEntry resolving it STATICally to
//     loopback, with a GRPC port, and each workload whose AuthorizationPolicy
//     names the provider must run floodgate on that loopback port.
//
// Each provider is named by some AuthorizationPolicy.
func TestIstioMeshConfig(t *testing.T) {
	mesh, values := meshConfigs(t)
	if !proto.Equal(mesh, values) {
		t.Errorf("istio-operator.yaml and istiod-values.yaml differ:\n%v\n%v", mesh, values)
	}
	if len(mesh.GetExtensionProviders()) == 0 {
		t.Fatal("no extensionProviders in istio-operator.yaml")
	}
	used := policiesByProvider(t)
	names := make(map[string]bool)
	for _, p := range mesh.GetExtensionProviders() {
		t.Run(p.GetName(), func(t *testing.T) {
			if names[p.GetName()] {
				t.Errorf("two providers named %q", p.GetName())
			}
			names[p.GetName()] = true
			g := p.GetEnvoyExtAuthzGrpc()
			if g == nil {
				t.Fatalf("provider %s is not envoyExtAuthzGrpc", p.GetName())
			}
			timeout := g.GetTimeout().AsDuration()
			if g.GetTimeout() == nil || timeout <= 0 || timeout > time.Second {
				t.Errorf("timeout %v: set one from floodgate's memcached timeout up to 1s (Istio's default is 600s)", g.GetTimeout())
			}
			if !g.GetFailOpen() {
				t.Errorf("failOpen is false: every request of a workload fails while floodgate is unreachable")
			}
			if net.ParseIP(g.GetService()) != nil || g.GetService() == "localhost" {
				t.Errorf("service %q: istiod needs a host name (a ServiceEntry for 127.0.0.1)", g.GetService())
			}
			policies := used[p.GetName()]
			if len(policies) == 0 {
				t.Errorf("no AuthorizationPolicy names provider %s", p.GetName())
			}
			var targets []floodgateContainer
			if svc, ns, ok := strings.Cut(strings.TrimSuffix(g.GetService(), ".svc.cluster.local"), "."); ok && strings.HasSuffix(g.GetService(), ".svc.cluster.local") {
				targets = serviceTargets(t, svc, ns, int32(g.GetPort()))
			} else {
				targets = serviceEntryTargets(t, g.GetService(), int32(g.GetPort()), policies)
			}
			if len(targets) == 0 {
				t.Fatalf("service %s:%d leads to no floodgate", g.GetService(), g.GetPort())
			}
			for _, fc := range targets {
				mt := envDuration(t, fc.String(), floodgateEnv(t, fc), "FLOODGATE_MEMCACHE_TIMEOUT")
				if mt >= timeout {
					t.Errorf("%s: FLOODGATE_MEMCACHE_TIMEOUT %v is not below the provider's timeout %v", fc, mt, timeout)
				}
			}
		})
	}
}

// serviceTargets returns the floodgate containers that Service ns/name, on
// port, leads to, checking the port's protocol and the target listener.
func serviceTargets(t *testing.T, name, ns string, port int32) []floodgateContainer {
	t.Helper()
	var out []floodgateContainer
	found := false
	for _, r := range allRenderings(t) {
		for _, s := range typed[*corev1.Service](r) {
			if s.Name != name || s.Namespace != ns {
				continue
			}
			found = true
			var sp *corev1.ServicePort
			for i := range s.Spec.Ports {
				if s.Spec.Ports[i].Port == port {
					sp = &s.Spec.Ports[i]
				}
			}
			if sp == nil {
				t.Fatalf("k8s/%s: Service %s/%s has no port %d", r.Dir, ns, name, port)
			}
			if !strings.HasPrefix(sp.Name, "grpc") && (sp.AppProtocol == nil || *sp.AppProtocol != "grpc") {
				t.Errorf("k8s/%s: Service %s port %d: name %q and no appProtocol grpc: Istio would not speak HTTP/2 to it", r.Dir, name, port, sp.Name)
			}
			for _, w := range workloads(r) {
				if w.Namespace != ns || !selects(s.Spec.Selector, w.PodLabels(0)) {
					continue
				}
				target, c, err := podPort(w.Pod(), sp.TargetPort)
				if err != nil || c == nil || !isFloodgate(c) {
					t.Errorf("k8s/%s: Service %s port %d does not lead to a floodgate container of %s", r.Dir, name, port, w)
					continue
				}
				fc := floodgateContainer{w, c}
				host, grpcPort, _, _ := floodgateAddrs(t, fc)
				if target != grpcPort || isLoopback(host) {
					t.Errorf("%s: Service %s port %d leads to port %d, floodgate's gRPC listens on %s:%d", fc, name, port, target, host, grpcPort)
				}
				out = append(out, fc)
			}
		}
	}
	if !found {
		t.Fatalf("no kustomization has a Service %s in namespace %s", name, ns)
	}
	return out
}

// serviceEntryTargets returns the floodgate containers that host:port leads
// to through a ServiceEntry, in the pods of the workloads policies select.
func serviceEntryTargets(t *testing.T, host string, port int32, policies []policyIn) []floodgateContainer {
	t.Helper()
	var entry *networkingv1.ServiceEntry
	var where string
	for _, r := range allRenderings(t) {
		for _, o := range typed[*istioObject](r) {
			se, ok := o.Spec.(*networkingv1.ServiceEntry)
			if !ok {
				continue
			}
			for _, h := range se.GetHosts() {
				if h == host {
					if entry != nil {
						t.Errorf("two ServiceEntries define %s (%s and k8s/%s): the provider would be ambiguous", host, where, r.Dir)
					}
					entry, where = se, "k8s/"+r.Dir+": ServiceEntry "+o.Name
				}
			}
		}
	}
	if entry == nil {
		t.Fatalf("no ServiceEntry defines %s", host)
	}
	if entry.GetResolution() != networkingv1.ServiceEntry_STATIC {
		t.Errorf("%s: resolution %v, want STATIC", where, entry.GetResolution())
	}
	var sp *networkingv1.ServicePort
	for _, p := range entry.GetPorts() {
		if int32(p.GetNumber()) == port {
			sp = p
		}
	}
	if sp == nil {
		t.Fatalf("%s: no port %d", where, port)
	}
	if sp.GetProtocol() != "GRPC" {
		t.Errorf("%s: port %d protocol %q, want GRPC (HTTP/2)", where, port, sp.GetProtocol())
	}
	if len(entry.GetEndpoints()) == 0 {
		t.Fatalf("%s: no endpoints", where)
	}
	for _, ep := range entry.GetEndpoints() {
		if !isLoopback(ep.GetAddress()) {
			t.Errorf("%s: endpoint %s is not the pod's own loopback", where, ep.GetAddress())
		}
		if p, ok := ep.GetPorts()[sp.GetName()]; ok && int32(p) != port {
			t.Errorf("%s: endpoint maps port %s to %d; floodgate is expected on %d", where, sp.GetName(), p, port)
		}
	}
	var out []floodgateContainer
	for _, pol := range policies {
		selected := 0
		for _, w := range workloads(pol.r) {
			if w.Namespace != pol.obj.Namespace || !labelSelectorMatches(t, selectorOf(pol.spec), w.Template.Labels) {
				continue
			}
			selected++
			var fc *floodgateContainer
			for _, c := range podContainers(w.Pod()) {
				if isFloodgate(c) {
					fc = &floodgateContainer{w, c}
				}
			}
			if fc == nil {
				t.Errorf("%s: AuthorizationPolicy %s sends its checks to %s, but its pod runs no floodgate", w, pol.obj.Name, host)
				continue
			}
			h, p, _, _ := floodgateAddrs(t, *fc)
			if p != port || !(isLoopback(h) || h == "" || h == "0.0.0.0") {
				t.Errorf("%s: floodgate listens on %s:%d, the provider calls 127.0.0.1:%d", fc, h, p, port)
			}
			out = append(out, *fc)
		}
		if selected == 0 {
			t.Errorf("k8s/%s: AuthorizationPolicy %s selects no workload of its kustomization", pol.r.Dir, pol.obj.Name)
		}
	}
	return out
}

// policyIn is an AuthorizationPolicy and the rendering it is in.
type policyIn struct {
	r    *rendering
	obj  *istioObject
	spec *securityv1.AuthorizationPolicy
}

func selectorOf(p *securityv1.AuthorizationPolicy) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: p.GetSelector().GetMatchLabels()}
}

// policiesByProvider returns the AuthorizationPolicies of every rendering
// by the provider they name.
func policiesByProvider(t *testing.T) map[string][]policyIn {
	t.Helper()
	out := make(map[string][]policyIn)
	for _, r := range allRenderings(t) {
		for _, o := range typed[*istioObject](r) {
			if p, ok := o.Spec.(*securityv1.AuthorizationPolicy); ok {
				out[p.GetProvider().GetName()] = append(out[p.GetProvider().GetName()], policyIn{r, o, p})
			}
		}
	}
	return out
}

// TestIstioAuthorizationPolicies checks every AuthorizationPolicy: action
// CUSTOM with a provider the mesh config defines, exactly one empty rule
// (which matches every request; a CUSTOM policy without rules matches
// none), and a workload selector (without one it would apply to the whole
// namespace) or, in ambient mode, targetRefs naming a waypoint.
func TestIstioAuthorizationPolicies(t *testing.T) {
	mesh, _ := meshConfigs(t)
	providers := make(map[string]bool)
	for _, p := range mesh.GetExtensionProviders() {
		providers[p.GetName()] = true
	}
	n := 0
	for _, pols := range policiesByProvider(t) {
		for _, pol := range pols {
			n++
			where := "k8s/" + pol.r.Dir + ": AuthorizationPolicy " + pol.obj.Name
			if pol.spec.GetAction() != securityv1.AuthorizationPolicy_CUSTOM {
				t.Errorf("%s: action %v, want CUSTOM", where, pol.spec.GetAction())
			}
			if name := pol.spec.GetProvider().GetName(); !providers[name] {
				t.Errorf("%s: provider %q is not in the mesh config's extensionProviders", where, name)
			}
			rules := pol.spec.GetRules()
			if len(rules) != 1 || !proto.Equal(rules[0], &securityv1.Rule{}) {
				t.Errorf("%s: rules %v, want [{}] (every request)", where, rules)
			}
			switch refs := pol.spec.GetTargetRefs(); {
			case len(refs) > 0:
				checkWaypointRefs(t, where, pol)
			case len(pol.spec.GetSelector().GetMatchLabels()) == 0:
				t.Errorf("%s: no selector: it would apply to every workload of namespace %s", where, pol.obj.Namespace)
			}
		}
	}
	if n == 0 {
		t.Fatal("no AuthorizationPolicy in any kustomization")
	}
}

// checkWaypointRefs checks the targetRefs of an ambient-mode policy: each
// names a waypoint Gateway of its rendering and namespace (gatewayClassName
// istio-waypoint, an HBONE listener on 15008) that the namespace uses, and
// whose pods carry the label floodgate's NetworkPolicy admits.
func checkWaypointRefs(t *testing.T, where string, pol policyIn) {
	t.Helper()
	if len(pol.spec.GetSelector().GetMatchLabels()) > 0 {
		t.Errorf("%s: both a selector and targetRefs: Istio refuses the policy", where)
	}
	for _, ref := range pol.spec.GetTargetRefs() {
		if ref.GetGroup() != "gateway.networking.k8s.io" || ref.GetKind() != "Gateway" {
			t.Errorf("%s: targetRef %s/%s %s, want a Gateway (the waypoint)", where, ref.GetGroup(), ref.GetKind(), ref.GetName())
			continue
		}
		g := find[*gwapiv1.Gateway](t, pol.r, ref.GetName())
		if g.Namespace != pol.obj.Namespace || g.Spec.GatewayClassName != "istio-waypoint" {
			t.Errorf("%s: Gateway %s/%s of class %s is not a waypoint of namespace %s", where, g.Namespace, g.Name, g.Spec.GatewayClassName, pol.obj.Namespace)
		}
		if !slices.ContainsFunc(g.Spec.Listeners, func(l gwapiv1.Listener) bool { return l.Protocol == "HBONE" && l.Port == 15008 }) {
			t.Errorf("%s: waypoint %s has no HBONE listener on 15008", where, g.Name)
		}
		if g.Spec.Infrastructure == nil || g.Spec.Infrastructure.Labels[extAuthzClientLabel] != "true" {
			t.Errorf("%s: waypoint %s's pods lack %s: floodgate's NetworkPolicy would refuse their checks", where, g.Name, extAuthzClientLabel)
		}
		for _, ns := range typed[*corev1.Namespace](pol.r) {
			if ns.Name == pol.obj.Namespace && (ns.Labels["istio.io/use-waypoint"] != g.Name || ns.Labels["istio.io/dataplane-mode"] != "ambient" || ns.Labels[extAuthzClientLabel] != "true") {
				t.Errorf("%s: namespace %s labels %v: want istio.io/dataplane-mode ambient, istio.io/use-waypoint %s and %s", where, ns.Name, ns.Labels, g.Name, extAuthzClientLabel)
			}
		}
	}
}
