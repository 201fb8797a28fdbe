package k8s_test

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	egv1a1 "github.com/envoyproxy/gateway/api/v1alpha1"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwapiv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
)

// gatewayDir is the Envoy Gateway kustomization.
const gatewayDir = "gateway"

// TestGatewayWiring checks k8s/gateway as Envoy Gateway would read it:
// every HTTPRoute attaches to a Gateway of the rendering and leads to a
// Service there whose pods declare the port; every SecurityPolicy targets
// a route of it and sends its checks over gRPC to a Service that leads to
// the standalone floodgate's gRPC port, through a ReferenceGrant when it
// crosses namespaces; it fails open within a timeout above floodgate's
// memcached timeout and at most 1s; it sends floodgate only the headers its
// key reads and X-Floodgate-Degraded (which floodgate removes when a client
// forges it), never Authorization or Cookie; and the Gateway's Envoy pods
// carry the label floodgate's NetworkPolicy admits.
func TestGatewayWiring(t *testing.T) {
	r := mustRender(t, gatewayDir)
	gateways := typed[*gwapiv1.Gateway](r)
	if len(gateways) == 0 {
		t.Fatal("k8s/gateway has no Gateway")
	}
	for _, g := range gateways {
		checkGatewayProxy(t, r, g)
	}
	routes := typed[*gwapiv1.HTTPRoute](r)
	for _, hr := range routes {
		checkRoute(t, r, hr)
	}
	policies := typed[*egv1a1.SecurityPolicy](r)
	if len(policies) == 0 {
		t.Fatal("k8s/gateway has no SecurityPolicy")
	}
	covered := make(map[string]bool)
	for _, sp := range policies {
		for _, ref := range sp.Spec.TargetRefs {
			if ref.Kind != "HTTPRoute" || find[*gwapiv1.HTTPRoute](t, r, string(ref.Name)).Namespace != sp.Namespace {
				t.Errorf("SecurityPolicy %s: target %s %s is not an HTTPRoute of its namespace", sp.Name, ref.Kind, ref.Name)
			}
			covered[string(ref.Name)] = true
		}
		checkExtAuth(t, r, sp)
	}
	for _, hr := range routes {
		if !covered[hr.Name] {
			t.Errorf("HTTPRoute %s: no SecurityPolicy targets it: its requests are not limited", hr.Name)
		}
	}
}

// checkGatewayProxy checks that g's Envoy pods, configured by the
// EnvoyProxy its infrastructure names, carry the ext_authz client label.
func checkGatewayProxy(t *testing.T, r *rendering, g *gwapiv1.Gateway) {
	t.Helper()
	if g.Spec.Infrastructure == nil || g.Spec.Infrastructure.ParametersRef == nil || g.Spec.Infrastructure.ParametersRef.Kind != "EnvoyProxy" {
		t.Errorf("Gateway %s: no infrastructure.parametersRef to an EnvoyProxy: its pods would lack the label floodgate's NetworkPolicy admits", g.Name)
		return
	}
	ep := find[*egv1a1.EnvoyProxy](t, r, g.Spec.Infrastructure.ParametersRef.Name)
	var labels map[string]string
	if k := ep.Spec.Provider; k != nil && k.Kubernetes != nil && k.Kubernetes.EnvoyDeployment != nil && k.Kubernetes.EnvoyDeployment.Pod != nil {
		labels = k.Kubernetes.EnvoyDeployment.Pod.Labels
	}
	if labels[extAuthzClientLabel] != "true" {
		t.Errorf("EnvoyProxy %s: pod labels %v lack %s: \"true\"", ep.Name, labels, extAuthzClientLabel)
	}
}

// checkRoute checks that hr attaches to a Gateway of r and leads to
// Services of r on ports their pods declare.
func checkRoute(t *testing.T, r *rendering, hr *gwapiv1.HTTPRoute) {
	t.Helper()
	for _, p := range hr.Spec.ParentRefs {
		find[*gwapiv1.Gateway](t, r, string(p.Name))
	}
	for _, rule := range hr.Spec.Rules {
		for _, m := range rule.Matches {
			if m.Path != nil && m.Path.Type != nil && *m.Path.Type == gwapiv1.PathMatchRegularExpression {
				checkLoginRegex(t, hr.Name, *m.Path.Value)
			}
		}
		for _, b := range rule.BackendRefs {
			s := find[*corev1.Service](t, r, string(b.Name))
			if s.Namespace != hr.Namespace || b.Port == nil || !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == *b.Port }) {
				t.Errorf("HTTPRoute %s: backend %s port %v is not a port of the Service", hr.Name, b.Name, b.Port)
			}
		}
	}
}

