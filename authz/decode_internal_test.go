package authz

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
)

// TestUnmarshalCheckDecodesHeaders checks that a request as Envoy sends
// it takes unmarshalCheck's own path (the equivalence with protobuf-go is
// TestCodecUnmarshalMatchesProto's), and that its header names cost no
// allocation.
func TestUnmarshalCheckDecodesHeaders(t *testing.T) {
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/s"}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method:  "GET",
			Headers: map[string]string{":path": "/", ":method": "GET", "x-forwarded-for": "10.0.0.1", "x-custom": "v"},
		}},
	}}
	b, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var s headerScan
	entries, ok := s.scan(b, nil)
	if !ok {
		t.Fatal("scan = false for a request as Envoy sends it")
	}
	if _, ok := decodeHeaders(b, entries); !ok || len(entries) != 4 {
		t.Fatalf("decodeHeaders: ok %v, %d entries, want true and 4", ok, len(entries))
	}
	if n := testing.AllocsPerRun(100, func() { _ = headerName([]byte(":authority")) }); n != 0 {
		t.Errorf("headerName(:authority) allocates %v times, want 0", n)
	}
}
