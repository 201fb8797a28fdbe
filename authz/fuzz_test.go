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
)

func FuzzCheck(f *testing.F) {
	f.Add("source", uint8(0), "203.0.113.7", "abc", "198.51.100.1, 10.0.0.1", "5", "90s", "xff", "api", false, int64(3))
	f.Add("header:x-api-key", uint8(1), "::ffff:1.2.3.4", "", "", "0", "1.5s", "header:", "", true, int64(-1))
	f.Add("xff", uint8(2), "[2001:db8::1]:80", "\x00\xff", ",,,", "-9", "-1s", "cookie", "a b", true, int64(1<<62))
	f.Add("xff", uint8(255), "", strings.Repeat("k", 1000), "unknown", "99999999999999999999", "1h", "source", strings.Repeat("s", 65), false, int64(0))
	f.Fuzz(func(t *testing.T, key string, hops uint8, addr, apiKey, xff, limit, window, extKey, scope string, allow bool, retry int64) {
		k, err := authz.ParseKey(key, int(hops))
		if err != nil {
			k = authz.KeySpec{}
		}
		var bad string
		fs := &fakeStrategy{AllowFn: func(_ context.Context, req limiter.Request, _ time.Time) (limiter.Decision, error) {
			if err := req.Validate(); err != nil {
				bad = err.Error()
			}
			if req.Requestor != authz.FallbackIdentity && !hasKind(req.Requestor) {
				bad = "requestor without a kind: " + req.Requestor
			}
			d := limiter.Decision{Allowed: allow, Limit: req.Limit, Window: req.Window, RetryAfter: time.Duration(retry)}
			if allow {
				d.Remaining = retry // any value, even absurd ones
			}
			return d, nil
		}}
		srv, err := authz.NewServer(fs, authz.Config{Limit: 100, Window: time.Hour, Key: k, Headers: true})
		if err != nil {
			t.Fatal(err)
		}
		req := checkReq(socket(addr, 443),
			map[string]string{"x-api-key": apiKey, "x-forwarded-for": xff},
			map[string]string{"floodgate.limit": limit, "floodgate.window": window, "floodgate.key": extKey, "floodgate.scope": scope})
		req.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "x-api-key", RawValue: []byte(apiKey)}}}
		for _, r := range []*authv3.CheckRequest{req, {}, nil} {
			resp, err := srv.Check(context.Background(), r)
			if err != nil {
				t.Fatalf("Check error: %v", err)
			}
			if c := codes.Code(resp.GetStatus().GetCode()); c != codes.OK && c != codes.ResourceExhausted {
				t.Fatalf("status code %v", c)
			}
			// The response must be sendable: proto strings must be valid UTF-8.
			if _, err := proto.Marshal(resp); err != nil {
				t.Fatalf("response does not marshal: %v", err)
			}
		}
		if bad != "" {
			t.Fatalf("strategy got a bad request: %s", bad)
		}
		if n := len(fs.requests()); n != 3 {
			t.Fatalf("strategy called %d times, want 3", n)
		}
	})
}

func FuzzParseKey(f *testing.F) {
	for _, s := range []string{"source", "xff", "header:x-api-key", "header:X", "header:", "header::authority", "", "header:a b", "\xff",
		"principal", "metadata:envoy.filters.http.jwt_authn:payload.sub", "metadata:f:a..b", "metadata:f"} {
		f.Add(s, 0)
		f.Add(s, -1)
		f.Add(s, 3)
	}
	f.Fuzz(func(t *testing.T, s string, hops int) {
		k, err := authz.ParseKey(s, hops)
		if hops < 0 && err == nil {
			t.Fatalf("ParseKey(%q, %d): no error for negative hops", s, hops)
		}
		if err != nil {
			if k != (authz.KeySpec{}) {
				t.Fatalf("ParseKey(%q, %d) returned %v with error %v", s, hops, k, err)
			}
			return
		}
		if k.TrustedHops() != hops {
			t.Fatalf("TrustedHops = %d, want %d", k.TrustedHops(), hops)
		}
		again, err := authz.ParseKey(k.String(), hops)
		if err != nil || again != k {
			t.Fatalf("ParseKey(%q) = %v; reparsing its String %q gave %v, %v", s, k, k.String(), again, err)
		}
		if !strings.EqualFold(k.String(), s) {
			t.Fatalf("String() = %q, want %q up to case", k.String(), s)
		}
		// Any key form yields a kind-tagged identity for any request.
		id := k.Identity(checkReq(socket("203.0.113.7", 1), map[string]string{strings.TrimPrefix(k.String(), "header:"): "v"}, nil))
		if !strings.HasPrefix(id, "ip:") && !strings.HasPrefix(id, "header:") {
			t.Fatalf("Identity = %q", id)
		}
	})
}

func BenchmarkCheck(b *testing.B) {
	allowed := func(_ context.Context, req limiter.Request, _ time.Time) (limiter.Decision, error) {
		return limiter.Decision{Allowed: true, Limit: req.Limit, Window: req.Window, Remaining: 7}, nil
	}
	denied := func(_ context.Context, req limiter.Request, _ time.Time) (limiter.Decision, error) {
		return limiter.Decision{Limit: req.Limit, Window: req.Window, RetryAfter: 3 * time.Second}, nil
	}
	headers := map[string]string{
		":authority": "api.example.com", ":method": "GET", ":path": "/v1/items",
		"x-api-key": "k-0123456789abcdef", "x-forwarded-for": "198.51.100.1, 10.0.0.1",
		"user-agent": "bench/1.0", "accept": "*/*",
	}
	ext := map[string]string{"floodgate.limit": "50", "floodgate.window": "1m", "floodgate.scope": "items", "floodgate.key": "header:x-api-key"}
	for _, bc := range []struct {
		name    string
		key     string
		hdrs    bool
		allowFn func(context.Context, limiter.Request, time.Time) (limiter.Decision, error)
		ext     map[string]string
	}{
		{"allowed/source/no-headers", "source", false, allowed, nil},
		{"allowed/source/headers", "source", true, allowed, nil},
		{"allowed/xff/headers", "xff", true, allowed, nil},
		{"allowed/extensions/headers", "source", true, allowed, ext},
		{"denied/source", "source", true, denied, nil},
	} {
		b.Run(bc.name, func(b *testing.B) {
			k, err := authz.ParseKey(bc.key, 1)
			if err != nil {
				b.Fatal(err)
			}
			// A trivial strategy, not fakeStrategy: recording would dominate.
			srv, err := authz.NewServer(strategyFunc(bc.allowFn), authz.Config{Limit: 100, Window: time.Hour, Key: k, Headers: bc.hdrs})
			if err != nil {
				b.Fatal(err)
			}
			req := checkReq(socket("203.0.113.7", 41000), headers, bc.ext)
			ctx := context.Background()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := srv.Check(ctx, req); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// strategyFunc adapts a function to limiter.Strategy.
type strategyFunc func(context.Context, limiter.Request, time.Time) (limiter.Decision, error)

func (f strategyFunc) Allow(ctx context.Context, req limiter.Request, now time.Time) (limiter.Decision, error) {
	return f(ctx, req, now)
}

// hasKind reports whether a requestor identity starts with one of the
// kinds of KeySpec.Identity.
func hasKind(id string) bool {
	for _, kind := range []string{"ip:", "header:", "principal:", "metadata:"} {
		if strings.HasPrefix(id, kind) {
			return true
		}
	}
	return false
}
