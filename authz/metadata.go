package authz

import (
	"maps"
	"sync/atomic"

	"google.golang.org/protobuf/types/known/structpb"
)

// MetadataNamespace is where Envoy's ext_authz HTTP filter stores the
// CheckResponse's dynamic_metadata, so an access log reads a field f as
// %DYNAMIC_METADATA(envoy.filters.http.ext_authz:f)%.
const MetadataNamespace = "envoy.filters.http.ext_authz"

// The fields of the dynamic metadata of every CheckResponse, allowed or
// denied. Their values come from the configuration and the decision,
// never from the request: a client cannot put text of its own into an
// access log line through them.
const (
	// MetaScope is the scope that counted the request, as in the
	// RateLimit-Policy header: "default" for the default scope.
	MetaScope = "scope"
	// MetaRule is the name of the policy rule that decided the request;
	// absent when no rule did.
	MetaRule = "rule"
	// MetaDecision is the answer, as the result label of
	// floodgate_decisions_total: allowed, denied, fallback_allowed,
	// fallback_denied, fail_open, fail_closed, allowlisted, blocked.
	MetaDecision = "decision"
	// MetaRemaining is the number of requests left in the window after
	// this one (a number; 0 on a denial); absent when nothing was counted
	// (fail_*, allowlisted, blocked).
	MetaRemaining = "remaining"
	// MetaDegraded is the reason a decision was made without the shared
	// store (the DegradedHeader's value, e.g. memcached-unavailable);
	// absent otherwise.
	MetaDegraded = "degraded"
	// MetaShadow is "would-deny" when a shadow rule would have denied an
	// allowed request; absent otherwise.
	MetaShadow = "shadow"
)

// metaFields is the most fields a response's metadata holds.
const metaFields = 6

// decisionValues are the MetaDecision values, shared by every response
// (a message is only read once built, and reading is safe concurrently).
var decisionValues = func() (v [numResults]*structpb.Value) {
	for r := range v {
		v[r] = structpb.NewStringValue(result(r).String())
	}
	return v
}()

// zeroValue is the MetaRemaining of a denial, shared.
var zeroValue = structpb.NewNumberValue(0)

// Bounds of the shared metadata of allowed answers (see allowedMeta).
const (
	// allowedMetaRemaining: a series shares the metadata of allowed
	// answers with 0 to 127 requests remaining; others build their own.
	allowedMetaRemaining = 128
	// maxAllowedMeta bounds the shared Structs of allowed answers of a
	// Server, all series together (about 400 bytes each).
	maxAllowedMeta = 8192
)

// metadata holds the dynamic metadata of one allowed response that
// allowedMeta does not share: a degraded one, or one past its bounds.
// (A denial's is the same for every request of its scope and rule: see
// decisionSeries.constMeta.)
type metadata struct {
	st        structpb.Struct
	scope     structpb.Value
	rule      structpb.Value
	degraded  structpb.Value
	remaining structpb.Value
	strs      [3]structpb.Value_StringValue
	num       structpb.Value_NumberValue
}

// build fills m with the metadata of an allowed decision and returns it.
// degraded is "" for a normal decision. MetaShadow is left to withShadow,
// which has room for it.
func (m *metadata) build(p *plan, r result, remaining int64, degraded string) *structpb.Struct {
	m.st.Fields = make(map[string]*structpb.Value, metaFields)
	m.str(MetaScope, &m.scope, &m.strs[0], policyName(p.req.Scope))
	if p.rule != "" {
		m.str(MetaRule, &m.rule, &m.strs[1], p.rule)
	}
	m.st.Fields[MetaDecision] = decisionValues[r]
	if degraded != "" {
		m.str(MetaDegraded, &m.degraded, &m.strs[2], degraded)
	}
	m.num.NumberValue = float64(remaining)
	m.remaining.Kind = &m.num
	m.st.Fields[MetaRemaining] = &m.remaining
	return &m.st
}

// str sets field k to the string v, held in val and sv.
func (m *metadata) str(k string, val *structpb.Value, sv *structpb.Value_StringValue, v string) {
	sv.StringValue = v
	val.Kind = sv
	m.st.Fields[k] = val
}

