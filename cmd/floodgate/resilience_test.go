package main

import (
	"io"
	"log/slog"
	"maps"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/memory"
)

// TestResilientStrategiesPrivate checks which strategies are built
// private (no skew margin, no bound on a decision's time): those on a store
// only this process counts in, the in-memory store of --memory and the
// per-replica fallback's, and never those on memcached. The --memory store
// reaches resilientStrategies wrapped in the store metrics, so the answer
// cannot come from the store's type.
func TestResilientStrategiesPrivate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		kind  string
		local bool
		want  []bool // the private flags newStrategy is called with, in order
	}{
		{"memory", "memory", true, []bool{true}},
		{"memcached, fail mode local", "memcache", true, []bool{false, true}},
		{"memcached, fail mode open", "memcache", false, []bool{false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := memory.New(nil)
			defer mem.Close()
			var got []bool
			newStrategy := func(name string, st limiter.Store, private bool) (limiter.Strategy, error) {
				if name == limiter.DefaultStrategy {
					got = append(got, private)
				}
				sc := limiter.StrategyConfig{}
				if private {
					sc = sc.Private()
				}
				return limiter.NewStrategy(name, st, sc)
			}
			cfg := Config{LocalFallback: tc.local}
			strategies, closeFn, err := resilientStrategies(cfg, tc.kind, mem, limiter.Strategies(), newStrategy,
				prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			defer closeFn()
			if !slices.Equal(got, tc.want) {
				t.Errorf("private flags %v, want %v", got, tc.want)
			}
			if names := slices.Sorted(maps.Keys(strategies)); !slices.Equal(names, slices.Sorted(slices.Values(limiter.Strategies()))) {
				t.Errorf("strategies %v, want one per name", names)
			}
		})
	}
}
