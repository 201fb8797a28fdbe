// Package resilient keeps a limiter deciding while its shared counter store
// is sick. floodgate stacks its two wrappers around the memcached store
// and the strategy that counts in it:
//
//	Fallback( Sliding( Breaker( memcached )), Sliding( memory.Store ))
//
// From the store up:
//
//   - Breaker is a circuit breaker: after a run of consecutive failures it
//     stops calling the store and fails every call at once, so a hung
//     memcached costs each request nothing instead of its timeout; after a
//     randomised backoff (at most half a second) a timer probes the store
//     with a read of its own, with or without calls, and the breaker closes
//     again when that succeeds. Close stops the timer.
//
// No bulkhead: the memcached store carries every call of a server over a
// fixed pool of pipelined connections (--memcache-max-conns) and fails a
// call that waited --memcache-timeout with limiter.ErrOverloaded, unsent,
// which the Breaker does not count and the Fallback reports as overload.
//   - Fallback is a limiter.Strategy that asks a primary strategy (counting
//     in the shared store, through the Breaker) and, when that fails with
//     limiter.ErrStoreUnavailable, decides with a local strategy counting in
//     the process's own memory. The limit then holds per replica instead of
//     across all of them, which is far better than no limit at all, and each
//     such decision is marked as degraded so that operators see it.
//
// The package imports only the standard library and package limiter.
package resilient
