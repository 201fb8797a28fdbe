package memcache

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/floodgate-rl/floodgate/limiter"
)

// A compile-time check that Store implements limiter.Store.
var _ limiter.Store = (*Store)(nil)

const (
	// DefaultTimeout is the Timeout used when Config.Timeout is zero.
	DefaultTimeout = 100 * time.Millisecond

	// DefaultMaxConns is the MaxConns used when Config.MaxConns is zero.
	DefaultMaxConns = 2
)

// Config tunes the connection to memcached. The zero value is usable.
type Config struct {
	// Timeout bounds connecting to a server and each read and write of a
	// request; a request that waits longer fails with
	// limiter.ErrStoreUnavailable. Zero means DefaultTimeout (100ms).
	Timeout time.Duration

	// MaxConns is the most connections the Store keeps open to each
	// server; every call to the server (Add, Get, Batch, GetVersioned,
	// CompareAndSwap) goes over them. A call that finds them all busy
	// waits, and the next connection to come free sends every call
	// waiting then in one write and reads their answers in one read, so
	// under load a round trip carries many calls; a call still waiting at
	// its deadline fails with limiter.ErrOverloaded, unsent. More
	// connections mean fewer calls per round trip, so more system calls
	// on both sides, not more throughput, once they keep memcached busy.
	// Zero means DefaultMaxConns (2).
	MaxConns int

	// ResolveInterval is how often the names of "dns+NAME:PORT" servers are
	// looked up again; while no server is known at all, they are looked up
	// at least every second. Zero means DefaultResolveInterval (10s).
	ResolveInterval time.Duration

	// Resolver looks up the names of "dns+NAME:PORT" servers. Nil means
	// net.DefaultResolver.
	Resolver Resolver

	// Logger receives changes of the server set and failed lookups of
	// "dns+" names: when a name starts failing or fails differently, then
	// at most once a minute while it keeps failing. Nil discards them.
	Logger *slog.Logger
}

// Store is a limiter.Store on one or more memcached servers. Create it with
// New; the zero value is not usable. It is safe for concurrent use by many
// goroutines, and many processes may share the same servers.
//
// A Store picks a key's server by rendezvous hashing of the key up to its
// last ':', so the buckets "<prefix>:<bucket>" of one requestor share a
// server, and every replica with the same servers picks the same one,
// whatever their order. When a server joins a set of N, about 1/(N+1) of the
// requestors move to it; when one leaves, only its own requestors move. A
// requestor that moves starts counting again from zero on its new server,
// and while replicas disagree on the set (up to one ResolveInterval) its
// count is split between two servers.
//
// The server set is swapped atomically; each server has its own pool of at
// most Config.MaxConns connections, which carries every call to it and
// which it keeps for as long as it stays in the set. A call sends all its
// round trips for one key to the server it picked at its start.
//
// memcached has no notion of a context: a Store checks ctx before each round
// trip, gives up waiting for a connection when ctx ends, and otherwise
// bounds a call by Config.Timeout or ctx's deadline, whichever comes first.
type Store struct {
	set       atomic.Pointer[serverSet]
	timeout   time.Duration
	maxConns  int
	pipeStats PipelineStats
	now       func() time.Time // for expirations past 30 days, which are Unix times
	disc      *discovery       // nil when every server is a fixed address
}

// New returns a Store on servers, a list of entries such as ParseServers
// returns: "host:port" addresses, whose host names are resolved once, here,
// and "dns+NAME:PORT" names, which stand for every address NAME resolves to
// (A and AAAA records), each on PORT. New looks the names up once before it
// returns, then a goroutine looks them up again every Config.ResolveInterval
// until Close, and swaps in the new set of servers when it changed. A lookup
// that fails or finds no address keeps the addresses of the name's last good
// lookup, and is logged. When no server is known, because the names have not
// resolved yet and there is no fixed address, New still succeeds: every call
// fails with limiter.ErrStoreUnavailable until a lookup succeeds.
//
// New does not connect: a server that is down shows as errors from Add and
// Get.
func New(servers []string, cfg Config) (*Store, error) {
	r := cfg.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	return open(servers, cfg, resolverLookup(r))
}

// open is New with the lookup of dns+ names given.
func open(servers []string, cfg Config, lookup lookupFunc) (*Store, error) {
	if len(servers) == 0 {
		return nil, errors.New("memcache: no servers")
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("memcache: timeout %v: must not be negative", cfg.Timeout)
	}
	if cfg.MaxConns < 0 {
		return nil, fmt.Errorf("memcache: max conns %d: must not be negative", cfg.MaxConns)
	}
	if cfg.ResolveInterval < 0 {
		return nil, fmt.Errorf("memcache: resolve interval %v: must not be negative", cfg.ResolveInterval)
	}
	s := &Store{
		timeout:  cmp.Or(cfg.Timeout, DefaultTimeout),
		maxConns: cmp.Or(cfg.MaxConns, DefaultMaxConns),
		now:      time.Now,
	}
	var static []*server
	var names []*nameState
	for _, entry := range servers {
		if strings.HasPrefix(entry, dnsPrefix) {
			n, err := parseDNSEntry(entry)
			if err != nil {
				return nil, err
			}
			names = append(names, &nameState{dnsName: n})
			continue
		}
		if slices.ContainsFunc(static, func(srv *server) bool { return srv.addr == entry }) {
			continue
		}
		srv, err := s.newServer(entry)
		if err != nil {
			return nil, fmt.Errorf("memcache: servers %q: %w", servers, err)
		}
		static = append(static, srv)
	}
	set := newServerSet(static)
	s.set.Store(set)
	if len(names) > 0 {
		log := cfg.Logger
		if log == nil {
			log = slog.New(slog.DiscardHandler)
		}
		s.disc = &discovery{
			store:       s,
			static:      set.addrs(),
			names:       names,
			lookup:      lookup,
			interval:    cmp.Or(cfg.ResolveInterval, DefaultResolveInterval),
			retireAfter: max(minRetireAfter, 10*s.timeout),
			log:         log,
		}
		s.disc.start()
	}
	return s, nil
}

