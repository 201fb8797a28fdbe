package memcache_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/internal/testutil"
	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/memcache"
)

// replicas returns n Sliding limiters, each with its own memcached client,
// as n floodgate processes would have.
func replicas(t *testing.T, n int, servers ...string) []*limiter.Sliding {
	t.Helper()
	var out []*limiter.Sliding
	for range n {
		st, err := memcache.New(servers, memcache.Config{Timeout: 5 * time.Second}) // generous: CI machines are loaded
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		s := limiter.NewSliding(st, limiter.SlidingConfig{})
		t.Cleanup(func() { s.Close() })
		out = append(out, s)
	}
	return out
}

// base is "now" for simulated timelines: counters are created with TTLs
// relative to the real clock, so simulated instants stay within an hour or
// two of it.
func base() time.Time { return time.Now().Truncate(time.Minute) }

func TestSlidingOnMemcachedScenarios(t *testing.T) {
	mc := testutil.StartMemcached(t)
	tests := []struct {
		name    string
		n       int
		every   time.Duration
		allowed int
	}{
		{"burst of 101", 101, 0, 100},
		{"200 evenly over 30 minutes", 200, 9 * time.Second, 100},
		{"100 evenly over the hour", 100, 36 * time.Second, 100},
		{"200 evenly over the hour", 200, 18 * time.Second, 100},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := replicas(t, 1, mc.Addr())[0]
			req := limiter.Request{Requestor: "ip:" + t.Name(), Limit: 100, Window: time.Hour}
			start := base()
			n := 0
			for i := range tc.n {
				now := start.Add(time.Duration(i) * tc.every)
				d, err := s.Allow(context.Background(), req, now)
				if err != nil {
					t.Fatal(err)
				}
				if d.Allowed != (i < tc.allowed) {
					t.Fatalf("request %d: allowed=%v", i, d.Allowed)
				}
				if d.Allowed {
					n++
				} else if want := start.Add(time.Hour).Sub(now); d.RetryAfter != want {
					t.Fatalf("request %d: RetryAfter=%v, want %v", i, d.RetryAfter, want)
				}
			}
			if n != tc.allowed {
				t.Fatalf("%d allowed, want %d", n, tc.allowed)
			}
		})
	}
	t.Run("window edge", func(t *testing.T) {
		s := replicas(t, 1, mc.Addr())[0]
		req := limiter.Request{Requestor: "edge", Limit: 100, Window: time.Hour}
		start := base()
		for range 100 {
			if d, err := s.Allow(context.Background(), req, start); err != nil || !d.Allowed {
				t.Fatalf("%+v %v", d, err)
			}
		}
		if d, _ := s.Allow(context.Background(), req, start.Add(3599*time.Second)); d.Allowed || d.RetryAfter != time.Second {
			t.Fatalf("at +3599s: %+v, want denied with retry 1s", d)
		}
		if d, _ := s.Allow(context.Background(), req, start.Add(3600*time.Second)); !d.Allowed {
			t.Fatalf("at +3600s: %+v, want allowed", d)
		}
	})
}

// TestSlidingOnMemcachedConcurrentReplicas: 300 simultaneous checks over 3
// replicas sharing one memcached allow exactly 100.
func TestSlidingOnMemcachedConcurrentReplicas(t *testing.T) {
	mc := testutil.StartMemcached(t)
	rs := replicas(t, 3, mc.Addr())
	req, now := burstOf300(t, rs[0], rs[1], rs[2])
	// The next second, every replica still denies.
	for i, s := range rs {
		if d, err := s.Allow(context.Background(), req, now.Add(time.Second)); err != nil || d.Allowed {
			t.Fatalf("replica %d a second later: %+v %v", i, d, err)
		}
	}
}

