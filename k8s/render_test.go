package k8s_test

import (
	"fmt"
	"path"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// TestRender renders every kustomization and checks that it holds exactly
// the objects it should (Kind/namespace/name; the generated ConfigMap's
// name ends in kustomize's content hash). Rendering decodes every object
// strictly into its API struct, so this also fails on any unknown field.
func TestRender(t *testing.T) {
	standalone := []string{
		"Deployment/floodgate/floodgate",
		"Namespace/floodgate",
		"NetworkPolicy/floodgate/floodgate",
		"NetworkPolicy/floodgate/floodgate-memcached",
		"PodDisruptionBudget/floodgate/floodgate",
		"PodDisruptionBudget/floodgate/floodgate-memcached",
		"Service/floodgate/floodgate",
		"Service/floodgate/floodgate-headless",
		"Service/floodgate/floodgate-memcached",
		"StatefulSet/floodgate/floodgate-memcached",
	}
	want := map[string][]string{
		"base": {
			"Deployment/floodgate",
			"NetworkPolicy/floodgate",
			"PodDisruptionBudget/floodgate",
			"Service/floodgate",
			"Service/floodgate-headless",
		},
		"overlays/memcached": {
			"Namespace/floodgate",
			"NetworkPolicy/floodgate/floodgate-memcached",
			"PodDisruptionBudget/floodgate/floodgate-memcached",
			"Service/floodgate/floodgate-memcached",
			"StatefulSet/floodgate/floodgate-memcached",
		},
		"overlays/standalone": standalone,
		"overlays/sidecar": {
			"ConfigMap/my-app/my-app-envoy-*",
			"Deployment/my-app/my-app",
			"Namespace/my-app",
			"Service/my-app/my-app",
		},
		"overlays/sidecar-plain": {
			"ConfigMap/my-app/my-app-envoy-*",
			"Deployment/my-app/my-app",
			"Namespace/my-app",
			"Service/my-app/my-app",
		},
		"istio/service": {
			"AuthorizationPolicy/my-app/floodgate",
		},
		"istio/in-pod": {
			"AuthorizationPolicy/my-mesh-app/floodgate",
			"Deployment/my-mesh-app/my-mesh-app",
			"Namespace/my-mesh-app",
			"Service/my-mesh-app/my-mesh-app",
			"ServiceEntry/my-mesh-app/floodgate-local",
		},
		"istio/ambient": {
			"AuthorizationPolicy/my-ambient-app/floodgate",
			"Deployment/my-ambient-app/my-ambient-app",
			"Gateway/my-ambient-app/waypoint",
			"Namespace/my-ambient-app",
			"Service/my-ambient-app/my-ambient-app",
		},
		// The standalone install with the RLS config, sorted first.
		"istio/rls": append([]string{"ConfigMap/floodgate/floodgate-rls"}, standalone...),
		"istio/rls/gateway": {
			"EnvoyFilter/istio-system/floodgate-ratelimit",
		},
		"grafana": {
			"ConfigMap/floodgate-dashboard",
		},
		"monitoring": {
			"PodMonitor/floodgate/floodgate",
		},
		"gateway": {
			"ClientTrafficPolicy/my-api/my-api",
			"Deployment/my-api/my-api",
			"EnvoyProxy/my-api/my-api",
			"Gateway/my-api/my-api",
			"HTTPRoute/my-api/my-api",
			"HTTPRoute/my-api/my-api-login",
			"Namespace/my-api",
			"ReferenceGrant/floodgate/floodgate-from-my-api",
			"SecurityPolicy/my-api/my-api",
			"SecurityPolicy/my-api/my-api-login",
			"Service/my-api/my-api",
		},
	}
	for _, dir := range kustomizations {
		t.Run(dir, func(t *testing.T) {
			r := mustRender(t, dir)
			var got []string
			for _, o := range r.Objects {
				got = append(got, o.String())
			}
			slices.Sort(got)
			w, ok := want[dir]
			if !ok {
				t.Fatalf("no expected objects for k8s/%s in TestRender", dir)
			}
			if len(got) != len(w) {
				t.Fatalf("k8s/%s renders %q, want %q", dir, got, w)
			}
			for i := range w {
				if ok, _ := path.Match(w[i], got[i]); !ok {
					t.Errorf("k8s/%s renders %q, want %q", dir, got, w)
					break
				}
			}
		})
	}
}

// TestStrictDecoding shows that the decoding TestRender relies on is strict:
// a misspelt field of a Deployment, of a Service, of an Envoy Gateway
// policy and of an Istio spec each fail to render, and the same files spelt
// right render.
func TestStrictDecoding(t *testing.T) {
	const kustomization = "resources: [objects.yaml]\n"
	const deployment = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  selector: {matchLabels: {app: d}}
  template:
    metadata: {labels: {app: d}}
    spec:
      containers:
      - name: c
        image: example:1
        %s: {httpGet: {path: /readyz, port: 9090}}
`
	const service = `
apiVersion: v1
kind: Service
metadata: {name: s}
spec:
  selector: {app: d}
  ports: [{port: 80, %s: 8080}]
`
	const policy = `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p}
spec:
  action: CUSTOM
  provider: {name: floodgate}
  %s: [{}]
`
	const securityPolicy = `
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: SecurityPolicy
metadata: {name: p}
spec:
  extAuth:
    grpc: {backendRefs: [{name: floodgate, port: 9001}]}
    %s: true
`
	cases := []struct {
		name, yaml, good, bad string
	}{
		{"Deployment", deployment, "readinessProbe", "readinesProbe"},
		{"SecurityPolicy", securityPolicy, "failOpen", "failopen"},
		{"Service", service, "targetPort", "targetport"},
		{"AuthorizationPolicy", policy, "rules", "rule"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, field := range []string{tc.good, tc.bad} {
				fsys := filesys.MakeFsInMemory()
				if err := fsys.WriteFile("/k/kustomization.yaml", []byte(kustomization)); err != nil {
					t.Fatal(err)
				}
				if err := fsys.WriteFile("/k/objects.yaml", []byte(fmt.Sprintf(tc.yaml, field))); err != nil {
					t.Fatal(err)
				}
				_, err := renderDir(fsys, "/k", "test")
				switch {
				case field == tc.good && err != nil:
					t.Errorf("field %q: %v", field, err)
				case field == tc.bad && err == nil:
					t.Errorf("field %q: decoded without error, want an unknown field error", field)
				case field == tc.bad && !strings.Contains(err.Error(), "unknown field"):
					t.Errorf("field %q: error %q does not say unknown field", field, err)
				}
			}
		})
	}
}

// TestObjects checks what the API server would reject or a cluster would
// get wrong: names, labels, selectors that match their pods, Services whose
// target ports exist on the pods they select, probes whose named ports exist
// in their container, volumes that exist, PodDisruptionBudgets that neither
// block every drain nor allow every pod down, StatefulSets governed by a
// headless Service, and objects in the namespace their rendering creates
// (or, for an object that must live beside another component, such as a
// ReferenceGrant beside the Service it grants, a namespace another
// kustomization creates).
func TestObjects(t *testing.T) {
	created := namespaceLabels(t)
	for _, r := range allRenderings(t) {
		t.Run(r.Dir, func(t *testing.T) {
			var namespaces []string
			for _, ns := range typed[*corev1.Namespace](r) {
				namespaces = append(namespaces, ns.Name)
			}
			for _, o := range r.Objects {
				meta := objectMeta(t, o)
				checkMeta(t, o, meta)
				_, elsewhere := created[o.Namespace]
				if o.Kind != "Namespace" && len(namespaces) > 0 && !slices.Contains(namespaces, o.Namespace) && (o.Kind != "ReferenceGrant" || !elsewhere) {
					t.Errorf("%s: namespace %q, but the kustomization creates %q", o, o.Namespace, namespaces)
				}
			}
			ws := workloads(r)
			for _, w := range ws {
				checkWorkload(t, r, w)
			}
			for _, s := range typed[*corev1.Service](r) {
				checkService(t, s, ws)
			}
			for _, p := range typed[*policyv1.PodDisruptionBudget](r) {
				checkPDB(t, p, ws)
			}
			for _, s := range typed[*appsv1.StatefulSet](r) {
				svc := find[*corev1.Service](t, r, s.Spec.ServiceName)
				if svc.Spec.ClusterIP != corev1.ClusterIPNone {
					t.Errorf("StatefulSet %s: serviceName %s is not a headless Service", s.Name, svc.Name)
				}
				if !selects(svc.Spec.Selector, s.Spec.Template.Labels) {
					t.Errorf("StatefulSet %s: its Service %s does not select its pods", s.Name, svc.Name)
				}
			}
		})
	}
}

// objectMeta returns the metadata of a typed object.
func objectMeta(t *testing.T, o *object) metav1.Object {
	t.Helper()
	switch v := o.Typed.(type) {
	case metav1.Object: // Istio objects too: they embed metav1.ObjectMeta
		return v
	}
	t.Fatalf("%s: no metadata in %T", o, o.Typed)
	return nil
}

func checkMeta(t *testing.T, o *object, m metav1.Object) {
	t.Helper()
	var errs []string
	switch o.Kind {
	case "Service":
		errs = validation.IsDNS1035Label(m.GetName())
	case "Namespace":
		errs = validation.IsDNS1123Label(m.GetName())
	default:
		errs = validation.IsDNS1123Subdomain(m.GetName())
	}
	for _, e := range errs {
		t.Errorf("%s: name: %s", o, e)
	}
	checkLabels(t, o.String(), m.GetLabels())
	for k := range m.GetAnnotations() {
		for _, e := range validation.IsQualifiedName(k) {
			t.Errorf("%s: annotation %q: %s", o, k, e)
		}
	}
}

func checkLabels(t *testing.T, where string, l map[string]string) {
	t.Helper()
	for k, v := range l {
		for _, e := range validation.IsQualifiedName(k) {
			t.Errorf("%s: label %q: %s", where, k, e)
		}
		for _, e := range validation.IsValidLabelValue(v) {
			t.Errorf("%s: label %s=%q: %s", where, k, v, e)
		}
	}
}

// selects reports whether the Service-style selector sel (non-empty) matches
// the labels l.
func selects(sel, l map[string]string) bool {
	return len(sel) > 0 && labels.SelectorFromSet(sel).Matches(labels.Set(l))
}

// labelSelectorMatches reports whether the LabelSelector sel matches l. An
// invalid selector fails the test.
func labelSelectorMatches(t *testing.T, sel *metav1.LabelSelector, l map[string]string) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatalf("selector %v: %v", sel, err)
	}
	return s.Matches(labels.Set(l))
}

func checkWorkload(t *testing.T, r *rendering, w *workload) {
	t.Helper()
	checkLabels(t, w.String()+" pod template", w.Template.Labels)
	if w.Selector == nil || (len(w.Selector.MatchLabels) == 0 && len(w.Selector.MatchExpressions) == 0) {
		t.Errorf("%s: no selector", w)
	} else if !labelSelectorMatches(t, w.Selector, w.Template.Labels) {
		t.Errorf("%s: selector %v does not match the pod template's labels %v", w, w.Selector, w.Template.Labels)
	}
	if w.Replicas < 1 {
		t.Errorf("%s: %d replicas", w, w.Replicas)
	}
	pod := w.Pod()
	volumes := make(map[string]*corev1.Volume)
	for i := range pod.Volumes {
		v := &pod.Volumes[i]
		volumes[v.Name] = v
		if v.ConfigMap != nil {
			find[*corev1.ConfigMap](t, r, v.ConfigMap.Name)
		}
	}
	names := make(map[string]bool)
	portNames := make(map[string]bool)
	portNumbers := make(map[int32]bool)
	for _, c := range allContainers(pod) {
		where := fmt.Sprintf("%s container %s", w, c.Name)
		for _, e := range validation.IsDNS1123Label(c.Name) {
			t.Errorf("%s: name: %s", where, e)
		}
		if names[c.Name] {
			t.Errorf("%s: two containers of that name", where)
		}
		names[c.Name] = true
		for _, p := range c.Ports {
			if p.Name != "" {
				for _, e := range validation.IsValidPortName(p.Name) {
					t.Errorf("%s: port name %q: %s", where, p.Name, e)
				}
				if portNames[p.Name] {
					t.Errorf("%s: port name %q used twice in the pod", where, p.Name)
				}
				portNames[p.Name] = true
			}
			for _, e := range validation.IsValidPortNum(int(p.ContainerPort)) {
				t.Errorf("%s: port %d: %s", where, p.ContainerPort, e)
			}
			if portNumbers[p.ContainerPort] {
				t.Errorf("%s: port %d declared twice in the pod", where, p.ContainerPort)
			}
			portNumbers[p.ContainerPort] = true
		}
		envs := make(map[string]bool)
		for _, e := range c.Env {
			for _, msg := range validation.IsEnvVarName(e.Name) {
				t.Errorf("%s: env %q: %s", where, e.Name, msg)
			}
			if envs[e.Name] {
				t.Errorf("%s: env %s set twice", where, e.Name)
			}
			envs[e.Name] = true
		}
		for _, m := range c.VolumeMounts {
			if volumes[m.Name] == nil {
				t.Errorf("%s: mounts volume %q, which the pod does not have", where, m.Name)
			}
		}
		for kind, p := range probes(c) {
			checkProbe(t, where+" "+kind, c, p)
		}
	}
}

// probes returns the probes of c by kind.
func probes(c *corev1.Container) map[string]*corev1.Probe {
	out := make(map[string]*corev1.Probe)
	if c.ReadinessProbe != nil {
		out["readinessProbe"] = c.ReadinessProbe
	}
	if c.LivenessProbe != nil {
		out["livenessProbe"] = c.LivenessProbe
	}
	if c.StartupProbe != nil {
		out["startupProbe"] = c.StartupProbe
	}
	return out
}

// checkProbe checks that p has one handler and that its port exists: a
// named port of a probe is looked up in the probe's own container only.
func checkProbe(t *testing.T, where string, c *corev1.Container, p *corev1.Probe) {
	t.Helper()
	n := 0
	for _, set := range []bool{p.HTTPGet != nil, p.TCPSocket != nil, p.GRPC != nil, p.Exec != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%s: %d handlers, want one", where, n)
		return
	}
	if _, err := probePort(c, p); err != nil {
		t.Errorf("%s: %v", where, err)
	}
}

// probePort returns the port number p connects to in c's pod.
func probePort(c *corev1.Container, p *corev1.Probe) (int32, error) {
	switch {
	case p.HTTPGet != nil:
		return containerPort(c, p.HTTPGet.Port)
	case p.TCPSocket != nil:
		return containerPort(c, p.TCPSocket.Port)
	case p.GRPC != nil:
		return containerPort(c, intstr.FromInt32(p.GRPC.Port))
	}
	return 0, fmt.Errorf("probe has no port (exec)")
}

// containerPort resolves port as the kubelet does for c's probes: a number
// is itself, a name must be one of c's own ports.
func containerPort(c *corev1.Container, port intstr.IntOrString) (int32, error) {
	if port.Type == intstr.Int {
		if errs := validation.IsValidPortNum(port.IntValue()); len(errs) > 0 {
			return 0, fmt.Errorf("port %d: %s", port.IntValue(), errs[0])
		}
		return port.IntVal, nil
	}
	for _, p := range c.Ports {
		if p.Name == port.StrVal {
			return p.ContainerPort, nil
		}
	}
	return 0, fmt.Errorf("port %q is not a port of container %s", port.StrVal, c.Name)
}

// podPort resolves a Service's targetPort in pod: a number is itself, a
// name is looked up in all containers, native sidecars included. It returns
// the container that declares the port (nil for a number no container
// declares).
func podPort(pod *corev1.PodSpec, port intstr.IntOrString) (int32, *corev1.Container, error) {
	for _, c := range podContainers(pod) {
		for _, p := range c.Ports {
			if (port.Type == intstr.String && p.Name == port.StrVal) || (port.Type == intstr.Int && p.ContainerPort == port.IntVal) {
				return p.ContainerPort, c, nil
			}
		}
	}
	if port.Type == intstr.Int {
		return port.IntVal, nil, nil
	}
	return 0, nil, fmt.Errorf("no container of the pod has a port named %q", port.StrVal)
}

// checkService checks that s selects the pods of at least one workload of
// its rendering, and that each of its ports leads to a port those pods
// declare.
func checkService(t *testing.T, s *corev1.Service, ws []*workload) {
	t.Helper()
	if len(s.Spec.Selector) == 0 {
		t.Errorf("Service %s: no selector", s.Name)
		return
	}
	var selected []*workload
	for _, w := range ws {
		if w.Namespace == s.Namespace && selects(s.Spec.Selector, w.PodLabels(0)) {
			selected = append(selected, w)
		}
	}
	if len(selected) == 0 {
		// A per-pod Service selects a StatefulSet pod other than 0.
		for _, w := range ws {
			for i := range int(w.Replicas) {
				if w.Namespace == s.Namespace && selects(s.Spec.Selector, w.PodLabels(i)) && !slices.Contains(selected, w) {
					selected = append(selected, w)
				}
			}
		}
	}
	if len(selected) == 0 {
		t.Errorf("Service %s: selector %v matches no pod", s.Name, s.Spec.Selector)
		return
	}
	names := make(map[string]bool)
	for _, p := range s.Spec.Ports {
		if len(s.Spec.Ports) > 1 && p.Name == "" {
			t.Errorf("Service %s: port %d has no name", s.Name, p.Port)
		}
		if names[p.Name] {
			t.Errorf("Service %s: two ports named %q", s.Name, p.Name)
		}
		names[p.Name] = true
		for _, w := range selected {
			_, c, err := podPort(w.Pod(), p.TargetPort)
			switch {
			case err != nil:
				t.Errorf("Service %s port %s: target port %s: %v in %s", s.Name, p.Name, p.TargetPort.String(), err, w)
			case c == nil:
				t.Errorf("Service %s port %s: target port %s is not a declared container port of %s", s.Name, p.Name, p.TargetPort.String(), w)
			case isSidecar(c) && p.TargetPort.Type == intstr.String:
				t.Errorf("Service %s port %s: target port %q names a port of the native sidecar %s: Services resolve those only from Kubernetes 1.32 (kubernetes#127976); give the number", s.Name, p.Name, p.TargetPort.StrVal, c.Name)
			}
		}
	}
}

// checkPDB checks that p selects one workload, and that it lets a drain
// evict at least one pod and never all of them.
func checkPDB(t *testing.T, p *policyv1.PodDisruptionBudget, ws []*workload) {
	t.Helper()
	var selected []*workload
	for _, w := range ws {
		if w.Namespace == p.Namespace && labelSelectorMatches(t, p.Spec.Selector, w.Template.Labels) {
			selected = append(selected, w)
		}
	}
	if len(selected) != 1 {
		t.Errorf("PodDisruptionBudget %s selects %d workloads, want 1", p.Name, len(selected))
		return
	}
	w := selected[0]
	var maxDown int
	switch {
	case p.Spec.MaxUnavailable != nil && p.Spec.MinAvailable == nil:
		v, err := intstr.GetScaledValueFromIntOrPercent(p.Spec.MaxUnavailable, int(w.Replicas), true)
		if err != nil {
			t.Fatalf("PodDisruptionBudget %s: maxUnavailable: %v", p.Name, err)
		}
		maxDown = v
	case p.Spec.MinAvailable != nil && p.Spec.MaxUnavailable == nil:
		v, err := intstr.GetScaledValueFromIntOrPercent(p.Spec.MinAvailable, int(w.Replicas), true)
		if err != nil {
			t.Fatalf("PodDisruptionBudget %s: minAvailable: %v", p.Name, err)
		}
		maxDown = int(w.Replicas) - v
	default:
		t.Errorf("PodDisruptionBudget %s: set one of minAvailable and maxUnavailable", p.Name)
		return
	}
	if maxDown < 1 || maxDown >= int(w.Replicas) {
		t.Errorf("PodDisruptionBudget %s: lets %d of the %d pods of %s be evicted at once, want from 1 to %d",
			p.Name, maxDown, w.Replicas, w, w.Replicas-1)
	}
}

// TestPodSecurity checks every container of every workload against the
// restricted Pod Security Standard and the resource settings a platform
// expects: non-root with a numeric user (the images name theirs, which the
// kubelet cannot check), no privilege escalation, no capabilities, a
// read-only root filesystem, the RuntimeDefault seccomp profile, CPU and
// memory requests and a memory limit, no service account token, and images
// pinned to a tag.
func TestPodSecurity(t *testing.T) {
	for _, w := range allWorkloads(t) {
		pod := w.Pod()
		psc := pod.SecurityContext
		if psc == nil {
			psc = &corev1.PodSecurityContext{}
		}
		if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
			t.Errorf("%s: automountServiceAccountToken is not false (nothing here calls the Kubernetes API)", w)
		}
		if pod.HostNetwork || pod.HostPID || pod.HostIPC {
			t.Errorf("%s: shares a host namespace", w)
		}
		for _, v := range pod.Volumes {
			if v.HostPath != nil {
				t.Errorf("%s: hostPath volume %s", w, v.Name)
			}
		}
		for _, c := range allContainers(pod) {
			where := fmt.Sprintf("%s container %s", w, c.Name)
			sc := c.SecurityContext
			if sc == nil {
				t.Errorf("%s: no securityContext", where)
				continue
			}
			nonRoot := sc.RunAsNonRoot
			if nonRoot == nil {
				nonRoot = psc.RunAsNonRoot
			}
			if nonRoot == nil || !*nonRoot {
				t.Errorf("%s: runAsNonRoot is not true", where)
			}
			user := sc.RunAsUser
			if user == nil {
				user = psc.RunAsUser
			}
			if user == nil || *user == 0 {
				t.Errorf("%s: no non-zero runAsUser: the kubelet cannot check runAsNonRoot against an image's named user", where)
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Errorf("%s: allowPrivilegeEscalation is not false", where)
			}
			if sc.Privileged != nil && *sc.Privileged {
				t.Errorf("%s: privileged", where)
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("%s: readOnlyRootFilesystem is not true", where)
			}
			if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
				t.Errorf("%s: capabilities must drop ALL and add none", where)
			}
			seccomp := sc.SeccompProfile
			if seccomp == nil {
				seccomp = psc.SeccompProfile
			}
			if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("%s: seccomp profile is not RuntimeDefault", where)
			}
			req, lim := c.Resources.Requests, c.Resources.Limits
			if req.Cpu().IsZero() || req.Memory().IsZero() {
				t.Errorf("%s: no CPU or memory request", where)
			}
			if lim.Memory().IsZero() {
				t.Errorf("%s: no memory limit", where)
			} else if lim.Memory().Cmp(*req.Memory()) < 0 {
				t.Errorf("%s: memory limit %s below the request %s", where, lim.Memory(), req.Memory())
			}
			if _, tag, ok := strings.Cut(lastPathElem(c.Image), ":"); !ok || tag == "" || tag == "latest" {
				t.Errorf("%s: image %s is not pinned to a tag", where, c.Image)
			}
		}
	}
}

func lastPathElem(image string) string {
	if i := strings.LastIndexByte(image, '/'); i >= 0 {
		return image[i+1:]
	}
	return image
}
