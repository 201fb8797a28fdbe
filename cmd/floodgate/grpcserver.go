package main

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/floodgate-rl/floodgate/authz"
)

// Limits of the gRPC server. A CheckRequest is a few kilobytes: the request
// line and headers of one HTTP request (Envoy caps request headers at 60 KiB
// by default, 8 MiB at most), plus the body only with with_request_body,
// which floodgate does not need.
const (
	// maxRecvMsgSize is the largest CheckRequest accepted. A larger one is
	// refused with RESOURCE_EXHAUSTED from its 5-byte length prefix, before
	// its body is buffered, and the connection stays usable.
	maxRecvMsgSize = 4 << 20
	// maxConcurrentStreams bounds the RPCs in flight on one connection;
	// Envoy opens more connections when it needs more.
	maxConcurrentStreams = 1024
	// maxHeaderListSize bounds the gRPC metadata (HTTP/2 headers) of a call,
	// 16 MiB by default in grpc-go.
	maxHeaderListSize = 1 << 20
	// handshakeTimeout bounds the TLS and HTTP/2 handshakes of a new
	// connection, so half-open connections do not pile up.
	handshakeTimeout = 10 * time.Second
	// keepaliveMinTime is the shortest interval at which a client may send
	// HTTP/2 pings; a client that pings more often is sent GOAWAY
	// (ENHANCE_YOUR_CALM) and disconnected.
	keepaliveMinTime = 10 * time.Second
	// keepaliveTime and keepaliveTimeout: after this long without activity
	// floodgate pings the client, and closes the connection when no answer
	// comes within the timeout, so connections of vanished peers are freed.
	keepaliveTime    = time.Minute
	keepaliveTimeout = 20 * time.Second
	// minCheckDeadline is the least deadline cap; see checkDeadline.
	minCheckDeadline = time.Second
	// streamWorkers is the number of long-lived goroutines that serve
	// RPCs (grpc.NumStreamWorkers). Without them every RPC gets a new
	// goroutine whose stack then grows, by copying, to the depth of a
	// Check: a tenth of the CPU of a decision. An RPC that arrives while
	// every worker is busy gets a goroutine of its own, as without them;
	// 64 covers the calls a replica has in flight at tens of thousands of
	// decisions a second.
	streamWorkers = 64
)

// checkDeadline is the longest a unary RPC may run: a call that arrives with
// no deadline, or a later one, gets this one. Envoy sends its ext_authz
// timeout (200 ms by default) with every call, so this only bounds other
// clients. A decision takes a handful of store round trips at most, each
// bounded by --memcache-timeout, so the cap is five of those, and at least a
// second.
func checkDeadline(cfg Config) time.Duration {
	return max(minCheckDeadline, 5*cfg.MemcacheTimeout)
}

// grpcServerOptions returns the options of floodgate's gRPC server: the
// limits above, the deadline cap, the stream workers, the codec that marshals
// responses with generated code (authz.Codec), and TLS when creds is
// not nil.
func grpcServerOptions(cfg Config, creds credentials.TransportCredentials) []grpc.ServerOption {
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(maxRecvMsgSize),
		grpc.MaxConcurrentStreams(maxConcurrentStreams),
		grpc.MaxHeaderListSize(maxHeaderListSize),
		grpc.ConnectionTimeout(handshakeTimeout),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             keepaliveMinTime,
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    keepaliveTime,
			Timeout: keepaliveTimeout,
		}),
		grpc.ChainUnaryInterceptor(capDeadline(checkDeadline(cfg))),
		grpc.NumStreamWorkers(streamWorkers),
		grpc.ForceServerCodecV2(authz.Codec()),
	}
	if creds != nil {
		opts = append(opts, grpc.Creds(creds))
	}
	return opts
}

// capDeadline returns an interceptor that gives every unary call a deadline
// of at most limit from its arrival. Streams (grpc.health.v1 Watch) are not
// affected.
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
