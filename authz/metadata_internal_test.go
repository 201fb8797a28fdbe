package authz

import (
	"sync/atomic"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/floodgate-rl/floodgate/limiter"
)

var sinkMeta any

// BenchmarkMetadataBuild is the cost of the metadata of an allowed answer
// that is not shared: built (a degraded answer's) or from its series'
// template (a normal one with 128 requests or more remaining).
func BenchmarkMetadataBuild(b *testing.B) {
	p := &plan{req: limiter.Request{Scope: "login"}, rule: "login"}
	b.Run("build", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m := new(metadata)
			sinkMeta = m.build(p, resultAllowed, 7, "")
		}
	})
	b.Run("template", func(b *testing.B) {
		ds := &decisionSeries{shared: new(atomic.Int64)}
		b.ReportAllocs()
		for b.Loop() {
			sinkMeta = ds.okMeta(p, resultAllowed, 1_000_000, "")
		}
	})
}

// TestMetadataFromTemplate checks that the metadata a series makes from
// its template is the one build makes, for each scope and rule in turn,
// and leaves the template as it was.
func TestMetadataFromTemplate(t *testing.T) {
	ds := &decisionSeries{shared: new(atomic.Int64)}
	for _, p := range []*plan{
		{req: limiter.Request{Scope: "login"}, rule: "login"},
		{req: limiter.Request{Scope: "login"}},
		{},
		{req: limiter.Request{Scope: "api"}, rule: "api"},
	} {
		for _, remaining := range []int64{allowedMetaRemaining, 999_999_999, 1 << 53} {
			got := ds.okMeta(p, resultAllowed, remaining, "")
			if want := new(metadata).build(p, resultAllowed, remaining, ""); !proto.Equal(got, want) {
				t.Errorf("%+v, %d remaining: metadata %v, want %v", p, remaining, got, want)
			}
		}
		if tpl, want := ds.template(p), new(metadata).build(p, resultAllowed, 0, ""); !proto.Equal(tpl, want) {
			t.Errorf("%+v: template changed to %v, want %v", p, tpl, want)
		}
	}
}
