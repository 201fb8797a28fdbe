package k8s_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"helm.sh/helm/v3/pkg/releaseutil"
	"sigs.k8s.io/yaml"
)

// chartDir is the Helm chart, relative to k8s/.
const chartDir = "../charts/floodgate"

// Every Helm rendering is released as floodgate in the namespace floodgate,
// as the kustomizations are, so that all floodgates of all renderings
// share one memcached and the cross-rendering checks (the memcached
// servers, the Istio provider's Service) hold for them too.
const (
	helmRelease   = "floodgate"
	helmNamespace = "floodgate"
)

// helmMinKube is the oldest Kubernetes the chart supports (its kubeVersion):
// the preStop sleep action is on by default from 1.30.
const helmMinKube = "v1.30.0"

// helmCases are the values the chart is rendered with. Each rendering joins
// the kustomizations in allRenderings, so every check of the rendered
// objects (strict decoding, wiring, pod security, labels, the real
// floodgate started with each container's environment) runs on it too.
var helmCases = []struct {
	name, values string
}{
	{"default", ""},
	{"memcached", "floodgate: {enabled: false}"},
	{"pod-monitor", "podMonitor: {enabled: true}"},
	{"configured", `
replicas: 3
limit: 1000000
window: 15m
strategy: token-bucket
key: xff
xffTrustedHops: 1
failMode: open
memcacheTimeout: 50ms
tls: {secretName: floodgate-tls, clientCA: true}
policy: |
  rules:
  - name: login
    match: {path_prefix: /login}
    limit: 5
    window: 60s
extraEnv:
- {name: FLOODGATE_LOG_LEVEL, value: debug}
resources:
  requests: {cpu: 500m, memory: 256Mi}
  limits: {memory: 1Gi}
networkPolicy: {metricsNamespace: observability}
podMonitor: {enabled: true, interval: 15s, labels: {release: kube-prometheus-stack}}
memcached: {replicas: 3, memoryMiB: 512, resources: {requests: {cpu: "2", memory: 640Mi}, limits: {cpu: "2", memory: 640Mi}}}
`},
}

// helmDir names the rendering of a case, as a kustomization is named by
// its directory.
func helmDir(name string) string { return "charts/floodgate:" + name }

// renderHelmAll renders every case once per test binary.
var renderHelmAll = sync.OnceValues(func() (map[string]*rendering, error) {
	out := make(map[string]*rendering)
	for _, c := range helmCases {
		vals, err := chartutil.ReadValues([]byte(c.values))
		if err != nil {
			return nil, fmt.Errorf("values of %s: %w", c.name, err)
		}
		r, err := renderChart(chartDir, helmDir(c.name), vals, helmMinKube)
		if err != nil {
			return nil, err
		}
		out[r.Dir] = r
	}
	return out, nil
})

// renderChart renders the chart at dir as `helm template` does with
// --kube-version kube: it loads the chart, checks its kubeVersion, merges
// vals over values.yaml and validates them against values.schema.json,
// renders the templates, drops NOTES.txt and the partials, orders the
// manifests as Helm installs them, and decodes each object strictly
// (decode). name names the rendering in errors.
func renderChart(dir, name string, vals chartutil.Values, kube string) (*rendering, error) {
	ch, err := loader.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: load: %w", name, err)
	}
	kv, err := chartutil.ParseKubeVersion(kube)
	if err != nil {
		return nil, err
	}
	if !chartutil.IsCompatibleRange(ch.Metadata.KubeVersion, kv.String()) {
		return nil, fmt.Errorf("%s: the chart needs Kubernetes %s, not %s", name, ch.Metadata.KubeVersion, kv)
	}
	caps := chartutil.DefaultCapabilities.Copy()
	caps.KubeVersion = *kv
	opts := chartutil.ReleaseOptions{Name: helmRelease, Namespace: helmNamespace, Revision: 1, IsInstall: true}
	top, err := chartutil.ToRenderValues(ch, vals, opts, caps)
	if err != nil {
		return nil, fmt.Errorf("%s: values: %w", name, err)
	}
	files, err := engine.Render(ch, top)
	if err != nil {
		return nil, fmt.Errorf("%s: render: %w", name, err)
	}
	for f := range files {
		if strings.HasSuffix(f, "NOTES.txt") {
			delete(files, f)
		}
	}
	hooks, manifests, err := releaseutil.SortManifests(files, caps.APIVersions, releaseutil.InstallOrder)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(hooks) > 0 {
		return nil, fmt.Errorf("%s: %d hooks: the chart has none, and helm template would print them apart", name, len(hooks))
	}
	r := &rendering{Dir: name}
	for _, m := range manifests {
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(m.Content), &meta); err != nil {
			return nil, fmt.Errorf("%s: %s: %w", name, m.Name, err)
		}
		o := &object{APIVersion: meta.APIVersion, Kind: meta.Kind, Name: meta.Metadata.Name, Namespace: meta.Metadata.Namespace, YAML: []byte(m.Content)}
		if o.Typed, err = decode(o.APIVersion, o.Kind, o.YAML); err != nil {
			return nil, fmt.Errorf("%s: %s (%s): %w", name, o, m.Name, err)
		}
		r.Objects = append(r.Objects, o)
	}
	return r, nil
}

