// Package grpcbound holds the two per-call bounds of floodgate's gRPC
// server: Calls, the server-wide bound on calls in flight (--grpc-max-calls),
// and CapDeadline, the cap on a unary call's deadline. floodgate's server
// and the benchmark's no-op server (internal/loadgen) both install them, so
// that the ceiling floodgate is measured against pays for the same work per
// call. grpc-go offers neither as an option: MaxConcurrentStreams bounds
// one connection's streams, not the server's, and has no way to count or
// refuse before a message is read.
package grpcbound

import (
	"context"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/tap"
)

// Calls bounds the gRPC calls in flight on a whole server, and so the
// request bytes it buffers. Its Admit is the server's tap: it runs when a
// call's headers arrive, before any of its message is read, and refuses the
// call past the bound with the refusal error. The call's slot is released
// when its handler returns (Release) or, for calls that never reach one
// (streams, unknown methods, a client that stops sending), when the call
// ends. Safe for concurrent use.
type Calls struct {
	max      int64
	refusal  error
	inFlight atomic.Int64
	refused  atomic.Int64
}

// NewCalls returns a Calls admitting at most max calls at once and refusing
// the others with refusal (a gRPC status error, RESOURCE_EXHAUSTED).
func NewCalls(max int64, refusal error) *Calls {
	return &Calls{max: max, refusal: refusal}
}

// InFlight returns the calls admitted and not yet released.
func (c *Calls) InFlight() int64 { return c.inFlight.Load() }

// Refused returns how many calls were refused, ever.
func (c *Calls) Refused() int64 { return c.refused.Load() }

// slot is one admitted call's place in its Calls. It is also the call's
// context, as Admit returns it: the context Admit was given, under which
// Release finds the slot (one allocation fewer than context.WithValue).
type slot struct {
	context.Context
	c    *Calls
	done atomic.Bool
	stop func() bool // stops the release at the end of the call's context
}

func (s *slot) release() {
	if s.done.CompareAndSwap(false, true) {
		s.c.inFlight.Add(-1)
	}
}

// Value returns the slot for slotKey, else the call context's value.
func (s *slot) Value(key any) any {
	if key == (slotKey{}) {
		return s
	}
	return s.Context.Value(key)
}

type slotKey struct{}

// Admit is a tap.ServerInHandle (grpc.InTapHandle). It does not block: it
// runs on the connection's reader goroutine. ctx is the call's context,
// cancelled when the call ends.
func (c *Calls) Admit(ctx context.Context, _ *tap.Info) (context.Context, error) {
	if c.inFlight.Add(1) > c.max {
		c.inFlight.Add(-1)
		c.refused.Add(1)
		return nil, c.refusal
	}
	s := &slot{Context: ctx, c: c}
	s.stop = context.AfterFunc(ctx, s.release)
	return s, nil
}

// Release is a unary interceptor that gives the call's slot back as soon as
// its handler returns, without waiting for the end of the call's context
// (which would cost a goroutine). It passes calls Admit did not see.
func Release(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	release(ctx)
	return resp, err
}

// release gives back the slot of the call of ctx, if Admit gave it one.
func release(ctx context.Context) {
	if s, ok := ctx.Value(slotKey{}).(*slot); ok && s.stop() {
		s.release()
	}
}

// CapDeadline returns an interceptor that gives every unary call a deadline
// of at most limit from its arrival. Streams (grpc.health.v1 Watch) are not
// affected.
func CapDeadline(limit time.Duration) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return capped(ctx, req, handler, limit)
	}
}

// capped calls handler with ctx's deadline capped at limit from now.
func capped(ctx context.Context, req any, handler grpc.UnaryHandler, limit time.Duration) (any, error) {
	if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > limit {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, limit)
		defer cancel()
	}
	return handler(ctx, req)
}

// Unary returns the interceptor that is Release and CapDeadline(limit)
// chained, in that order, as one (grpc.UnaryInterceptor): gRPC's chain of
// two costs a closure per call that one interceptor does not.
func Unary(limit time.Duration) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := capped(ctx, req, handler, limit)
		release(ctx)
		return resp, err
	}
}
