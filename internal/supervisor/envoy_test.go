package supervisor

import (
	"slices"
	"strings"
	"testing"
)

func TestRenderEnvoyConfig(t *testing.T) {
	src := []byte(`admin:
  address:
    socket_address: {address: 127.0.0.1, port_value: 9901}
listeners:
- address:
    socket_address: {address: 0.0.0.0, port_value: 10000}
clusters:
- endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 9001}}}
- socket_address:
    address: 10.0.0.0
    port_value:   8080
`)
	if got, want := ConfigPorts(src), []int{9901, 10000, 9001, 8080}; !slices.Equal(got, want) {
		t.Errorf("ConfigPorts = %v, want %v", got, want)
	}

	out, err := RenderEnvoyConfig(src, map[int]int{9901: 1, 10000: 2, 9001: 3, 8080: 4})
	if err != nil {
		t.Fatal(err)
	}
	want := strings.NewReplacer(
		"port_value: 9901", "port_value: 1",
		"address: 0.0.0.0, port_value: 10000", "address: 127.0.0.1, port_value: 2",
		"port_value: 9001", "port_value: 3",
		"port_value:   8080", "port_value:   4",
	).Replace(string(src))
	if string(out) != want {
		t.Errorf("rendered:\n%s\nwant:\n%s", out, want)
	}
	if !strings.Contains(string(src), "port_value: 9901") {
		t.Error("RenderEnvoyConfig changed its input")
	}

	if _, err := RenderEnvoyConfig(src, map[int]int{9901: 1, 10000: 2}); err == nil ||
		!strings.Contains(err.Error(), "[9001 8080]") {
		t.Errorf("missing ports: err = %v, want one naming [9001 8080]", err)
	}
}