// helmRenderings returns the rendering of every case, in the order of
// helmCases.
func helmRenderings(t *testing.T) []*rendering {
	t.Helper()
	all, err := renderHelmAll()
	if err != nil {
		t.Fatal(err)
	}
	var out []*rendering
	for _, c := range helmCases {
		out = append(out, all[helmDir(c.name)])
	}
	return out
}

// helmOnlyLabels are the labels Helm's conventions add to the metadata of
// the objects it manages, which kustomize output does not carry.
var helmOnlyLabels = []string{"helm.sh/chart", "app.kubernetes.io/managed-by"}

// TestHelmMatchesKustomize checks that the chart renders the objects of
// the kustomizations, field for field, once the labels only Helm adds are
// set aside: the defaults are k8s/overlays/standalone, floodgate.enabled
// false is k8s/overlays/memcached (neither with its Namespace, which Helm
// leaves to --create-namespace), and podMonitor.enabled adds
// k8s/monitoring's PodMonitor.
func TestHelmMatchesKustomize(t *testing.T) {
	cases := []struct {
		helm string
		kust []string
	}{
		{"default", []string{"overlays/standalone"}},
		{"memcached", []string{"overlays/memcached"}},
		{"pod-monitor", []string{"overlays/standalone", "monitoring"}},
	}
	for _, c := range cases {
		t.Run(c.helm, func(t *testing.T) {
			got := canonicalObjects(t, mustRender(t, helmDir(c.helm)))
			want := make(map[string]string)
			for _, dir := range c.kust {
				maps.Copy(want, canonicalObjects(t, mustRender(t, dir)))
			}
			for id := range want {
				if strings.HasPrefix(id, "Namespace/") {
					delete(want, id)
				}
			}
			ids := slices.Sorted(maps.Keys(got))
			if wantIDs := slices.Sorted(maps.Keys(want)); !slices.Equal(ids, wantIDs) {
				t.Fatalf("the chart renders %q, k8s/%s %q", ids, strings.Join(c.kust, " + k8s/"), wantIDs)
			}
			for _, id := range ids {
				if got[id] != want[id] {
					t.Errorf("%s differs from k8s/%s:\nchart:\n%s\nkustomize:\n%s", id, strings.Join(c.kust, " + k8s/"), got[id], want[id])
				}
			}
		})
	}
}

// canonicalObjects returns the typed objects of r as YAML by
// Kind/namespace/name, without the labels only Helm adds.
func canonicalObjects(t *testing.T, r *rendering) map[string]string {
	t.Helper()
	out := make(map[string]string)
	for _, o := range r.Objects {
		meta := objectMeta(t, o)
		l := maps.Clone(meta.GetLabels())
		for _, k := range helmOnlyLabels {
			delete(l, k)
		}
		j, err := json.Marshal(o.Typed)
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		if err := json.Unmarshal(j, &v); err != nil {
			t.Fatal(err)
		}
		if md, ok := v["metadata"].(map[string]any); ok {
			md["labels"] = l
		}
		y, err := yaml.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		out[o.String()] = string(y)
	}
	return out
}

