package memcache

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/floodgate-rl/floodgate/internal/testutil"
	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/storetest"
)

// newStore returns a Store on servers that t's cleanup closes.
func newStore(t testing.TB, servers []string, cfg Config) *Store {
	t.Helper()
	s, err := New(servers, cfg)
	return closedAtEnd(t, servers, s, err)
}

// closedAtEnd returns s, the Store on servers just opened, and has t's
// cleanup close it; it fails t on err, the error of the opening.
func closedAtEnd(t testing.TB, servers []string, s *Store, err error) *Store {
	t.Helper()
	if err != nil {
		t.Fatalf("open a Store on %q: %v", servers, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// TestConformance holds the store to limiter.Store's contract, each
// subtest on a memcached of its own. The suite checks what the store
// answers, not how fast: a second's timeout, not the 100 ms default, so
// that a loaded machine under the race detector does not turn a slow
// answer into a failure.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) limiter.Store {
		mc := testutil.StartMemcached(t)
		return newStore(t, []string{mc.Addr()}, Config{Timeout: time.Second})
	})
}

// TestServerSelection checks with two real servers that all the buckets of
// one requestor land on one server and that requestors spread over both.
func TestServerSelection(t *testing.T) {
	a, b := testutil.StartMemcached(t), testutil.StartMemcached(t)
	s := newStore(t, []string{a.Addr(), b.Addr()}, Config{})
	ctx := context.Background()

	const requestors = 40
	buckets := []string{"1732312345", "1732312346", "1732312399", "m28871872", "m28871873", "h481197"}
	var all []string
	for r := range requestors {
		prefix := fmt.Sprintf("fg1:%032x", r*104729)
		for _, bucket := range buckets {
			key := prefix + ":" + bucket
			all = append(all, key)
			if _, err := s.Add(ctx, key, 1, time.Minute); err != nil {
				t.Fatalf("Add(%q): %v", key, err)
			}
		}
	}

	// Ask each server directly which keys it holds.
	onServer := map[string]string{} // key -> server address
	for _, mc := range []*testutil.Memcached{a, b} {
		direct := memcache.New(mc.Addr())
		items, err := direct.GetMulti(all)
		if err != nil {
			t.Fatalf("GetMulti from %s: %v", mc.Addr(), err)
		}
		for key := range items {
			if other, ok := onServer[key]; ok {
				t.Fatalf("key %q on both %s and %s", key, other, mc.Addr())
			}
			onServer[key] = mc.Addr()
		}
	}
	perServer := map[string]int{}
	for r := range requestors {
		first := all[r*len(buckets)]
		server, ok := onServer[first]
		if !ok {
			t.Fatalf("key %q on no server", first)
		}
		perServer[server]++
		for _, key := range all[r*len(buckets)+1 : (r+1)*len(buckets)] {
			if onServer[key] != server {
				t.Errorf("key %q on %q, but %q on %s: one requestor's buckets must share a server", key, onServer[key], first, server)
			}
		}
	}
	if len(perServer) != 2 {
		t.Errorf("requestors per server = %v, want %d requestors spread over both servers", perServer, requestors)
	}

	// One Get reads buckets from both servers.
	got, err := s.Get(ctx, all)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if len(got) != len(all) {
		t.Errorf("Get of %d keys found %d", len(all), len(got))
	}
}

func TestServerKey(t *testing.T) {
	tests := []struct {
		key, want string
	}{
		{"fg1:AbCd:1732312345", "fg1:AbCd"},
		{"fg1:AbCd:m28871872", "fg1:AbCd"},
		{"fg1:AbCd", "fg1"},
		{"nocolon", "nocolon"},
		{":1", ""},
		{"a:b:", "a:b"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := serverKey(tt.key); got != tt.want {
			t.Errorf("serverKey(%q) = %q, want %q", tt.key, got, tt.want)
		}
	}
}

// TestLongTTL checks against memcached that TTLs past 30 days, which it takes
// as Unix times, keep the counter: sent as relative seconds they would read
// as 1970 and expire at once.
func TestLongTTL(t *testing.T) {
	mc := testutil.StartMemcached(t)
	s := newStore(t, []string{mc.Addr()}, Config{})
	ctx := context.Background()
	for _, ttl := range []time.Duration{30 * 24 * time.Hour, 30*24*time.Hour + time.Second, 400 * 24 * time.Hour} {
		key := "fg1:long:" + strconv.Itoa(int(ttl/time.Second))
		if _, err := s.Add(ctx, key, 7, ttl); err != nil {
			t.Fatalf("Add(ttl %v): %v", ttl, err)
		}
		got, err := s.Get(ctx, []string{key})
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if got[key] != 7 {
			t.Errorf("ttl %v: Get = %v, want %s: 7", ttl, got, key)
		}
	}
}

// wrapsUnavailable fails t unless err wraps limiter.ErrStoreUnavailable,
// and says whether it does.
func wrapsUnavailable(t *testing.T, what string, err error) bool {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("%s: no error, want one wrapping limiter.ErrStoreUnavailable", what)
	case !errors.Is(err, limiter.ErrStoreUnavailable):
		t.Errorf("%s: error %q does not wrap limiter.ErrStoreUnavailable", what, err)
	default:
		return true
	}
	return false
}

