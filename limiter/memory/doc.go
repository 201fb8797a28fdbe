// Package memory is the in-process limiter.Store: counters and values in
// the memory of one process, for a single floodgate instance (--memory),
// the per-replica fallback of --fail-mode local, tests and benchmarks.
// Several processes that must share counters need the memcached store
// (package limiter/memcache).
//
// A Store shards its keys over 64 locks. Counters live in open-addressing
// tables of fixed-size slots keyed by a 128-bit seeded hash (table.go),
// outside the Go heap once large (table_mmap.go), so that a million
// requestors' counters cost their own size and nothing in garbage
// collection; OffHeapBytes reports those bytes for the memory limit
// (internal/runtimetune). It is written here rather than taken from a
// library because no well-kept Go cache keeps pointer-free entries off the
// heap with memcached's counter semantics (expiry from creation, no going
// below zero, saturation) and versioned values beside them.
package memory
