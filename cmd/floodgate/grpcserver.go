package main

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/floodgate-rl/floodgate/authz"
	"github.com/floodgate-rl/floodgate/internal/grpcbound"
	"github.com/floodgate-rl/floodgate/internal/prom"
)

// Limits of the gRPC server. A CheckRequest is a few kilobytes: the request
// line and headers of one HTTP request (Envoy caps request headers at 60 KiB
// by default, 8 MiB at most), plus the body only with with_request_body,
// which floodgate does not need. A larger one than --grpc-max-recv-bytes is
// refused with RESOURCE_EXHAUSTED from its 5-byte length prefix, before its
// body is buffered, and the connection stays usable.
//
// Memory: grpc-go buffers a call's request as it arrives, up to its length
// (the stream's flow-control window is opened to the length), and
// acknowledges connection-level flow control on receipt, so neither
// connections nor streams per connection bound the bytes in flight. The
// server-wide bound on calls (--grpc-max-calls, grpcbound.Calls) does: request
// memory is at most --grpc-max-calls × --grpc-max-recv-bytes (1 GiB by
// default; a CheckRequest from Envoy's default 60 KiB of headers is under
// 130 KiB, so real traffic uses a small part of it). An open connection
// without calls costs about 15 KiB (goroutines and HTTP/2 state; measured with
// grpc-go 1.85, whose shared write buffer is on by default: an idle
// connection keeps no 32 KiB write buffer of its own), so --grpc-max-conns 4096 idle connections take
// about 60 MiB.
const (
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
	// maxConnectionIdle: a connection without calls for this long is sent
	// GOAWAY and closed, so idle clients do not hold --grpc-max-conns slots
	// for ever. Envoy opens a new connection at its next check.
	maxConnectionIdle = 2 * time.Minute
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
// limits above and of cfg, the bound on calls in flight of calls (nil for
// none), the deadline cap, the stream workers, the codec that marshals
// responses with generated code (authz.Codec), and TLS when creds is not
// nil.
func grpcServerOptions(cfg Config, creds credentials.TransportCredentials, calls *grpcbound.Calls) []grpc.ServerOption {
	// One interceptor, not gRPC's chain of two (a closure per call): the
	// deadline cap, and with a call bound the slot given back.
	interceptor := grpcbound.CapDeadline(checkDeadline(cfg))
	if calls != nil {
		interceptor = grpcbound.Unary(checkDeadline(cfg))
	}
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(cfg.GRPCMaxRecvBytes),
		grpc.MaxConcurrentStreams(maxConcurrentStreams),
		grpc.MaxHeaderListSize(maxHeaderListSize),
		grpc.ConnectionTimeout(handshakeTimeout),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             keepaliveMinTime,
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:              keepaliveTime,
			Timeout:           keepaliveTimeout,
			MaxConnectionIdle: maxConnectionIdle,
		}),
		grpc.UnaryInterceptor(interceptor),
		grpc.NumStreamWorkers(streamWorkers),
		grpc.ForceServerCodecV2(authz.Codec()),
	}
	if calls != nil {
		opts = append(opts, grpc.InTapHandle(calls.Admit))
	}
	if creds != nil {
		opts = append(opts, grpc.Creds(creds))
	}
	return opts
}

// errTooManyCalls is the status of a call refused by --grpc-max-calls.
var errTooManyCalls = status.Error(codes.ResourceExhausted, "floodgate: too many calls in flight (--grpc-max-calls)")

// connLimitListener is a net.Listener that keeps at most max of the
// connections it accepted open. One accepted past the bound is closed at
// once with a TCP reset and counted, and Accept goes on to the next one. This
// rather than leaving connections in the kernel's backlog (as
// golang.org/x/net/netutil.LimitListener does): there the kernel completes
// the TCP handshake, so Envoy's connection succeeds and every check on it
// waits for its timeout; a reset fails at once, and Envoy applies its failure
// mode or tries another replica. Safe for concurrent use.
//
// The connections it returns are not *net.TCPConn, so grpc-go does not set
// TCP_USER_TIMEOUT on them; its keepalive (keepaliveTime, keepaliveTimeout)
// closes connections of vanished peers instead.
type connLimitListener struct {
	net.Listener
	max     int64
	open    atomic.Int64
	refused atomic.Int64
}

// Accept returns the next connection within the bound.
func (l *connLimitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) <= l.max {
			return &limitedConn{Conn: c, l: l}, nil
		}
		l.open.Add(-1)
		l.refused.Add(1)
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0) // reset: no TIME_WAIT kept for it
		}
		c.Close()
	}
}

// limitedConn gives its slot back to its listener when closed.
type limitedConn struct {
	net.Conn
	l    *connLimitListener
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.open.Add(-1) })
	return err
}

// registerGRPCLimitMetrics registers the gauges and counters of ln and
// calls on reg.
func registerGRPCLimitMetrics(reg prometheus.Registerer, ln *connLimitListener, calls *grpcbound.Calls) error {
	load := func(v *atomic.Int64) func() float64 { return func() float64 { return float64(v.Load()) } }
	float := func(f func() int64) func() float64 { return func() float64 { return float64(f()) } }
	if err := prom.Register(reg,
		prom.GaugeFunc("floodgate_grpc_connections", "Open connections on the gRPC listener, at most --grpc-max-conns.", load(&ln.open)),
		prom.CounterFunc("floodgate_grpc_connections_refused_total", "Connections to the gRPC listener closed at once because --grpc-max-conns were open.", load(&ln.refused)),
		prom.GaugeFunc("floodgate_grpc_calls_in_flight", "gRPC calls in flight, at most --grpc-max-calls.", float(calls.InFlight)),
		prom.CounterFunc("floodgate_grpc_calls_refused_total", "gRPC calls refused with RESOURCE_EXHAUSTED because --grpc-max-calls were in flight.", float(calls.Refused)),
	); err != nil {
		return fmt.Errorf("grpc limit metrics: %w", err)
	}
	return nil
}

// fdReserve is how many file descriptors floodgate keeps for everything but
// gRPC connections: 256 for the admin server's connections (the probes and
// Prometheus), the listeners, the policy and TLS files and the standard
// streams, plus the memcached connections: per server entry,
// --memcache-max-conns and the one that reads its stats.
func fdReserve(cfg Config) int {
	return 256 + (cfg.MemcacheMaxConns+1)*max(1, len(cfg.MemcacheServers))
}

// grpcConnBound returns the connection bound of the gRPC listener:
// cfg.GRPCMaxConns, lowered when it and fdReserve(cfg) do not fit in nofile,
// the process's open-file limit (Go raises the soft limit to the hard one at
// start), so that the admin server keeps answering when the gRPC listener is
// full. It fails when the limit leaves fewer than 16 connections.
func grpcConnBound(cfg Config, nofile uint64) (bound int, lowered bool, err error) {
	room := int64(min(nofile, 1<<40)) - int64(fdReserve(cfg))
	if room >= int64(cfg.GRPCMaxConns) {
		return cfg.GRPCMaxConns, false, nil
	}
	if room < 16 {
		return 0, false, fmt.Errorf("--grpc-max-conns: the open-file limit (RLIMIT_NOFILE) %d leaves no room for gRPC connections beside %d for the admin server and memcached: raise it (ulimit -n)", nofile, fdReserve(cfg))
	}
	return int(room), true, nil
}

// openFileLimit returns the process's soft RLIMIT_NOFILE.
func openFileLimit() (uint64, error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, fmt.Errorf("read RLIMIT_NOFILE: %w", err)
	}
	return uint64(r.Cur), nil
}
