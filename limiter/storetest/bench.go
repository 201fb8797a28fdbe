package storetest

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/limiter"
)

// Benchmark measures the store s, shared by GOMAXPROCS goroutines, as a
// sub-benchmark each: Add of one counter among keys the size of the
// limiter's, spread over many requestors, and Get of 64 counters, about
// what one requestor's decision reads.
func Benchmark(b *testing.B, s limiter.Store) {
	ctx := context.Background()
	b.Run("Add", func(b *testing.B) {
		keys := make([]string, 1<<14)
		for i := range keys {
			keys[i] = fmt.Sprintf("fg1:%032x:%d", i*7919, 1732312345+i%60)
		}
		var next atomic.Uint64
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := next.Add(1 << 10)
			for pb.Next() {
				i++
				if _, err := s.Add(ctx, keys[i%uint64(len(keys))], 1, time.Hour); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("Get", func(b *testing.B) {
		keys := make([]string, 64)
		for i := range keys {
			keys[i] = fmt.Sprintf("fg1:%032x:%d", 42, 1732312345+i)
			if _, err := s.Add(ctx, keys[i], 1, time.Hour); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Get(ctx, keys); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}
