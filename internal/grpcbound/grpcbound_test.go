package grpcbound_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/floodgate-rl/floodgate/internal/grpcbound"
	"github.com/floodgate-rl/floodgate/internal/testutil"
)

var errRefused = errors.New("refused")

// callContext is a call's context as gRPC's server gives it to the tap: a
// cancellable context holding the call's metadata.
func callContext(t testing.TB) (context.Context, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	return metadata.NewIncomingContext(ctx, metadata.Pairs("k", "v")), cancel
}

// interceptors are the two ways of installing Release and CapDeadline.
var interceptors = map[string]func(time.Duration) grpc.UnaryServerInterceptor{
	"chained": func(limit time.Duration) grpc.UnaryServerInterceptor {
		return chain(grpcbound.Release, grpcbound.CapDeadline(limit))
	},
	"unary": grpcbound.Unary,
}

// chain chains two interceptors as grpc.ChainUnaryInterceptor does: the
// second one's handler a closure made per call.
func chain(first, second grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return first(ctx, req, info, next(second, info, handler))
	}
}

//go:noinline
func next(icpt grpc.UnaryServerInterceptor, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) grpc.UnaryHandler {
	return func(ctx context.Context, req any) (any, error) { return icpt(ctx, req, info, handler) }
}

// TestCallsBound checks that Calls admits max calls, refuses the next one
// with its error, takes a call's slot back when its handler returns (under
// either interceptor) and that of a call without one when its context ends,
// and that the admitted call's context keeps the values and the deadline
// of the one Admit was given.
func TestCallsBound(t *testing.T) {
	for name, icpt := range interceptors {
		t.Run(name, func(t *testing.T) {
			c := grpcbound.NewCalls(2, errRefused)
			ctx1, cancel1 := callContext(t)
			defer cancel1()
			ctx2, cancel2 := callContext(t)
			defer cancel2()
			a1, err := c.Admit(ctx1, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Admit(ctx2, nil); err != nil {
				t.Fatal(err)
			}
			if md, _ := metadata.FromIncomingContext(a1); md.Get("k")[0] != "v" {
				t.Errorf("admitted context lost the metadata: %v", md)
			}
			if dl1, _ := ctx1.Deadline(); !func() bool { dl, ok := a1.Deadline(); return ok && dl.Equal(dl1) }() {
				t.Error("admitted context lost the deadline")
			}
			ctx3, cancel3 := callContext(t)
			defer cancel3()
			if _, err := c.Admit(ctx3, nil); !errors.Is(err, errRefused) || c.Refused() != 1 || c.InFlight() != 2 {
				t.Fatalf("third Admit: %v, refused %d, in flight %d; want the refusal, 1, 2", err, c.Refused(), c.InFlight())
			}
			var inHandler int64
			var deadline time.Duration
			resp, err := icpt(time.Second)(a1, "req", &grpc.UnaryServerInfo{}, func(ctx context.Context, req any) (any, error) {
				inHandler = c.InFlight()
				dl, _ := ctx.Deadline()
				deadline = time.Until(dl)
				return "resp", nil
			})
			if resp != "resp" || err != nil || inHandler != 2 || c.InFlight() != 1 {
				t.Fatalf("call: %v, %v, in flight %d in the handler and %d after; want resp, nil, 2, 1", resp, err, inHandler, c.InFlight())
			}
			if deadline > time.Second || deadline <= 0 {
				t.Errorf("handler's deadline in %v, want at most the cap (1s)", deadline)
			}
			cancel1() // a released slot is not released again at the end
			cancel2() // a call that never reached a handler
			testutil.WaitFor(t, 5*time.Second, func() error {
				if n := c.InFlight(); n != 0 {
					return fmt.Errorf("%d calls in flight, want 0: the slot of a call without a handler stays taken after its end", n)
				}
				return nil
			})
			if _, err := c.Admit(ctx3, nil); err != nil {
				t.Fatalf("Admit after the releases: %v", err)
			}
		})
	}
}

// TestInterceptorsPassCallsNotAdmitted checks that a call Admit did not see
// goes through either interceptor untouched.
func TestInterceptorsPassCallsNotAdmitted(t *testing.T) {
	for name, icpt := range interceptors {
		resp, err := icpt(time.Second)(context.Background(), 1, &grpc.UnaryServerInfo{}, func(_ context.Context, req any) (any, error) {
			return req.(int) + 1, nil
		})
		if resp != 2 || err != nil {
			t.Errorf("%s: %v, %v; want 2, nil", name, resp, err)
		}
	}
}

// BenchmarkCall is what the bound costs a call: Admit on a context shaped
// as gRPC's, then the handler through Release and CapDeadline, chained as
// by gRPC or as Unary. "context" is the cost of making that context alone.
func BenchmarkCall(b *testing.B) {
	handler := func(context.Context, any) (any, error) { return nil, nil }
	info := &grpc.UnaryServerInfo{}
	b.Run("context", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, cancel := callContext(b)
			cancel()
		}
	})
	for _, name := range []string{"chained", "unary"} {
		icpt := interceptors[name](time.Minute)
		b.Run(name, func(b *testing.B) {
			c := grpcbound.NewCalls(1<<20, errRefused)
			b.ReportAllocs()
			for b.Loop() {
				ctx, cancel := callContext(b)
				actx, err := c.Admit(ctx, nil)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := icpt(actx, nil, info, handler); err != nil {
					b.Fatal(err)
				}
				cancel()
			}
		})
	}
}