// TestHelmLabelsForHelm checks the labels Helm's conventions ask for on
// every object the chart renders.
func TestHelmLabelsForHelm(t *testing.T) {
	for _, r := range helmRenderings(t) {
		for _, o := range r.Objects {
			l := objectMeta(t, o).GetLabels()
			if l["app.kubernetes.io/managed-by"] != "Helm" || !strings.HasPrefix(l["helm.sh/chart"], "floodgate-") {
				t.Errorf("%s: %s: labels %v, want app.kubernetes.io/managed-by Helm and helm.sh/chart floodgate-<version>", r.Dir, o, l)
			}
		}
	}
}

// TestHelmLint runs Helm's linter (`helm lint --strict`) on the chart with
// each case's values: the chart's metadata, its templates, its values
// against the schema.
func TestHelmLint(t *testing.T) {
	kv, err := chartutil.ParseKubeVersion(helmMinKube)
	if err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range helmCases {
		t.Run(c.name, func(t *testing.T) {
			vals, err := chartutil.ReadValues([]byte(c.values))
			if err != nil {
				t.Fatal(err)
			}
			res := lint.AllWithKubeVersion(abs, vals, helmNamespace, kv)
			for _, m := range res.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("helm lint: %s", m)
				}
			}
		})
	}
}

// TestHelmRefuses checks what the chart refuses before anything reaches a
// cluster: a misspelt or mistyped value (values.schema.json), a Kubernetes
// older than its kubeVersion, and a client CA without a certificate.
func TestHelmRefuses(t *testing.T) {
	cases := []struct {
		name, values, kube, want string
	}{
		{"misspelt value", "limits: 5", helmMinKube, "limits"},
		{"misspelt nested value", "memcached: {replica: 3}", helmMinKube, "replica"},
		{"wrong type", "limit: lots", helmMinKube, "limit"},
		{"old Kubernetes", "", "v1.29.9", "needs Kubernetes"},
		{"client CA without a certificate", "tls: {clientCA: true}", helmMinKube, "tls.clientCA needs tls.secretName"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			vals, err := chartutil.ReadValues([]byte(c.values))
			if err != nil {
				t.Fatal(err)
			}
			_, err = renderChart(chartDir, c.name, vals, c.kube)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("rendering with %q on %s: error %v, want one naming %q", c.values, c.kube, err, c.want)
			}
		})
	}
}

// TestHelmValuesReachFloodgate starts the real floodgate with the
// environment the chart renders for the configured case and checks, in its
// startup line, that each value took effect: limit, window, key, strategy,
// fail mode, memcached timeout and TLS (with the client CA the values ask
// for).
func TestHelmValuesReachFloodgate(t *testing.T) {
	var fc floodgateContainer
	for _, c := range floodgateContainers(t) {
		if c.W.Render.Dir == helmDir("configured") {
			fc = c
		}
	}
	if fc.C == nil {
		t.Fatal("the configured case renders no floodgate")
	}
	serving := startFloodgateEnv(t, fc, true).startupLine(t)
	str := func(k string) string {
		switch v := serving[k].(type) {
		case float64:
			return strconv.FormatFloat(v, 'f', -1, 64)
		default:
			return fmt.Sprint(v)
		}
	}
	dur := func(k string) time.Duration {
		d, err := time.ParseDuration(str(k))
		if err != nil {
			t.Fatalf("startup line %s=%q: %v", k, str(k), err)
		}
		return d
	}
	for k, want := range map[string]string{"limit": "1000000", "key": "xff", "strategy": "token-bucket", "fail_mode": "open"} {
		if got := str(k); got != want {
			t.Errorf("floodgate serves %s=%s, the values say %s", k, got, want)
		}
	}
	if got := dur("window"); got != 15*time.Minute {
		t.Errorf("floodgate serves window=%v, the values say 15m", got)
	}
	if got := dur("memcache_timeout"); got != 50*time.Millisecond {
		t.Errorf("floodgate serves memcache_timeout=%v, the values say 50ms", got)
	}
	if got := str("tls"); got != "mutual" {
		t.Errorf("floodgate serves tls=%s, want mutual: the values give it a certificate and a client CA", got)
	}
}
