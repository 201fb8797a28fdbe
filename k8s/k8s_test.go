// Tests of what users apply to run floodgate: the kustomizations under k8s/,
// the Istio mesh config, the Grafana dashboard and the Dockerfile. No
// cluster runs here, so the tests check what can be checked without one,
// with the real tools where there are any:
//
//   - every kustomization renders (kustomize's own engine, as `kubectl
//     kustomize` runs it), and so does the Helm chart (Helm's own engine,
//     as `helm template` runs it, in several cases of values), and every
//     object decodes strictly into the typed Kubernetes, Istio, Envoy
//     Gateway, Gateway API or Prometheus Operator API structs: an unknown
//     or misspelt field fails; the chart's defaults equal the kustomize
//     output;
//   - the wiring between objects and containers holds: ports, probes,
//     selectors, the Envoy config in the sidecar ConfigMap, the memcached
//     servers every floodgate lists, the NetworkPolicy, the Istio providers;
//   - the real floodgate starts with each container's configuration and
//     answers its probes; the real Envoy validates the ConfigMap's config and
//     runs it in front of floodgate;
//   - the Dockerfile's build command makes a static binary;
//   - every metric the dashboard queries is in floodgate's /metrics.
//
// Without an Envoy binary the Envoy tests skip with one line, and fail under
// CI=true, as everywhere in floodgate.
package k8s_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	egv1a1 "github.com/envoyproxy/gateway/api/v1alpha1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	networkingv1 "istio.io/api/networking/v1"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	securityv1 "istio.io/api/security/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingk8sv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwapiv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/floodgate-rl/floodgate/internal/testutil"
)

// kustomizations lists every kustomization under k8s/, as directories
// relative to k8s/. TestEveryKustomizationIsListed fails when a
// kustomization.yaml is not listed, so none goes untested.
var kustomizations = []string{
	"base",
	"overlays/memcached",
	"overlays/standalone",
	"overlays/sidecar",
	"overlays/sidecar-plain",
	"istio/service",
	"istio/in-pod",
	"istio/ambient",
	"istio/rls",
	"istio/rls/gateway",
	"grafana",
	"monitoring",
	"gateway",
}

// floodgateImage is the repository of floodgate's image in the manifests.
const floodgateImage = "ghcr.io/floodgate-rl/floodgate"

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBuilds()
	os.Exit(code)
}

// object is one rendered Kubernetes object.
type object struct {
	APIVersion, Kind, Name, Namespace string
	YAML                              []byte
	// Typed is the object decoded into its API struct: *corev1.Service,
	// *appsv1.Deployment, ..., or *istioObject.
	Typed any
}

func (o *object) String() string {
	if o.Namespace == "" {
		return o.Kind + "/" + o.Name
	}
	return o.Kind + "/" + o.Namespace + "/" + o.Name
}

// istioObject is an Istio custom resource: Kubernetes metadata and a spec
// that is an Istio API protobuf message.
type istioObject struct {
	metav1.TypeMeta
	metav1.ObjectMeta
	Spec proto.Message
}

// rendering is the output of one kustomization.
type rendering struct {
	Dir     string // relative to k8s/
	Objects []*object
}

// renderAll renders every kustomization once per test binary.
var renderAll = sync.OnceValues(func() (map[string]*rendering, error) {
	out := make(map[string]*rendering)
	for _, dir := range kustomizations {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return nil, err
		}
		r, err := renderDir(filesys.MakeFsOnDisk(), abs, dir)
		if err != nil {
			return nil, err
		}
		out[dir] = r
	}
	return out, nil
})

// renderDir runs kustomize on the kustomization at path in fsys, as
// `kubectl kustomize` does (with its default options, so files may only come
// from inside the kustomization's directory), and decodes every object
// strictly. dir names the kustomization in errors, relative to k8s/.
func renderDir(fsys filesys.FileSystem, path, dir string) (*rendering, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resMap, err := k.Run(fsys, path)
	if err != nil {
		return nil, fmt.Errorf("kustomize build k8s/%s: %w", dir, err)
	}
	r := &rendering{Dir: dir}
	for _, res := range resMap.Resources() {
		y, err := res.AsYAML()
		if err != nil {
			return nil, fmt.Errorf("k8s/%s: %s: %w", dir, res.CurId(), err)
		}
		o := &object{
			APIVersion: res.GetApiVersion(),
			Kind:       res.GetKind(),
			Name:       res.GetName(),
			Namespace:  res.GetNamespace(),
			YAML:       y,
		}
		if o.Typed, err = decode(o.APIVersion, o.Kind, y); err != nil {
			return nil, fmt.Errorf("k8s/%s: %s: %w", dir, o, err)
		}
		r.Objects = append(r.Objects, o)
	}
	return r, nil
}

