package k8s_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/floodgate-rl/floodgate/internal/testutil"
)

// strictDNSCluster returns the Envoy cluster that the comments of
// base/service.yaml give for a plain Envoy (the lines "#   - name:
// floodgate" and below, uncommented).
func strictDNSCluster(t *testing.T) string {
	t.Helper()
	src, err := os.ReadFile("base/service.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	in := false
	for line := range strings.Lines(string(src)) {
		switch {
		case strings.HasPrefix(line, "#   - name: floodgate"):
			in = true
		case in && !strings.HasPrefix(line, "#   "):
			in = false
		}
		if in {
			lines = append(lines, strings.TrimPrefix(line, "#   "))
		}
	}
	if len(lines) == 0 {
		t.Fatal("base/service.yaml no longer shows a floodgate cluster for Envoy")
	}
	return strings.Join(lines, "")
}

// TestStrictDNSClusterSnippet checks that the cluster base/service.yaml
// tells a plain Envoy to copy works as it is: it is a STRICT_DNS cluster of
// the headless Service on floodgate's gRPC port, speaks HTTP/2, has gRPC
// health checks and circuit breakers of its own, and the real Envoy
// validates it.
func TestStrictDNSClusterSnippet(t *testing.T) {
	snippet := strictDNSCluster(t)
	var clusters []map[string]any
	if err := yaml.Unmarshal([]byte(snippet), &clusters); err != nil || len(clusters) != 1 {
		t.Fatalf("the snippet is not one cluster (%v):\n%s", err, snippet)
	}
	c := clusters[0]
	if c["type"] != "STRICT_DNS" {
		t.Errorf("type %v, want STRICT_DNS", c["type"])
	}
	for _, want := range []string{"http2_protocol_options", "grpc_health_check", "circuit_breakers", "max_pending_requests",
		"floodgate-headless.floodgate.svc.cluster.local", "port_value: 9001"} {
		if !strings.Contains(snippet, want) {
			t.Errorf("the snippet lacks %s", want)
		}
	}
	headless := find[*corev1.Service](t, mustRender(t, "base"), "floodgate-headless")
	if headless.Spec.ClusterIP != "None" || headless.Spec.Ports[0].Port != 9001 {
		t.Errorf("Service floodgate-headless is not headless on 9001: %+v", headless.Spec)
	}

	testutil.EnvoyPath(t)
	indented := regexp.MustCompile(`(?m)^`).ReplaceAllString(snippet, "  ")
	boot := "static_resources:\n  clusters:\n" + indented
	path := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(path, []byte(boot), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := testutil.ValidateEnvoyConfig(t, path); err != nil {
		t.Fatalf("Envoy refuses the snippet: %v\n%s", err, boot)
	}
}
