//go:build vtprotobuf

package authz

import (
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// TestCodecHasGeneratedCode fails when go-control-plane, built with the
// vtprotobuf tag as the Makefile builds floodgate, no longer gives
// CheckResponse the generated marshalling code Codec looks for: Codec
// would then fall back to reflection without a word.
func TestCodecHasGeneratedCode(t *testing.T) {
	var resp any = &authv3.CheckResponse{}
	if _, ok := resp.(vtMarshaler); !ok {
		t.Fatal("CheckResponse has no SizeVT and MarshalToSizedBufferVTStrict with -tags vtprotobuf")
	}
}
