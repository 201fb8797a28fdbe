package authz_test

import (
	"context"
	"os"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/floodgate-rl/floodgate/authz"
	"github.com/floodgate-rl/floodgate/policy"
)

// FuzzCheckPolicy feeds Check arbitrary CheckRequests with policy/example.yaml
// and e2ePolicy in force, on every strategy: matching, tiers, lists and
// shadow rules must never panic or return an error, the answer must be OK,
// 429 or 403, and the response must marshal.
func FuzzCheckPolicy(f *testing.F) {
	for _, s := range []*authv3.CheckRequest{
		{},
		httpReq("203.0.113.7", "POST", "/login", nil, map[string]string{"floodgate.scope": "login"}),
		httpReq("10.0.0.1", "GET", "/api/x", map[string]string{"x-api-key": "k", "x-plan": "pro", "x-forwarded-for": "192.0.2.1, 10.0.0.1"},
			map[string]string{"floodgate.key": "xff", "floodgate.strategy": "token-bucket"}),
		httpReq("2001:db8:bad::1", "PUT", "/upload", nil, map[string]string{"floodgate.strategy": "sliding-log", "floodgate.limit": "2000"}),
	} {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	example, err := os.ReadFile("../policy/example.yaml")
	if err != nil {
		f.Fatal(err)
	}
	var servers []*authz.Server
	for _, src := range []string{string(example), e2ePolicy} {
		r := newRig(f, authz.Config{Limit: 3, Window: time.Minute, Headers: true}, "")
		p, err := policy.Parse([]byte(src))
		if err != nil {
			f.Fatal(err)
		}
		if err := r.srv.SetPolicy(p); err != nil {
			f.Fatal(err)
		}
		servers = append(servers, r.srv)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var req authv3.CheckRequest
		if err := proto.Unmarshal(data, &req); err != nil {
			return
		}
		for i, srv := range servers {
			resp, err := srv.Check(context.Background(), &req)
			if err != nil {
				t.Fatalf("server %d: Check error: %v", i, err)
			}
			switch c := codes.Code(resp.GetStatus().GetCode()); c {
			case codes.OK, codes.ResourceExhausted, codes.PermissionDenied:
			default:
				t.Fatalf("server %d: status code %v: %v", i, c, resp)
			}
			if _, err := proto.Marshal(resp); err != nil {
				t.Fatalf("server %d: response does not marshal: %v", i, err)
			}
		}
	})
}
