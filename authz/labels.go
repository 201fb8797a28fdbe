package authz

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/floodgate-rl/floodgate/policy"
)

// result is the answer Check gave, the result label of
// floodgate_decisions_total and the "decision" field of the dynamic
// metadata.
type result uint8

const (
	resultAllowed result = iota
	resultDenied
	resultFailOpen
	resultFailClosed
	resultFallbackAllowed
	resultFallbackDenied
	resultAllowlisted
	resultBlocked
	numResults
)

// resultNames spells each result as floodgate_decisions_total labels it.
var resultNames = [numResults]string{
	"allowed", "denied", "fail_open", "fail_closed",
	"fallback_allowed", "fallback_denied", "allowlisted", "blocked",
}

func (r result) String() string { return resultNames[r] }

// Label values of floodgate_decisions_total that name no scope or rule of
// the configuration.
const (
	// LabelNoRule is the rule label of a decision no policy rule made:
	// without a policy, or when no rule matched.
	LabelNoRule = "none"
	// LabelOther is the scope or rule label of the decisions past the cap
	// (MaxLabelValues): their series are shared.
	LabelOther = "other"
)

// MaxLabelValues caps the distinct values of the scope label, and those of
// the rule label, of floodgate_decisions_total; later values are counted
// under LabelOther. The scope label takes scopes as they are first
// decided (the policy's when it is installed, a route's floodgate.scope at
// its first request) and keeps them; the rule label takes the installed
// policy's rule names, in file order.
const MaxLabelValues = 64

// maxRouteScopes bounds the route scopes whose series are remembered for
// the lock-free lookup; past it a scope's series is found under a mutex.
const maxRouteScopes = 1024

// decisionSeries are the series of floodgate_decisions_total of one scope
// and rule label pair, by result, resolved once so that a decision does
// no label lookup.
type decisionSeries struct {
	scope, rule string // the label values
	c           [numResults]prometheus.Counter
	meta        [numResults]atomic.Pointer[cachedMeta]                           // see constMeta
	allowed     atomic.Pointer[[allowedMetaRemaining]atomic.Pointer[cachedMeta]] // see allowedMeta, by remaining
	okTemplate  atomic.Pointer[cachedMeta]                                       // see template
	shared      *atomic.Int64                                                    // allowed metadata shared by the Server's series
}

// inc counts one decision with result r.
func (ds *decisionSeries) inc(r result) { ds.c[r].Inc() }

// seriesKey identifies a label pair.
type seriesKey struct{ scope, rule string }

// Holders of a scope label.
const (
	heldByPolicy uint8 = 1 << iota // a rule of the installed policy
	heldByRoute                    // a route's floodgate.scope, once decided
)

// decisionLabels gives out the series of floodgate_decisions_total under
// bounded scope and rule labels (MaxLabelValues each, LabelOther past
// them). The values come from the configuration, never from a client:
// scopes from the policy file and the routes' floodgate.scope (which Envoy
// sets from its route configuration and floodgate checks against the scope
// grammar), rules from the policy file. The policy's scopes and rules are
// labelled anew at each installation, so reloads never use up the cap; a
// route's scope keeps the label it got first. It is safe for concurrent
// use; finding a route scope's series seen before takes no lock.
type decisionLabels struct {
	vec *prometheus.CounterVec
	def *decisionSeries // the default scope, no rule

	routes atomic.Pointer[map[string]*decisionSeries] // route scope (raw) -> series with LabelNoRule

	shared atomic.Int64 // allowed metadata Structs shared, all series together

	mu     sync.Mutex
	scopes map[string]uint8 // scope label -> its holders
	pairs  map[seriesKey]*decisionSeries
}

func newDecisionLabels(vec *prometheus.CounterVec) *decisionLabels {
	dl := &decisionLabels{
		vec:    vec,
		scopes: make(map[string]uint8),
		pairs:  make(map[seriesKey]*decisionSeries),
	}
	dl.mu.Lock()
	dl.def = dl.pairLocked(dl.scopeLocked("", heldByRoute), LabelNoRule)
	dl.mu.Unlock()
	return dl
}

