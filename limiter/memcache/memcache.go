// Package memcache is the limiter.Store (and limiter.SwapStore) on memcached,
// for floodgate instances that share their counters.
//
// Counters are memcached's decimal values, changed with incr and decr, which
// memcached applies atomically however many clients share it. Values of the
// limiter.SwapStore methods are read with gets, whose CAS unique is their
// version, and written with add (version 0: create only if absent) or cas,
// which memcached applies only if the item was not written since. All the keys
// of one requestor live on one server, so a decision's Get is one round trip
// and a server that fails affects only the requestors it holds.
package memcache

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/floodgate-rl/floodgate/limiter"
)

// Compile-time check that Store implements limiter.SwapStore.
var _ limiter.SwapStore = (*Store)(nil)

const (
	// DefaultTimeout is the Timeout used when Config.Timeout is zero.
	DefaultTimeout = 100 * time.Millisecond

	// DefaultMaxIdleConns is the MaxIdleConns used when Config.MaxIdleConns
	// is zero.
	DefaultMaxIdleConns = 64

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

	// MaxIdleConns is how many idle connections are kept open to each
	// server for reuse. A request that finds none dials a new connection,
	// closed afterwards if MaxIdleConns are already idle; set it above the
	// peak number of concurrent requests to one server. Zero means
	// DefaultMaxIdleConns (64).
	MaxIdleConns int
}

// Store is a limiter.SwapStore on one or more memcached servers. Create it with
// New; the zero value is not usable. It is safe for concurrent use by many
// goroutines, and many processes may share the same servers.
//
// A Store picks a key's server by hashing the key up to its last ':', so the
// buckets "<prefix>:<bucket>" of one requestor share a server. Adding or removing a server moves most requestors to another
// one, where their counters start again from zero.
//
// memcached has no notion of a context: a Store checks ctx before each round
// trip and otherwise relies on Config.Timeout to bound a call.
type Store struct {
	client *memcache.Client
	now    func() time.Time // for expirations past 30 days, which are Unix times
}

// New returns a Store on servers, a list of "host:port" addresses such as
// ParseServers returns. Host names are resolved once, here. New does not
// connect: a server that is down shows as errors from Add and Get.
func New(servers []string, cfg Config) (*Store, error) {
	if len(servers) == 0 {
		return nil, errors.New("memcache: no servers")
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("memcache: timeout %v: must not be negative", cfg.Timeout)
	}
	if cfg.MaxIdleConns < 0 {
		return nil, fmt.Errorf("memcache: max idle conns %d: must not be negative", cfg.MaxIdleConns)
	}
	sel := &requestorSelector{}
	if err := sel.SetServers(servers...); err != nil {
		return nil, fmt.Errorf("memcache: servers %q: %w", servers, err)
	}
	c := memcache.NewFromSelector(sel)
	c.Timeout = cfg.Timeout
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	c.MaxIdleConns = cfg.MaxIdleConns
	if c.MaxIdleConns == 0 {
		c.MaxIdleConns = DefaultMaxIdleConns
	}
	return &Store{client: c, now: time.Now}, nil
}

// Close closes the idle connections to the servers. The Store remains usable
// and dials again when needed; Close never fails in practice, but returns the
// first error of closing a connection.
func (s *Store) Close() error {
	if err := s.client.Close(); err != nil {
		return fmt.Errorf("memcache close: %w", err)
	}
	return nil
}

