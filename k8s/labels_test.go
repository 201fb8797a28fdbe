package k8s_test

import (
	"slices"
	"strings"
	"testing"
)

// recommendedLabels are Kubernetes' recommended labels
// (kubernetes.io/docs/concepts/overview/working-with-objects/common-labels).
var recommendedLabels = []string{
	"app.kubernetes.io/name",
	"app.kubernetes.io/instance",
	"app.kubernetes.io/version",
	"app.kubernetes.io/component",
	"app.kubernetes.io/part-of",
}

// unlabelledRenderings are the kustomizations whose own objects are
// labelled by their owners' kustomizations, not checked here: the RLS
// ConfigMap and EnvoyFilter, and the Grafana dashboard.
var unlabelledRenderings = []string{"istio/rls", "istio/rls/gateway", "grafana"}

// TestRecommendedLabels checks that every object and every pod template
// carries the five recommended labels (a Namespace, which holds several
// components, needs name, instance and part-of), that no selector uses
// version (which changes with every upgrade, and a Deployment's selector
// cannot), and that the version of floodgate's and memcached's objects is
// their image's tag.
func TestRecommendedLabels(t *testing.T) {
	for _, r := range allRenderings(t) {
		if slices.Contains(unlabelledRenderings, r.Dir) {
			continue
		}
		t.Run(r.Dir, func(t *testing.T) {
			for _, o := range r.Objects {
				checkRecommended(t, o.String(), o.Kind, objectMeta(t, o).GetLabels())
			}
			for _, w := range workloads(r) {
				l := w.Template.Labels
				checkRecommended(t, w.String()+" pod template", "Pod", l)
				if _, ok := w.Selector.MatchLabels["app.kubernetes.io/version"]; ok {
					t.Errorf("%s: the selector uses app.kubernetes.io/version: an upgrade could not change it", w)
				}
				checkVersionLabel(t, w)
			}
		})
	}
}

func checkRecommended(t *testing.T, where, kind string, l map[string]string) {
	t.Helper()
	for _, k := range recommendedLabels {
		if kind == "Namespace" && (k == "app.kubernetes.io/version" || k == "app.kubernetes.io/component") {
			continue
		}
		if l[k] == "" {
			t.Errorf("%s: no label %s (labels %v)", where, k, l)
		}
	}
}

// checkVersionLabel checks that the version label of a floodgate or
// memcached workload, on the workload and its pods, is its image's tag.
func checkVersionLabel(t *testing.T, w *workload) {
	t.Helper()
	name := w.Template.Labels["app.kubernetes.io/name"]
	for _, c := range podContainers(w.Pod()) {
		var tag string
		switch {
		case name == "floodgate" && isFloodgate(c):
			_, tag, _ = strings.Cut(lastPathElem(c.Image), ":")
		case name == "memcached" && strings.HasPrefix(c.Image, "memcached:"):
			tag = strings.TrimSuffix(strings.TrimPrefix(c.Image, "memcached:"), "-alpine")
		default:
			continue
		}
		if v := w.Template.Labels["app.kubernetes.io/version"]; v != tag {
			t.Errorf("%s: pod label app.kubernetes.io/version %q, but container %s runs %s", w, v, c.Name, c.Image)
		}
	}
}
