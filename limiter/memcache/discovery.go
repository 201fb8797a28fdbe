package memcache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/floodgate-rl/floodgate/internal/periodic"
)

const (
	// DefaultResolveInterval is the ResolveInterval used when
	// Config.ResolveInterval is zero.
	DefaultResolveInterval = 10 * time.Second

	// dnsPrefix starts a server entry that names a DNS name to resolve to
	// all its addresses: "dns+NAME:PORT".
	dnsPrefix = "dns+"

	// resolveTimeout bounds one lookup of one name.
	resolveTimeout = 5 * time.Second

	// emptyRetryInterval is the longest wait between lookups while no
	// server is known, so a Store whose names did not resolve at start (a
	// floodgate that started before memcached) gets going within a second.
	emptyRetryInterval = time.Second

	// failLogInterval is how often a name that keeps failing the same way
	// is logged again, after the first failure of a streak.
	failLogInterval = time.Minute

	// minRetireAfter is the least time after which the pipeline of a
	// removed server is closed a second time, for the connections that
	// calls in flight at its removal put back into its pool afterwards.
	minRetireAfter = time.Minute
)

// Resolver looks up the addresses of a host name, as IP address strings.
// *net.Resolver implements it; Config.Resolver takes another for tests or
// for a custom discovery. It must be safe for concurrent use.
type Resolver interface {
	LookupHost(ctx context.Context, host string) (addrs []string, err error)
}

var _ Resolver = (*net.Resolver)(nil)

// lookupFunc returns the "host:port" addresses of the servers that the entry
// dns+name:port stands for. Production resolves name with a Resolver and
// adds port to every address; tests may return other ports.
type lookupFunc func(ctx context.Context, name, port string) ([]string, error)

// resolverLookup is the lookupFunc of r: every address of name, on port.
func resolverLookup(r Resolver) lookupFunc {
	return func(ctx context.Context, name, port string) ([]string, error) {
		hosts, err := r.LookupHost(ctx, name)
		if err != nil {
			return nil, err
		}
		out := make([]string, len(hosts))
		for i, h := range hosts {
			out[i] = net.JoinHostPort(h, port)
		}
		return out, nil
	}
}

// dnsName is a parsed "dns+NAME:PORT" server entry.
type dnsName struct {
	entry, name, port string
}

// parseDNSEntry parses entry, which starts with dnsPrefix. The error names
// the entry.
func parseDNSEntry(entry string) (dnsName, error) {
	rest := strings.TrimPrefix(entry, dnsPrefix)
	name, port, err := net.SplitHostPort(rest)
	if err != nil {
		return dnsName{}, fmt.Errorf("memcache server %q: want dns+NAME:PORT, as in dns+memcached.default.svc.cluster.local:11211: %w", entry, err)
	}
	if err := checkDNSName(name); err != nil {
		return dnsName{}, fmt.Errorf("memcache server %q: name %q: %w", entry, name, err)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return dnsName{}, fmt.Errorf("memcache server %q: port %q: want a number from 1 to 65535", entry, port)
	}
	return dnsName{entry: entry, name: name, port: port}, nil
}

// checkDNSName reports whether name is a DNS name: dot-separated labels of 1
// to 63 letters, digits, '-' or '_', not starting or ending with '-', at
// most 253 characters in all, with an optional final dot.
func checkDNSName(name string) error {
	n := strings.TrimSuffix(name, ".")
	switch {
	case n == "":
		return errors.New("missing name")
	case len(n) > 253:
		return errors.New("longer than 253 characters")
	}
	for label := range strings.SplitSeq(n, ".") {
		switch {
		case label == "":
			return errors.New("empty label")
		case len(label) > 63:
			return fmt.Errorf("label %q is longer than 63 characters", label)
		case label[0] == '-' || label[len(label)-1] == '-':
			return fmt.Errorf("label %q starts or ends with '-'", label)
		}
		for _, c := range []byte(label) {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("character %q: want letters, digits, '-', '_' and '.'", c)
			}
		}
	}
	return nil
}

// discovery keeps a Store's server set up to date with its dns+ names: it
// resolves them every interval and swaps in the union of their addresses
// and the static servers. Only its goroutine (and New, before starting it)
// changes the set.
type discovery struct {
	store       *Store
	static      []string // addresses of the static entries
	names       []*nameState
	lookup      lookupFunc
	interval    time.Duration
	retireAfter time.Duration
	log         *slog.Logger

	retired []retiredServer // owned by the goroutine, then by stop

	cancel   context.CancelFunc
	done     chan struct{} // closed when the goroutine has returned
	stopOnce sync.Once
}

// nameState is what discovery knows of one dns+ entry.
type nameState struct {
	dnsName
	addrs    []string  // the last good lookup, sorted; nil before the first
	failures int       // consecutive failed or empty lookups
	loggedAt time.Time // when a failure was last logged
	lastErr  string    // the failure last logged
}