// decode decodes the YAML of one object into its typed API struct, strictly:
// an unknown field, a duplicate field or a value of the wrong type is an
// error. A kind without a struct here is an error too, so that every object
// the kustomizations ship is checked.
func decode(apiVersion, kind string, y []byte) (any, error) {
	var obj any
	switch apiVersion + " " + kind {
	case "v1 Namespace":
		obj = &corev1.Namespace{}
	case "v1 Service":
		obj = &corev1.Service{}
	case "v1 ConfigMap":
		obj = &corev1.ConfigMap{}
	case "apps/v1 Deployment":
		obj = &appsv1.Deployment{}
	case "apps/v1 StatefulSet":
		obj = &appsv1.StatefulSet{}
	case "policy/v1 PodDisruptionBudget":
		obj = &policyv1.PodDisruptionBudget{}
	case "networking.k8s.io/v1 NetworkPolicy":
		obj = &networkingk8sv1.NetworkPolicy{}
	case "security.istio.io/v1 AuthorizationPolicy":
		return decodeIstio(y, &securityv1.AuthorizationPolicy{})
	case "networking.istio.io/v1 ServiceEntry":
		return decodeIstio(y, &networkingv1.ServiceEntry{})
	case "networking.istio.io/v1alpha3 EnvoyFilter":
		return decodeIstio(y, &networkingv1alpha3.EnvoyFilter{})
	case "monitoring.coreos.com/v1 PodMonitor":
		obj = &monitoringv1.PodMonitor{}
	case "gateway.networking.k8s.io/v1 Gateway":
		obj = &gwapiv1.Gateway{}
	case "gateway.networking.k8s.io/v1 HTTPRoute":
		obj = &gwapiv1.HTTPRoute{}
	case "gateway.networking.k8s.io/v1beta1 ReferenceGrant":
		obj = &gwapiv1beta1.ReferenceGrant{}
	case "gateway.envoyproxy.io/v1alpha1 SecurityPolicy":
		obj = &egv1a1.SecurityPolicy{}
	case "gateway.envoyproxy.io/v1alpha1 ClientTrafficPolicy":
		obj = &egv1a1.ClientTrafficPolicy{}
	case "gateway.envoyproxy.io/v1alpha1 EnvoyProxy":
		obj = &egv1a1.EnvoyProxy{}
	default:
		return nil, fmt.Errorf("no typed struct for apiVersion %s kind %s: add one to decode", apiVersion, kind)
	}
	if err := strictUnmarshal(y, obj); err != nil {
		return nil, fmt.Errorf("strict decode into %T: %w", obj, err)
	}
	return obj, nil
}

// strictUnmarshal decodes YAML into v as the API server decodes a request
// with field validation Strict: field names match case-sensitively, and an
// unknown or duplicate field is an error. (encoding/json, and so
// sigs.k8s.io/yaml.UnmarshalStrict, would take "targetport" for
// "targetPort".)
func strictUnmarshal(y []byte, v any) error {
	j, err := yaml.YAMLToJSONStrict(y)
	if err != nil {
		return err
	}
	strictErrs, err := kjson.UnmarshalStrict(j, v)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}

// decodeIstio decodes an Istio resource: its envelope strictly into
// Kubernetes metadata, its spec with protojson into spec. (The Istio API's
// own UnmarshalJSON methods accept unknown fields; protojson does not.)
func decodeIstio(y []byte, spec proto.Message) (*istioObject, error) {
	var env struct {
		metav1.TypeMeta `json:",inline"`
		Metadata        metav1.ObjectMeta `json:"metadata"`
		Spec            json.RawMessage   `json:"spec"`
	}
	if err := strictUnmarshal(y, &env); err != nil {
		return nil, fmt.Errorf("strict decode of the envelope: %w", err)
	}
	if err := protojson.Unmarshal(env.Spec, spec); err != nil {
		return nil, fmt.Errorf("strict decode of spec into %T: %w", spec, err)
	}
	return &istioObject{TypeMeta: env.TypeMeta, ObjectMeta: env.Metadata, Spec: spec}, nil
}

