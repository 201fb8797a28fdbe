package rls

import (
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/floodgate-rl/floodgate/internal/prom"
	rlsconf "github.com/floodgate-rl/floodgate/policy/rls"
)

// metrics are the Server's Prometheus collectors, named floodgate_rls_* so
// that they never mix with the ext_authz API's floodgate_decisions_total.
// They are created for every Server and registered only with
// Config.Registerer.
type metrics struct {
	decisions       *prometheus.CounterVec
	allowed         prometheus.Counter
	denied          prometheus.Counter
	fallbackAllowed prometheus.Counter
	fallbackDenied  prometheus.Counter
	failOpen        prometheus.Counter
	failClosed      prometheus.Counter
	unlimited       prometheus.Counter
	unknownDomain   prometheus.Counter
	refused         prometheus.Counter
	degraded        *prometheus.CounterVec

	descriptorsVec *prometheus.CounterVec
	descriptors    [kindShadow + 2]prometheus.Counter // by kind; kindShadow+1 is over_limit

	shadowVec        *prometheus.CounterVec
	invalidOverrides prometheus.Counter
	duration         prometheus.Histogram
	panics           prometheus.Counter
}

// descriptorOverLimit is the index in metrics.descriptors of enforced
// descriptors over their limit; kindEnforced's is those within it.
const descriptorOverLimit = kindShadow + 1

func newMetrics() *metrics {
	m := &metrics{
		decisions: prom.CounterVec("floodgate_rls_decisions_total",
			"ShouldRateLimit answers by result: allowed, denied (OVER_LIMIT), fallback_allowed or fallback_denied (decided by the per-replica limiter while the shared store is unavailable), "+
				"fail_open or fail_closed (the limiter failed), unlimited (no rule to enforce: the store was not asked), unknown_domain (no configuration for the domain), refused (too many descriptors or rules).",
			"result"),
		degraded: prom.CounterVec("floodgate_rls_degraded_decisions_total",
			"fallback_allowed and fallback_denied ShouldRateLimit answers by reason (memcached-unavailable or memcached-overloaded) and result.",
			"reason", "result"),
		descriptorsVec: prom.CounterVec("floodgate_rls_descriptors_total",
			"Descriptors of ShouldRateLimit requests by what they came to: ok or over_limit (an enforced rule), shadow (a shadow_mode rule), unlimited (an unlimited rule), "+
				"no_rule (no rule matches, or an unknown domain), replaced (dropped by another rule's replaces), negative_hits (is_negative_hits: ignored).",
			"result"),
		shadowVec: prom.CounterVec("floodgate_rls_shadow_over_limit_total",
			"Requests a shadow_mode rule would have denied (they were answered OK), by the rule's key (domain and descriptors, as envoyproxy/ratelimit names it).",
			"rule"),
		invalidOverrides: prom.Counter("floodgate_rls_invalid_overrides_total",
			"Descriptors whose own limit (Envoy's rate limit override) floodgate cannot enforce: the configuration's rule applied instead."),
		duration: prom.Histogram("floodgate_rls_call_duration_seconds",
			"Time to answer a ShouldRateLimit call, including the limiter decision.", prom.CallBuckets),
		panics: prom.Counter("floodgate_rls_panics_total", "Panics recovered in ShouldRateLimit (answered by the fail mode)."),
	}
	// Every label value resolved now: no lookup on the hot path, and every
	// series exported at 0 from the start.
	for _, c := range []struct {
		c    *prometheus.Counter
		name string
	}{
		{&m.allowed, "allowed"}, {&m.denied, "denied"},
		{&m.fallbackAllowed, "fallback_allowed"}, {&m.fallbackDenied, "fallback_denied"},
		{&m.failOpen, "fail_open"}, {&m.failClosed, "fail_closed"},
		{&m.unlimited, "unlimited"}, {&m.unknownDomain, "unknown_domain"}, {&m.refused, "refused"},
	} {
		*c.c = m.decisions.WithLabelValues(c.name)
	}
	for k, name := range map[kind]string{
		kindNoRule: "no_rule", kindUnlimited: "unlimited", kindReplaced: "replaced", kindNegative: "negative_hits",
		kindEnforced: "ok", kindShadow: "shadow", descriptorOverLimit: "over_limit",
	} {
		m.descriptors[k] = m.descriptorsVec.WithLabelValues(name)
	}
	return m
}

// register registers every collector on r, or none.
func (m *metrics) register(r prometheus.Registerer) error {
	if err := prom.Register(r, m.decisions, m.degraded, m.descriptorsVec, m.shadowVec, m.invalidOverrides, m.duration, m.panics); err != nil {
		return fmt.Errorf("register rls metrics: %w", err)
	}
	return nil
}

// shadowOverLimit returns the counter of the shadow rule whose key is key.
// Keys come from the configuration, so the series are bounded by it.
func (m *metrics) shadowOverLimit(key string) prometheus.Counter {
	return m.shadowVec.WithLabelValues(key)
}

// forgetShadows drops the series of shadow rules that old had and c has
// not, so that a reloaded configuration leaves no stale series.
func (m *metrics) forgetShadows(old, c *rlsconf.Config) {
	if old == nil {
		return
	}
	keep := make(map[string]bool)
	if c != nil {
		for _, l := range c.Limits() {
			if l.ShadowMode {
				keep[l.Key] = true
			}
		}
	}
	for _, l := range old.Limits() {
		if l.ShadowMode && !keep[l.Key] {
			m.shadowVec.DeleteLabelValues(l.Key)
		}
	}
}

// onceLog runs a function once per distinct key, for log lines about
// values that repeat on every request (an unknown domain, an override the
// strategy cannot enforce). It remembers at most onceLogMax keys; past
// them it stays quiet. Safe for concurrent use.
type onceLog struct {
	mu   sync.Mutex
	seen map[string]bool
}

const onceLogMax = 1024

func (o *onceLog) do(key string, f func()) {
	o.mu.Lock()
	if o.seen == nil {
		o.seen = make(map[string]bool)
	}
	first := !o.seen[key] && len(o.seen) < onceLogMax
	if first {
		o.seen[key] = true
	}
	o.mu.Unlock()
	if first {
		f()
	}
}
