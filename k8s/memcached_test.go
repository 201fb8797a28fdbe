package k8s_test

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingk8sv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// memcachedPort returns the port a memcached container listens on: its -p
// argument, else memcached's default 11211.
func memcachedPort(t *testing.T, c *corev1.Container) int32 {
	t.Helper()
	args := append(slices.Clone(c.Command), c.Args...)
	port := int32(11211)
	for i, a := range args {
		v, ok := "", false
		switch {
		case (a == "-p" || a == "--port") && i+1 < len(args):
			v, ok = args[i+1], true
		case strings.HasPrefix(a, "--port="):
			v, ok = strings.TrimPrefix(a, "--port="), true
		}
		if ok {
			n, err := strconv.ParseUint(v, 10, 16)
			if err != nil {
				t.Fatalf("memcached container %s: port %q: %v", c.Name, v, err)
			}
			port = int32(n)
		}
	}
	return port
}

// memcachedMemoryMiB returns memcached's -m: MiB of item memory (default 64).
func memcachedMemoryMiB(t *testing.T, c *corev1.Container) int64 {
	t.Helper()
	args := append(slices.Clone(c.Command), c.Args...)
	mib := int64(64)
	for i, a := range args {
		if (a == "-m" || a == "--memory-limit") && i+1 < len(args) {
			n, err := strconv.ParseInt(args[i+1], 10, 64)
			if err != nil {
				t.Fatalf("memcached -m %q: %v", args[i+1], err)
			}
			mib = n
		}
	}
	return mib
}

// memcachedSet returns the memcached StatefulSet of the memcached overlay,
// its container and the port it listens on.
func memcachedSet(t *testing.T) (*workload, *corev1.Container, int32) {
	t.Helper()
	r := mustRender(t, "overlays/memcached")
	for _, w := range workloads(r) {
		if w.Kind != "StatefulSet" || w.Name != "floodgate-memcached" {
			continue
		}
		if len(w.Pod().Containers) != 1 {
			t.Fatalf("%s: %d containers, want memcached alone", w, len(w.Pod().Containers))
		}
		c := &w.Pod().Containers[0]
		port := memcachedPort(t, c)
		declared := false
		for _, p := range c.Ports {
			declared = declared || p.ContainerPort == port
		}
		if !declared {
			t.Fatalf("%s: memcached listens on %d, which the container does not declare", w, port)
		}
		return w, c, port
	}
	t.Fatal("overlays/memcached: no StatefulSet floodgate-memcached")
	return nil, nil, 0
}

// TestMemcachedServers checks the memcached servers every floodgate counts
// in. All floodgates, standalone or sidecar, list the same servers in the
// same order (each sends a requestor to the server its hash picks among
// them, so two lists would split one requestor's count). Each entry is
// resolved as cluster DNS would resolve it from the floodgate's namespace:
//
//   - dns+NAME:PORT (floodgate looks NAME up every 10s and uses every
//     address) must be the headless Service of memcached's namespace that
//     selects every memcached pod and publishes only ready ones, on the port
//     memcached listens on;
//   - HOST:PORT must be a ClusterIP Service in front of exactly one
//     memcached pod (a pod's own DNS name is refused: floodgate resolves
//     such a name once, at start, and the pod's address changes when it is
//     rescheduled).
//
// The list must cover every replica of the StatefulSet once. The memory
// limit must leave room above memcached's -m.
func TestMemcachedServers(t *testing.T) {
	sts, mc, mcPort := memcachedSet(t)
	r := sts.Render

	limit := mc.Resources.Limits.Memory().Value()
	if m := memcachedMemoryMiB(t, mc); limit < (m+64)<<20 {
		t.Errorf("memcached -m %d MiB with a memory limit of %d MiB: leave at least 64 MiB for connections and hash tables, or the kernel kills it", m, limit>>20)
	}

	var first []string
	var firstFrom floodgateContainer
	for _, fc := range floodgateContainers(t) {
		servers := strings.Split(floodgateEnv(t, fc)["FLOODGATE_MEMCACHE_SERVERS"], ",")
		if first == nil {
			first, firstFrom = servers, fc
		} else if !slices.Equal(servers, first) {
			t.Errorf("%s lists memcached servers %q, %s lists %q: every floodgate must list the same, in the same order",
				fc, servers, firstFrom, first)
		}
		clientNS := fc.W.Namespace
		if clientNS == "" {
			clientNS = "default" // base renders without a namespace
		}
		covered := make(map[int]string)
		for _, entry := range servers {
			ordinals, err := memcachedEntry(t, r, sts, mcPort, clientNS, entry)
			if err != nil {
				t.Errorf("%s: memcached server %s: %v", fc, entry, err)
				continue
			}
			for _, ordinal := range ordinals {
				if prev, ok := covered[ordinal]; ok {
					t.Errorf("%s: %s and %s both lead to %s-%d", fc, prev, entry, sts.Name, ordinal)
				}
				covered[ordinal] = entry
			}
		}
		for i := range int(sts.Replicas) {
			if _, ok := covered[i]; !ok {
				t.Errorf("%s: no memcached server leads to %s-%d: it would hold no counters", fc, sts.Name, i)
			}
		}
	}
}

