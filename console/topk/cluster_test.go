package topk_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/floodgate-rl/floodgate/console/topk"
	"github.com/floodgate-rl/floodgate/internal/testutil"
	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/memcache"
	"github.com/floodgate-rl/floodgate/limiter/memory"
)

// replica is one floodgate's Tracker and Cluster on a shared store.
type replica struct {
	tr *topk.Tracker
	c  *topk.Cluster
}

func newReplica(t *testing.T, store topk.ValueStore, id string, clk *testutil.Clock) replica {
	t.Helper()
	tr := topk.NewTracker(topk.Config{Capacity: 10})
	c, err := topk.NewCluster(topk.ClusterConfig{Store: store, Tracker: tr, Replica: id, Now: clk.Now, Interval: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return replica{tr, c}
}

func (r replica) deny(scope, item string, n int, at time.Time) {
	for range n {
		r.tr.Record(topk.Denial{Scope: scope, Item: item, At: at, RetryAfter: time.Minute})
	}
}

func countsOf(s *topk.Summary) string {
	var b []string
	for _, e := range s.Top(0) {
		b = append(b, fmt.Sprintf("%s=%d", e.Item, e.Count))
	}
	return strings.Join(b, " ")
}

// stores are the value stores the cluster view is tested on: the
// in-memory store, and a real memcached (skipped without one, a failure
// under CI).
func stores(t *testing.T) map[string]func(t *testing.T, now func() time.Time) topk.ValueStore {
	return map[string]func(t *testing.T, now func() time.Time) topk.ValueStore{
		"memory": func(t *testing.T, now func() time.Time) topk.ValueStore {
			m := memory.New(now)
			t.Cleanup(func() { m.Close() })
			return m
		},
		"memcached": func(t *testing.T, _ func() time.Time) topk.ValueStore {
			mc := testutil.StartMemcached(t)
			s, err := memcache.New([]string{mc.Addr()}, memcache.Config{Timeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
	}
}

func TestClusterMergesReplicas(t *testing.T) {
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			clk := testutil.NewClock(time.Unix(1_800_000_000, 0))
			store := open(t, clk.Now)
			a, b, c := newReplica(t, store, "a", clk), newReplica(t, store, "b", clk), newReplica(t, store, "c", clk)
			now := clk.Now()
			a.deny("api", "ip:1", 5, now)
			a.deny("login", "ip:9", 1, now)
			b.deny("api", "ip:1", 3, now)
			b.deny("api", "ip:2", 4, now)
			c.deny("api", "ip:3", 1, now) // c never publishes
			ctx := context.Background()
			for _, r := range []replica{a, b} {
				if err := r.c.Publish(ctx); err != nil {
					t.Fatal(err)
				}
			}
			s, cov := c.c.Summary(ctx, "api", topk.FiveMinutes, now)
			if got := countsOf(s); got != "ip:1=8 ip:2=4 ip:3=1" || s.Total() != 13 {
				t.Errorf("c's view of api = %q (total %d), want ip:1=8 ip:2=4 ip:3=1 (13)", got, s.Total())
			}
			if cov.Replicas != 3 || cov.Unreadable != 0 || cov.Err != "" {
				t.Errorf("coverage = %+v, want 3 replicas", cov)
			}
			scopes, _ := c.c.Scopes(ctx, now)
			if fmt.Sprint(scopes) != "[api login]" {
				t.Errorf("scopes = %v", scopes)
			}
			// a's own denials come from its tracker, not its published copy.
			a.deny("api", "ip:1", 10, now)
			if s, _ := a.c.Summary(ctx, "api", topk.Hour, now); countsOf(s) != "ip:1=18 ip:2=4" {
				t.Errorf("a's view = %q, want ip:1=18 ip:2=4", countsOf(s))
			}
		})
	}
}

// TestClusterReplicaExpires: a replica that stops publishing leaves the
// view once its directory entry has expired (three intervals).
func TestClusterReplicaExpires(t *testing.T) {
	clk := testutil.NewClock(time.Unix(1_800_000_000, 0))
	store := memory.New(clk.Now)
	defer store.Close()
	a, b := newReplica(t, store, "a", clk), newReplica(t, store, "b", clk)
	now := clk.Now()
	a.deny("api", "ip:1", 2, now)
	ctx := context.Background()
	if err := a.c.Publish(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		after time.Duration
		want  string
		reps  int
	}{
		{0, "ip:1=2", 2},
		{14 * time.Second, "ip:1=2", 2},
		{2 * time.Second, "", 1}, // 16s: past the 15s TTL
	} {
		clk.Add(tc.after)
		s, cov := b.c.Summary(ctx, "api", topk.Hour, clk.Now())
		if countsOf(s) != tc.want || cov.Replicas != tc.reps {
			t.Errorf("at +%s: %q over %d replicas, want %q over %d", clk.Now().Sub(now), countsOf(s), cov.Replicas, tc.want, tc.reps)
		}
	}
}

// failingStore fails every call, as a memcached that is down does.
type failingStore struct{}

func (failingStore) GetVersioned(context.Context, string) ([]byte, uint64, error) {
	return nil, 0, fmt.Errorf("memcache get: %w", limiter.ErrStoreUnavailable)
}

func (failingStore) CompareAndSwap(context.Context, string, []byte, uint64, time.Duration) (bool, error) {
	return false, fmt.Errorf("memcache cas: %w", limiter.ErrStoreUnavailable)
}

func TestClusterStoreDown(t *testing.T) {
	clk := testutil.NewClock(time.Unix(1_800_000_000, 0))
	a := newReplica(t, failingStore{}, "a", clk)
	a.deny("api", "ip:1", 2, clk.Now())
	ctx := context.Background()
	if err := a.c.Publish(ctx); !errors.Is(err, limiter.ErrStoreUnavailable) {
		t.Errorf("Publish = %v, want the store's error", err)
	}
	s, cov := a.c.Summary(ctx, "api", topk.Hour, clk.Now())
	if countsOf(s) != "ip:1=2" || cov.Replicas != 1 || !strings.Contains(cov.Err, "counter store unavailable") {
		t.Errorf("summary %q coverage %+v: want this replica's own and the error", countsOf(s), cov)
	}
}

// TestClusterCorruptValues: a directory or a replica value that is not
// what floodgate writes is survived: the directory is rebuilt, the value
// counted unreadable.
func TestClusterCorruptValues(t *testing.T) {
	clk := testutil.NewClock(time.Unix(1_800_000_000, 0))
	store := memory.New(clk.Now)
	defer store.Close()
	ctx := context.Background()
	put := func(key, value string) {
		t.Helper()
		_, ver, _ := store.GetVersioned(ctx, key)
		if ok, err := store.CompareAndSwap(ctx, key, []byte(value), ver, time.Minute); !ok || err != nil {
			t.Fatalf("put %s: %v %v", key, ok, err)
		}
	}
	put(topk.DirectoryKey, "not json")
	a, b := newReplica(t, store, "a", clk), newReplica(t, store, "b", clk)
	if err := a.c.Publish(ctx); err != nil {
		t.Fatalf("Publish over a corrupt directory: %v", err)
	}
	until := clk.Now().Add(time.Minute).UnixMilli()
	dir, _ := json.Marshal(map[string]any{"replicas": []map[string]any{{"id": "a", "until": until}, {"id": "x", "until": until}, {"id": "bad id!", "until": until}}})
	put(topk.DirectoryKey, string(dir))
	put("fg1:top:r:x", `{"scopes":[{"scope":"api","5m":{"k":1,"n":1,"e":[{"i":"q","c":1},{"i":"r","c":1}]}}]}`)
	_, cov := b.c.Summary(ctx, "api", topk.FiveMinutes, clk.Now())
	if cov.Replicas != 2 || cov.Unreadable != 1 {
		t.Errorf("coverage = %+v, want a read and x unreadable", cov)
	}
}

func TestNewClusterErrors(t *testing.T) {
	tr := topk.NewTracker(topk.Config{})
	for _, tc := range []struct {
		name string
		cfg  topk.ClusterConfig
		want string
	}{
		{"no store", topk.ClusterConfig{Tracker: tr}, "store and tracker are required"},
		{"bad replica", topk.ClusterConfig{Store: failingStore{}, Tracker: tr, Replica: "a b"}, `replica "a b": invalid character ' '`},
		{"long replica", topk.ClusterConfig{Store: failingStore{}, Tracker: tr, Replica: strings.Repeat("a", 65)}, "length 65: must be 1 to 64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := topk.NewCluster(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewCluster = %v, want %q", err, tc.want)
			}
		})
	}
	c, err := topk.NewCluster(topk.ClusterConfig{Store: failingStore{}, Tracker: tr})
	if err != nil || c.Replica() == "" {
		t.Errorf("default replica ID: %q, %v", c.Replica(), err)
	}
}

