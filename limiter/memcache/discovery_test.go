package memcache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/floodgate-rl/floodgate/internal/testutil"
)

// testInterval is the ResolveInterval of the tests: short, so changes show
// quickly; nothing asserts how quickly.
const testInterval = 5 * time.Millisecond

// fakeResolver is a Resolver whose answers a test sets by name. Names it has
// no answer for fail like a missing DNS name.
type fakeResolver struct {
	mu    sync.Mutex
	hosts map[string][]string
	errs  map[string]error
	calls map[string]int
}

func newFakeResolver(hosts map[string][]string) *fakeResolver {
	return &fakeResolver{hosts: hosts, errs: map[string]error{}, calls: map[string]int{}}
}

// LookupHost implements Resolver.
func (r *fakeResolver) LookupHost(ctx context.Context, host string) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls[host]++
	if err := r.errs[host]; err != nil {
		return nil, err
	}
	addrs, ok := r.hosts[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return slices.Clone(addrs), nil
}

// set makes host resolve to addrs from now on, or fail with err.
func (r *fakeResolver) set(host string, addrs []string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hosts[host] = addrs
	r.errs[host] = err
}

// callCount returns how often host was looked up.
func (r *fakeResolver) callCount(host string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[host]
}

// waitLookups waits until host has been looked up n more times than it had
// been when the test called it: by then an answer set before is in effect.
func (r *fakeResolver) waitLookups(t *testing.T, host string, n int) {
	t.Helper()
	from := r.callCount(host)
	waitFor(t, fmt.Sprintf("%d more lookups of %s", n, host), func() bool { return r.callCount(host) >= from+n })
}

// waitFor waits with testutil.WaitFor, within a generous deadline, until
// cond holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, func() error {
		if !cond() {
			return errors.New("waiting for " + what)
		}
		return nil
	})
}

// logTo returns a Logger that writes its lines to b.
func logTo(b *testutil.Buffer) *slog.Logger { return slog.New(slog.NewTextHandler(b, nil)) }

// openTest returns a Store on servers, resolved by lookup, that t's
// cleanup closes.
func openTest(t *testing.T, servers []string, cfg Config, lookup lookupFunc) *Store {
	t.Helper()
	s, err := open(servers, cfg, lookup)
	return closedAtEnd(t, servers, s, err)
}

// dnsStore returns a Store on servers whose names r resolves, that t's
// cleanup closes.
func dnsStore(t *testing.T, servers []string, r Resolver, log *slog.Logger) *Store {
	t.Helper()
	return newStore(t, servers, Config{Resolver: r, ResolveInterval: testInterval, Logger: log})
}

