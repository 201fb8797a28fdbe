package authz

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/floodgate-rl/floodgate/internal/prom"
)

// metrics are the Server's Prometheus collectors. They are created for every
// Server and registered only when Config.Registerer is set.
type metrics struct {
	decisions *prometheus.CounterVec
	// labels gives out the series of decisions by bounded scope and rule
	// labels.
	labels *decisionLabels
	// degraded counts the same decisions by the reason the strategy gave
	// (a token of floodgate's own, such as memcached-unavailable or
	// memcached-overloaded: never anything a client sent).
	degraded *prometheus.CounterVec

	duration prometheus.Histogram

	invalidVec *prometheus.CounterVec
	invalid    [len(extNames)]prometheus.Counter // by index in extNames

	panics prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		decisions: prom.CounterVec("floodgate_decisions_total",
			"Check answers by result: allowed, denied (429), fail_open or fail_closed (limiter failed), "+
				"fallback_allowed or fallback_denied (decided by the per-replica limiter while the shared store is unavailable), "+
				"allowlisted or blocked (by the policy file's lists, without counting); "+
				"by scope (default for the default scope) and by the policy rule that decided (none: no rule), "+
				"at most 64 values each, the rest counted as other.",
			"result", "scope", "rule"),
		degraded: prom.CounterVec("floodgate_degraded_decisions_total",
			"fallback_allowed and fallback_denied decisions by reason: memcached-unavailable (memcached failed) or memcached-overloaded "+
				"(this replica waited too long for memcached, which did not fail), and by result.",
			"reason", "result"),
		duration: prom.Histogram("floodgate_check_duration_seconds",
			"Time to answer a Check, including the limiter decision.", prom.CallBuckets),
		invalidVec: prom.CounterVec("floodgate_invalid_overrides_total",
			"Checks that carried an invalid floodgate.* context extension (the server default was used), by extension name.", "name"),
		panics: prom.Counter("floodgate_check_panics_total", "Panics recovered in Check (answered by the fail mode)."),
	}
	// Resolve label values now: the hot path does no label lookup, and
	// every result of the default scope is exported at 0 from the start.
	m.labels = newDecisionLabels(m.decisions)
	for i, name := range extNames {
		m.invalid[i] = m.invalidVec.WithLabelValues(name)
	}
	return m
}

// register registers every collector on r, or none.
func (m *metrics) register(r prometheus.Registerer) error {
	if err := prom.Register(r, m.decisions, m.degraded, m.duration, m.invalidVec, m.panics); err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	return nil
}
