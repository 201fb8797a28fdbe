// Package memcache is the limiter.Store on memcached, for floodgate
// instances that share their counters.
//
// # Layout
//
// Three layers, each in its own files:
//
//   - internal/wire is the protocol: it encodes the commands below and
//     parses their answers into typed results, strictly (any answer
//     memcached does not give to the command is an error, never a count of
//     zero) and without allocating for counters. Its parsers are fuzzed
//     (FuzzReader), and so is an exchange of many calls (FuzzAnswers).
//   - pipeline.go moves the commands: one pipeline per server, which is
//     that server's only pool of connections (Config.MaxConns). Every call
//     to the server goes over it, counters and values alike; calls that
//     wait for a connection go out together, in one write and one read.
//   - rendezvous.go picks a key's server, and discovery.go keeps the set
//     of servers up to date with DNS ("dns+NAME:PORT").
//
// The Store (memcache.go, counters.go, values.go) checks keys, picks the
// server and wraps every failure in limiter.ErrStoreUnavailable, naming the
// operation and the key.
//
// # Commands
//
// Counters are memcached's decimal values, changed with the meta arithmetic
// command ma, which memcached applies atomically however many clients share
// it and which creates a missing counter in the same round trip (memcached
// 1.6 or later), and read with a multi-key get. A Batch sends a decision's
// increments and then its reads in one write, so the reads see the
// increments. Values (the state of the token-bucket and sliding-log
// strategies) are read with a meta get that returns the item's CAS unique,
// its version, and written with a meta set that stores only if the item is
// missing (version 0, add mode) or its CAS unique is still the version read.
// All the keys of one requestor live on one server, so a decision is one
// round trip and a server that fails affects only the requestors it holds.
//
// # Why no gomemcache
//
// github.com/bradfitz/gomemcache remains a dependency of the tests only,
// where it does its job: an independent client that writes what floodgate
// never writes (values that are not counters) and asks each server which
// keys it holds. The Store does not use it, for what it cannot do: it has no
// meta commands, so an increment of a missing counter is an incr that
// misses, an add and sometimes a second incr (three round trips); it sends
// one command per round trip on a connection of its own, so it cannot
// batch a decision's commands, nor the decisions waiting at once; and it
// keeps a connection pool of its own, which beside the pipeline made two
// pools per server with two bounds to tune. Values used to go through it.
// They moved to meta commands on the pipeline by measurement
// (BenchmarkValueStrategiesOnMemcached: 32 concurrent decisions that each
// read and swap a value on one memcached, in two sessions on a loaded
// 2-core machine): the benchmark's time per decision fell from 36-63 µs to
// 14-20 µs (to 0.25-0.45 of it), for about 700 more bytes allocated per
// decision and as many allocations, with one parser to fuzz and one pool
// per server. Counter calls did not change: 384 bytes and 3 allocations
// per Batch, and encoding and parsing a decision's exchange takes 0.93 of
// its time before.
//
// # Servers
//
// The servers are fixed addresses, DNS names that are looked up again every
// few seconds ("dns+NAME:PORT", such as a Kubernetes headless Service), or
// both; requestors are spread over them by rendezvous hashing, so a server
// that comes or goes moves only about 1/N of them.
package memcache