// wantUnavailable fails t unless err wraps limiter.ErrStoreUnavailable and
// names op and key.
func wantUnavailable(t *testing.T, what string, err error, op, key string) {
	t.Helper()
	if wrapsUnavailable(t, what, err) && (!strings.Contains(err.Error(), "memcache "+op+" ") || !strings.Contains(err.Error(), strconv.Quote(key))) {
		t.Errorf("%s: error %q does not name operation %q and key %q", what, err, op, key)
	}
}

func TestServerDown(t *testing.T) {
	mc := testutil.StartMemcached(t)
	s := newStore(t, []string{mc.Addr()}, Config{})
	ctx := context.Background()
	const key = "fg1:down:1"
	if _, err := s.Add(ctx, key, 1, time.Minute); err != nil {
		t.Fatalf("Add: %v", err)
	}

	mc.Stop()
	_, err := s.Add(ctx, key, 1, time.Minute)
	wantUnavailable(t, "Add to a stopped server", err, "incr", key)
	_, err = s.Add(ctx, key, -1, time.Minute)
	wantUnavailable(t, "Add of -1 to a stopped server", err, "decr", key)
	_, err = s.Get(ctx, []string{key, "fg1:down:2"})
	wantUnavailable(t, "Get from a stopped server", err, "get 2 keys from", key)

	mc.Restart()
	if v, err := s.Add(ctx, key, 1, time.Minute); err != nil || v != 1 {
		t.Errorf("Add after restart = %d, %v; want 1, nil (a new, empty server)", v, err)
	}
}

// TestServerFrozen checks that a server that accepts connections but never
// answers makes calls fail with the timeout instead of hanging.
func TestServerFrozen(t *testing.T) {
	mc := testutil.StartMemcached(t)
	s := newStore(t, []string{mc.Addr()}, Config{Timeout: 50 * time.Millisecond})
	ctx := context.Background()
	const key = "fg1:frozen:1"
	if _, err := s.Add(ctx, key, 1, time.Minute); err != nil {
		t.Fatalf("Add: %v", err)
	}

	mc.Freeze()
	_, err := s.Add(ctx, key, 1, time.Minute)
	wantUnavailable(t, "Add to a frozen server", err, "incr", key)
	_, err = s.Get(ctx, []string{key})
	wantUnavailable(t, "Get from a frozen server", err, "get", key)

	mc.Thaw()
	// The timed-out incr may still be applied once the server runs again,
	// so only the success of the next Add is certain, not its value.
	if _, err := s.Add(ctx, key, 1, time.Minute); err != nil {
		t.Errorf("Add after thaw: %v", err)
	}
}

