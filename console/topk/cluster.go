package topk

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/floodgate-rl/floodgate/internal/periodic"
)

// ValueStore is what a Cluster needs of the shared store: limiter.Store's
// value methods, which the memcached store implements.
type ValueStore interface {
	GetVersioned(ctx context.Context, key string) (value []byte, version uint64, err error)
	CompareAndSwap(ctx context.Context, key string, value []byte, version uint64, ttl time.Duration) (bool, error)
}

// Keys of the published summaries. They start with the limiter's key
// prefix and hold no 22-character requestor ID, so they never meet a
// counter's key.
const (
	// DirectoryKey holds the replicas publishing and until when.
	DirectoryKey = "fg1:top:replicas"
	// replicaKeyPrefix, then the replica's ID, holds its summaries.
	replicaKeyPrefix = "fg1:top:r:"
)

// Bounds of what a Cluster publishes and reads.
const (
	// DefaultPublishInterval is how often a replica publishes when
	// ClusterConfig.Interval is zero.
	DefaultPublishInterval = 5 * time.Second
	// MaxReplicas bounds the directory: past it, the replicas whose
	// entries expire first are dropped from it.
	MaxReplicas = 256
	// maxValue is the most bytes a published value takes; memcached's
	// values (limiter.Store.CompareAndSwap) take up to 64 KiB.
	maxValue = 60 << 10
	// publishEntries is the most entries published per scope and window;
	// fewer when the value would not fit maxValue.
	publishEntries = 50
	// casAttempts bounds the directory's compare-and-swap retries.
	casAttempts = 8
	// readCache is how long a Cluster reuses the summaries it read.
	readCache = time.Second
)

// ClusterConfig configures a Cluster. Store and Tracker are required.
type ClusterConfig struct {
	Store   ValueStore
	Tracker *Tracker
	// Replica names this replica in the directory: 1 to 64 of
	// [A-Za-z0-9._-]. "" means the host name and a random suffix.
	Replica string
	// Interval is how often Run publishes; zero means
	// DefaultPublishInterval. Published values live three intervals.
	Interval time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger receives publishing and reading failures, at most one line a
	// minute each; nil discards them.
	Logger *slog.Logger
}

// Cluster is the cluster-wide view of the denials: every replica publishes
// its Tracker's summaries to the shared store every Interval, each under a
// key of its own with a time to live of three intervals, and lists itself
// in a directory key (updated by compare-and-swap); any replica reads the
// directory and every live replica's summaries and merges them with its
// own. A replica that stops publishing drops out of the view within three
// intervals. Reads are cached for a second, so a console polled by many
// browsers costs the store a few reads a second at most.
//
// Create one with NewCluster; it is safe for concurrent use.
type Cluster struct {
	store    ValueStore
	t        *Tracker
	id       string
	interval time.Duration
	ttl      time.Duration
	now      func() time.Time
	log      *slog.Logger
	pubLog   rate.Sometimes
	readLog  rate.Sometimes

	mu         sync.Mutex
	readAt     time.Time
	remote     []published // the other replicas' last read
	unreadable int
	readErr    error
}

// published is one replica's value.
type published struct {
	Replica string             `json:"replica"`
	At      int64              `json:"at"` // Unix milliseconds
	Scopes  []publishedSummary `json:"scopes"`
}

// publishedSummary is one scope's summaries.
type publishedSummary struct {
	Scope string   `json:"scope"`
	Five  *Summary `json:"5m"`
	Hour  *Summary `json:"1h"`
}

// directory lists the publishing replicas.
type directory struct {
	Replicas []dirEntry `json:"replicas"`
}

type dirEntry struct {
	ID    string `json:"id"`
	Until int64  `json:"until"` // Unix milliseconds
}

// NewCluster returns the Cluster of cfg. It returns an error when Store or
// Tracker is nil or Replica is invalid.
func NewCluster(cfg ClusterConfig) (*Cluster, error) {
	if cfg.Store == nil || cfg.Tracker == nil {
		return nil, errors.New("new cluster view: store and tracker are required")
	}
	id := cfg.Replica
	if id == "" {
		id = defaultReplicaID()
	}
	if err := checkReplicaID(id); err != nil {
		return nil, fmt.Errorf("new cluster view: replica %q: %w", id, err)
	}
	c := &Cluster{
		store: cfg.Store, t: cfg.Tracker, id: id,
		interval: cmp.Or(cfg.Interval, DefaultPublishInterval),
		now:      cfg.Now,
		log:      cfg.Logger,
		pubLog:   rate.Sometimes{First: 1, Interval: time.Minute},
		readLog:  rate.Sometimes{First: 1, Interval: time.Minute},
	}
	if cfg.Now == nil {
		c.now = time.Now
	}
	c.ttl = max(3*c.interval, 2*time.Second)
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// Replica returns the ID this replica publishes under.
func (c *Cluster) Replica() string { return c.id }

// defaultReplicaID is the host name (its characters outside the ID's
// grammar dropped, at most 40) and 6 random hex digits.
func defaultReplicaID() string {
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		if isIDChar(r) {
			return r
		}
		return -1
	}, host)
	if len(host) > 40 {
		host = host[:40]
	}
	var b [3]byte
	rand.Read(b[:])
	if host == "" {
		host = "replica"
	}
	return host + "-" + hex.EncodeToString(b[:])
}

