package loadgen

import (
	"context"
	"net"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"

	"github.com/floodgate-rl/floodgate/authz"
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
// (cmd/floodgate/grpcserver.go, plaintext, default --memcache-timeout), so
// that the no-op ceiling pays for the same limits, keepalive policy and
// deadline interceptor, and gains as much from the same stream workers and
// codec.
// cmd/floodgate keeps them unexported in package main; keep the two in
// step.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(4 << 20),
		grpc.MaxConcurrentStreams(1024),
		grpc.MaxHeaderListSize(1 << 20),
		grpc.ConnectionTimeout(10 * time.Second),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             10 * time.Second,
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    time.Minute,
			Timeout: 20 * time.Second,
		}),
		grpc.ChainUnaryInterceptor(capDeadline(time.Second)),
		grpc.NumStreamWorkers(64),
		grpc.ForceServerCodecV2(authz.Codec()),
	}
}

// capDeadline mirrors floodgate's interceptor that gives every unary call a
// deadline of at most limit.
func capDeadline(limit time.Duration) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > limit {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, limit)
			defer cancel()
		}
		return handler(ctx, req)
	}
}

// ServeNoop serves a NoopServer on ln with ServerOptions until ctx ends.
func ServeNoop(ctx context.Context, ln net.Listener) error {
	gs := grpc.NewServer(ServerOptions()...)
	authv3.RegisterAuthorizationServer(gs, NoopServer{})
	go func() {
		<-ctx.Done()
		gs.Stop()
	}()
	return gs.Serve(ln)
}