// memcachedEntry returns the ordinals of the memcached pods that one entry
// of FLOODGATE_MEMCACHE_SERVERS leads to, from a pod in namespace clientNS.
func memcachedEntry(t *testing.T, r *rendering, sts *workload, mcPort int32, clientNS, entry string) ([]int, error) {
	t.Helper()
	hostport, discover := strings.CutPrefix(entry, "dns+")
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("port %q: %v", portStr, err)
	}
	s, err := resolveService(t, r, sts, clientNS, host)
	if err != nil {
		return nil, err
	}
	if s.Namespace != sts.Namespace {
		return nil, fmt.Errorf("Service %s is not in memcached's namespace %s", s.Name, sts.Namespace)
	}
	ordinals, err := servicePods(s, sts, mcPort, int32(port))
	if err != nil {
		return nil, err
	}
	headless := s.Spec.ClusterIP == corev1.ClusterIPNone
	switch {
	case discover && !headless:
		return nil, fmt.Errorf("Service %s has a cluster IP: dns+ would find that one address, not the servers; use the headless Service", s.Name)
	case discover && s.Spec.PublishNotReadyAddresses:
		return nil, fmt.Errorf("Service %s publishes pods that are not ready: floodgate would send requestors to a server that cannot answer", s.Name)
	case discover && len(ordinals) != int(sts.Replicas):
		return nil, fmt.Errorf("Service %s selects memcached pods %v of %d: dns+ would miss servers", s.Name, ordinals, sts.Replicas)
	case !discover && headless:
		return nil, fmt.Errorf("Service %s is headless: its name resolves to every pod's address, and floodgate would take one; write dns+%s", s.Name, hostport)
	case !discover && len(ordinals) != 1:
		return nil, fmt.Errorf("Service %s selects memcached pods %v, want exactly one", s.Name, ordinals)
	}
	return ordinals, nil
}

// resolveService resolves host as a pod in namespace clientNS would (its
// search path: <clientNS>.svc.cluster.local, svc.cluster.local,
// cluster.local) to a Service of r. A memcached pod's own DNS name is an
// error.
func resolveService(t *testing.T, r *rendering, sts *workload, clientNS, host string) (*corev1.Service, error) {
	t.Helper()
	const domain = ".cluster.local"
	candidates := []string{host}
	if !strings.HasSuffix(host, domain) {
		candidates = []string{host + "." + clientNS + ".svc" + domain, host + ".svc" + domain, host + domain}
	}
	for _, fqdn := range candidates {
		labels := strings.Split(strings.TrimSuffix(fqdn, domain), ".")
		switch {
		case len(labels) == 3 && labels[2] == "svc":
			svcName, ns := labels[0], labels[1]
			for _, s := range typed[*corev1.Service](r) {
				if s.Name == svcName && s.Namespace == ns {
					return s, nil
				}
			}
		case len(labels) == 4 && labels[3] == "svc":
			pod, svcName, ns := labels[0], labels[1], labels[2]
			if ns == sts.Namespace && svcName == find[*appsv1.StatefulSet](t, r, sts.Name).Spec.ServiceName &&
				strings.HasPrefix(pod, sts.Name+"-") {
				return nil, fmt.Errorf("%s is the DNS name of pod %s: floodgate resolves it once, at start, and keeps the address after the pod moves; use dns+ and the headless Service", host, pod)
			}
		}
	}
	return nil, fmt.Errorf("%s resolves to no Service of k8s/%s from namespace %s", host, r.Dir, clientNS)
}

