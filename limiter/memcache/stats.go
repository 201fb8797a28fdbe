package memcache

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/floodgate-rl/floodgate/limiter/memcache/internal/wire"
)

// ServerStats is what one memcached server says of its memory in the answer
// to its stats command. The counts are memcached's own, since it started:
// they start again from zero when it restarts.
type ServerStats struct {
	// Addr is the server's address, as Store.Servers gives it.
	Addr string
	// Err is why the stats could not be read; the counts are zero then.
	Err error

	// Evictions is how many items memcached removed before they expired,
	// to make room for new ones ("evictions"). An evicted counter starts
	// again from zero, so a requestor whose buckets are evicted is allowed
	// more than the limit: it must stay at zero.
	Evictions uint64
	// EvictedUnfetched is how many of the evicted items were never read
	// ("evicted_unfetched").
	EvictedUnfetched uint64
	// Reclaimed is how many times an item was stored in the memory of an
	// expired one ("reclaimed").
	Reclaimed uint64
	// ExpiredUnfetched is how many items expired without being read
	// ("expired_unfetched").
	ExpiredUnfetched uint64
	// Bytes is the size of the items stored now, in bytes ("bytes").
	Bytes uint64
	// LimitMaxBytes is the memory memcached may use for items, in bytes
	// ("limit_maxbytes", its -m).
	LimitMaxBytes uint64
	// CurrItems is the number of items stored now ("curr_items").
	CurrItems uint64
}

// statFields maps the stats ServerStats holds to their fields; those marked
// required must be in every answer.
var statFields = []struct {
	name     string
	required bool
	field    func(*ServerStats) *uint64
}{
	{"evictions", true, func(s *ServerStats) *uint64 { return &s.Evictions }},
	{"bytes", true, func(s *ServerStats) *uint64 { return &s.Bytes }},
	{"limit_maxbytes", true, func(s *ServerStats) *uint64 { return &s.LimitMaxBytes }},
	{"curr_items", true, func(s *ServerStats) *uint64 { return &s.CurrItems }},
	{"evicted_unfetched", false, func(s *ServerStats) *uint64 { return &s.EvictedUnfetched }},
	{"reclaimed", false, func(s *ServerStats) *uint64 { return &s.Reclaimed }},
	{"expired_unfetched", false, func(s *ServerStats) *uint64 { return &s.ExpiredUnfetched }},
}

// maxStatLines bounds the lines of a stats answer (memcached 1.6 gives
// about 90).
const maxStatLines = 1000

// Stats reads the stats of every server the Store spreads requestors over
// now, concurrently, each on a new connection bounded by Config.Timeout
// (or ctx's deadline, if sooner), and returns them in the order of Servers.
// A server whose stats cannot be read has its Err set; Stats itself does
// not fail. It is safe for concurrent use, and costs a round trip per
// server, apart from the pipelines' connections.
func (s *Store) Stats(ctx context.Context) []ServerStats {
	servers := s.set.Load().servers
	out := make([]ServerStats, len(servers))
	var wg sync.WaitGroup
	for i, srv := range servers {
		wg.Go(func() {
			out[i] = readStats(ctx, srv.pipe.addr, s.timeout)
			out[i].Addr = srv.addr
		})
	}
	wg.Wait()
	return out
}

// readStats sends stats to the server at addr and reads its answer.
func readStats(ctx context.Context, addr net.Addr, timeout time.Duration) ServerStats {
	deadline := time.Now().Add(timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	d := net.Dialer{Deadline: deadline}
	nc, err := d.DialContext(ctx, addr.Network(), addr.String())
	if err != nil {
		return ServerStats{Err: fmt.Errorf("memcache stats: %w", err)}
	}
	defer nc.Close()
	if err := nc.SetDeadline(deadline); err != nil {
		return ServerStats{Err: fmt.Errorf("memcache stats: %w", err)}
	}
	w := wire.NewWriter(nc, 64)
	w.Stats()
	if err := w.Flush(); err != nil {
		return ServerStats{Err: fmt.Errorf("memcache stats: %w", err)}
	}
	st, err := parseStats(nc)
	if err != nil {
		return ServerStats{Err: fmt.Errorf("memcache stats: %w", err)}
	}
	return st
}

// parseStats reads the answer to stats (see wire.Reader.Stats) into
// ServerStats. A required stat missing, or a stat of ServerStats that is
// not a number, is an error.
func parseStats(r io.Reader) (ServerStats, error) {
	stats, err := wire.NewReader(r).Stats(maxStatLines)
	if err != nil {
		return ServerStats{}, err
	}
	var st ServerStats
	seen := make([]bool, len(statFields))
	for _, s := range stats {
		for i, f := range statFields {
			if s.Name != f.name {
				continue
			}
			v, err := strconv.ParseUint(s.Value, 10, 64)
			if err != nil {
				return ServerStats{}, fmt.Errorf("stat %s %q: not a count", f.name, s.Value)
			}
			*f.field(&st) = v
			seen[i] = true
		}
	}
	for i, f := range statFields {
		if f.required && !seen[i] {
			return ServerStats{}, fmt.Errorf("no %s in the answer", f.name)
		}
	}
	return st, nil
}
