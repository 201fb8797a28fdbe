package rls_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
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

// allowStrategy allows every request without counting: the limiter's cost
// taken out, what is left of ShouldRateLimit is the translation (the plan,
// the matching, the counter keys) and the answer.
type allowStrategy struct{}

func (allowStrategy) Allow(_ context.Context, r limiter.Request, _ time.Time) (limiter.Decision, error) {
	return limiter.Decision{Allowed: true, Limit: r.Limit, Window: r.Window, Remaining: r.Limit - r.Hits}, nil
}

func (s allowStrategy) AllowAll(ctx context.Context, rs []limiter.Request, now time.Time) ([]limiter.Decision, error) {
	ds := make([]limiter.Decision, len(rs))
	for i, r := range rs {
		ds[i], _ = s.Allow(ctx, r, now)
	}
	return ds, nil
}

// benchLimits is floodgate-bench's RLS configuration (floodgate-bench
// rls-config): remote_address limited per hour.
const benchLimits = `domain: bench
descriptors:
  - key: remote_address
    rate_limit: {unit: hour, requests_per_unit: 1000000000}
`

// BenchmarkTranslate measures ShouldRateLimit without the limiter's cost
// (a strategy that allows without counting), for the request floodgate-
// bench sends: one remote_address descriptor, of one hot value and of
// 10,000 values in turn; with and without Config.Headers.
func BenchmarkTranslate(b *testing.B) {
	limits, err := rlsconf.Parse("limits.yaml", []byte(benchLimits))
	if err != nil {
		b.Fatal(err)
	}
	for _, headers := range []bool{false, true} {
		srv, err := rls.NewServer(rls.Config{Limits: limits, Strategy: allowStrategy{}, Headers: headers})
		if err != nil {
			b.Fatal(err)
		}
		for _, n := range []int{1, 10000} {
			reqs := make([]*rlsv3.RateLimitRequest, n)
			for i := range reqs {
				reqs[i] = &rlsv3.RateLimitRequest{Domain: "bench", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc(fmt.Sprintf("remote_address=10.%d.%d.%d", i>>16, (i>>8)&255, i&255))}, HitsAddend: 1}
			}
			b.Run(fmt.Sprintf("values=%d/headers=%t", n, headers), func(b *testing.B) {
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					resp, _ := srv.ShouldRateLimit(context.Background(), reqs[i%n])
					if resp.GetOverallCode() != rlsv3.RateLimitResponse_OK {
						b.Fatal(resp)
					}
					i++
				}
			})
		}
	}
}
