package authz

import (
	"testing"

	"github.com/floodgate-rl/floodgate/limiter"
)

var sinkMeta any

// BenchmarkMetadataBuild is the cost of the metadata of an allowed answer
// that is not shared (degraded, or 128 requests or more remaining).
func BenchmarkMetadataBuild(b *testing.B) {
	p := &plan{req: limiter.Request{Scope: "login"}, rule: "login"}
	b.ReportAllocs()
	for b.Loop() {
		m := new(metadata)
		sinkMeta = m.build(p, resultAllowed, 7, "")
	}
}