func TestDiscoveryInitialLookup(t *testing.T) {
	tests := []struct {
		name    string
		servers []string
		hosts   map[string][]string
		want    []string
	}{
		{
			name:    "all addresses of the name, sorted",
			servers: []string{"dns+memcached.cache.svc.cluster.local:11211"},
			hosts:   map[string][]string{"memcached.cache.svc.cluster.local": {"10.244.2.9", "10.244.1.4", "10.244.3.15"}},
			want:    []string{"10.244.1.4:11211", "10.244.2.9:11211", "10.244.3.15:11211"},
		},
		{
			name:    "IPv6 in brackets",
			servers: []string{"dns+mc6:11211"},
			hosts:   map[string][]string{"mc6": {"fd00::2", "10.0.0.1"}},
			want:    []string{"10.0.0.1:11211", "[fd00::2]:11211"},
		},
		{
			name:    "names mixed with fixed addresses, duplicates once",
			servers: []string{"dns+a.test:11211", "127.0.0.1:11311", "dns+b.test:11212", "10.0.0.1:11211"},
			hosts:   map[string][]string{"a.test": {"10.0.0.1", "10.0.0.2", "10.0.0.1"}, "b.test": {"10.0.0.1"}},
			want:    []string{"10.0.0.1:11211", "10.0.0.1:11212", "10.0.0.2:11211", "127.0.0.1:11311"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := dnsStore(t, tt.servers, newFakeResolver(tt.hosts), nil)
			if got := s.Servers(); !slices.Equal(got, tt.want) {
				t.Errorf("Servers() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDiscoveryFollowsChanges(t *testing.T) {
	const name = "memcached.test"
	r := newFakeResolver(map[string][]string{name: {"10.0.0.2", "10.0.0.1"}})
	var log testutil.Buffer
	s := dnsStore(t, []string{"dns+" + name + ":11211"}, r, logTo(&log))
	stay := s.set.Load().find("10.0.0.1:11211")

	r.set(name, []string{"10.0.0.3", "10.0.0.1"}, nil) // 10.0.0.2 replaced
	want := []string{"10.0.0.1:11211", "10.0.0.3:11211"}
	waitFor(t, fmt.Sprintf("servers %q", want), func() bool { return slices.Equal(s.Servers(), want) })
	if got := s.set.Load().find("10.0.0.1:11211"); got != stay {
		t.Error("the server that stayed got a new client, which drops its idle connections")
	}
	if out := log.String(); !strings.Contains(out, "servers changed") || !strings.Contains(out, "removed=[10.0.0.2:11211]") {
		t.Errorf("log lacks the change:\n%s", out)
	}

	// Order alone is no change.
	r.set(name, []string{"10.0.0.1", "10.0.0.3"}, nil)
	r.waitLookups(t, name, 2)
	if got := s.set.Load().find("10.0.0.1:11211"); got != stay {
		t.Error("a new order of the same addresses replaced a server")
	}
}

func TestDiscoveryKeepsLastGoodList(t *testing.T) {
	const name = "memcached.test"
	r := newFakeResolver(map[string][]string{name: {"10.0.0.1", "10.0.0.2"}})
	var log testutil.Buffer
	s := dnsStore(t, []string{"dns+" + name + ":11211", "dns+other.test:11211"}, r, logTo(&log))
	want := []string{"10.0.0.1:11211", "10.0.0.2:11211"}
	if got := s.Servers(); !slices.Equal(got, want) {
		t.Fatalf("Servers() = %q, want %q (other.test does not resolve)", got, want)
	}

	for _, tt := range []struct {
		what  string
		addrs []string
		err   error
		log   string
	}{
		{"a failed lookup", nil, errors.New("i/o timeout"), "err=\"i/o timeout\""},
		{"an empty answer", []string{}, nil, "err=\"no addresses\""},
	} {
		r.set(name, tt.addrs, tt.err)
		r.waitLookups(t, name, 3)
		if got := s.Servers(); !slices.Equal(got, want) {
			t.Errorf("after %s: Servers() = %q, want the last good %q", tt.what, got, want)
		}
		out := log.String()
		if !strings.Contains(out, "entry=dns+"+name+":11211") || !strings.Contains(out, tt.log) {
			t.Errorf("after %s the log lacks entry=dns+%s:11211 or %s:\n%s", tt.what, name, tt.log, out)
		}
	}
	// A streak of failures is logged when it starts, when the error
	// changes, and then at most once a minute.
	if n := strings.Count(log.String(), "entry=dns+"+name+":11211"); n != 2 {
		t.Errorf("%d log lines about %s, want 2, one per error:\n%s", n, name, log.String())
	}

	r.set(name, []string{"10.0.0.2"}, nil)
	waitFor(t, "the name to resolve again", func() bool { return slices.Equal(s.Servers(), []string{"10.0.0.2:11211"}) })
	waitFor(t, "the recovery to be logged", func() bool { return strings.Contains(log.String(), "resolves again") })
}

// TestDiscoveryUnresolvedAtStart checks that a Store whose names do not
// resolve yet, as when floodgate starts before memcached, fails its calls as
// unavailable, and serves once they resolve.
func TestDiscoveryUnresolvedAtStart(t *testing.T) {
	mc := testutil.StartMemcached(t)
	host, port := splitAddr(t, mc.Addr())
	const name = "memcached.test"
	r := newFakeResolver(map[string][]string{})
	var log testutil.Buffer
	s, err := New([]string{"dns+" + name + ":" + port}, Config{Resolver: r, ResolveInterval: time.Hour, Logger: logTo(&log)})
	if err != nil {
		t.Fatalf("New with a name that does not resolve: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	if got := s.Servers(); len(got) != 0 {
		t.Fatalf("Servers() = %q, want none", got)
	}
	ctx := context.Background()
	const key = "fg1:early:1"
	_, err = s.Add(ctx, key, 1, time.Minute)
	wantUnavailable(t, "Add with no server", err, "add", key)
	_, err = s.Get(ctx, []string{key})
	wantUnavailable(t, "Get with no server", err, "get", key)
	_, _, err = s.GetVersioned(ctx, key)
	wantUnavailable(t, "GetVersioned with no server", err, "gets", key)
	_, err = s.CompareAndSwap(ctx, key, []byte("x"), 0, time.Minute)
	wantUnavailable(t, "CompareAndSwap with no server", err, "add", key)
	if !strings.Contains(log.String(), "no such host") {
		t.Errorf("log lacks the failed lookup:\n%s", log.String())
	}

	// With no server known it looks again within a second, not an hour.
	r.set(name, []string{host}, nil)
	waitFor(t, "the name to resolve", func() bool { return len(s.Servers()) == 1 })
	if v, err := s.Add(ctx, key, 1, time.Minute); err != nil || v != 1 {
		t.Errorf("Add once resolved = %d, %v; want 1, nil", v, err)
	}
}

// TestCloseStopsDiscovery runs in a synctest bubble: the intervals pass on
// the bubble's clock, and synctest.Wait returns once the discovery
// goroutine has looked up or ended.
func TestCloseStopsDiscovery(t *testing.T) {
	synctest.Test(t, testCloseStopsDiscovery)
}

func testCloseStopsDiscovery(t *testing.T) {
	const name = "memcached.test"
	r := newFakeResolver(map[string][]string{name: {"10.0.0.1"}})
	s, err := New([]string{"dns+" + name + ":11211"}, Config{Resolver: r, ResolveInterval: testInterval})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * testInterval)
	synctest.Wait()
	if n := r.callCount(name); n < 2 {
		t.Fatalf("%d lookups in two intervals, want 2 or more", n)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	n := r.callCount(name)
	time.Sleep(20 * testInterval)
	synctest.Wait()
	if got := r.callCount(name); got != n {
		t.Errorf("%d lookups after Close, want none", got-n)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestDiscoveryTwoServers runs a Store against two real memcached servers
// behind one name, then takes one away and brings it back: only the
// requestors of the server that left move, and they move back.
func TestDiscoveryTwoServers(t *testing.T) {
	a, b := testutil.StartMemcached(t), testutil.StartMemcached(t)
	// dns+NAME:PORT gives every address one port, but both test servers
	// listen on 127.0.0.1: this lookup answers with whole host:port pairs.
	var mu sync.Mutex
	answer := []string{b.Addr(), a.Addr()}
	lookups := 0
	lookup := func(ctx context.Context, name, port string) ([]string, error) {
		mu.Lock()
		defer mu.Unlock()
		lookups++
		if name != "memcached.test" || port != "11211" {
			return nil, fmt.Errorf("lookup of %s port %s, want memcached.test port 11211", name, port)
		}
		return slices.Clone(answer), nil
	}
	setAnswer := func(addrs ...string) {
		mu.Lock()
		defer mu.Unlock()
		answer = addrs
	}
	s := openTest(t, []string{"dns+memcached.test:11211"}, Config{ResolveInterval: testInterval}, lookup)
	ctx := context.Background()

	reqs := requestors(100)
	buckets := []string{"1732312345", "1732312346", "m28871872"}
	addAll := func() {
		t.Helper()
		for _, r := range reqs {
			for _, bk := range buckets {
				if _, err := s.Add(ctx, r+":"+bk, 1, time.Minute); err != nil {
					t.Fatalf("Add: %v", err)
				}
			}
		}
	}
	// where returns the server each requestor's buckets are on, and their
	// count there, asking the servers directly.
	where := func(servers ...*testutil.Memcached) (map[string]string, map[string]uint64) {
		t.Helper()
		server, count := map[string]string{}, map[string]uint64{}
		for _, mc := range servers {
			direct := memcache.New(mc.Addr())
			for _, r := range reqs {
				keys := make([]string, len(buckets))
				for i, bk := range buckets {
					keys[i] = r + ":" + bk
				}
				items, err := direct.GetMulti(keys)
				if err != nil {
					t.Fatalf("GetMulti from %s: %v", mc.Addr(), err)
				}
				switch len(items) {
				case 0:
					continue
				case len(keys):
				default:
					t.Fatalf("requestor %s has %d of its %d buckets on %s: they must share a server", r, len(items), len(keys), mc.Addr())
				}
				if other, ok := server[r]; ok {
					t.Fatalf("requestor %s on both %s and %s", r, other, mc.Addr())
				}
				server[r] = mc.Addr()
				var v uint64
				fmt.Sscan(string(items[keys[0]].Value), &v)
				count[r] = v
			}
		}
		return server, count
	}

	addAll()
	first, _ := where(a, b)
	onB := 0
	for _, srv := range first {
		if srv == b.Addr() {
			onB++
		}
	}
	if len(first) != len(reqs) || onB == 0 || onB == len(reqs) {
		t.Fatalf("%d of %d requestors stored, %d on server b: want all, spread over both", len(first), len(reqs), onB)
	}
	// One Get reads the buckets of all requestors from both servers.
	var all []string
	for _, r := range reqs {
		all = append(all, r+":"+buckets[0])
	}
	got, err := s.Get(ctx, all)
	if err != nil || len(got) != len(all) {
		t.Fatalf("Get of %d keys on two servers = %d values, %v", len(all), len(got), err)
	}

	// b leaves the Service: only its requestors move, to a, from zero.
	setAnswer(a.Addr())
	waitFor(t, "server b to leave", func() bool { return slices.Equal(s.Servers(), []string{a.Addr()}) })
	b.Stop() // as its pod would; nothing may use it any more
	addAll()
	_, count := where(a)
	for _, r := range reqs {
		want := uint64(2) // counted before and now, on a
		if first[r] == b.Addr() {
			want = 1 // moved: starts again on a
		}
		if count[r] != want {
			t.Errorf("requestor %s (first on %s): count %d on a, want %d", r, first[r], count[r], want)
		}
	}

	// b is back, empty: its requestors move back, and a's stay.
	b.Restart()
	setAnswer(a.Addr(), b.Addr())
	waitFor(t, "server b to return", func() bool { return len(s.Servers()) == 2 })
	addAll()
	// b holds exactly its first requestors, counting from zero again (their
	// counts on a, now stale, expire with their TTL).
	onBNow, count := where(b)
	for _, r := range reqs {
		if onB, wasOnB := onBNow[r] != "", first[r] == b.Addr(); onB != wasOnB {
			t.Errorf("requestor %s: on b now %v, at first %v; want the same", r, onB, wasOnB)
		}
	}
	for r, c := range count {
		if c != 1 {
			t.Errorf("requestor %s: count %d on b, want 1 (b restarted empty)", r, c)
		}
	}
	// a's requestors never moved: their Get sees all three counts.
	for _, r := range reqs {
		if first[r] != a.Addr() {
			continue
		}
		key := r + ":" + buckets[0]
		got, err := s.Get(ctx, []string{key})
		if err != nil || got[key] != 3 {
			t.Errorf("Get(%s) = %v, %v; want 3", key, got, err)
		}
	}
}

// TestDiscoveryResolverRealServer runs a dns+ Store through the Resolver,
// which adds the entry's port to every address, against a real memcached.
func TestDiscoveryResolverRealServer(t *testing.T) {
	mc := testutil.StartMemcached(t)
	host, port := splitAddr(t, mc.Addr())
	r := newFakeResolver(map[string][]string{"memcached.cache.svc.cluster.local": {host}})
	s := dnsStore(t, []string{"dns+memcached.cache.svc.cluster.local:" + port}, r, nil)
	if got := s.Servers(); !slices.Equal(got, []string{mc.Addr()}) {
		t.Fatalf("Servers() = %q, want [%s]", got, mc.Addr())
	}
	ctx := context.Background()
	for want := int64(1); want <= 3; want++ {
		if v, err := s.Add(ctx, "fg1:dns:1", 1, time.Minute); err != nil || v != want {
			t.Fatalf("Add = %d, %v; want %d, nil", v, err, want)
		}
	}
	got, err := s.Get(ctx, []string{"fg1:dns:1", "fg1:dns:2"})
	if err != nil || got["fg1:dns:1"] != 3 || len(got) != 1 {
		t.Errorf("Get = %v, %v; want map[fg1:dns:1:3]", got, err)
	}
}

// splitAddr splits a test server's "127.0.0.1:port".
func splitAddr(t *testing.T, addr string) (host, port string) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return host, port
}

// TestDiscoverySwapUnderLoad swaps the server set back and forth while
// calls run, for the race detector: every call uses one whole set, and
// both servers are up, so none fails.
func TestDiscoverySwapUnderLoad(t *testing.T) {
	a, b := testutil.StartMemcached(t), testutil.StartMemcached(t)
	var mu sync.Mutex
	both := true
	lookup := func(ctx context.Context, name, port string) ([]string, error) {
		mu.Lock()
		defer mu.Unlock()
		both = !both
		if both {
			return []string{a.Addr(), b.Addr()}, nil
		}
		return []string{a.Addr()}, nil
	}
	s := openTest(t, []string{"dns+memcached.test:11211"}, Config{ResolveInterval: time.Millisecond, Timeout: 5 * time.Second}, lookup)
	ctx := context.Background()
	reqs := requestors(20)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 200 {
				r := reqs[(w*7+i)%len(reqs)]
				if _, err := s.Add(ctx, r+":1", 1, time.Minute); err != nil {
					t.Errorf("Add: %v", err)
					return
				}
				if _, err := s.Get(ctx, []string{reqs[0] + ":1", r + ":1", r + ":2"}); err != nil {
					t.Errorf("Get: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
}
