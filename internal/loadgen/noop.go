package loadgen

import (
	"context"
	"net"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

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
// (cmd/floodgate/grpcserver.go, plaintext, default --grpc-max-recv-bytes,
// --grpc-max-calls and --memcache-timeout), so that the no-op ceiling pays
// for the same limits, keepalive policy, call bound and deadline
// interceptor, and gains as much from the same stream workers and codec.
// cmd/floodgate keeps them unexported in package main; keep the two in
// step.
func ServerOptions() []grpc.ServerOption {
	calls := &callBound{max: 1024}
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
		grpc.ChainUnaryInterceptor(releaseCall, capDeadline(time.Second)),
		grpc.NumStreamWorkers(64),
		grpc.ForceServerCodecV2(authz.Codec()),
		grpc.InTapHandle(calls.admit),
	}
}

// callBound mirrors floodgate's bound on calls in flight (--grpc-max-calls):
// the same work per call at the tap (a count, a release at the end of the
// call's context, a context value) and in the interceptor that gives the
// slot back, so that the ceiling pays for it too.
type callBound struct {
	max      int64
	inFlight atomic.Int64
}

// callSlot is one admitted call's place in its callBound.
type callSlot struct {
	b    *callBound
	done atomic.Bool
	stop func() bool
}

func (s *callSlot) release() {
	if s.done.CompareAndSwap(false, true) {
		s.b.inFlight.Add(-1)
	}
}

type callSlotKey struct{}

// admit is the server's tap.ServerInHandle.
func (b *callBound) admit(ctx context.Context, _ *tap.Info) (context.Context, error) {
	if b.inFlight.Add(1) > b.max {
		b.inFlight.Add(-1)
		return nil, status.Error(codes.ResourceExhausted, "noop: too many calls in flight")
	}
	s := &callSlot{b: b}
	s.stop = context.AfterFunc(ctx, s.release)
	return context.WithValue(ctx, callSlotKey{}, s), nil
}

// releaseCall gives the call's slot back when its handler returns.
func releaseCall(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	if s, ok := ctx.Value(callSlotKey{}).(*callSlot); ok && s.stop() {
		s.release()
	}
	return resp, err
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