// route returns the series of a decision in scope (a route's, or the
// default "") that no rule made.
func (dl *decisionLabels) route(scope string) *decisionSeries {
	if scope == "" {
		return dl.def
	}
	if m := dl.routes.Load(); m != nil {
		if ds, ok := (*m)[scope]; ok {
			return ds
		}
	}
	dl.mu.Lock()
	defer dl.mu.Unlock()
	ds := dl.pairLocked(dl.scopeLocked(scope, heldByRoute), LabelNoRule)
	old := dl.routes.Load()
	if old != nil && len(*old) >= maxRouteScopes {
		return ds
	}
	m := make(map[string]*decisionSeries, 1+lenOf(old))
	if old != nil {
		for k, v := range *old {
			m[k] = v
		}
	}
	m[scope] = ds
	dl.routes.Store(&m)
	return ds
}

func lenOf(m *map[string]*decisionSeries) int {
	if m == nil {
		return 0
	}
	return len(*m)
}

// forPolicy labels p (nil: no policy) in place of the policy installed
// before, and returns the series of each enforcing rule of p and the
// label pairs of the previous policy that p does not have, for drop once
// p is in force. The first MaxLabelValues rule names in file order have
// their own rule label, the others LabelOther; p's scopes take the scope
// labels the routes left, in file order. Calls must not overlap.
func (dl *decisionLabels) forPolicy(p *policy.Policy) (map[*policy.Rule]*decisionSeries, []seriesKey) {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	for label, held := range dl.scopes {
		if held &^= heldByPolicy; held == 0 {
			delete(dl.scopes, label)
		} else {
			dl.scopes[label] = held
		}
	}
	out := make(map[*policy.Rule]*decisionSeries)
	live := make(map[seriesKey]bool)
	if p != nil {
		rules := 0
		for _, r := range p.Rules {
			if r.Shadow {
				continue
			}
			rule := LabelOther
			if rules < MaxLabelValues {
				rule = r.Name
				rules++
			}
			ds := dl.pairLocked(dl.scopeLocked(r.Scope, heldByPolicy), rule)
			out[r] = ds
			live[seriesKey{ds.scope, ds.rule}] = true
		}
	}
	var stale []seriesKey
	for k := range dl.pairs {
		if k.rule != LabelNoRule && !live[k] {
			stale = append(stale, k)
		}
	}
	return out, stale
}

// drop deletes the series of the label pairs stale (from forPolicy), if
// no policy installed since has them again.
func (dl *decisionLabels) drop(stale []seriesKey) {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	for _, k := range stale {
		if _, ok := dl.pairs[k]; !ok {
			continue
		}
		for _, r := range resultNames {
			dl.vec.DeleteLabelValues(r, k.scope, k.rule)
		}
		delete(dl.pairs, k)
	}
}

// scopeLocked returns the scope label of scope for a holder: its name
// ("default" for "") while fewer than MaxLabelValues are held, else
// LabelOther.
func (dl *decisionLabels) scopeLocked(scope string, holder uint8) string {
	label := policyName(scope)
	if held, ok := dl.scopes[label]; ok {
		dl.scopes[label] = held | holder
		return label
	}
	if len(dl.scopes) >= MaxLabelValues {
		return LabelOther
	}
	dl.scopes[label] = holder
	return label
}

// pairLocked returns the series of a label pair, creating them (exported
// at 0) the first time.
func (dl *decisionLabels) pairLocked(scope, rule string) *decisionSeries {
	k := seriesKey{scope, rule}
	if ds, ok := dl.pairs[k]; ok {
		return ds
	}
	ds := &decisionSeries{scope: scope, rule: rule, shared: &dl.shared}
	for r, name := range resultNames {
		ds.c[r] = dl.vec.WithLabelValues(name, scope, rule)
	}
	dl.pairs[k] = ds
	return ds
}