// retiredServer is a server removed from the set, whose pipeline is closed
// again at retireAt.
type retiredServer struct {
	srv      *server
	retireAt time.Time
}

// start resolves every name once, swaps in the result and starts the
// goroutine that resolves them again every interval until stop.
func (d *discovery) start() {
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel, d.done = cancel, make(chan struct{})
	d.refresh(ctx)
	go d.run(ctx)
}

func (d *discovery) run(ctx context.Context) {
	defer close(d.done)
	periodic.Loop(ctx, d.wait, func() { d.refresh(ctx) })
}

// wait returns the time until the next lookup: the interval, or at most
// emptyRetryInterval while no server is known.
func (d *discovery) wait() time.Duration {
	if len(d.store.set.Load().servers) == 0 {
		return min(d.interval, emptyRetryInterval)
	}
	return d.interval
}

// stop ends the goroutine, waits for it, and closes the pipelines of
// removed servers. It is idempotent.
func (d *discovery) stop() {
	d.stopOnce.Do(func() {
		d.cancel()
		<-d.done
		for _, r := range d.retired {
			_ = r.srv.close()
		}
		d.retired = nil
	})
}

// refresh looks up every name and swaps in the new server set when it
// differs. A name whose lookup fails or finds nothing keeps the addresses
// of its last good lookup.
func (d *discovery) refresh(ctx context.Context) {
	for _, n := range d.names {
		d.resolve(ctx, n)
	}
	if ctx.Err() != nil {
		return // stopping
	}
	want := slices.Clone(d.static)
	for _, n := range d.names {
		want = append(want, n.addrs...)
	}
	slices.Sort(want)
	want = slices.Compact(want)
	d.swap(want)
	d.closeRetired(d.store.now())
}

// resolve looks n up once and records the outcome in n.
func (d *discovery) resolve(ctx context.Context, n *nameState) {
	lctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	addrs, err := d.lookup(lctx, n.name, n.port)
	cancel()
	if ctx.Err() != nil {
		return // stopping: not a failure of the name
	}
	if err == nil && len(addrs) == 0 {
		err = errors.New("no addresses")
	}
	if err != nil {
		n.failures++
		now := d.store.now()
		if n.failures == 1 || err.Error() != n.lastErr || now.Sub(n.loggedAt) >= failLogInterval {
			n.loggedAt, n.lastErr = now, err.Error()
			d.log.Warn("memcache: lookup of server name failed; keeping the servers of its last good lookup",
				"entry", n.entry, "servers", n.addrs, "consecutive_failures", n.failures, "err", err)
		}
		return
	}
	if n.failures > 0 {
		d.log.Info("memcache: server name resolves again", "entry", n.entry, "failed_lookups", n.failures)
		n.failures = 0
	}
	slices.Sort(addrs)
	n.addrs = slices.Compact(addrs)
}

// swap makes want, sorted and without duplicates, the store's server set.
// Servers that stay keep their pipeline and so their idle connections; new
// ones get a pipeline; removed ones have their idle connections closed and are
// retired.
func (d *discovery) swap(want []string) {
	cur := d.store.set.Load()
	if slices.Equal(cur.addrs(), want) {
		return
	}
	next := make([]*server, 0, len(want))
	var added []string
	for _, addr := range want {
		if srv := cur.find(addr); srv != nil {
			next = append(next, srv)
			continue
		}
		srv, err := d.store.newServer(addr)
		if err != nil {
			// A resolver returned something that is no address; try
			// again at the next lookup.
			d.log.Warn("memcache: ignoring server", "server", addr, "err", err)
			continue
		}
		next = append(next, srv)
		added = append(added, addr)
	}
	set := newServerSet(next)
	var removed []string
	retireAt := d.store.now().Add(d.retireAfter)
	for _, srv := range cur.servers {
		if set.find(srv.addr) == nil {
			removed = append(removed, srv.addr)
			d.retired = append(d.retired, retiredServer{srv: srv, retireAt: retireAt})
		}
	}
	if len(added) == 0 && len(removed) == 0 {
		return
	}
	d.store.set.Store(set)
	for _, r := range d.retired[len(d.retired)-len(removed):] {
		_ = r.srv.close() // its idle connections now; calls in flight finish
	}
	d.log.Info("memcache: servers changed", "servers", set.addrs(), "added", added, "removed", removed)
}

// closeRetired closes the pipelines of the removed servers whose time has
// come, once more: calls in flight at their removal may have put
// connections back since.
func (d *discovery) closeRetired(now time.Time) {
	d.retired = slices.DeleteFunc(d.retired, func(r retiredServer) bool {
		if now.Before(r.retireAt) {
			return false
		}
		_ = r.srv.close()
		return true
	})
}
