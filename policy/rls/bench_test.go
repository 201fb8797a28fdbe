package rls_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/floodgate-rl/floodgate/policy/rls"
)

// benchConfig has a realistic spread: per-route wildcards, a per-client
// default, exact overrides and a nested per-tenant tree.
func benchConfig(b *testing.B) *rls.Config {
	var s strings.Builder
	s.WriteString("domain: edge\ndescriptors:\n  - key: remote_address\n    rate_limit: {unit: second, requests_per_unit: 10}\n")
	for i := 0; i < 100; i++ {
		n := strconv.Itoa(i)
		s.WriteString("  - key: remote_address\n    value: 10.0.0." + n + "\n    rate_limit: {unit: second, requests_per_unit: 100}\n")
		s.WriteString("  - key: path\n    value: /api/v" + n + "/*\n    rate_limit: {unit: minute, requests_per_unit: 600}\n")
	}
	s.WriteString("  - key: tenant\n    value: t-*\n    descriptors:\n      - key: api_key\n        rate_limit: {unit: hour, requests_per_unit: 5000}\n")
	c, err := rls.Parse("bench.yaml", []byte(s.String()))
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkMatch is the per-descriptor cost of finding the rule: an exact
// value, the key alone, the 51st wildcard of a level, and a nested tree.
func BenchmarkMatch(b *testing.B) {
	c := benchConfig(b)
	for _, bc := range []struct {
		name    string
		entries []rls.Entry
	}{
		{"exact", desc("remote_address", "10.0.0.42")},
		{"key-alone", desc("remote_address", "192.0.2.7")},
		{"wildcard-51st", desc("path", "/api/v50/users/123")},
		{"nested", desc("tenant", "t-acme", "api_key", "k-123456")},
		{"none", desc("unknown", "x")},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if l := c.Match("edge", bc.entries); l == nil && bc.name != "none" {
						b.Fatal("no rule")
					}
				}
			})
		})
	}
}

// BenchmarkCounterKey is the cost of the counter identity: appended into a
// reused buffer (what a service that hashes it needs), and as a string.
func BenchmarkCounterKey(b *testing.B) {
	c := benchConfig(b)
	entries := desc("tenant", "t-acme", "api_key", "k-123456")
	l := c.Match("edge", entries)
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			buf := make([]byte, 0, 128)
			for pb.Next() {
				buf = l.AppendCounterKey(buf[:0], entries)
			}
		})
	})
	b.Run("string", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				_ = l.CounterKey(entries)
			}
		})
	})
}

// BenchmarkApplyReplaces is the per-request cost of replaces over three
// matched rules.
func BenchmarkApplyReplaces(b *testing.B) {
	c := mustLoad(b, "testdata/example7.yaml")
	a := c.Match("example7", desc("key_1", "value_1", "user", "bkthomps"))
	r := c.Match("example7", desc("key_2", "value_2", "user", "bkthomps"))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		limits := make([]*rls.Limit, 3)
		for pb.Next() {
			limits[0], limits[1], limits[2] = a, r, nil
			rls.ApplyReplaces(limits)
		}
	})
}