func checkReplicaID(id string) error {
	if id == "" || len(id) > 64 {
		return fmt.Errorf("length %d: must be 1 to 64", len(id))
	}
	for _, r := range id {
		if !isIDChar(r) {
			return fmt.Errorf("invalid character %q: want [A-Za-z0-9._-]", r)
		}
	}
	return nil
}

func isIDChar(r rune) bool {
	return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '.' || r == '_' || r == '-'
}

// Run publishes every Interval until ctx is done.
func (c *Cluster) Run(ctx context.Context) {
	periodic.Run(ctx, c.interval, func() {
		pctx, cancel := context.WithTimeout(ctx, c.interval)
		defer cancel()
		if err := c.Publish(pctx); err != nil {
			c.pubLog.Do(func() {
				c.log.Warn("console: publishing this replica's top limited requestors failed", "replica", c.id, "error", err)
			})
		}
	})
}

// Publish writes this replica's summaries and refreshes its directory
// entry, once.
func (c *Cluster) Publish(ctx context.Context) error {
	now := c.now()
	value, err := c.encode(now)
	if err != nil {
		return err
	}
	key := replicaKeyPrefix + c.id
	if err := c.put(ctx, key, value); err != nil {
		return err
	}
	return c.register(ctx, now)
}

// encode is this replica's value at now, its summaries shortened until it
// fits maxValue.
func (c *Cluster) encode(now time.Time) ([]byte, error) {
	scopes := c.t.Scopes(now)
	full := make([]publishedSummary, len(scopes))
	for i, s := range scopes {
		full[i] = publishedSummary{Scope: s, Five: c.t.Summary(s, FiveMinutes, now), Hour: c.t.Summary(s, Hour, now)}
	}
	for n := publishEntries; n >= 1; n /= 2 {
		p := published{Replica: c.id, At: now.UnixMilli(), Scopes: make([]publishedSummary, len(full))}
		for i, f := range full {
			p.Scopes[i] = publishedSummary{Scope: f.Scope, Five: Truncate(f.Five, n), Hour: Truncate(f.Hour, n)}
		}
		b, err := json.Marshal(p)
		if err != nil {
			return nil, fmt.Errorf("encode summaries: %w", err)
		}
		if len(b) <= maxValue {
			return b, nil
		}
	}
	return nil, fmt.Errorf("encode summaries: %d scopes do not fit %d bytes", len(scopes), maxValue)
}

// put writes value at key, whatever it held (only this replica writes it).
func (c *Cluster) put(ctx context.Context, key string, value []byte) error {
	for range casAttempts {
		_, ver, err := c.store.GetVersioned(ctx, key)
		if err != nil {
			return fmt.Errorf("publish %s: %w", key, err)
		}
		ok, err := c.store.CompareAndSwap(ctx, key, value, ver, c.ttl)
		if err != nil {
			return fmt.Errorf("publish %s: %w", key, err)
		}
		if ok {
			return nil
		}
	}
	return fmt.Errorf("publish %s: %d conflicting writes", key, casAttempts)
}

// register lists this replica in the directory until now+ttl, dropping
// entries that expired.
func (c *Cluster) register(ctx context.Context, now time.Time) error {
	for range casAttempts {
		raw, ver, err := c.store.GetVersioned(ctx, DirectoryKey)
		if err != nil {
			return fmt.Errorf("read %s: %w", DirectoryKey, err)
		}
		var d directory
		if len(raw) > 0 && json.Unmarshal(raw, &d) != nil {
			d = directory{} // a corrupt directory is rebuilt by its replicas
		}
		d = d.with(c.id, now.Add(c.ttl).UnixMilli(), now.UnixMilli())
		b, err := json.Marshal(d)
		if err != nil {
			return fmt.Errorf("encode %s: %w", DirectoryKey, err)
		}
		ok, err := c.store.CompareAndSwap(ctx, DirectoryKey, b, ver, c.ttl)
		if err != nil {
			return fmt.Errorf("write %s: %w", DirectoryKey, err)
		}
		if ok {
			return nil
		}
	}
	return fmt.Errorf("write %s: %d conflicting writes", DirectoryKey, casAttempts)
}

