package k8s_test

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingk8sv1 "k8s.io/api/networking/v1"
)

// Labels of the NetworkPolicy of k8s/base/networkpolicy.yaml.
const (
	extAuthzClientLabel = "floodgate-rl.github.io/ext-authz-client"
	monitoringNamespace = "monitoring"
)

// peer is a pod that may try to connect to floodgate.
type peer struct {
	what     string
	nsLabels map[string]string // its namespace's labels
	ns       string
	labels   map[string]string
}

// ingressAdmits reports whether the ingress policies of r that select w's
// pods let p connect to port (a container port of w's pod) over TCP. A pod
// no policy selects for ingress admits everything.
func ingressAdmits(t *testing.T, r *rendering, w *workload, p peer, port int32) bool {
	t.Helper()
	selected := false
	for _, np := range typed[*networkingk8sv1.NetworkPolicy](r) {
		if np.Namespace != w.Namespace || !labelSelectorMatches(t, &np.Spec.PodSelector, w.Template.Labels) ||
			!slices.Contains(np.Spec.PolicyTypes, networkingk8sv1.PolicyTypeIngress) {
			continue
		}
		selected = true
		for _, rule := range np.Spec.Ingress {
			if ruleAdmits(t, np, rule, w, p, port) {
				return true
			}
		}
	}
	return !selected
}

func ruleAdmits(t *testing.T, np *networkingk8sv1.NetworkPolicy, rule networkingk8sv1.NetworkPolicyIngressRule, w *workload, p peer, port int32) bool {
	t.Helper()
	portOK := len(rule.Ports) == 0
	for _, rp := range rule.Ports {
		if rp.Protocol != nil && *rp.Protocol != corev1.ProtocolTCP {
			continue
		}
		if rp.Port == nil {
			portOK = true
			continue
		}
		n, _, err := podPort(w.Pod(), *rp.Port)
		if err != nil {
			t.Errorf("NetworkPolicy %s: port %v: %v", np.Name, rp.Port.String(), err)
			continue
		}
		end := n
		if rp.EndPort != nil {
			end = *rp.EndPort
		}
		portOK = portOK || (port >= n && port <= end)
	}
	if !portOK {
		return false
	}
	if len(rule.From) == 0 {
		return true
	}
	for _, from := range rule.From {
		if from.IPBlock != nil {
			continue // the peers here have no fixed address
		}
		nsOK := p.ns == np.Namespace
		if from.NamespaceSelector != nil {
			nsOK = labelSelectorMatches(t, from.NamespaceSelector, p.nsLabels)
		}
		podOK := from.PodSelector == nil || labelSelectorMatches(t, from.PodSelector, p.labels)
		if nsOK && podOK {
			return true
		}
	}
	return false
}

// TestGRPCPortOnlyForEnvoy checks that every shipped floodgate's gRPC port
// can be reached only by the Envoy that asks it, since floodgate believes
// what a CheckRequest says: a floodgate in the pod of its Envoy (the sidecar
// overlay, Istio's in-pod example) listens on loopback; one of its own (the
// base, in the standalone overlay) is behind a NetworkPolicy that admits, on
// the gRPC port, only labelled pods in labelled namespaces, and on the admin
// port only the monitoring namespace; or it requires client certificates
// (FLOODGATE_TLS_CLIENT_CA). The policy is evaluated as a cluster would,
// against Envoys that should get in and pods that should not. Every rule has
// sources and ports, and none admits by address.
func TestGRPCPortOnlyForEnvoy(t *testing.T) {
	var loopback, policed int
	for _, fc := range floodgateContainers(t) {
		t.Run(fc.W.Render.Dir+"/"+fc.W.Name, func(t *testing.T) {
			grpcHost, grpcPort, _, adminPort := floodgateAddrs(t, fc)
			env := floodgateEnv(t, fc)
			switch {
			case isLoopback(grpcHost):
				loopback++
				for _, p := range fc.C.Ports {
					if p.ContainerPort == grpcPort {
						t.Errorf("%s: declares the gRPC port %d, which listens on %s", fc, grpcPort, grpcHost)
					}
				}
				return
			case env["FLOODGATE_TLS_CLIENT_CA"] != "":
				return
			}
			policed++
			r, w := fc.W.Render, fc.W
			for _, np := range typed[*networkingk8sv1.NetworkPolicy](r) {
				if np.Namespace != w.Namespace || !labelSelectorMatches(t, &np.Spec.PodSelector, w.Template.Labels) {
					continue
				}
				for i, rule := range np.Spec.Ingress {
					if len(rule.From) == 0 || len(rule.Ports) == 0 {
						t.Errorf("NetworkPolicy %s rule %d: from %v, ports %v: a rule must name both", np.Name, i, rule.From, rule.Ports)
					}
					for _, from := range rule.From {
						if from.IPBlock != nil {
							t.Errorf("NetworkPolicy %s rule %d: ipBlock %s admits by address", np.Name, i, from.IPBlock.CIDR)
						}
					}
				}
			}

			ns := w.Namespace
			if ns == "" {
				ns = "default" // base renders without a namespace
			}
			nsOf := func(name string, extra map[string]string) map[string]string {
				l := map[string]string{"kubernetes.io/metadata.name": name}
				for k, v := range extra {
					l[k] = v
				}
				return l
			}
			client := map[string]string{extAuthzClientLabel: "true"}
			envoy := peer{"a labelled Envoy in a labelled namespace", nsOf("gateways", client), "gateways", map[string]string{"app": "envoy", extAuthzClientLabel: "true"}}
			prometheus := peer{"Prometheus in namespace monitoring", nsOf(monitoringNamespace, nil), monitoringNamespace, map[string]string{"app": "prometheus"}}
			strangers := []peer{
				{"an unlabelled pod in floodgate's namespace", nsOf(ns, nil), ns, map[string]string{"app": "other"}},
				{"floodgate itself", nsOf(ns, nil), ns, w.Template.Labels},
				{"a labelled pod in a namespace without the label", nsOf("tenant", nil), "tenant", client},
				{"an unlabelled pod in a labelled namespace", nsOf("gateways", client), "gateways", map[string]string{"app": "other"}},
				prometheus,
			}
			if !ingressAdmits(t, r, w, envoy, grpcPort) {
				t.Errorf("%s: %s cannot reach the gRPC port %d", fc, envoy.what, grpcPort)
			}
			for _, s := range strangers {
				if ingressAdmits(t, r, w, s, grpcPort) {
					t.Errorf("%s: %s (labels %v) reaches the gRPC port %d", fc, s.what, s.labels, grpcPort)
				}
			}
			if !ingressAdmits(t, r, w, prometheus, adminPort) {
				t.Errorf("%s: %s cannot scrape the admin port %d", fc, prometheus.what, adminPort)
			}
			for _, s := range append(strangers[:len(strangers)-1:len(strangers)-1], envoy) {
				if ingressAdmits(t, r, w, s, adminPort) {
					t.Errorf("%s: %s (labels %v) reaches the admin port %d", fc, s.what, s.labels, adminPort)
				}
			}
			if ingressAdmits(t, r, w, envoy, 12345) {
				t.Errorf("%s: %s reaches port 12345: only the gRPC port is for Envoy", fc, envoy.what)
			}
		})
	}
	if loopback == 0 || policed == 0 {
		t.Errorf("%d floodgates on loopback, %d behind a NetworkPolicy: want the sidecar and in-pod ones on loopback and the standalone one behind the policy", loopback, policed)
	}
}
