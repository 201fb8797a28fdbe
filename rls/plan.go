package rls

import (
	"math"
	"strconv"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/policy"
	rlsconf "github.com/floodgate-rl/floodgate/policy/rls"
)

// counterScope is the limiter scope of every RLS counter. The counter key
// (rlsconf's CounterKey) names the domain and the descriptor; the scope
// keeps them apart from ext_authz's counters, whose scopes cannot contain
// ':'.
const counterScope = "rls:"

// kind is what a descriptor of a request comes to.
type kind uint8

const (
	kindNoRule    kind = iota // unknown domain, or no rule matches
	kindUnlimited             // a rule with unlimited: true
	kindReplaced              // a rule another rule of the request replaces
	kindNegative              // is_negative_hits: ignored
	kindEnforced              // decided in the request's AllowAll
	kindShadow                // decided after an allowed request, answers OK
)

// status is one descriptor of a plan: its kind and, for a rule to decide,
// its index in plan.rules.
type status struct {
	kind kind
	rule int
}

// rule is a rule to decide for one descriptor.
type rule struct {
	limit    *rlsconf.Limit // the configuration's rule, or one made for an override
	window   time.Duration  // limit's unit times an override's multiplier
	mult     uint32         // an override's unit_multiplier; 0 without one
	text     *ruleText      // formatted by SetLimits; nil: formatted when needed
	req      limiter.Request
	decision limiter.Decision
	decided  bool
}

// plan is what ShouldRateLimit makes of one request before asking the
// strategy, and then the decisions. Its arrays hold the usual handful of
// descriptors without allocating; plans are pooled (see reset).
type plan struct {
	planState
	planBufs
}

// planState is a plan but its arrays.
type planState struct {
	domain        string
	scope         *structpb.Value // metadataScope(domain) of a configured domain, else nil
	descriptors   int             // descriptors in the request
	unknownDomain bool            // the domain has no configuration
	refused       string
	complete      bool // build finished

	statuses []status
	rules    []rule
	enforced []int // indexes in rules, in descriptor order
	shadow   []int
	reqs     []limiter.Request
}

// planBufs are the arrays of a plan.
type planBufs struct {
	statusBuf [8]status
	ruleBuf   [8]rule
	indexBuf  [8]int
	reqBuf    [8]limiter.Request
	entryBuf  [8]rlsconf.Entry
	limitBuf  [8]*rlsconf.Limit
	foundBuf  [8]*rlsconf.Limit

	decisionBuf [1]limiter.Decision // the decision of a set of one
}

// reset makes p a zero plan again, dropping its references to the request
// and the configuration, for the pool. Of the arrays, it clears what the
// plan of p.descriptors descriptors used (those without pointers need no
// clearing: a plan writes every element before it reads it), instead of
// the few kilobytes of the whole.
func (p *plan) reset() {
	n := min(p.descriptors, len(p.ruleBuf))
	clear(p.ruleBuf[:n])
	clear(p.reqBuf[:n])
	clear(p.limitBuf[:n])
	clear(p.foundBuf[:n])
	clear(p.entryBuf[:])
	p.planState = planState{}
}

// build makes the plan of req: every descriptor matched, the replaced rules
// dropped, and a limiter request for every rule to decide.
func (s *Server) build(p *plan, req *rlsv3.RateLimitRequest) {
	descs := req.GetDescriptors()
	p.domain, p.descriptors = req.GetDomain(), len(descs)
	p.statuses = p.statusBuf[:0]
	if len(descs) > MaxDescriptors {
		p.refused = strconv.Itoa(len(descs)) + " descriptors, at most " + strconv.Itoa(MaxDescriptors)
		p.statuses = make([]status, len(descs))
		p.complete = true
		return
	}
	a := s.active.Load()
	p.scope = a.scopes[p.domain]
	p.unknownDomain = p.scope == nil
	matched := p.limitBuf[:0]
	var overrides map[int]rule
	for i, d := range descs {
		var l *rlsconf.Limit
		if !p.unknownDomain && !d.GetIsNegativeHits() {
			entries := entriesOf(p.entryBuf[:0], d)
			if o, ok := s.override(p.domain, d); ok {
				if overrides == nil {
					overrides = make(map[int]rule)
				}
				overrides[i], l = o, o.limit
			} else {
				l = a.limits.Match(p.domain, entries)
			}
		}
		matched = append(matched, l)
	}
	found := append(p.foundBuf[:0], matched...)
	rlsconf.ApplyReplaces(matched)
	for i, d := range descs {
		p.classify(i, d, req.GetHitsAddend(), found[i], matched[i], overrides, a.texts)
	}
	if n := len(p.enforced) + len(p.shadow); n > MaxRules {
		p.refused = strconv.Itoa(n) + " rules to decide, at most " + strconv.Itoa(MaxRules)
	}
	p.complete = true
}