// with returns d with id listed until until, without the entries expired
// at now, and at most MaxReplicas (those expiring last).
func (d directory) with(id string, until, now int64) directory {
	out := directory{Replicas: []dirEntry{{ID: id, Until: until}}}
	for _, e := range d.Replicas {
		if e.ID != id && e.Until > now && checkReplicaID(e.ID) == nil {
			out.Replicas = append(out.Replicas, e)
		}
	}
	slices.SortFunc(out.Replicas, func(a, b dirEntry) int { return cmp.Compare(b.Until, a.Until) })
	if len(out.Replicas) > MaxReplicas {
		out.Replicas = out.Replicas[:MaxReplicas]
	}
	return out
}

// Coverage says which replicas a cluster-wide answer covers.
type Coverage struct {
	// Replicas is how many replicas' summaries were merged, this one
	// included.
	Replicas int
	// Unreadable is how many listed replicas' summaries could not be read
	// or decoded (expired meanwhile, or the store failing).
	Unreadable int
	// Err is why the other replicas could not be read at all ("" when
	// they could): the answer is then this replica's alone.
	Err string
}

// Summary returns the cluster-wide summary of scope over w at now: this
// replica's Tracker merged with every other live replica's last published
// summaries. When the store fails, the answer is this replica's alone and
// Coverage says why.
func (c *Cluster) Summary(ctx context.Context, scope string, w Window, now time.Time) (*Summary, Coverage) {
	remote, cov := c.read(ctx)
	in := []*Summary{c.t.Summary(scope, w, now)}
	for _, p := range remote {
		for _, ps := range p.Scopes {
			if ps.Scope != scope {
				continue
			}
			if s := ps.Five; w == FiveMinutes && s != nil {
				in = append(in, s)
			}
			if s := ps.Hour; w == Hour && s != nil {
				in = append(in, s)
			}
		}
	}
	return Merge(c.t.Capacity(), in...), cov
}

// Scopes returns the scopes with denials in the last hour on any replica,
// sorted.
func (c *Cluster) Scopes(ctx context.Context, now time.Time) ([]string, Coverage) {
	remote, cov := c.read(ctx)
	names := c.t.Scopes(now)
	for _, p := range remote {
		for _, ps := range p.Scopes {
			names = append(names, ps.Scope)
		}
	}
	slices.Sort(names)
	return slices.Compact(names), cov
}

// read returns the other replicas' published values, from a cache of at
// most readCache.
func (c *Cluster) read(ctx context.Context) ([]published, Coverage) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if age := now.Sub(c.readAt); !c.readAt.IsZero() && age >= 0 && age < readCache {
		return c.remote, c.coverage()
	}
	c.remote, c.readErr, c.unreadable = nil, nil, 0
	c.readAt = now
	raw, _, err := c.store.GetVersioned(ctx, DirectoryKey)
	if err != nil {
		c.readErr = fmt.Errorf("read %s: %w", DirectoryKey, err)
		c.readLog.Do(func() {
			c.log.Warn("console: reading the other replicas' top limited requestors failed", "error", c.readErr)
		})
		return nil, c.coverage()
	}
	var d directory
	if len(raw) > 0 && json.Unmarshal(raw, &d) != nil {
		c.readErr = fmt.Errorf("read %s: not a directory", DirectoryKey)
		return nil, c.coverage()
	}
	unreadable := 0
	for _, e := range d.Replicas {
		if e.ID == c.id || e.Until <= now.UnixMilli() || checkReplicaID(e.ID) != nil {
			continue
		}
		p, err := c.fetch(ctx, e.ID)
		if err != nil {
			unreadable++
			continue
		}
		c.remote = append(c.remote, p)
	}
	c.unreadable = unreadable
	return c.remote, c.coverage()
}

// fetch reads and decodes one replica's value.
func (c *Cluster) fetch(ctx context.Context, id string) (published, error) {
	raw, _, err := c.store.GetVersioned(ctx, replicaKeyPrefix+id)
	if err != nil {
		return published{}, fmt.Errorf("read %s: %w", replicaKeyPrefix+id, err)
	}
	var p published
	if len(raw) == 0 {
		return published{}, fmt.Errorf("read %s: expired", replicaKeyPrefix+id)
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return published{}, fmt.Errorf("read %s: %w", replicaKeyPrefix+id, err)
	}
	return p, nil
}

// coverage describes the last read; c.mu is held.
func (c *Cluster) coverage() Coverage {
	cov := Coverage{Replicas: 1 + len(c.remote), Unreadable: c.unreadable}
	if c.readErr != nil {
		cov.Err = c.readErr.Error()
	}
	return cov
}
