package authz_test

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/floodgate-rl/floodgate/authz"
)

// envoyRequest is a CheckRequest as Envoy sends it for a plain GET through
// the shipped front proxy (the load generator's request), with a route's
// context extensions.
func envoyRequest() *authv3.CheckRequest {
	req := checkReq(socket("10.0.0.1", 41234), map[string]string{
		":authority": "api.example.com", ":method": "GET", ":path": "/v1/items", ":scheme": "http",
		"user-agent": "curl/8.5.0", "accept": "*/*", "x-forwarded-for": "10.0.0.1",
		"x-forwarded-proto": "http", "x-request-id": "0f8c4d2e-6f1a-4b8e-9a51-3c2d7e9b1a40",
	}, map[string]string{"floodgate.scope": "items"})
	a := req.Attributes
	a.Destination = &authv3.AttributeContext_Peer{Address: socket("127.0.0.1", 10000)}
	a.Request.Time = timestamppb.New(timestamppb.Now().AsTime())
	h := a.Request.Http
	h.Id, h.Method, h.Path, h.Host, h.Scheme, h.Protocol = "6478245398745121234", "GET", "/v1/items", "api.example.com", "http", "HTTP/1.1"
	return req
}

// wire helpers: a length-delimited field, a map entry, a varint field.
func field(num protowire.Number, b ...[]byte) []byte {
	var content []byte
	for _, p := range b {
		content = append(content, p...)
	}
	return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), content)
}

func str(num protowire.Number, s string) []byte { return field(num, []byte(s)) }

func entry(k, v string) []byte { return field(3, str(1, k), str(2, v)) }

func varint(num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
}

// request wraps http's fields in http, request, attributes and a
// CheckRequest.
func request(http ...[]byte) []byte { return field(1, field(4, field(2, http...))) }

// decodeCases are CheckRequests' bytes of every shape Codec's Unmarshal
// treats apart: as Envoy sends them, and each way the header map or the
// messages around it can differ from that.
func decodeCases(t testing.TB) map[string][]byte {
	t.Helper()
	marshal := func(m proto.Message) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	full := envoyRequest()
	meta, err := structpb.NewStruct(map[string]any{"sub": "user-1", "n": 2.0})
	if err != nil {
		t.Fatal(err)
	}
	full.Attributes.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"envoy.filters.http.jwt_authn": meta}}
	full.Attributes.Source.Principal = "spiffe://example.org/ns/default/sa/client"
	full.Attributes.TlsSession = &authv3.AttributeContext_TLSSession{Sni: "api.example.com"}
	return map[string][]byte{
		"empty":              nil,
		"envoy":              marshal(envoyRequest()),
		"envoy/more":         marshal(full),
		"no headers":         marshal(checkReq(socket("203.0.113.7", 1), nil, nil)),
		"one header":         request(entry("x-api-key", "k")),
		"unknown around":     append(request(varint(99, 7), entry("a", "1"), str(98, "u"), entry("b", "2")), varint(77, 1)...),
		"repeated key":       request(entry("a", "1"), entry("b", "2"), entry("a", "3")),
		"empty value":        request(entry("a", ""), entry("", "b")),
		"empty entry":        request(field(3)),
		"key only":           request(field(3, str(1, "a"))),
		"value first":        request(field(3, str(2, "v"), str(1, "k"))),
		"key twice":          request(field(3, str(1, "a"), str(1, "b"), str(2, "v"))),
		"extra field":        request(field(3, str(1, "a"), str(2, "v"), varint(3, 1))),
		"varint key":         request(field(3, varint(1, 1), str(2, "v"))),
		"invalid UTF-8 val":  request(entry("a", "\xff")),
		"invalid UTF-8 key":  request(entry("\xc3", "v")),
		"http twice":         field(1, field(4, field(2, entry("a", "1"), str(2, "GET")), field(2, entry("b", "2"), entry("a", "3")))),
		"request twice":      append(request(entry("a", "1")), request(entry("b", "2"))...),
		"headers as varint":  request(varint(3, 1), entry("a", "1")),
		"attributes varint":  append(varint(1, 5), request(entry("a", "1"))...),
		"truncated":          request(entry("a", "1"))[:9],
		"truncated entry":    field(1, field(4, field(2, append(protowire.AppendTag(nil, 3, protowire.BytesType), 9, 0x0a)))),
		"overlong length":    field(1, field(4, field(2, append(protowire.AppendTag(nil, 3, protowire.BytesType), 0x86, 0x00, 0x0a, 0x01, 'a', 0x12, 0x01, 'v')))),
		"field zero":         request(entry("a", "1"), []byte{0x02, 0x00}),
		"invalid UTF-8 path": request(entry("a", "1"), str(4, "\xff")),
		"long header":        request(entry("cookie", string(make([]byte, 300))), entry(":path", "/")),
	}
}

// TestCodecUnmarshalMatchesProto checks that Codec decodes every shape of
// CheckRequest as protobuf-go does: the same message, or the same error.
func TestCodecUnmarshalMatchesProto(t *testing.T) {
	for name, b := range decodeCases(t) {
		t.Run(name, func(t *testing.T) { sameAsProto(t, b) })
	}
}

// FuzzCodecUnmarshal checks that Codec decodes any bytes as a CheckRequest
// as protobuf-go does.
func FuzzCodecUnmarshal(f *testing.F) {
	for _, b := range decodeCases(f) {
		f.Add(b)
	}
	f.Fuzz(sameAsProto)
}

// sameAsProto fails t when Codec's Unmarshal of b as a CheckRequest differs
// from proto.Unmarshal's: in the message, or in the error.
func sameAsProto(t *testing.T, b []byte) {
	got, want := new(authv3.CheckRequest), new(authv3.CheckRequest)
	gotErr := authz.Codec().Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, got)
	wantErr := proto.Unmarshal(b, want)
	switch {
	case (gotErr == nil) != (wantErr == nil):
		t.Fatalf("Unmarshal(%x) error = %v, want protobuf-go's %v", b, gotErr, wantErr)
	case gotErr != nil && gotErr.Error() != wantErr.Error():
		t.Fatalf("Unmarshal(%x) error = %q, want protobuf-go's %q", b, gotErr, wantErr)
	case gotErr == nil && !proto.Equal(got, want):
		t.Fatalf("Unmarshal(%x) = %v, want protobuf-go's %v", b, got, want)
	}
}

// BenchmarkCodecUnmarshal compares Codec with gRPC's own codec on the
// CheckRequest Envoy sends for a plain GET.
func BenchmarkCodecUnmarshal(b *testing.B) {
	data, err := proto.Marshal(envoyRequest())
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range benchCodecs {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := c.codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(data)}, new(authv3.CheckRequest)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
