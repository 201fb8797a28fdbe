package rls_test

import (
	"context"
	"fmt"
	"testing"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/memory"
	rlsconf "github.com/floodgate-rl/floodgate/policy/rls"
	"github.com/floodgate-rl/floodgate/rls"
)

// BenchmarkShouldRateLimit measures the translation and the decision on
// the in-memory store, in process: one descriptor of a hot client, and
// three (a client, a route and a rule-less one) of 10,000 clients.
func BenchmarkShouldRateLimit(b *testing.B) {
	limits, err := rlsconf.Parse("limits.yaml", []byte(testLimits))
	if err != nil {
		b.Fatal(err)
	}
	st := memory.New(nil)
	defer st.Close()
	s, err := limiter.NewStrategy(limiter.StrategySliding, st, limiter.StrategyConfig{})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := rls.NewServer(rls.Config{Limits: limits, Strategy: s.(limiter.MultiStrategy), Headers: true})
	if err != nil {
		b.Fatal(err)
	}
	hot := request(0, desc("remote_address=192.0.2.1"))
	many := make([]*rlsv3.RateLimitRequest, 10000)
	for i := range many {
		ip := fmt.Sprintf("10.0.%d.%d", i/256, i%256)
		many[i] = request(0, desc("remote_address="+ip), desc("route=login", "remote_address="+ip), desc("path=/"))
	}
	b.Run("hot", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				srv.ShouldRateLimit(context.Background(), hot)
			}
		})
	})
	b.Run("10000 clients, 3 descriptors", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			srv.ShouldRateLimit(context.Background(), many[i%len(many)])
			i++
		}
	})
}
