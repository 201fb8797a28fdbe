package loadgen

import (
	"context"
	"strconv"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
)

// RLSDomain is the domain of the RateLimitRequests RLS sends by default,
// the domain of RLSConfig.
const RLSDomain = "bench"

// RLSRequest returns the RateLimitRequest the load generator sends for
// client address src: what Envoy's ratelimit filter sends for a route with
// one remote_address action (envoy/ratelimit-filter.yaml's per-client
// limit), in domain: one descriptor [(remote_address, src)], one hit.
func RLSRequest(domain, src string) *rlsv3.RateLimitRequest {
	return &rlsv3.RateLimitRequest{
		Domain: domain,
		Descriptors: []*ratelimitv3.RateLimitDescriptor{{
			Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: "remote_address", Value: src}},
		}},
		HitsAddend: 1,
	}
}

// RLSConfig returns a rate limit service configuration, in
// envoyproxy/ratelimit's format (floodgate's --rls-config), of domain
// RLSDomain with one rule: every remote_address value limited to limit
// requests per hour. With a limit no client gets near, every RLSRequest is
// an allowed decision that counts, as --limit does for Check.
func RLSConfig(limit uint32) string {
	return "domain: " + RLSDomain + "\n" +
		"descriptors:\n" +
		"  - key: remote_address\n" +
		"    rate_limit:\n" +
		"      unit: hour\n" +
		"      requests_per_unit: " + strconv.FormatUint(uint64(limit), 10) + "\n"
}

// rlsCaller is the newCaller of RLS.
func rlsCaller(o CheckOptions) newCaller {
	return func(cc *grpc.ClientConn) caller {
		client := rlsv3.NewRateLimitServiceClient(cc)
		req := RLSRequest(o.Domain, ClientAddr(0))
		entry := req.GetDescriptors()[0].GetEntries()[0]
		return func(ctx context.Context, i int64, opts ...grpc.CallOption) (bool, error) {
			if o.Clients > 1 {
				entry.Value = ClientAddr(int(i % int64(o.Clients)))
			}
			resp, err := client.ShouldRateLimit(ctx, req, opts...)
			return err == nil && resp.GetOverallCode() == rlsv3.RateLimitResponse_OK, err
		}
	}
}

// RLS drives the rate limit service at o.Target with ShouldRateLimit calls
// (RLSRequest, in o.Domain) as Check drives an Authorization server: the
// same connections, concurrency, deadlines and clients, the client being
// the descriptor's remote_address value. A call counts as allowed when its
// overall_code is OK, denied otherwise.
func RLS(ctx context.Context, o CheckOptions) (*CheckResult, error) {
	o = o.withDefaults()
	return drive(ctx, "rls load", o, rlsCaller(o))
}

// NoopRLSServer is a rate limit service that answers OK to every request
// and does nothing else (overall_code OK, no descriptor statuses): the
// ceiling of any RLS server on the same gRPC stack and machine, as
// NoopServer is for ext_authz. It is safe for concurrent use; the zero
// value is ready.
type NoopRLSServer struct {
	rlsv3.UnimplementedRateLimitServiceServer
}

var rlsOKResponse = &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}

// ShouldRateLimit implements rlsv3.RateLimitServiceServer: OK, always.
func (NoopRLSServer) ShouldRateLimit(context.Context, *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	return rlsOKResponse, nil
}
