package memcache

import (
	"cmp"
	"slices"
)

// Server choice: rendezvous hashing.
//
// A key's server is chosen by rendezvous (highest random weight) hashing of
// its requestor part, serverKey(key): every server scores the requestor with
// a hash of the pair, and the highest score wins. We chose it over a ring of
// virtual nodes and over jump hashing because:
//
//   - Adding a server moves exactly the requestors that now score highest on
//     it, 1/(N+1) of them in expectation, and all of them to the new server;
//     removing a server moves only its own requestors, each to its runner-up.
//     Every other requestor keeps its server and its counters.
//   - The choice depends only on the set of addresses, never on their order
//     or on which replica resolved them, so every floodgate replica that sees
//     the same set picks the same server. Jump hashing needs servers numbered
//     0..N-1 and moves requestors when one in the middle leaves.
//   - Shares are even in expectation with no tuning; a ring needs 100-200
//     points per server to keep them within several percent, and a table to
//     rebuild and binary-search.
//
// Its cost, scoring all N servers per pick, is N multiply-xorshift rounds
// after one FNV-1a pass over the requestor: tens of nanoseconds for the
// handful of memcached servers a floodgate deployment has. The score of a
// server s for requestor r is mix64(fnv1a64(r) ^ s.seed), where seed is
// mix64(fnv1a64(address)); mix64, the 64-bit finalizer of MurmurHash3, makes
// the scores of one requestor on different servers independent enough to
// spread requestors evenly (tested). All of it is stable across processes,
// versions and architectures, as it must be for replicas to agree.

// server is one memcached server with its own pipeline (see pipeline.go),
// and so its own pool of connections, which carries every call to it and
// lives as long as the server stays in the set.
type server struct {
	addr string    // "host:port": its identity and the source of seed
	seed uint64    // mix64(fnv1a64(addr))
	pipe *pipeline // every call: Add, Get, Batch, GetVersioned, CompareAndSwap
}

// close closes the server's idle connections; it stays usable.
func (srv *server) close() error { return srv.pipe.close() }

// serverSet is an immutable set of servers sorted by address, without
// duplicates. A Store swaps whole sets atomically.
type serverSet struct {
	servers []*server
}

// newServerSet returns the set of servers, which it sorts by address. The
// servers must have distinct addresses.
func newServerSet(servers []*server) *serverSet {
	slices.SortFunc(servers, func(a, b *server) int { return cmp.Compare(a.addr, b.addr) })
	return &serverSet{servers: servers}
}

// addrs returns the servers' addresses, sorted.
func (ss *serverSet) addrs() []string {
	out := make([]string, len(ss.servers))
	for i, srv := range ss.servers {
		out[i] = srv.addr
	}
	return out
}

// find returns the server with address addr, or nil.
func (ss *serverSet) find(addr string) *server {
	i, ok := slices.BinarySearchFunc(ss.servers, addr, func(s *server, a string) int { return cmp.Compare(s.addr, a) })
	if !ok {
		return nil
	}
	return ss.servers[i]
}

// pick returns the server of requestor, the part of a key serverKey returns,
// by rendezvous hashing; nil when the set is empty. Ties, which need a 64-bit
// collision, go to the lower address.
func (ss *serverSet) pick(requestor string) *server {
	switch len(ss.servers) {
	case 0:
		return nil
	case 1:
		return ss.servers[0]
	}
	h := fnv1a64(requestor)
	best, bestScore := ss.servers[0], mix64(h^ss.servers[0].seed)
	for _, srv := range ss.servers[1:] {
		if score := mix64(h ^ srv.seed); score > bestScore {
			best, bestScore = srv, score
		}
	}
	return best
}

// serverSeed returns the hashing seed of the server at addr.
func serverSeed(addr string) uint64 {
	return mix64(fnv1a64(addr))
}

// fnv1a64 returns the 64-bit FNV-1a hash of s, without allocating.
func fnv1a64(s string) uint64 {
	const (
		offset64 = 14695981039346656037
		prime64  = 1099511628211
	)
	h := uint64(offset64)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= prime64
	}
	return h
}

// mix64 is MurmurHash3's 64-bit finalizer: a bijection in which every input
// bit changes every output bit with probability about one half.
func mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}