// TestBadValues checks that values that are not counters, and keys memcached
// refuses, are errors that name the key.
func TestBadValues(t *testing.T) {
	mc := testutil.StartMemcached(t)
	s := newStore(t, []string{mc.Addr()}, Config{})
	ctx := context.Background()
	direct := memcache.New(mc.Addr())
	for key, value := range map[string]string{"fg1:text:1": "abc", "fg1:neg:1": "-4", "fg1:empty:1": ""} {
		if err := direct.Set(&memcache.Item{Key: key, Value: []byte(value), Expiration: 60}); err != nil {
			t.Fatalf("Set(%q): %v", key, err)
		}
		_, err := s.Get(ctx, []string{key})
		wantUnavailable(t, fmt.Sprintf("Get of value %q", value), err, "get", key)
	}
	_, err := s.Add(ctx, "fg1:text:1", 1, time.Minute)
	wantUnavailable(t, "Add to a non-numeric value", err, "incr", "fg1:text:1")

	for _, key := range []string{"has space", "has\nnewline", strings.Repeat("k", 251), ""} {
		_, err := s.Add(ctx, key, 1, time.Minute)
		wantUnavailable(t, fmt.Sprintf("Add(%q)", key), err, "incr", key)
		_, _, err = s.GetVersioned(ctx, key)
		wantUnavailable(t, fmt.Sprintf("GetVersioned(%q)", key), err, "gets", key)
		_, err = s.CompareAndSwap(ctx, key, []byte("x"), 7, time.Minute)
		wantUnavailable(t, fmt.Sprintf("CompareAndSwap(%q)", key), err, "cas", key)
	}

	// A value longer than 64 KiB is refused unsent: memcached would store
	// it, and reading it back would fail.
	_, err = s.CompareAndSwap(ctx, "fg1:big:1", make([]byte, 64<<10+1), 0, time.Minute)
	wantUnavailable(t, "CompareAndSwap of 64 KiB + 1", err, "add", "fg1:big:1")
	if v, ver, err := s.GetVersioned(ctx, "fg1:big:1"); err != nil || v != nil || ver != 0 {
		t.Errorf("GetVersioned after the refused write = %q, %d, %v; want nothing", v, ver, err)
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		name    string
		servers []string
		cfg     Config
		wantErr string
	}{
		{"one server", []string{"127.0.0.1:11211"}, Config{}, ""},
		{"several servers and config", []string{"127.0.0.1:11211", "[::1]:11211"}, Config{Timeout: time.Second, MaxConns: 8}, ""},
		{"no servers", nil, Config{}, "no servers"},
		{"negative timeout", []string{"127.0.0.1:11211"}, Config{Timeout: -1}, "timeout"},
		{"negative max conns", []string{"127.0.0.1:11211"}, Config{MaxConns: -1}, "max conns"},
		{"bad address", []string{"127.0.0.1"}, Config{}, "127.0.0.1"},
		{"bad dns name", []string{"dns+a b:1"}, Config{}, `"dns+a b:1"`},
		{"negative resolve interval", []string{"dns+mc.test:1"}, Config{ResolveInterval: -1}, "resolve interval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.servers, tt.cfg)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				s.Close()
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New: error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestNewDefaults(t *testing.T) {
	s := newStore(t, []string{"127.0.0.1:11211"}, Config{})
	p := s.set.Load().pick(serverKey("fg1:a:1")).pipe
	if s.timeout != DefaultTimeout || p.timeout != DefaultTimeout || p.conns != DefaultMaxConns {
		t.Errorf("zero Config gives Timeout %v (pipeline %v), MaxConns %d; want %v, %d",
			s.timeout, p.timeout, p.conns, DefaultTimeout, DefaultMaxConns)
	}
}

func TestParseServers(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr string // a part of the error message
	}{
		{in: "127.0.0.1:11211", want: []string{"127.0.0.1:11211"}},
		{in: " a:1 , b.example:11211,[::1]:11211 ", want: []string{"a:1", "b.example:11211", "[::1]:11211"}},
		{in: "cache:65535", want: []string{"cache:65535"}},
		{in: "", wantErr: "empty list"},
		{in: "  ", wantErr: "empty list"},
		{in: "a:1,,b:2", wantErr: "entry 2 is empty"},
		{in: "a:1,", wantErr: "entry 2 is empty"},
		{in: "cache", wantErr: `"cache"`},
		{in: "a:1,cache:", wantErr: `"cache:": port ""`},
		{in: ":11211", wantErr: `":11211": missing host`},
		{in: "cache:0", wantErr: `"cache:0": port "0"`},
		{in: "cache:65536", wantErr: `"cache:65536": port "65536"`},
		{in: "cache:-1", wantErr: `"cache:-1": port "-1"`},
		{in: "cache:http", wantErr: `"cache:http": port "http"`},
		{in: "::1:11211", wantErr: `"::1:11211": want host:port, with an IPv6 host in brackets`},
		{in: "[::1]", wantErr: `"[::1]"`},
		{in: "a b:1", wantErr: `"a b:1": space in host`},

		// dns+NAME:PORT: every address of NAME, looked up periodically.
		{in: "dns+memcached.default.svc.cluster.local:11211", want: []string{"dns+memcached.default.svc.cluster.local:11211"}},
		{in: "dns+memcached:11211, 10.0.0.9:11211 ,dns+mc-b.cache.svc.:11212", want: []string{"dns+memcached:11211", "10.0.0.9:11211", "dns+mc-b.cache.svc.:11212"}},
		{in: "dns+_memcache.x-1.example:1", want: []string{"dns+_memcache.x-1.example:1"}},
		{in: "dns+memcached", wantErr: `"dns+memcached": want dns+NAME:PORT`},
		{in: "a:1,dns+:11211", wantErr: `"dns+:11211": name "": missing name`},
		{in: "dns+memcached:", wantErr: `"dns+memcached:": port ""`},
		{in: "dns+memcached:0", wantErr: `"dns+memcached:0": port "0"`},
		{in: "dns+memcached:65536", wantErr: `"dns+memcached:65536": port "65536"`},
		{in: "dns+memcached:memcache", wantErr: `"dns+memcached:memcache": port "memcache"`},
		{in: "dns+[::1]:11211", wantErr: `"dns+[::1]:11211": name "::1": character ':'`},
		{in: "dns+mem cached:1", wantErr: `"dns+mem cached:1": name "mem cached": character ' '`},
		{in: "dns+a..b:1", wantErr: `"dns+a..b:1": name "a..b": empty label`},
		{in: "dns+.:1", wantErr: `"dns+.:1": name ".": missing name`},
		{in: "dns+-mc.svc:1", wantErr: `label "-mc" starts or ends with '-'`},
		{in: "dns+" + strings.Repeat("a", 64) + ":1", wantErr: "longer than 63 characters"},
		{in: "dns+" + strings.Repeat("abcdefg.", 32) + "x:1", wantErr: "longer than 253 characters"},
		{in: "dns+dns+mc:1", wantErr: `name "dns+mc": character '+'`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseServers(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseServers(%q) = %q, %v; want an error containing %s", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseServers(%q): %v", tt.in, err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("ParseServers(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// BenchmarkStore measures the store on a real memcached (Add and Get).
func BenchmarkStore(b *testing.B) {
	mc := testutil.StartMemcached(b)
	storetest.Benchmark(b, newStore(b, []string{mc.Addr()}, Config{}))
}
