package authz_test

import (
	"context"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/floodgate-rl/floodgate/authz"
	"github.com/floodgate-rl/floodgate/limiter"
)

// codecResponses returns the responses floodgate sends, built by a real
// Server: allowed with and without headers, denied, and a large denied one
// (a long scope in every header) past gRPC's buffer-pooling threshold.
func codecResponses(t testing.TB) map[string]*authv3.CheckResponse {
	t.Helper()
	allowed := func(_ context.Context, req limiter.Request, _ time.Time) (limiter.Decision, error) {
		return limiter.Decision{Allowed: true, Limit: req.Limit, Window: req.Window, Remaining: 7}, nil
	}
	denied := func(_ context.Context, req limiter.Request, _ time.Time) (limiter.Decision, error) {
		return limiter.Decision{Limit: req.Limit, Window: req.Window, RetryAfter: 3 * time.Second}, nil
	}
	long := map[string]string{"floodgate.scope": strings.Repeat("s", 60)}
	out := map[string]*authv3.CheckResponse{}
	for _, c := range []struct {
		name    string
		headers bool
		fn      func(context.Context, limiter.Request, time.Time) (limiter.Decision, error)
		ext     map[string]string
	}{
		{"allowed", true, allowed, nil},
		{"allowed/no-headers", false, allowed, nil},
		{"denied", true, denied, nil},
		{"denied/long-scope", true, denied, long},
	} {
		srv, err := authz.NewServer(strategyFunc(c.fn), authz.Config{Limit: 100, Window: time.Hour, Headers: c.headers})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := srv.Check(context.Background(), checkReq(socket("203.0.113.7", 41000), nil, c.ext))
		if err != nil {
			t.Fatal(err)
		}
		out[c.name] = resp
	}
	return out
}

// TestCodecMatchesProto checks that every response floodgate sends and a
// message without generated code (a health check answer) come out of Codec
// as protobuf-go marshals them, and that they and a CheckRequest with
// header and extension maps decode back to themselves.
func TestCodecMatchesProto(t *testing.T) {
	c := authz.Codec()
	if c.Name() != "proto" {
		t.Fatalf("Name = %q, want proto (the content-subtype of application/grpc)", c.Name())
	}
	msgs := map[string]proto.Message{
		"health": &grpc_health_v1.HealthCheckResponse{Status: grpc_health_v1.HealthCheckResponse_SERVING},
		"request": checkReq(socket("203.0.113.7", 41000),
			map[string]string{":path": "/v1/items", "x-api-key": "k-1", "user-agent": "curl/8.5.0"},
			map[string]string{"floodgate.limit": "5", "floodgate.scope": "login"}),
	}
	for name, resp := range codecResponses(t) {
		msgs[name] = resp
	}
	for name, m := range msgs {
		data, err := c.Marshal(m)
		if err != nil {
			t.Fatalf("%s: Marshal: %v", name, err)
		}
		got := data.Materialize()
		data.Free()
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		// Map entries come in the map's order, so only messages without
		// maps have one encoding: a response's is compared without its
		// dynamic metadata (a map), and by length with it.
		if len(got) != len(want) {
			t.Errorf("%s: Marshal = %d bytes, want protobuf-go's %d", name, len(got), len(want))
		}
		if resp, ok := m.(*authv3.CheckResponse); ok {
			bare := proto.Clone(resp).(*authv3.CheckResponse)
			bare.DynamicMetadata = nil
			got = marshalWith(t, c, bare)
			want, _ = proto.MarshalOptions{Deterministic: true}.Marshal(bare)
		}
		if _, hasMaps := m.(*authv3.CheckRequest); !hasMaps && string(got) != string(want) {
			t.Errorf("%s: Marshal = %x, want protobuf-go's %x", name, got, want)
		}
		back := m.ProtoReflect().New().Interface()
		if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(marshalWith(t, c, m))}, back); err != nil {
			t.Fatalf("%s: Unmarshal: %v", name, err)
		}
		if !proto.Equal(back, m) {
			t.Errorf("%s: round trip = %v, want %v", name, back, m)
		}
	}
	if len(msgs["denied/long-scope"].(*authv3.CheckResponse).String()) < 200 {
		t.Fatal("the long response is too short to test pooled buffers")
	}
}

// marshalWith returns the encoding of m by c.
func marshalWith(t *testing.T, c encoding.CodecV2, m proto.Message) []byte {
	t.Helper()
	data, err := c.Marshal(m)
	if err != nil {
		t.Fatalf("Marshal %T: %v", m, err)
	}
	defer data.Free()
	return data.Materialize()
}

// benchCodecs are the codecs the benchmarks compare: Codec and gRPC's own.
var benchCodecs = []struct {
	name  string
	codec encoding.CodecV2
}{
	{"floodgate", authz.Codec()},
	{"grpc", encoding.GetCodecV2("proto")},
}

// BenchmarkCodecMarshal compares Codec with gRPC's own codec on an allowed
// response with rate-limit headers, the message floodgate sends most.
func BenchmarkCodecMarshal(b *testing.B) {
	resp := codecResponses(b)["allowed"]
	for _, c := range benchCodecs {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				data, err := c.codec.Marshal(resp)
				if err != nil {
					b.Fatal(err)
				}
				data.Free()
			}
		})
	}
}
