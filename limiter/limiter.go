package limiter

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrStoreUnavailable marks errors caused by the counter store (memcached
// down, a timeout, a broken connection). Callers decide with errors.Is
// whether to fail open or closed; the limiter itself never guesses.
var ErrStoreUnavailable = errors.New("counter store unavailable")

// ErrOverloaded marks a store error caused by this process's own load, not
// by the store: a call that waited for a connection or a slot past its
// deadline and was never sent. It wraps ErrStoreUnavailable, so the failure
// mode applies, but a circuit breaker does not count it, and the fallback
// says "overloaded", not "unavailable".
var ErrOverloaded = fmt.Errorf("too much waiting for the store: %w", ErrStoreUnavailable)

// ErrContention marks a decision that gave up because other replicas kept
// changing the same value between its read and its write (see SwapStore).
// Such an error also wraps ErrStoreUnavailable, so the caller's failure mode
// applies; ErrContention only tells metrics and logs why.
var ErrContention = errors.New("too many conflicting updates")

// Store is the counter storage a Strategy keeps its buckets in. The memcached
// store (package limiter/memcache) and the in-memory MemoryStore implement it.
//
// Implementations must be safe for concurrent use by many goroutines and by
// many processes sharing the same backend: Add must be atomic. A key that does
// not exist counts as zero. The store owns expiry: a counter disappears ttl
// after it was created (Add does not extend the TTL of an existing counter).
// Every error a Store returns wraps ErrStoreUnavailable.
type Store interface {
	// Add adds delta (which may be negative) to the counter at key and
	// returns the counter's new value. A counter never goes below zero. When
	// the counter does not exist, a positive delta creates it with value delta
	// and the given time to live, rounded up to whole seconds (at least one);
	// a zero or negative delta returns 0 and creates nothing.
	Add(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error)

	// Get returns the values of keys in one round trip per backend server.
	// Missing keys are absent from the map and count as zero.
	Get(ctx context.Context, keys []string) (map[string]int64, error)
}

// SwapStore is a Store that can also replace a whole value atomically. The
// strategies whose state is more than a counter (TokenBucket, SlidingLog)
// need it; MemoryStore and the memcached store implement it. A wrapper
// around a SwapStore (metrics, tracing) must implement it too, or those
// strategies refuse the store.
//
// A key holds either a counter (Add, Get) or a value (GetVersioned,
// CompareAndSwap); callers never use both kinds of method on one key. A value
// is any bytes, up to 64 KiB; the store keeps its own copy, and the slices it
// returns belong to the caller.
//
// Every write of a key gives it a new version: a non-zero number different
// from every version the key had before. A key that does not exist, or has
// expired, has version 0. Implementations must be safe for concurrent use by
// many goroutines and many processes sharing the same backend: of several
// CompareAndSwap calls with the same version, at most one succeeds. The store
// owns expiry: a value disappears ttl after its last successful
// CompareAndSwap, rounded up to whole seconds (at least one), as memcached
// does. Every error a SwapStore returns wraps ErrStoreUnavailable; a call that
// failed with a timeout may still have been applied.
type SwapStore interface {
	Store

	// GetVersioned returns the value at key and its version, in one round
	// trip. A missing or expired key returns nil, 0 and no error.
	GetVersioned(ctx context.Context, key string) (value []byte, version uint64, err error)

	// CompareAndSwap stores value at key, with the given time to live, if
	// the key's version is still version: version 0 creates the key only if
	// it does not exist, and a non-zero version replaces the value only if
	// no other write (and no expiry) happened since GetVersioned returned
	// it. It reports whether value was stored; false with a nil error is a
	// conflict, after which the caller reads again and retries.
	CompareAndSwap(ctx context.Context, key string, value []byte, version uint64, ttl time.Duration) (swapped bool, err error)
}

// Request is one rate-limit question: may this requestor, under this scope,
// make one more request now?
type Request struct {
	// Scope names the counter family. Counters of different scopes never mix;
	// "" is the default scope.
	Scope string
	// Requestor identifies who is counted: a client address, an API key, a
	// host name. Any bytes are allowed; it is hashed before it reaches a Store.
	Requestor string
	// Limit is the number of requests allowed per Window; at least 1.
	Limit int64
	// Window is the length of the window, a whole number of seconds from
	// one second to MaxWindow.
	Window time.Duration
	// Burst is how many requests TokenBucket allows at once after a quiet
	// period; zero means Limit. The other strategies ignore it.
	Burst int64
}

// MaxWindow is the longest window a Request may have. It bounds what a
// replica reads for a requestor it has not seen (see doc.go).
const MaxWindow = 24 * time.Hour

// Validate reports whether r's Limit, Window and Burst are usable.
func (r Request) Validate() error {
	if r.Limit < 1 {
		return fmt.Errorf("limit %d: must be at least 1", r.Limit)
	}
	if r.Window < time.Second || r.Window%time.Second != 0 || r.Window > MaxWindow {
		return fmt.Errorf("window %s: must be a whole number of seconds from 1s to %s", r.Window, MaxWindow)
	}
	if r.Burst < 0 {
		return fmt.Errorf("burst %d: must not be negative", r.Burst)
	}
	return nil
}

// Decision is a Strategy's answer to a Request.
type Decision struct {
	// Allowed reports whether the request may proceed. An allowed request has
	// been counted; a denied one leaves no trace.
	Allowed bool
	// Limit and Window echo the Request, for response headers.
	Limit  int64
	Window time.Duration
	// Remaining is how many more requests the requestor may make right now,
	// after this one; 0 when denied.
	Remaining int64
	// RetryAfter is how long until the requestor's next request would be
	// allowed, in whole seconds: 0 when Remaining > 0, otherwise at least one
	// second. A denied requestor that waits RetryAfter is let in (unless other
	// requests of its own, allowed meanwhile by another scope's rules, used the
	// quota first).
	RetryAfter time.Duration
}

// Strategy is a rate-limiting algorithm. Sliding (the sliding window of
// 1-second buckets) is the default; Fixed, TokenBucket and SlidingLog
// implement the same interface, and NewStrategy builds any of them by name,
// so the gRPC adapter never changes when one is added.
//
// Implementations are safe for concurrent use. Allow returns an error wrapping
// ErrStoreUnavailable when the store fails; the Decision is then meaningless
// and the caller applies its failure mode.
type Strategy interface {
	Allow(ctx context.Context, req Request, now time.Time) (Decision, error)
}