// newServer returns a server at addr, "host:port" (or a Unix socket path,
// which has a '/'), with a pipeline of its own; a host name is resolved
// here, once.
func (s *Store) newServer(addr string) (*server, error) {
	var resolved net.Addr
	var err error
	if strings.Contains(addr, "/") {
		resolved, err = net.ResolveUnixAddr("unix", addr)
	} else {
		resolved, err = net.ResolveTCPAddr("tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	pipe := newPipeline(resolved, s.timeout, s.maxConns, &s.pipeStats)
	return &server{addr: addr, seed: serverSeed(addr), pipe: pipe}, nil
}

// PipelineStats returns the counts of the Store's calls and of the round
// trips that carried them, over every server it has had. It is safe to
// read them while the Store is in use.
func (s *Store) PipelineStats() *PipelineStats {
	return &s.pipeStats
}

// Servers returns the addresses of the servers the Store spreads requestors
// over now, sorted: fixed ones as given, those of dns+ names as "ip:port".
func (s *Store) Servers() []string {
	return s.set.Load().addrs()
}

// Close stops looking up dns+ names and closes the idle connections to the
// servers. The Store remains usable on the servers it has and dials again
// when needed; Close never fails in practice, but returns the first error of
// closing a connection.
func (s *Store) Close() error {
	if s.disc != nil {
		s.disc.stop()
	}
	var first error
	for _, srv := range s.set.Load().servers {
		if err := srv.close(); err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		return fmt.Errorf("memcache close: %w", first)
	}
	return nil
}

// errNoServers is why calls fail while a Store knows no server.
var errNoServers = errors.New("no memcached server known: no dns+ server name has resolved yet")

// serverKey returns the part of key that picks its server: the key up to its
// last ':', or the whole key when it has none. The limiter's keys are
// "<prefix>:<bucket>", so all the buckets of one prefix share a server.
func serverKey(key string) string {
	if i := strings.LastIndexByte(key, ':'); i >= 0 {
		return key[:i]
	}
	return key
}

// opError reports that op on key failed with err.
func opError(op, key string, err error) error {
	return fmt.Errorf("memcache %s %q: %w: %w", op, key, limiter.ErrStoreUnavailable, err)
}

// getError reports that a Get of keys failed with err.
func getError(keys []string, err error) error {
	switch len(keys) {
	case 0:
		return fmt.Errorf("memcache get of no keys: %w: %w", limiter.ErrStoreUnavailable, err)
	case 1:
		return opError("get", keys[0], err)
	}
	return fmt.Errorf("memcache get %d keys from %q: %w: %w", len(keys), keys[0], limiter.ErrStoreUnavailable, err)
}

// ParseServers parses a comma-separated list of memcached servers such as
// "10.0.0.1:11211, cache-b:11211,[::1]:11211" for New. Spaces around entries
// are trimmed. Each entry needs a host and a numeric port from 1 to 65535; an
// IPv6 host is written in brackets. An entry "dns+NAME:PORT", such as
// "dns+memcached.default.svc.cluster.local:11211", stands for every address
// of the DNS name NAME, on PORT, looked up again periodically; NAME is
// dot-separated labels of letters, digits, '-' and '_'. The error names the
// first bad entry.
func ParseServers(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("memcache servers: empty list")
	}
	var out []string
	for i, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			return nil, fmt.Errorf("memcache servers %q: entry %d is empty", s, i+1)
		}
		if strings.HasPrefix(entry, dnsPrefix) {
			if _, err := parseDNSEntry(entry); err != nil {
				return nil, err
			}
			out = append(out, entry)
			continue
		}
		host, port, err := net.SplitHostPort(entry)
		if err != nil {
			return nil, fmt.Errorf("memcache server %q: want host:port, with an IPv6 host in brackets as in [::1]:11211: %w", entry, err)
		}
		if host == "" {
			return nil, fmt.Errorf("memcache server %q: missing host", entry)
		}
		if strings.ContainsAny(host, " \t") {
			return nil, fmt.Errorf("memcache server %q: space in host", entry)
		}
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("memcache server %q: port %q: want a number from 1 to 65535", entry, port)
		}
		out = append(out, entry)
	}
	return out, nil
}
