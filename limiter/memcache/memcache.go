// Package memcache is the limiter.Store (and limiter.SwapStore and
// limiter.BatchStore) on memcached, for floodgate instances that share their
// counters.
//
// Counters are memcached's decimal values, changed with the meta arithmetic
// command ma, which memcached applies atomically however many clients share
// it and which creates a missing counter in the same round trip (memcached
// 1.6 or later). A Batch pipelines a decision's reads and increments in one
// write and one read; see pipeline.go. Values of the limiter.SwapStore
// methods are read with gets, whose CAS unique is their version, and written
// with add (version 0: create only if absent) or cas, which memcached applies
// only if the item was not written since. All the keys of one requestor live
// on one server, so a decision's Get or Batch is one round trip and a server
// that fails affects only the requestors it holds.
//
// The servers are fixed addresses, DNS names that are looked up again every
// few seconds ("dns+NAME:PORT", such as a Kubernetes headless Service), or
// both; requestors are spread over them by rendezvous hashing, so a server
// that comes or goes moves only about 1/N of them.
package memcache

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/floodgate-rl/floodgate/limiter"
)

// Compile-time checks that Store implements limiter.SwapStore and
// limiter.BatchStore.
var (
	_ limiter.SwapStore  = (*Store)(nil)
	_ limiter.BatchStore = (*Store)(nil)
)

const (
	// DefaultTimeout is the Timeout used when Config.Timeout is zero.
	DefaultTimeout = 100 * time.Millisecond

	// DefaultMaxIdleConns is the MaxIdleConns used when Config.MaxIdleConns
	// is zero.
	DefaultMaxIdleConns = 64

	// DefaultPipelineConns is the PipelineConns used when
	// Config.PipelineConns is zero.
	DefaultPipelineConns = 2

	// maxRelativeExpiration is the longest expiration memcached takes as
	// relative to now, 30 days in seconds; it reads larger ones as Unix times.
	maxRelativeExpiration = 30 * 24 * 60 * 60
)