// Add implements limiter.Store. A positive delta increments the counter and a
// negative one decrements it, which memcached stops at zero. When the counter
// is missing, a positive delta creates it with value delta and the given ttl
// (rounded up to whole seconds, at least one); a zero or negative delta
// returns 0 and creates nothing. Two clients that create the same counter at
// once both count: the one whose creation memcached refuses increments
// instead. An Add that fails with a timeout may still have been applied, once,
// when the server gets to it.
func (s *Store) Add(ctx context.Context, key string, delta int64, ttl time.Duration) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, opError("add", key, err)
	}
	if delta < 0 {
		// uint64(-delta) is right even for math.MinInt64.
		v, err := s.client.Decrement(key, uint64(-delta))
		if errors.Is(err, memcache.ErrCacheMiss) {
			return 0, nil
		}
		if err != nil {
			return 0, opError("decr", key, err)
		}
		return counter("decr", key, v)
	}

	v, err := s.client.Increment(key, uint64(delta))
	if err == nil {
		return counter("incr", key, v)
	}
	if !errors.Is(err, memcache.ErrCacheMiss) {
		return 0, opError("incr", key, err)
	}
	if delta == 0 {
		return 0, nil
	}

	if err := ctx.Err(); err != nil {
		return 0, opError("add", key, err)
	}
	err = s.client.Add(&memcache.Item{
		Key:        key,
		Value:      strconv.AppendInt(nil, delta, 10),
		Expiration: expiration(ttl, s.now()),
	})
	if err == nil {
		return delta, nil
	}
	if !errors.Is(err, memcache.ErrNotStored) {
		return 0, opError("add", key, err)
	}

	// Another client created the counter after our incr missed it.
	if err := ctx.Err(); err != nil {
		return 0, opError("incr", key, err)
	}
	v, err = s.client.Increment(key, uint64(delta))
	if err != nil {
		return 0, opError("incr", key, err)
	}
	return counter("incr", key, v)
}

// Get implements limiter.Store with one multi-key get per server; as all the
// keys of one requestor share a server, that is one round trip.
func (s *Store) Get(ctx context.Context, keys []string) (map[string]int64, error) {
	if err := ctx.Err(); err != nil {
		return nil, getError(keys, err)
	}
	out := make(map[string]int64, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	items, err := s.client.GetMulti(keys)
	if err != nil {
		return nil, getError(keys, err)
	}
	for key, it := range items {
		// memcached pads a value with spaces when decr shortens it.
		v, err := strconv.ParseInt(strings.TrimSpace(string(it.Value)), 10, 64)
		if err != nil || v < 0 {
			return nil, opError("get", key, fmt.Errorf("value %q is not a counter", it.Value))
		}
		out[key] = v
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
	it, err := s.client.Get(key)
	if errors.Is(err, memcache.ErrCacheMiss) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, opError("gets", key, err)
	}
	if it.CasID == 0 {
		return nil, 0, opError("gets", key, errors.New("no CAS unique: memcached runs with CAS disabled (-C)"))
	}
	return it.Value, it.CasID, nil
}

// CompareAndSwap implements limiter.SwapStore. Version 0 is memcached's add,
// which stores only when the key is missing; any other version is cas, which
// stores only when the item's CAS unique is still version. Either sets the
// item's expiration to ttl from now. A refused write, and a cas on an item
// that has expired or been evicted meanwhile, return false and no error.
func (s *Store) CompareAndSwap(ctx context.Context, key string, value []byte, version uint64, ttl time.Duration) (bool, error) {
	op := "cas"
	if version == 0 {
		op = "add"
	}
	if err := ctx.Err(); err != nil {
		return false, opError(op, key, err)
	}
	it := &memcache.Item{Key: key, Value: value, Expiration: expiration(ttl, s.now()), CasID: version}
	var err error
	if version == 0 {
		err = s.client.Add(it)
	} else {
		err = s.client.CompareAndSwap(it)
	}
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, memcache.ErrNotStored), errors.Is(err, memcache.ErrCASConflict), errors.Is(err, memcache.ErrCacheMiss):
		// Not stored: the key exists (add), or was written, expired or
		// evicted since it was read (cas).
		return false, nil
	}
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

// requestorSelector is a memcache.ServerSelector that hashes only the part
// of a key serverKey returns.
type requestorSelector struct {
	memcache.ServerList
}

// PickServer implements memcache.ServerSelector.
func (s *requestorSelector) PickServer(key string) (net.Addr, error) {
	return s.ServerList.PickServer(serverKey(key))
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

// counter converts a value memcached returned for op on key.
func counter(op, key string, v uint64) (int64, error) {
	if v > math.MaxInt64 {
		return 0, opError(op, key, fmt.Errorf("value %d overflows int64", v))
	}
	return int64(v), nil
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

// ParseServers parses a comma-separated list of memcached addresses such as
// "10.0.0.1:11211, cache-b:11211,[::1]:11211". Spaces around entries are
// trimmed. Each entry needs a host and a numeric port from 1 to 65535; an IPv6
// host is written in brackets. The error names the first bad entry.
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
