package console

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/floodgate-rl/floodgate/internal/periodic"
)

// Status is what the page shows besides the requestors: the replica, the
// store, the circuit breaker and the configuration in force. cmd/floodgate
// builds it on each request (Config.Status).
type Status struct {
	Version string `json:"version"`
	Replica string `json:"replica"`
	// Store is "memory" or "memcache" and its servers.
	Store string `json:"store"`
	// Defaults are the server's limit, window, key, strategy and fail mode.
	Defaults string `json:"defaults"`
	// Breaker is the memcached circuit breaker's state ("closed", "open",
	// "half_open"); "" without one (the in-memory store).
	Breaker string `json:"breaker,omitempty"`
	// FallbackReconciled and FallbackUnreconciled are the requests the
	// per-replica fallback allowed and then charged to memcached, and those
	// it could not charge.
	FallbackReconciled   float64     `json:"fallback_reconciled"`
	FallbackUnreconciled float64     `json:"fallback_unreconciled"`
	Policy               ConfigState `json:"policy"`
	RLS                  ConfigState `json:"rls"`
	Rates                []Rate      `json:"rates"`
	// DroppedDenials are denials the top lists missed because their queue
	// was full.
	DroppedDenials uint64 `json:"dropped_denials"`
}

// ConfigState is a reloaded configuration file (--policy, --rls-config).
type ConfigState struct {
	// Path is the file; "" when none is configured.
	Path string `json:"path"`
	// Version is the first 12 hex digits of the SHA-256 in force.
	Version string `json:"version,omitempty"`
	Rules   int    `json:"rules"`
	// LastReload is when a version was last put in force ("" never).
	LastReload   string  `json:"last_reload,omitempty"`
	ReloadErrors float64 `json:"reload_errors"`
	// LastError is the last rejected version's problem, and when.
	LastError   string `json:"last_error,omitempty"`
	LastErrorAt string `json:"last_error_at,omitempty"`
}

// Rate is the decisions per second of one API, scope and result over the
// last minute.
type Rate struct {
	API       string  `json:"api"`
	Scope     string  `json:"scope"`
	Result    string  `json:"result"`
	PerSecond float64 `json:"per_second"`
	Total     float64 `json:"total"`
}

// The decision counters the Rates read, by API.
var decisionMetrics = map[string]string{
	"floodgate_decisions_total":     "ext_authz",
	"floodgate_rls_decisions_total": "rls",
}

// rateSpan is how far back Rates look.
const rateSpan = time.Minute

// Rates samples the decision counters of a Gatherer and gives their rates
// over the last minute. Create one with NewRates and call Sample
// periodically (Run); it is safe for concurrent use.
type Rates struct {
	g  prometheus.Gatherer
	mu sync.Mutex
	// samples are the counters at instants, the oldest first, covering a
	// little more than rateSpan.
	samples []sample
}

type sample struct {
	at     time.Time
	counts map[rateKey]float64
}

type rateKey struct{ api, scope, result string }

// NewRates returns the Rates of g's decision counters.
func NewRates(g prometheus.Gatherer) *Rates { return &Rates{g: g} }

// Run samples every interval until ctx is done, starting now.
func (r *Rates) Run(ctx context.Context, interval time.Duration) {
	r.Sample(time.Now())
	periodic.Run(ctx, interval, func() { r.Sample(time.Now()) })
}

// Sample reads the counters at now.
func (r *Rates) Sample(now time.Time) {
	mfs, _ := r.g.Gather() // a partial gather still has the decision counters
	counts := make(map[rateKey]float64)
	for _, mf := range mfs {
		api, ok := decisionMetrics[mf.GetName()]
		if !ok {
			continue
		}
		for _, m := range mf.GetMetric() {
			k := rateKey{api: api, scope: label(m, "scope"), result: label(m, "result")}
			counts[k] += m.GetCounter().GetValue()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// A sample less than a second after the last replaces it, so that a
	// page read often keeps the samples few.
	if n := len(r.samples); n > 1 && now.Sub(r.samples[n-1].at) < time.Second {
		r.samples = r.samples[:n-1]
	}
	r.samples = append(r.samples, sample{at: now, counts: counts})
	// Keep the newest sample at least rateSpan old, and none older.
	for len(r.samples) > 2 && now.Sub(r.samples[1].at) >= rateSpan {
		r.samples = r.samples[1:]
	}
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// Rates returns the rate of every series that counted, per second between
// the oldest and newest samples, sorted by API, scope and result.
func (r *Rates) Rates() []Rate {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.samples) == 0 {
		return nil
	}
	first, last := r.samples[0], r.samples[len(r.samples)-1]
	secs := last.at.Sub(first.at).Seconds()
	out := make([]Rate, 0, len(last.counts))
	for k, v := range last.counts {
		if v == 0 {
			continue // a series never counted
		}
		rt := Rate{API: k.api, Scope: k.scope, Result: k.result, Total: v}
		if d := v - first.counts[k]; secs > 0 && d > 0 {
			rt.PerSecond = d / secs
		}
		out = append(out, rt)
	}
	slices.SortFunc(out, func(a, b Rate) int {
		return cmp.Or(cmp.Compare(a.API, b.API), cmp.Compare(a.Scope, b.Scope), cmp.Compare(a.Result, b.Result))
	})
	return out
}
