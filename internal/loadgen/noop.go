package loadgen

import (
	"context"
	"net"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/floodgate-rl/floodgate/authz"
	"github.com/floodgate-rl/floodgate/internal/grpcbound"
)

// NoopServer is an Authorization server that allows every request and does
// nothing else: the ceiling that no ext_authz server on the same gRPC stack
// and machine can beat. It is safe for concurrent use; the zero value is
// ready.
type NoopServer struct {
	authv3.UnimplementedAuthorizationServer
}

var okResponse = &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.OK)}}

// Check implements authv3.AuthorizationServer: status OK, always.
func (NoopServer) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return okResponse, nil
}

// ServerOptions returns the options floodgate's gRPC server runs with
// (cmd/floodgate/grpcserver.go, plaintext, default --grpc-max-recv-bytes,
// --grpc-max-calls and --memcache-timeout), so that the no-op ceiling pays
// for the same limits, keepalive policy, call bound and deadline
// interceptor (both from internal/grpcbound), and gains as much from the
// same stream workers and codec. cmd/floodgate builds its list from its
// flags; keep the constants here in step with its defaults.
func ServerOptions() []grpc.ServerOption {
	calls := grpcbound.NewCalls(1024, status.Error(codes.ResourceExhausted, "noop: too many calls in flight"))
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(1 << 20),
		grpc.MaxConcurrentStreams(1024),
		grpc.MaxHeaderListSize(1 << 20),
		grpc.ConnectionTimeout(10 * time.Second),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             10 * time.Second,
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:              time.Minute,
			Timeout:           20 * time.Second,
			MaxConnectionIdle: 2 * time.Minute,
		}),
		grpc.UnaryInterceptor(grpcbound.Unary(time.Second)), // as floodgate's server installs it
		grpc.NumStreamWorkers(64),
		grpc.ForceServerCodecV2(authz.Codec()),
		grpc.InTapHandle(calls.Admit),
	}
}

// ServeNoop serves a NoopServer and a NoopRLSServer on ln with
// ServerOptions until ctx ends: one port for both APIs, as floodgate serves
// them.
func ServeNoop(ctx context.Context, ln net.Listener) error {
	gs := grpc.NewServer(ServerOptions()...)
	authv3.RegisterAuthorizationServer(gs, NoopServer{})
	rlsv3.RegisterRateLimitServiceServer(gs, NoopRLSServer{})
	go func() {
		<-ctx.Done()
		gs.Stop()
	}()
	return gs.Serve(ln)
}