// checkExtAuth checks the extAuth of sp.
func checkExtAuth(t *testing.T, r *rendering, sp *egv1a1.SecurityPolicy) {
	t.Helper()
	ea := sp.Spec.ExtAuth
	if ea == nil || ea.GRPC == nil {
		t.Fatalf("SecurityPolicy %s: no extAuth.grpc", sp.Name)
	}
	if ea.FailOpen == nil || !*ea.FailOpen {
		t.Errorf("SecurityPolicy %s: failOpen is not true: every request would fail while floodgate is unreachable", sp.Name)
	}
	var timeout time.Duration
	if ea.Timeout != nil {
		timeout, _ = time.ParseDuration(string(*ea.Timeout))
	}
	if timeout <= 0 || timeout > time.Second {
		t.Errorf("SecurityPolicy %s: timeout %v: set one up to 1s (Envoy Gateway's default is 10s)", sp.Name, ea.Timeout)
	}
	for _, h := range ea.HeadersToExtAuth {
		if h := strings.ToLower(h); h == "authorization" || h == "cookie" {
			t.Errorf("SecurityPolicy %s: sends %s to floodgate, which no key reads", sp.Name, h)
		}
	}
	if len(ea.HeadersToExtAuth) > 0 && !slices.Contains(ea.HeadersToExtAuth, "x-floodgate-degraded") {
		t.Errorf("SecurityPolicy %s: headersToExtAuth lacks x-floodgate-degraded: floodgate removes a forged one only when it sees it", sp.Name)
	}
	if len(ea.HeadersToExtAuth) == 0 {
		t.Errorf("SecurityPolicy %s: no headersToExtAuth: every header, Authorization and Cookie included, goes to floodgate", sp.Name)
	}
	if ext := contextExtensions(t, sp); ext["floodgate.key"] == "xff" && !slices.Contains(ea.HeadersToExtAuth, "x-forwarded-for") {
		t.Errorf("SecurityPolicy %s: floodgate.key xff, but X-Forwarded-For is not in headersToExtAuth", sp.Name)
	}
	refs := ea.GRPC.BackendRefs
	//lint:ignore SA1019 the deprecated backendRef is read only to refuse it
	deprecated := ea.GRPC.BackendRef
	if len(refs) != 1 || deprecated != nil {
		t.Fatalf("SecurityPolicy %s: want one backendRefs entry, got %d (and backendRef %v)", sp.Name, len(refs), deprecated)
	}
	ref := refs[0]
	ns := sp.Namespace
	if ref.Namespace != nil {
		ns = string(*ref.Namespace)
	}
	if ns != sp.Namespace && !referenceGranted(r, sp.Namespace, ns, string(ref.Name)) {
		t.Errorf("SecurityPolicy %s: Service %s/%s in another namespace without a ReferenceGrant there", sp.Name, ns, ref.Name)
	}
	if ref.Port == nil {
		t.Fatalf("SecurityPolicy %s: backend without a port", sp.Name)
	}
	targets := serviceTargets(t, string(ref.Name), ns, int32(*ref.Port))
	if len(targets) == 0 {
		t.Fatalf("SecurityPolicy %s: %s/%s:%d leads to no floodgate", sp.Name, ns, ref.Name, *ref.Port)
	}
	for _, fc := range targets {
		if mt := envDuration(t, fc.String(), floodgateEnv(t, fc), "FLOODGATE_MEMCACHE_TIMEOUT"); mt >= timeout {
			t.Errorf("%s: FLOODGATE_MEMCACHE_TIMEOUT %v is not below SecurityPolicy %s's timeout %v", fc, mt, sp.Name, timeout)
		}
	}
}

// referenceGranted reports whether a ReferenceGrant of r in namespace to
// lets SecurityPolicies of namespace from name the Service name.
func referenceGranted(r *rendering, from, to, name string) bool {
	for _, g := range typed[*gwapiv1beta1.ReferenceGrant](r) {
		if g.Namespace != to {
			continue
		}
		fromOK := slices.ContainsFunc(g.Spec.From, func(f gwapiv1beta1.ReferenceGrantFrom) bool {
			return f.Group == egv1a1.GroupName && f.Kind == egv1a1.KindSecurityPolicy && string(f.Namespace) == from
		})
		toOK := slices.ContainsFunc(g.Spec.To, func(t gwapiv1beta1.ReferenceGrantTo) bool {
			return t.Group == "" && t.Kind == "Service" && (t.Name == nil || string(*t.Name) == name)
		})
		if fromOK && toOK {
			return true
		}
	}
	return false
}