// okMeta is the metadata of an allowed answer: shared (allowedMeta) when
// it is a normal one, else its own, a normal one's made from its series'
// template (see fromTemplate).
func (ds *decisionSeries) okMeta(p *plan, r result, remaining int64, degraded string) *structpb.Struct {
	if r == resultAllowed && degraded == "" {
		if st := ds.allowedMeta(p, remaining); st != nil {
			return st
		}
		return fromTemplate(ds.template(p), remaining)
	}
	return new(metadata).build(p, r, remaining, degraded)
}

// template is the metadata of a normal allowed answer of p's scope and
// rule but for its MetaRemaining, built once (the last one built is kept,
// as in constMeta) and never changed.
func (ds *decisionSeries) template(p *plan) *structpb.Struct {
	if c := ds.okTemplate.Load(); c != nil && c.scope == p.req.Scope && c.rule == p.rule {
		return c.st
	}
	st := new(metadata).build(p, resultAllowed, 0, "")
	ds.okTemplate.Store(&cachedMeta{scope: p.req.Scope, rule: p.rule, st: st})
	return st
}

// remainingMeta is the metadata of a normal allowed answer that
// allowedMeta does not share: its template's fields and values, shared,
// with a MetaRemaining of its own.
type remainingMeta struct {
	st        structpb.Struct
	remaining structpb.Value
	num       structpb.Value_NumberValue
}

// fromTemplate returns the metadata t with remaining as its MetaRemaining:
// a copy of t's map (which costs no hashing of its keys, unlike building
// it) under which only MetaRemaining is set anew.
func fromTemplate(t *structpb.Struct, remaining int64) *structpb.Struct {
	m := new(remainingMeta)
	m.st.Fields = maps.Clone(t.Fields)
	m.num.NumberValue = float64(remaining)
	m.remaining.Kind = &m.num
	m.st.Fields[MetaRemaining] = &m.remaining
	return &m.st
}

// constMeta is the metadata of an answer that is the same for every
// request of p's scope and rule with result r and reason degraded: a
// denial (remaining 0), a failure, the policy's lists (no remaining). It
// is built once and shared; the last one built for each result is kept,
// for the scope and rule it was built for (a series can be shared by
// several, past the label caps).
func (ds *decisionSeries) constMeta(p *plan, r result, degraded string) *structpb.Struct {
	if c := ds.meta[r].Load(); c != nil && c.scope == p.req.Scope && c.rule == p.rule && c.degraded == degraded {
		return c.st
	}
	st := &structpb.Struct{Fields: make(map[string]*structpb.Value, 5)}
	st.Fields[MetaScope] = structpb.NewStringValue(policyName(p.req.Scope))
	if p.rule != "" {
		st.Fields[MetaRule] = structpb.NewStringValue(p.rule)
	}
	st.Fields[MetaDecision] = decisionValues[r]
	if r == resultDenied || r == resultFallbackDenied {
		st.Fields[MetaRemaining] = zeroValue
	}
	if degraded != "" {
		st.Fields[MetaDegraded] = structpb.NewStringValue(degraded)
	}
	ds.meta[r].Store(&cachedMeta{scope: p.req.Scope, rule: p.rule, degraded: degraded, st: st})
	return st
}

// allowedMeta is the metadata of a normal (not degraded) allowed answer
// of p with remaining requests left, shared by every such answer of p's
// scope and rule, or nil when it is not kept (remaining of 128 or more,
// or the Server's maxAllowedMeta reached): the caller then builds its
// own. Shared metadata is never changed (see withShadow).
func (ds *decisionSeries) allowedMeta(p *plan, remaining int64) *structpb.Struct {
	if remaining < 0 || remaining >= allowedMetaRemaining {
		return nil
	}
	slots := ds.allowed.Load()
	if slots == nil {
		slots = new([allowedMetaRemaining]atomic.Pointer[cachedMeta])
		if !ds.allowed.CompareAndSwap(nil, slots) {
			slots = ds.allowed.Load()
		}
	}
	slot := &slots[remaining]
	c := slot.Load()
	if c != nil && c.scope == p.req.Scope && c.rule == p.rule {
		return c.st
	}
	if c == nil && ds.shared.Add(1) > maxAllowedMeta {
		ds.shared.Add(-1)
		return nil
	}
	st := new(metadata).build(p, resultAllowed, remaining, "")
	slot.Store(&cachedMeta{scope: p.req.Scope, rule: p.rule, st: st})
	return st
}

// cachedMeta is a shared metadata Struct and what it was built for.
type cachedMeta struct {
	scope, rule, degraded string
	st                    *structpb.Struct
}