// TestSlidingOnMemcachedSharedHistory: requests spread over replicas, and a
// replica started late, see one history.
func TestSlidingOnMemcachedSharedHistory(t *testing.T) {
	mc := testutil.StartMemcached(t)
	rs := replicas(t, 3, mc.Addr())
	req := limiter.Request{Requestor: "shared", Limit: 30, Window: time.Hour}
	start := base()
	for i := range 30 {
		d, err := rs[i%3].Allow(context.Background(), req, start.Add(time.Duration(i)*97*time.Second))
		if err != nil || !d.Allowed {
			t.Fatalf("request %d: %+v %v", i, d, err)
		}
	}
	late := replicas(t, 1, mc.Addr())[0]
	now := start.Add(50 * time.Minute)
	d, err := late.Allow(context.Background(), req, now)
	if err != nil || d.Allowed {
		t.Fatalf("late replica: %+v %v, want denied", d, err)
	}
	if want := start.Add(time.Hour).Sub(now); d.RetryAfter != want {
		t.Fatalf("late replica: RetryAfter=%v, want %v", d.RetryAfter, want)
	}
	if d, err := late.Allow(context.Background(), req, start.Add(time.Hour)); err != nil || !d.Allowed {
		t.Fatalf("after the promised wait: %+v %v, want allowed", d, err)
	}
}

// TestSlidingOnMemcachedHostileRequestors: whatever the identity, the store
// calls succeed and the limit holds.
func TestSlidingOnMemcachedHostileRequestors(t *testing.T) {
	mc := testutil.StartMemcached(t)
	s := replicas(t, 1, mc.Addr())[0]
	for _, who := range []string{
		"", " ", "a b c", "\r\nflush_all\r\n", "get fg1:x\r\n", strings.Repeat("k", 4096),
		strings.Repeat("\x00\x01\xff", 1000), "ключ", strings.Repeat("z", 65536),
	} {
		req := limiter.Request{Requestor: "header:x-api-key:" + who, Limit: 2, Window: time.Minute}
		now := base()
		for i := range 3 {
			d, err := s.Allow(context.Background(), req, now)
			if err != nil {
				t.Fatalf("%.20q: %v", who, err)
			}
			if d.Allowed != (i < 2) {
				t.Fatalf("%.20q request %d: allowed=%v", who, i, d.Allowed)
			}
		}
	}
}

// TestSlidingOnMemcachedDown: a stopped memcached is an ErrStoreUnavailable
// (its connections refused: no timeout needed to notice), and counting
// resumes when it returns. The timeout is a second, not the 100 ms
// default: the first decision reads a cold history of 62 keys, which a
// loaded machine under the race detector can take longer than 100 ms to
// answer.
func TestSlidingOnMemcachedDown(t *testing.T) {
	mc := testutil.StartMemcached(t)
	st, err := memcache.New([]string{mc.Addr()}, memcache.Config{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := limiter.NewSliding(st, limiter.SlidingConfig{})
	req := limiter.Request{Requestor: "down", Limit: 1, Window: time.Minute}
	now := base()
	if d, err := s.Allow(context.Background(), req, now); err != nil || !d.Allowed {
		t.Fatalf("before: %+v %v", d, err)
	}
	mc.Stop()
	for i := range 3 {
		_, err := s.Allow(context.Background(), req, now.Add(time.Duration(i+1)*time.Second))
		if !errors.Is(err, limiter.ErrStoreUnavailable) {
			t.Fatalf("memcached stopped: err=%v, want ErrStoreUnavailable", err)
		}
	}
	mc.Restart()
	// memcached restarted empty: the requestor starts afresh.
	var d limiter.Decision
	testutil.WaitFor(t, 10*time.Second, func() error { // the client's pooled connections are dead; it redials
		d, err = s.Allow(context.Background(), req, now.Add(10*time.Second))
		return err
	})
	if !d.Allowed {
		t.Fatalf("after restart: %+v, want allowed", d)
	}
	if d, err := s.Allow(context.Background(), req, now.Add(11*time.Second)); err != nil || d.Allowed {
		t.Fatalf("after restart, limit: %+v %v, want denied", d, err)
	}
}

// TestSlidingOnTwoMemcachedServers: requestors spread over two servers and
// each is limited exactly.
func TestSlidingOnTwoMemcachedServers(t *testing.T) {
	a, b := testutil.StartMemcached(t), testutil.StartMemcached(t)
	rs := replicas(t, 2, a.Addr(), b.Addr())
	now := base()
	for c := range 20 {
		req := limiter.Request{Requestor: fmt.Sprint("client-", c), Limit: 5, Window: time.Hour}
		n := 0
		for i := range 8 {
			d, err := rs[i%2].Allow(context.Background(), req, now.Add(time.Duration(i)*time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			if d.Allowed {
				n++
			}
		}
		if n != 5 {
			t.Fatalf("client %d: %d allowed, want 5", c, n)
		}
	}
}