// servicePods returns the ordinals of the memcached pods Service s selects,
// checking that its port leads to memcached's.
func servicePods(s *corev1.Service, sts *workload, mcPort, port int32) ([]int, error) {
	var ordinals []int
	for i := range int(sts.Replicas) {
		if selects(s.Spec.Selector, sts.PodLabels(i)) {
			ordinals = append(ordinals, i)
		}
	}
	for _, p := range s.Spec.Ports {
		if p.Port != port {
			continue
		}
		target, _, err := podPort(sts.Pod(), p.TargetPort)
		if err != nil {
			return nil, fmt.Errorf("Service %s port %d: %v", s.Name, port, err)
		}
		if target != mcPort {
			return nil, fmt.Errorf("Service %s port %d leads to port %d, memcached listens on %d", s.Name, port, target, mcPort)
		}
		if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
			return nil, fmt.Errorf("Service %s port %d: protocol %s", s.Name, port, p.Protocol)
		}
		return ordinals, nil
	}
	return nil, fmt.Errorf("Service %s has no port %d", s.Name, port)
}

// namespaceLabels returns the labels of every Namespace object of every
// rendering.
func namespaceLabels(t *testing.T) map[string]map[string]string {
	t.Helper()
	out := make(map[string]map[string]string)
	for _, r := range allRenderings(t) {
		for _, ns := range typed[*corev1.Namespace](r) {
			out[ns.Name] = ns.Labels
		}
	}
	return out
}