// Config tunes the connection to memcached. The zero value is usable.
type Config struct {
	// Timeout bounds connecting to a server and each read and write of a
	// request; a request that waits longer fails with
	// limiter.ErrStoreUnavailable. Zero means DefaultTimeout (100ms).
	Timeout time.Duration

	// MaxIdleConns is how many idle connections for values
	// (GetVersioned, CompareAndSwap) are kept open to each server for
	// reuse. A request that finds none dials a new connection, closed
	// afterwards if MaxIdleConns are already idle; set it above the peak
	// number of concurrent such requests to one server. Counters (Add,
	// Batch, Get) use PipelineConns connections instead. Zero means
	// DefaultMaxIdleConns (64).
	MaxIdleConns int

	// PipelineConns is how many connections to each server carry counter
	// commands (Add, Batch and Get) at once. A call that finds them all busy
	// waits, and the next connection to come free sends every call
	// waiting then in one write and reads their answers in one read, so
	// under load a round trip carries many calls. Zero means
	// DefaultPipelineConns (2).
	PipelineConns int

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

// Store is a limiter.SwapStore on one or more memcached servers. Create it with
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
// The server set is swapped atomically; each server has its own pool of idle
// connections, which it keeps for as long as it stays in the set. A call
// sends all its round trips for one key to the server it picked at its start.
//
// memcached has no notion of a context: a Store checks ctx before each round
// trip and otherwise relies on Config.Timeout to bound a call.
type Store struct {
	set          atomic.Pointer[serverSet]
	timeout      time.Duration
	maxIdleConns int
	pipeConns    int
	pipeStats    PipelineStats
	now          func() time.Time // for expirations past 30 days, which are Unix times
	disc         *discovery       // nil when every server is a fixed address
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
	if cfg.MaxIdleConns < 0 {
		return nil, fmt.Errorf("memcache: max idle conns %d: must not be negative", cfg.MaxIdleConns)
	}
	if cfg.PipelineConns < 0 {
		return nil, fmt.Errorf("memcache: pipeline conns %d: must not be negative", cfg.PipelineConns)
	}
	if cfg.ResolveInterval < 0 {
		return nil, fmt.Errorf("memcache: resolve interval %v: must not be negative", cfg.ResolveInterval)
	}
	s := &Store{
		timeout:      cmp.Or(cfg.Timeout, DefaultTimeout),
		maxIdleConns: cmp.Or(cfg.MaxIdleConns, DefaultMaxIdleConns),
		pipeConns:    cmp.Or(cfg.PipelineConns, DefaultPipelineConns),
		now:          time.Now,
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

// newServer returns a server at addr, "host:port" (or a Unix socket path),
// with a client of its own; a host name is resolved here, once.
func (s *Store) newServer(addr string) (*server, error) {
	var sl memcache.ServerList
	if err := sl.SetServers(addr); err != nil {
		return nil, err
	}
	c := memcache.NewFromSelector(&sl)
	c.Timeout = s.timeout
	c.MaxIdleConns = s.maxIdleConns
	resolved, err := sl.PickServer("")
	if err != nil {
		return nil, err
	}
	pipe := newPipeline(resolved, s.timeout, s.pipeConns, &s.pipeStats)
	return &server{addr: addr, seed: serverSeed(addr), client: c, pipe: pipe}, nil
}

// PipelineStats returns the counts of the round trips that carried the
// Store's Add and Batch calls, over every server it has had. It is safe to
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

// client returns the client of key's server.
func (s *Store) client(key string) (*memcache.Client, error) {
	srv := s.set.Load().pick(serverKey(key))
	if srv == nil {
		return nil, errNoServers
	}
	return srv.client, nil
}

// Add implements limiter.Store. A positive delta increments the counter and a
// negative one decrements it, which memcached stops at zero. When the counter
// is missing, a positive delta creates it with value delta and the given ttl
// (rounded up to whole seconds, at least one); a zero or negative delta
// returns 0 and creates nothing. It is one round trip, a meta arithmetic
// command that creates a missing counter atomically, so two clients that
// create the same counter at once both count. An Add that fails with a
// timeout may still have been applied, once, when the server gets to it.
func (s *Store) Add(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, opError("add", key, err)
	}
	srv := s.set.Load().pick(serverKey(key))
	if srv == nil {
		return 0, opError("add", key, errNoServers)
	}
	op := "incr"
	if delta < 0 {
		op = "decr"
	}
	if !legalKey(key) {
		return 0, opError(op, key, errMalformedKey)
	}
	_, counts, err := srv.pipe.do(ctx, nil, []limiter.Increment{{Key: key, Delta: delta, TTL: ttl}}, s.now())
	if err != nil {
		return 0, opError(op, key, err)
	}
	return counts[0], nil
}

// Batch implements limiter.BatchStore. When every key shares a server, as
// the keys of one requestor do, it is one round trip: the meta arithmetic
// commands of adds followed by a multi-key get of gets, written at once, so
// the get sees the adds. Otherwise it is the Adds, one by one, and then a
// Get.
func (s *Store) Batch(ctx context.Context, gets []string, adds []limiter.Increment) (map[string]int64, []int64, error) {
	first := ""
	switch {
	case len(gets) > 0:
		first = gets[0]
	case len(adds) > 0:
		first = adds[0].Key
	default:
		return map[string]int64{}, nil, nil
	}
	n := len(gets) + len(adds)
	if err := ctx.Err(); err != nil {
		return nil, nil, batchError(n, first, err)
	}
	set := s.set.Load()
	sk := serverKey(first)
	srv := set.pick(sk)
	if srv == nil {
		return nil, nil, batchError(n, first, errNoServers)
	}
	one := true
	check := func(key string) error {
		if !legalKey(key) {
			return opError("batch", key, errMalformedKey)
		}
		if ks := serverKey(key); ks != sk && set.pick(ks) != srv {
			one = false
		}
		return nil
	}
	for _, k := range gets {
		if err := check(k); err != nil {
			return nil, nil, err
		}
	}
	for _, a := range adds {
		if err := check(a.Key); err != nil {
			return nil, nil, err
		}
	}
	if !one {
		counts := make([]int64, len(adds))
		for i, a := range adds {
			var err error
			if counts[i], err = s.Add(ctx, a.Key, a.Delta, a.TTL); err != nil {
				return nil, nil, err
			}
		}
		vals, err := s.Get(ctx, gets)
		if err != nil {
			return nil, nil, err
		}
		return vals, counts, nil
	}
	vals, counts, err := srv.pipe.do(ctx, gets, adds, s.now())
	if err != nil {
		return nil, nil, batchError(n, first, err)
	}
	return vals, counts, nil
}

// batchError reports that a Batch of n keys, the first one first, failed.
func batchError(n int, first string, err error) error {
	if n == 1 {
		return opError("batch", first, err)
	}
	return fmt.Errorf("memcache batch of %d keys from %q: %w: %w", n, first, limiter.ErrStoreUnavailable, err)
}

// Get implements limiter.Store with one multi-key get per server,
// concurrently, on the counter pipelines (see pipeline.go), which check
// every answer: a value of a key not asked for, or one that is not a
// counter, fails the Get. As all the keys of one requestor share a server,
// that is one round trip.
func (s *Store) Get(ctx context.Context, keys []string) (map[string]int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, getError(keys, err)
	}
	if len(keys) == 0 {
		return map[string]int64{}, nil
	}
	for _, k := range keys {
		if !legalKey(k) {
			return nil, opError("get", k, errMalformedKey)
		}
	}
	vals, err := s.getMulti(ctx, keys)
	if err != nil {
		return nil, getError(keys, err)
	}
	return vals, nil
}

// getMulti gets keys, which are not empty and legal, from their servers in
// one set.
func (s *Store) getMulti(ctx context.Context, keys []string) (map[string]int64, error) {
	set := s.set.Load()
	first := set.pick(serverKey(keys[0]))
	if first == nil {
		return nil, errNoServers
	}
	// The usual Get holds the keys of one requestor, which come together:
	// pick once per requestor, and group only when a second server shows.
	same := true
	sk, srv := serverKey(keys[0]), first
	for _, k := range keys[1:] {
		if ks := serverKey(k); ks != sk {
			sk, srv = ks, set.pick(ks)
		}
		if srv != first {
			same = false
			break
		}
	}
	now := s.now()
	if same {
		vals, _, err := first.pipe.do(ctx, keys, nil, now)
		return vals, err
	}
	groups := map[*server][]string{}
	sk, srv = "", nil
	for _, k := range keys {
		if ks := serverKey(k); ks != sk || srv == nil {
			sk, srv = ks, set.pick(ks)
		}
		groups[srv] = append(groups[srv], k)
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		out      = make(map[string]int64, len(keys))
		firstErr error
	)
	for srv, keys := range groups {
		wg.Go(func() {
			got, _, err := srv.pipe.do(ctx, keys, nil, now)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = fmt.Errorf("server %s: %w", srv.addr, err)
			}
			maps.Copy(out, got)
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	return out, nil
}

// GetVersioned implements limiter.SwapStore with one gets; the item's CAS
// unique, which memcached changes on every write, is the version. A missing
// key returns nil, 0 and no error. It needs memcached's CAS support, which is
// on unless the server runs with -C; without it GetVersioned fails.
func (s *Store) GetVersioned(ctx context.Context, key string) ([]byte, uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, opError("gets", key, err)
	}
	c, err := s.client(key)
	if err != nil {
		return nil, 0, opError("gets", key, err)
	}
	it, err := c.Get(key)
	if errors.Is(err, memcache.ErrCacheMiss) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, opError("gets", key, err)
	}
	if it.Key != key {
		return nil, 0, opError("gets", key, fmt.Errorf("the server answered with the value of %q", it.Key))
	}
	if it.CasID == 0 {
		return nil, 0, opError("gets", key, errors.New("no CAS unique: memcached runs with CAS disabled (-C)"))
	}
	return it.Value, it.CasID, nil
}

// CompareAndSwap implements limiter.SwapStore. Version 0 is memcached's add,
// which stores only when the key is missing; any other version is cas, which
// stores only when the item's CAS unique is still version. Either sets the
// item's expiration to ttl from now. A refused write (NOT_STORED to add,
// EXISTS to cas), and a cas on an item that has expired or been evicted
// meanwhile (NOT_FOUND), return false and no error; any other answer is an
// error.
func (s *Store) CompareAndSwap(ctx context.Context, key string, value []byte, version uint64, ttl time.Duration) (bool, error) {
	op := "cas"
	if version == 0 {
		op = "add"
	}
	if err := ctx.Err(); err != nil {
		return false, opError(op, key, err)
	}
	c, err := s.client(key)
	if err != nil {
		return false, opError(op, key, err)
	}
	it := &memcache.Item{Key: key, Value: value, Expiration: expiration(ttl, s.now()), CasID: version}
	if version == 0 {
		err = c.Add(it)
	} else {
		err = c.CompareAndSwap(it)
	}
	switch {
	case err == nil:
		return true, nil
	case version == 0 && errors.Is(err, memcache.ErrNotStored):
		// Not stored: the key exists.
		return false, nil
	case version != 0 && (errors.Is(err, memcache.ErrCASConflict) || errors.Is(err, memcache.ErrCacheMiss)):
		// Not stored: the item was written (EXISTS), or expired or was
		// evicted (NOT_FOUND), since it was read.
		return false, nil
	}
	// Any other answer, such as NOT_FOUND to an add, is not memcached's.
	return false, opError(op, key, err)
}

// serverKey returns the part of key that picks its server: the key up to its
// last ':', or the whole key when it has none. The limiter's keys are
// "<prefix>:<bucket>", so all the buckets of one prefix share a server.
func serverKey(key string) string {
	if i := strings.LastIndexByte(key, ':'); i >= 0 {
		return key[:i]
	}
	return key
}

// expiration returns memcached's expiration for a counter created at now that
// lives ttl: ttl in seconds, rounded up and at least one (zero would mean
// never), or past 30 days the Unix time it ends, which memcached requires.
func expiration(ttl time.Duration, now time.Time) int32 {
	secs := int64(ttl / time.Second)
	if ttl%time.Second != 0 {
		secs++
	}
	secs = max(secs, 1)
	if secs <= maxRelativeExpiration {
		return int32(secs)
	}
	return int32(min(now.Unix()+secs, math.MaxInt32))
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
