package authz

import (
	"fmt"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the "proto" codec Codec falls back to
	"google.golang.org/grpc/mem"
)

// vtMarshaler is a message with the marshalling code vtprotobuf generates
// (go-control-plane ships it for every Envoy message, compiled with the
// vtprotobuf build tag; the strict variant is the one it generates). Like
// proto.Marshal, it writes fields in field-number order and map entries in
// the map's iteration order.
type vtMarshaler interface {
	SizeVT() int
	MarshalToSizedBufferVTStrict(dAtA []byte) (int, error)
}

// Codec returns the gRPC codec of floodgate's server (grpc.ForceServerCodecV2):
// gRPC's own "proto" codec, except that a response with generated
// vtprotobuf code is marshalled by that code instead of by protobuf-go's
// reflection. Every allowed response carries five rate-limit headers,
// whose reflective marshalling costs more than building the response.
// Built without the vtprotobuf tag (go build -tags vtprotobuf; the
// Makefile and the Dockerfile set it), go-control-plane has no such code,
// and every message takes gRPC's path. go-control-plane generates no
// unmarshalling code: requests are decoded by protobuf-go, except a
// CheckRequest's header map (see Unmarshal).
func Codec() encoding.CodecV2 {
	return codec{fallback: encoding.GetCodecV2("proto")}
}

type codec struct{ fallback encoding.CodecV2 }

// Marshal implements encoding.CodecV2.
func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(vtMarshaler)
	if !ok {
		return c.fallback.Marshal(v)
	}
	size := m.SizeVT()
	if mem.IsBelowBufferPoolingThreshold(size) {
		// As gRPC's codec does: a small message in a buffer of its own.
		b := make([]byte, size)
		if err := marshalVT(m, b); err != nil {
			return nil, fmt.Errorf("marshal %T: %w", v, err)
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	pool := mem.DefaultBufferPool()
	b := pool.Get(size)
	if err := marshalVT(m, *b); err != nil {
		pool.Put(b)
		return nil, fmt.Errorf("marshal %T: %w", v, err)
	}
	return mem.BufferSlice{mem.NewBuffer(b, pool)}, nil
}

// marshalVT marshals m into b, which is exactly m.SizeVT() bytes long.
func marshalVT(m vtMarshaler, b []byte) error {
	n, err := m.MarshalToSizedBufferVTStrict(b)
	if err == nil && n != len(b) {
		err = fmt.Errorf("wrote %d bytes of %d", n, len(b))
	}
	return err
}

// Unmarshal implements encoding.CodecV2: a CheckRequest as gRPC's codec
// decodes it, result and error alike, with its header map decoded without
// reflection (see unmarshalCheck); any other message by gRPC's codec.
func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	req, ok := v.(*authv3.CheckRequest)
	if !ok {
		return c.fallback.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return unmarshalCheck(buf.ReadOnlyData(), req)
}

// Name implements encoding.CodecV2: the codec stands in for "proto", the
// content-subtype Envoy sends (application/grpc).
func (codec) Name() string { return "proto" }