// TestMemcachedNetworkPolicy evaluates the NetworkPolicies of the memcached
// overlay as a cluster would: exactly one selects the memcached pods, for
// ingress, on memcached's port only; it admits every pod that runs floodgate
// (standalone, sidecar, in-pod), each in its namespace with that
// namespace's labels; and it admits no other pod: not a pod without the
// label beside floodgate, not a labelled pod in a namespace without it, not
// memcached itself.
func TestMemcachedNetworkPolicy(t *testing.T) {
	sts, _, mcPort := memcachedSet(t)
	r := sts.Render
	var policies []*networkingk8sv1.NetworkPolicy
	for _, p := range typed[*networkingk8sv1.NetworkPolicy](r) {
		if p.Namespace == sts.Namespace && labelSelectorMatches(t, &p.Spec.PodSelector, sts.PodLabels(0)) {
			policies = append(policies, p)
		}
	}
	if len(policies) != 1 {
		t.Fatalf("%d NetworkPolicies select the memcached pods, want 1", len(policies))
	}
	np := policies[0]
	if !slices.Contains(np.Spec.PolicyTypes, networkingk8sv1.PolicyTypeIngress) {
		t.Fatalf("NetworkPolicy %s: policyTypes %v has no Ingress", np.Name, np.Spec.PolicyTypes)
	}
	if len(np.Spec.Ingress) == 0 {
		t.Fatalf("NetworkPolicy %s admits nothing", np.Name)
	}
	for i, rule := range np.Spec.Ingress {
		if len(rule.From) == 0 {
			t.Errorf("NetworkPolicy %s rule %d: no from: it admits every pod and address", np.Name, i)
		}
		if len(rule.Ports) == 0 {
			t.Errorf("NetworkPolicy %s rule %d: no ports: it admits every port", np.Name, i)
		}
		for _, p := range rule.Ports {
			proto := corev1.ProtocolTCP
			if p.Protocol != nil {
				proto = *p.Protocol
			}
			port, _, err := podPort(sts.Pod(), ptrOr(p.Port, intstr.FromInt32(0)))
			if err != nil || proto != corev1.ProtocolTCP || port != mcPort || p.EndPort != nil {
				t.Errorf("NetworkPolicy %s rule %d: port %v/%s, want only %d/TCP", np.Name, i, p.Port, proto, mcPort)
			}
		}
		for _, peer := range rule.From {
			if peer.IPBlock != nil {
				t.Errorf("NetworkPolicy %s rule %d: ipBlock %v admits by address, not only floodgate", np.Name, i, peer.IPBlock.CIDR)
			}
		}
	}

	nsLabels := namespaceLabels(t)
	admits := func(ns string, podLabels map[string]string) bool {
		for _, rule := range np.Spec.Ingress {
			for _, peer := range rule.From {
				nsOK := ns == np.Namespace
				if peer.NamespaceSelector != nil {
					nsOK = labelSelectorMatches(t, peer.NamespaceSelector, nsLabels[ns])
				}
				podOK := true
				if peer.PodSelector != nil {
					podOK = labelSelectorMatches(t, peer.PodSelector, podLabels)
				}
				if nsOK && podOK && peer.IPBlock == nil {
					return true
				}
			}
		}
		return false
	}

	clients := 0
	for _, fc := range floodgateContainers(t) {
		ns := fc.W.Namespace
		if ns == "" {
			continue // base: the standalone overlay puts it in a namespace
		}
		if _, ok := nsLabels[ns]; !ok {
			t.Errorf("%s: no kustomization creates its namespace %s, so its labels are unknown", fc, ns)
			continue
		}
		clients++
		if !admits(ns, fc.W.Template.Labels) {
			t.Errorf("%s: NetworkPolicy %s does not let its pods (labels %v, namespace %s labels %v) reach memcached",
				fc, np.Name, fc.W.Template.Labels, ns, nsLabels[ns])
		}
	}
	if clients < 3 {
		t.Errorf("checked %d floodgate workloads, want the standalone, sidecar and in-pod ones", clients)
	}

	floodgateLabels := floodgateContainers(t)[0].W.Template.Labels
	strangers := []struct {
		what, ns string
		labels   map[string]string
	}{
		{"an unlabelled pod in memcached's namespace", sts.Namespace, map[string]string{"app.kubernetes.io/name": "other"}},
		{"memcached itself", sts.Namespace, sts.PodLabels(0)},
		{"a pod labelled like floodgate's in a namespace without the label", "default", floodgateLabels},
	}
	nsLabels["default"] = map[string]string{"kubernetes.io/metadata.name": "default"}
	for _, s := range strangers {
		if admits(s.ns, s.labels) {
			t.Errorf("NetworkPolicy %s lets %s (labels %v) reach memcached", np.Name, s.what, s.labels)
		}
	}
}

func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// TestMemcachedGuaranteed checks that memcached's pods are of the
// Guaranteed QoS class, as the kubelet decides it: every container sets CPU
// and memory limits, and requests equal to them. Such a pod is the last of
// its node to be evicted or killed for memory, and memcached's loss resets
// every count it holds.
func TestMemcachedGuaranteed(t *testing.T) {
	sts, _, _ := memcachedSet(t)
	for _, c := range allContainers(sts.Pod()) {
		for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			lim, ok := c.Resources.Limits[res]
			if !ok || lim.IsZero() {
				t.Errorf("%s container %s: no %s limit: the pod is not Guaranteed", sts, c.Name, res)
				continue
			}
			// A missing request defaults to the limit.
			if req, ok := c.Resources.Requests[res]; ok && req.Cmp(lim) != 0 {
				t.Errorf("%s container %s: %s request %s differs from the limit %s: the pod is Burstable", sts, c.Name, res, req.String(), lim.String())
			}
		}
	}
}
