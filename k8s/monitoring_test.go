package k8s_test

import (
	"fmt"
	"strconv"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
)

// TestPodMonitor checks the Prometheus Operator's PodMonitor of
// k8s/monitoring against the standalone floodgate it scrapes: it selects
// every floodgate pod of its namespace (and nothing else there), each
// endpoint names the floodgate container's admin port and the path the
// pods' prometheus.io annotations give, and the NetworkPolicy lets the
// namespace monitoring reach that port.
func TestPodMonitor(t *testing.T) {
	standalone := mustRender(t, "overlays/standalone")
	mons := typed[*monitoringv1.PodMonitor](mustRender(t, "monitoring"))
	if len(mons) == 0 {
		t.Fatal("k8s/monitoring has no PodMonitor")
	}
	for _, pm := range mons {
		checkPodMonitor(t, standalone, pm)
	}
}

// checkPodMonitor checks pm against the floodgate workloads of r.
func checkPodMonitor(t *testing.T, r *rendering, pm *monitoringv1.PodMonitor) {
	t.Helper()
	if len(pm.Spec.NamespaceSelector.MatchNames) > 0 || pm.Spec.NamespaceSelector.Any {
		t.Errorf("PodMonitor %s: namespaceSelector %v: scrape the floodgate pods of its own namespace", pm.Name, pm.Spec.NamespaceSelector)
	}
	scraped := 0
	for _, w := range workloads(r) {
		if w.Namespace != pm.Namespace || !labelSelectorMatches(t, &pm.Spec.Selector, w.Template.Labels) {
			continue
		}
		var fc *floodgateContainer
		for _, c := range podContainers(w.Pod()) {
			if isFloodgate(c) {
				fc = &floodgateContainer{w, c}
			}
		}
		if fc == nil {
			t.Errorf("PodMonitor %s selects %s, which runs no floodgate", pm.Name, w)
			continue
		}
		scraped++
		_, _, _, adminPort := floodgateAddrs(t, *fc)
		if len(pm.Spec.PodMetricsEndpoints) == 0 {
			t.Fatalf("PodMonitor %s has no podMetricsEndpoints", pm.Name)
		}
		for _, ep := range pm.Spec.PodMetricsEndpoints {
			checkMetricsEndpoint(t, pm.Name, *fc, ep, adminPort)
		}
		mon := peer{"Prometheus in the namespace " + monitoringNamespace, map[string]string{"kubernetes.io/metadata.name": monitoringNamespace}, monitoringNamespace, map[string]string{"app.kubernetes.io/name": "prometheus"}}
		if !ingressAdmits(t, r, w, mon, adminPort) {
			t.Errorf("%s: the NetworkPolicy does not let %s reach the admin port %d it scrapes", w, mon.what, adminPort)
		}
	}
	if scraped == 0 {
		t.Errorf("PodMonitor %s (namespace %s, selector %v) selects no floodgate pod of k8s/%s", pm.Name, pm.Namespace, pm.Spec.Selector, r.Dir)
	}
}

// checkMetricsEndpoint checks that ep scrapes floodgate's /metrics on its
// admin port.
func checkMetricsEndpoint(t *testing.T, name string, fc floodgateContainer, ep monitoringv1.PodMetricsEndpoint, adminPort int32) {
	t.Helper()
	if ep.Port == nil {
		t.Errorf("PodMonitor %s: an endpoint without a port name: Prometheus would scrape every declared port", name)
		return
	}
	port, err := containerPortByName(fc, *ep.Port)
	if err != nil {
		t.Errorf("PodMonitor %s: %v", name, err)
	} else if port != adminPort {
		t.Errorf("PodMonitor %s: port %s is %d, floodgate's admin server listens on %d", name, *ep.Port, port, adminPort)
	}
	if want := fc.W.Template.Annotations["prometheus.io/path"]; ep.Path != want || want != "/metrics" {
		t.Errorf("PodMonitor %s: path %q, want /metrics (the pods' prometheus.io/path is %q)", name, ep.Path, want)
	}
	if ann := fc.W.Template.Annotations["prometheus.io/port"]; ann != strconv.Itoa(int(adminPort)) {
		t.Errorf("%s: prometheus.io/port %q and the PodMonitor disagree (admin port %d)", fc, ann, adminPort)
	}
}

// containerPortByName returns the number of fc's container port name.
func containerPortByName(fc floodgateContainer, name string) (int32, error) {
	for _, p := range fc.C.Ports {
		if p.Name == name {
			return p.ContainerPort, nil
		}
	}
	return 0, fmt.Errorf("%s has no port named %q", fc, name)
}