// contextExtensions returns the literal context extensions of sp's
// extAuth.
func contextExtensions(t *testing.T, sp *egv1a1.SecurityPolicy) map[string]string {
	t.Helper()
	out := make(map[string]string)
	for _, ce := range sp.Spec.ExtAuth.ContextExtensions {
		if ce.Type != egv1a1.ContextExtensionValueTypeValue || ce.Value == nil {
			t.Errorf("SecurityPolicy %s: context extension %s is not a literal Value", sp.Name, ce.Name)
			continue
		}
		out[ce.Name] = *ce.Value
	}
	return out
}

// TestGatewayContextExtensions sends the real floodgate, configured as the
// standalone Deployment is, a Check with each SecurityPolicy's context
// extensions and only the headers the policy lets through, as Envoy
// Gateway's ext_authz filter would: floodgate must take every extension
// (none counted invalid) and answer with the limit, window and scope they
// name.
func TestGatewayContextExtensions(t *testing.T) {
	var fc floodgateContainer
	for _, c := range floodgateContainers(t) {
		if c.W.Render.Dir == "overlays/standalone" {
			fc = c
		}
	}
	p := startFloodgateEnv(t, fc, false)
	env := floodgateEnv(t, fc)
	conn, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", p.grpcPort), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	for _, sp := range typed[*egv1a1.SecurityPolicy](mustRender(t, gatewayDir)) {
		t.Run(sp.Name, func(t *testing.T) {
			ext := contextExtensions(t, sp)
			headers := map[string]string{":path": "/", ":method": "GET", ":authority": "my-api.example"}
			for _, h := range sp.Spec.ExtAuth.HeadersToExtAuth {
				if h == "x-forwarded-for" {
					headers[h] = "203.0.113.7"
				}
			}
			req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
				Source:            &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "198.51.100.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 40000}}}}},
				Request:           &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/", Headers: headers}},
				ContextExtensions: ext,
			}}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			resp, err := client.Check(ctx, req)
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			if codes.Code(resp.GetStatus().GetCode()) != codes.OK {
				t.Fatalf("Check with %v: status %v, want OK", ext, resp.GetStatus())
			}
			limit := cmpOr(ext["floodgate.limit"], env["FLOODGATE_LIMIT"])
			window, err := time.ParseDuration(cmpOr(ext["floodgate.window"], env["FLOODGATE_WINDOW"]))
			if err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf(`"%s";q=%s;w=%d`, cmpOr(ext["floodgate.scope"], "default"), limit, int(window.Seconds()))
			var got []string
			for _, h := range resp.GetOkResponse().GetResponseHeadersToAdd() {
				if http.CanonicalHeaderKey(h.GetHeader().GetKey()) == "Ratelimit-Policy" {
					got = append(got, h.GetHeader().GetValue())
				}
			}
			if len(got) != 1 || got[0] != want {
				t.Errorf("Check with %v: RateLimit-Policy %q, want %q", ext, got, want)
			}
		})
	}
	_, body := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", p.adminPort))
	for line := range strings.Lines(body) {
		if strings.HasPrefix(line, "floodgate_invalid_overrides_total") && !strings.HasSuffix(strings.TrimSpace(line), " 0") {
			t.Errorf("floodgate counted invalid context extensions: %s", strings.TrimSpace(line))
		}
	}
}

// checkLoginRegex checks a RegularExpression path match as Envoy applies
// it (RE2, against the whole normalized path): a login route's must take
// every spelling of /login an application may take for it, as Envoy has
// normalized them (percent-encoded letters decoded, reserved characters
// left encoded), and not other paths; envoy/edge_test.go sends the same
// spellings through front-proxy.yaml's expression.
func checkLoginRegex(t *testing.T, route, expr string) {
	t.Helper()
	re, err := regexp.Compile("^(?:" + expr + ")$")
	if err != nil {
		t.Fatalf("HTTPRoute %s: path %q: %v", route, expr, err)
	}
	if !re.MatchString("/login") {
		return // not a login route
	}
	for _, p := range []string{"/LOGIN", "/Login", "/login/", "/Login/Reset", "/login;x", "/login;jsessionid=0123", "/login%3Bx", "/login%20", "/login.json"} {
		if !re.MatchString(p) {
			t.Errorf("HTTPRoute %s: path %q does not match %s: that spelling escapes the login limit", route, expr, p)
		}
	}
	for _, p := range []string{"/loginfoo", "/logi", "/api/login"} {
		if re.MatchString(p) {
			t.Errorf("HTTPRoute %s: path %q matches %s, which is not the login", route, expr, p)
		}
	}
}