// TestClusterValueBounded: however many scopes and requestors, the value
// a replica publishes fits memcached's value size.
func TestClusterValueBounded(t *testing.T) {
	clk := testutil.NewClock(time.Unix(1_800_000_000, 0))
	store := memory.New(clk.Now)
	defer store.Close()
	tr := topk.NewTracker(topk.Config{})
	now := clk.Now()
	for s := range topk.DefaultMaxScopes {
		for i := range topk.DefaultCapacity {
			tr.Record(topk.Denial{Scope: fmt.Sprintf("scope-%02d", s), Item: "header:x-api-key:" + strings.Repeat("k", 150) + fmt.Sprint(i), At: now})
		}
	}
	c, err := topk.NewCluster(topk.ClusterConfig{Store: store, Tracker: tr, Replica: "a", Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(context.Background()); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	v, _, err := store.GetVersioned(context.Background(), "fg1:top:r:a")
	if err != nil || len(v) == 0 || len(v) > 60<<10 {
		t.Errorf("published %d bytes (%v), want 1 to 60 KiB", len(v), err)
	}
}

// TestClusterRun: Run publishes every interval (in a synctest bubble, where
// the interval passes at once), so another replica sees this one's
// denials after the first interval and not before.
func TestClusterRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := memory.New(time.Now)
		defer store.Close()
		tr := topk.NewTracker(topk.Config{})
		a, err := topk.NewCluster(topk.ClusterConfig{Store: store, Tracker: tr, Replica: "a", Interval: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		b := newReplica(t, store, "b", testutil.NewClock(time.Now()))
		tr.Record(topk.Denial{Scope: "api", Item: "ip:1", At: time.Now()})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { a.Run(ctx); close(done) }()
		synctest.Wait()
		if s, _ := b.c.Summary(ctx, "api", topk.Hour, time.Now()); s.Total() != 0 {
			t.Errorf("before the first interval b sees %q", countsOf(s))
		}
		time.Sleep(5 * time.Second) // the interval, in the bubble
		synctest.Wait()
		b2 := newReplica(t, store, "b2", testutil.NewClock(time.Now())) // no cached read
		if s, _ := b2.c.Summary(ctx, "api", topk.Hour, time.Now()); countsOf(s) != "ip:1=1" {
			t.Errorf("after one interval b sees %q, want ip:1=1", countsOf(s))
		}
		cancel()
		<-done
	})
}