// classify adds descriptor i's status to p: found is the rule it matched,
// kept what ApplyReplaces left of it, texts the rules' texts.
func (p *plan) classify(i int, d *ratelimitv3.RateLimitDescriptor, reqHits uint32, found, kept *rlsconf.Limit, overrides map[int]rule, texts map[*rlsconf.Limit]*ruleText) {
	st := status{kind: kindNoRule}
	switch {
	case d.GetIsNegativeHits():
		st.kind = kindNegative
	case found == nil:
	case kept == nil:
		st.kind = kindReplaced
	case kept.Unlimited:
		st.kind = kindUnlimited
	default:
		r, ok := overrides[i]
		if !ok {
			r = rule{limit: kept, window: kept.Unit.Window(), text: texts[kept]}
		}
		r.req = limiter.Request{
			Scope:     counterScope,
			Requestor: kept.CounterKey(entriesOf(p.entryBuf[:0], d)),
			Limit:     max(int64(kept.RequestsPerUnit), 1),
			Window:    r.window,
			Hits:      hitsOf(reqHits, d, kept.RequestsPerUnit),
		}
		if p.rules == nil {
			p.rules = p.ruleBuf[:0]
		}
		p.rules = append(p.rules, r)
		st.rule = len(p.rules) - 1
		st.kind = kindEnforced
		if kept.ShadowMode {
			st.kind = kindShadow
			p.shadow = append(p.shadow, st.rule)
		} else {
			if p.enforced == nil {
				p.enforced = p.indexBuf[:0]
			}
			p.enforced = append(p.enforced, st.rule)
		}
	}
	p.statuses = append(p.statuses, st)
}

// hitsOf returns how many requests descriptor d counts as under a rule of
// perUnit requests: its own hits_addend when Envoy sent one, else the
// request's, 0 counting as 1. More than perUnit is clamped to perUnit+1
// (denied all the same, and no arithmetic can overflow); a rule of 0
// requests, decided as a limit of 1, gets 2.
func hitsOf(reqHits uint32, d *ratelimitv3.RateLimitDescriptor, perUnit uint32) int64 {
	h := uint64(reqHits)
	if v := d.GetHitsAddend(); v != nil {
		h = v.GetValue()
	}
	if perUnit == 0 {
		return 2
	}
	return int64(min(max(h, 1), uint64(perUnit)+1))
}

// entriesOf appends the entries of d to dst.
func entriesOf(dst []rlsconf.Entry, d *ratelimitv3.RateLimitDescriptor) []rlsconf.Entry {
	for _, e := range d.GetEntries() {
		dst = append(dst, rlsconf.Entry{Key: e.GetKey(), Value: e.GetValue()})
	}
	return dst
}

// override returns the rule of descriptor d's own limit (Envoy's rate limit
// override), which applies in place of the configuration's as
// envoyproxy/ratelimit applies it: no name, no shadow mode, replacing
// nothing, counted per descriptor. An override the strategy cannot enforce
// is ignored, counted and logged once: the configuration's rule applies.
func (s *Server) override(domain string, d *ratelimitv3.RateLimitDescriptor) (rule, bool) {
	o := d.GetLimit()
	if o == nil {
		return rule{}, false
	}
	unit := rlsconf.Unit(o.GetUnit())
	mult := uint32(1)
	if m := o.GetUnitMultiplier(); m != nil {
		mult = m.GetValue()
	}
	window, err := overrideWindow(o, unit, mult, s.strategyName)
	if err != "" {
		s.m.invalidOverrides.Inc()
		s.once.do("override "+err, func() {
			s.log.Warn("rls descriptor limit override ignored, using the configuration's rule", "domain", truncate(domain, 128), "error", err)
		})
		return rule{}, false
	}
	l := &rlsconf.Limit{
		Domain:          domain,
		Unit:            unit,
		RequestsPerUnit: o.GetRequestsPerUnit(),
		Key:             domain + ".override",
	}
	r := rule{limit: l, window: window}
	if o.GetUnitMultiplier() != nil {
		r.mult = mult
	}
	// l has no descriptor levels: its CounterKey is the descriptor's own
	// (rlsconf.CounterKey), whatever rule the configuration has for it.
	return r, true
}

// overrideWindow returns the window of an override, or says why it
// cannot be enforced.
func overrideWindow(o *ratelimitv3.RateLimitDescriptor_RateLimitOverride, unit rlsconf.Unit, mult uint32, strategy string) (time.Duration, string) {
	if unit.Window() == 0 {
		return 0, "unit " + typev3.RateLimitUnit(unit).String() + ": floodgate enforces second, minute, hour and day"
	}
	if mult == 0 || int64(mult) > int64(limiter.MaxWindow/unit.Window()) {
		return 0, "unit_multiplier " + strconv.FormatUint(uint64(mult), 10) + " " + unit.String() + ": the window must be from 1s to 24h"
	}
	window := unit.Window() * time.Duration(mult)
	if o.GetRequestsPerUnit() > policy.MaxLimit {
		return 0, "requests_per_unit " + strconv.FormatUint(uint64(o.GetRequestsPerUnit()), 10) + ": at most " + strconv.Itoa(policy.MaxLimit)
	}
	if err := policy.CheckLimit(strategy, policy.Limit{Limit: int64(o.GetRequestsPerUnit()), Window: window}); err != nil {
		return 0, "requests_per_unit " + err.Error()
	}
	return window, ""
}

// enforcedRequests returns the limiter requests of the enforced rules, in
// order.
func (p *plan) enforcedRequests() []limiter.Request {
	p.reqs = p.reqBuf[:0]
	for _, i := range p.enforced {
		p.reqs = append(p.reqs, p.rules[i].req)
	}
	return p.reqs
}

// apply records the decisions of the enforced rules, in order, and reports
// whether the request is allowed: every rule had room.
func (p *plan) apply(ds []limiter.Decision) bool {
	allowed := true
	for i, idx := range p.enforced {
		p.rules[idx].decision, p.rules[idx].decided = ds[i], true
		allowed = allowed && ds[i].Allowed
	}
	return allowed
}

// maxRemaining is limit_remaining of a descriptor that nothing limits.
const maxRemaining = math.MaxUint32
