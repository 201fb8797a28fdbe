package authz_test

import (
	"context"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/floodgate-rl/floodgate/authz"
	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/memory"
	"github.com/floodgate-rl/floodgate/limiter/resilient"
	"github.com/floodgate-rl/floodgate/limiter/storetest"
)

// FuzzCheckBytes feeds Check whatever a gRPC peer could send: arbitrary
// bytes that unmarshal as a CheckRequest (unknown fields, invalid UTF-8 in
// maps, huge and odd values), through the stack floodgate runs: a Sliding
// window on an in-memory store, behind a Fallback whose primary store is
// down, so both the normal and the degraded paths run. Check must never
// return an error or panic, must answer OK or 429, and the response must
// marshal (Envoy must be able to read it).
func FuzzCheckBytes(f *testing.F) {
	seeds := []*authv3.CheckRequest{
		{},
		checkReq(socket("203.0.113.7", 41000), map[string]string{":path": "/", "x-api-key": "k"}, nil),
		checkReq(socket("::ffff:192.0.2.1", 1), map[string]string{"x-forwarded-for": "198.51.100.1, 10.0.0.1"},
			map[string]string{"floodgate.limit": "1", "floodgate.window": "1s", "floodgate.key": "xff", "floodgate.scope": "login"}),
		checkReq(&corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/run/x.sock"}}},
			map[string]string{"x-api-key": "get fg1:a:1\r\nset x 0 0 1\r\n"}, map[string]string{"floodgate.key": "header:x-api-key"}),
	}
	for _, s := range seeds {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}) // a length beyond the input
	f.Add([]byte(strings.Repeat("\x0a\x02\x0a\x00", 64)))

	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	healthy := memory.New(clock)
	f.Cleanup(func() { healthy.Close() })
	local := memory.New(clock)
	f.Cleanup(func() { local.Close() })
	down := resilient.NewBreaker(storetest.Failing(func(context.Context) error { return limiter.ErrStoreUnavailable }), resilient.BreakerConfig{Now: clock})

	var servers []*authz.Server
	for _, s := range []limiter.Strategy{
		limiter.NewSliding(healthy, limiter.SlidingConfig{}),
		resilient.NewFallback(limiter.NewSliding(down, limiter.SlidingConfig{}), limiter.NewSliding(local, limiter.SlidingConfig{}),
			resilient.FallbackConfig{Reason: "memcached-unavailable", Now: clock}),
	} {
		k, err := authz.ParseKey("header:x-api-key", 1)
		if err != nil {
			f.Fatal(err)
		}
		srv, err := authz.NewServer(s, authz.Config{Limit: 3, Window: time.Minute, Key: k, Headers: true, Now: clock})
		if err != nil {
			f.Fatal(err)
		}
		servers = append(servers, srv)
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		var req authv3.CheckRequest
		if err := proto.Unmarshal(data, &req); err != nil {
			return // gRPC rejects what does not unmarshal before Check runs
		}
		for i, srv := range servers {
			resp, err := srv.Check(context.Background(), &req)
			if err != nil {
				t.Fatalf("server %d: Check error: %v", i, err)
			}
			if c := codes.Code(resp.GetStatus().GetCode()); c != codes.OK && c != codes.ResourceExhausted {
				t.Fatalf("server %d: status code %v: %v", i, c, resp)
			}
			if _, err := proto.Marshal(resp); err != nil {
				t.Fatalf("server %d: response does not marshal: %v", i, err)
			}
		}
	})
}