// mustRender returns the rendering of the kustomization in dir, or of the
// Helm case that helmDir names.
func mustRender(t *testing.T, dir string) *rendering {
	t.Helper()
	all, err := renderAll()
	if err != nil {
		t.Fatal(err)
	}
	helm, err := renderHelmAll()
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := all[dir]; ok {
		return r
	}
	if r, ok := helm[dir]; ok {
		return r
	}
	t.Fatalf("k8s/%s is not in kustomizations, nor a case of helmCases", dir)
	return nil
}

// allRenderings returns every rendering: the kustomizations, in the order
// of kustomizations, then the Helm chart's cases.
func allRenderings(t *testing.T) []*rendering {
	t.Helper()
	var out []*rendering
	for _, dir := range kustomizations {
		out = append(out, mustRender(t, dir))
	}
	return append(out, helmRenderings(t)...)
}

// typed returns the objects of r of type T.
func typed[T any](r *rendering) []T {
	var out []T
	for _, o := range r.Objects {
		if v, ok := o.Typed.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// find returns the object of type T named name in r, failing the test when
// there is none.
func find[T interface{ GetName() string }](t *testing.T, r *rendering, name string) T {
	t.Helper()
	for _, v := range typed[T](r) {
		if v.GetName() == name {
			return v
		}
	}
	var zero T
	t.Fatalf("k8s/%s: no %T named %q", r.Dir, zero, name)
	return zero
}

// workload is a Deployment or StatefulSet: what makes pods.
type workload struct {
	Render    *rendering
	Kind      string
	Name      string
	Namespace string
	Replicas  int32
	Selector  *metav1.LabelSelector
	Template  *corev1.PodTemplateSpec
}

func (w *workload) String() string {
	if w.Namespace == "" {
		return fmt.Sprintf("k8s/%s: %s %s", w.Render.Dir, w.Kind, w.Name)
	}
	return fmt.Sprintf("k8s/%s: %s %s/%s", w.Render.Dir, w.Kind, w.Namespace, w.Name)
}

// pod returns the pod spec of w.
func (w *workload) Pod() *corev1.PodSpec { return &w.Template.Spec }

// podLabels returns the labels of w's pod with the given ordinal: the
// template's, plus for a StatefulSet the labels its controller adds.
func (w *workload) PodLabels(ordinal int) map[string]string {
	l := make(map[string]string)
	for k, v := range w.Template.Labels {
		l[k] = v
	}
	if w.Kind == "StatefulSet" {
		l["statefulset.kubernetes.io/pod-name"] = fmt.Sprintf("%s-%d", w.Name, ordinal)
		l["apps.kubernetes.io/pod-index"] = fmt.Sprint(ordinal)
	}
	return l
}

// podContainers returns the containers of pod that run for its whole life:
// its native sidecars (init containers with restartPolicy Always), in the
// order the kubelet starts them, then its regular containers.
func podContainers(pod *corev1.PodSpec) []*corev1.Container {
	var out []*corev1.Container
	for i := range pod.InitContainers {
		if c := &pod.InitContainers[i]; isSidecar(c) {
			out = append(out, c)
		}
	}
	for i := range pod.Containers {
		out = append(out, &pod.Containers[i])
	}
	return out
}

// isSidecar reports whether c is a native sidecar: an init container with
// restartPolicy Always, which the kubelet starts before the regular
// containers and stops after them (Kubernetes 1.29 and later).
func isSidecar(c *corev1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
}

// allContainers returns every container of pod, init containers first.
func allContainers(pod *corev1.PodSpec) []*corev1.Container {
	var out []*corev1.Container
	for i := range pod.InitContainers {
		out = append(out, &pod.InitContainers[i])
	}
	for i := range pod.Containers {
		out = append(out, &pod.Containers[i])
	}
	return out
}

// workloads returns the Deployments and StatefulSets of r.
func workloads(r *rendering) []*workload {
	var out []*workload
	for _, d := range typed[*appsv1.Deployment](r) {
		out = append(out, &workload{r, "Deployment", d.Name, d.Namespace, replicas(d.Spec.Replicas), d.Spec.Selector, &d.Spec.Template})
	}
	for _, s := range typed[*appsv1.StatefulSet](r) {
		out = append(out, &workload{r, "StatefulSet", s.Name, s.Namespace, replicas(s.Spec.Replicas), s.Spec.Selector, &s.Spec.Template})
	}
	return out
}

func replicas(p *int32) int32 {
	if p == nil {
		return 1 // the API's default
	}
	return *p
}

// allWorkloads returns the workloads of every rendering.
func allWorkloads(t *testing.T) []*workload {
	t.Helper()
	var out []*workload
	for _, r := range allRenderings(t) {
		out = append(out, workloads(r)...)
	}
	return out
}

// isFloodgate reports whether c runs floodgate's image.
func isFloodgate(c *corev1.Container) bool {
	return strings.HasPrefix(c.Image, floodgateImage+":") || c.Image == floodgateImage
}

// floodgateContainer is a floodgate container in a workload's pod.
type floodgateContainer struct {
	W *workload
	C *corev1.Container
}

func (f floodgateContainer) String() string { return f.W.String() + " container " + f.C.Name }

// floodgateContainers returns every floodgate container of every workload.
func floodgateContainers(t *testing.T) []floodgateContainer {
	t.Helper()
	var out []floodgateContainer
	for _, w := range allWorkloads(t) {
		for _, c := range podContainers(w.Pod()) {
			if isFloodgate(c) {
				out = append(out, floodgateContainer{w, c})
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("no floodgate container in any kustomization")
	}
	return out
}

// moduleRoot returns the repository root.
func moduleRoot(t *testing.T) string {
	t.Helper()
	return testutil.ModuleRoot(t)
}

// floodgateHelp holds what `floodgate --help` says about the environment:
// every FLOODGATE_* variable with its default.
var floodgateHelp struct {
	once     sync.Once
	defaults map[string]string
	err      error
}

// helpDefault matches "default :9001, env FLOODGATE_GRPC_ADDR" in --help.
var helpDefault = regexp.MustCompile(`default (.*), env (FLOODGATE_[A-Z0-9_]+)`)

// envDefaults returns the FLOODGATE_* variables floodgate reads, with their
// defaults, from the real binary's --help.
func envDefaults(t *testing.T) map[string]string {
	t.Helper()
	bin := testutil.BuildFloodgate(t)
	floodgateHelp.once.Do(func() {
		out, err := exec.Command(bin, "--help").CombinedOutput()
		if err != nil {
			floodgateHelp.err = fmt.Errorf("floodgate --help: %v\n%s", err, out)
			return
		}
		floodgateHelp.defaults = make(map[string]string)
		for _, m := range helpDefault.FindAllStringSubmatch(string(out), -1) {
			def := m[1]
			if def == `""` {
				def = ""
			}
			floodgateHelp.defaults[m[2]] = def
		}
		for _, want := range []string{"FLOODGATE_GRPC_ADDR", "FLOODGATE_ADMIN_ADDR", "FLOODGATE_MEMCACHE_SERVERS", "FLOODGATE_MEMCACHE_TIMEOUT", "FLOODGATE_SHUTDOWN_TIMEOUT"} {
			if _, ok := floodgateHelp.defaults[want]; !ok {
				floodgateHelp.err = fmt.Errorf("floodgate --help names no %s (format `default X, env NAME`):\n%s", want, out)
				return
			}
		}
	})
	if floodgateHelp.err != nil {
		t.Fatal(floodgateHelp.err)
	}
	return floodgateHelp.defaults
}

// TestEveryKustomizationIsListed fails when a kustomization under k8s/ is
// missing from kustomizations (and so from every test), or a listed one is
// gone.
func TestEveryKustomizationIsListed(t *testing.T) {
	var found []string
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch d.Name() {
		case "kustomization.yaml", "kustomization.yml", "Kustomization":
			found = append(found, filepath.ToSlash(filepath.Dir(path)))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(found)
	want := slices.Clone(kustomizations)
	slices.Sort(want)
	if !slices.Equal(found, want) {
		t.Errorf("kustomizations under k8s/ = %q, but the tests render %q: update kustomizations in k8s_test.go", found, want)
	}
}
