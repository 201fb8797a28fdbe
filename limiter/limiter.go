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
// changing the same value between its read and its write (a CompareAndSwap that kept failing).
// Such an error also wraps ErrStoreUnavailable, so the caller's failure mode
// applies; ErrContention only tells metrics and logs why.
var ErrContention = errors.New("too many conflicting updates")

// Store is where the strategies keep their state: counters (Add, Get,
// Batch) for Sliding and Fixed, and whole values (GetVersioned,
// CompareAndSwap) for TokenBucket and SlidingLog. The memcached store
// (package limiter/memcache) and the in-memory one (package limiter/memory) implement it;
// the circuit breaker (package limiter/resilient) and the metrics
// middleware (package limiter/storemetrics) wrap one Store in another, each
// written once, with no optional upgrade a wrapper could forget.
//
// Implementations must be safe for concurrent use by many goroutines and by
// many processes sharing the same backend: Add must be atomic, and of
// several CompareAndSwap calls with the same version at most one succeeds.
// Every error a Store returns wraps ErrStoreUnavailable; a call that failed
// with a timeout may still have been applied.
//
// A key holds either a counter (Add, Get, Batch) or a value (GetVersioned,
// CompareAndSwap); callers never use both kinds of method on one key.
//
// Counters: a key that does not exist counts as zero. A counter disappears
// ttl after it was created (Add does not extend the TTL of an existing
// counter).
//
// Values: a value is any bytes, up to 64 KiB; the store keeps its own
// copy, and the slices it returns belong to the caller. Every write of a
// key gives it a new version: a non-zero number different from every
// version the key had before. A key that does not exist, or has expired,
// has version 0. A value disappears ttl after its last successful
// CompareAndSwap, rounded up to whole seconds (at least one), as memcached
// does.
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

	// Batch applies each of adds in order, as Add does, then reads the
	// counters at gets, so that the values read include every add of the
	// batch and of any call that completed before it. When all the keys
	// share a server, as the keys of one requestor do (see doc.go), it is
	// one round trip: the memcached store pipelines it, the in-memory store does
	// it in one call. It returns the values read (a missing key is absent
	// from the map and counts as zero, as with Get) and the new value of
	// each counter in adds, in the order of adds. Either list may be
	// empty. After an error, any of the adds may or may not have been
	// applied.
	Batch(ctx context.Context, gets []string, adds []Increment) (map[string]int64, []int64, error)

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

// Increment is one counter change of a Store's Batch: what
// Store.Add(ctx, Key, Delta, TTL) does.
type Increment struct {
	Key   string
	Delta int64
	TTL   time.Duration
}

// BatchSequentially does what Store.Batch does with s's Add and Get: the
// adds one by one, in order, then one Get of gets. A Store without a
// cheaper way to batch implements Batch with it; it stops at the first
// error.
func BatchSequentially(ctx context.Context, s Store, gets []string, adds []Increment) (map[string]int64, []int64, error) {
	counts := make([]int64, len(adds))
	for i, a := range adds {
		n, err := s.Add(ctx, a.Key, a.Delta, a.TTL)
		if err != nil {
			return nil, nil, err
		}
		counts[i] = n
	}
	if len(gets) == 0 {
		return nil, counts, nil
	}
	vals, err := s.Get(ctx, gets)
	return vals, counts, err
}

// Request is one rate-limit question: may this requestor, under this scope,
// make Hits more requests now?
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
	// Hits is how many requests this one counts as (Envoy's hits_addend);
	// zero means 1, a negative value is invalid. It is allowed only if all
	// of its hits fit in the room left, and then counts them all; a denial
	// counts nothing. A request of more hits than the strategy can ever
	// hold (Limit, or for TokenBucket its burst) is denied without
	// counting anything, with RetryAfter the whole Window: no wait lets it
	// in, and a client that retries it waits as long as any could.
	Hits int64
}

// HitsOf returns how many requests r counts as: r.Hits, or 1 when it is zero.
func (r Request) HitsOf() int64 {
	if r.Hits == 0 {
		return 1
	}
	return r.Hits
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
	if r.Hits < 0 {
		return fmt.Errorf("hits %d: must not be negative", r.Hits)
	}
	return nil
}

// Decision is a Strategy's answer to a Request.
type Decision struct {
	// Allowed reports whether the request had room for its hits. From
	// Allow, an allowed request has been counted and a denied one leaves no
	// trace; from MultiStrategy.AllowAll, the requests of a set are counted
	// only when every one of them is allowed.
	Allowed bool
	// Limit and Window echo the Request, for response headers.
	Limit  int64
	Window time.Duration
	// Remaining is how many more requests the requestor may make right now,
	// after this one: the room left once its hits are counted, or, for an
	// allowed request of a set that was not counted (another request of
	// it was denied), the room left without them; 0 when denied.
	Remaining int64
	// RetryAfter is how long until the requestor's next request would be
	// allowed, in whole seconds: 0 when Remaining > 0, otherwise at least one
	// second. For a denial it is when this request, with its hits, would be
	// allowed; for an allowed request that used the last of the room, when a
	// request of one hit would be. A denied requestor that waits RetryAfter is let in (unless other
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

// MultiStrategy is a Strategy that can also decide several requests as one,
// as Envoy's rate limit service asks with several descriptors. Every
// strategy NewStrategy builds implements it, and so does resilient.Fallback.
//
// AllowAll returns one Decision per request, in order: Allowed tells
// whether that request had room for its hits. The requests are counted if
// and only if every one had room; when any had not, none of them is
// counted, atomically and exactly across replicas (each strategy's doc says
// how). Requests of one set that share a requestor (the same scope,
// requestor and window, and for TokenBucket the same limit and burst) are
// counted together: each is allowed only if the hits of all of them fit
// its limit. An empty set returns no decisions and no error. A request that
// does not Validate fails the whole set, naming it, and counts nothing;
// an error wrapping ErrStoreUnavailable may leave some counts of a denied
// set applied, which errs toward under-admission.
//
// Allow(ctx, req, now) is AllowAll(ctx, []Request{req}, now): one rule,
// with a fast path for a single request.
type MultiStrategy interface {
	Strategy
	AllowAll(ctx context.Context, reqs []Request, now time.Time) ([]Decision, error)
}
