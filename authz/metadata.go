package authz

import (
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

// metadata holds the dynamic metadata of one response, so that it costs
// its map and nothing else beside the response it is part of.
type metadata struct {
	st   structpb.Struct
	vals [metaFields - 1]structpb.Value
	strs [metaFields - 2]structpb.Value_StringValue
	num  structpb.Value_NumberValue
	n, s int // vals and strs used
}

// build fills m with the metadata of a counted decision and returns it.
// degraded is "" for a normal decision. MetaShadow is left to withShadow,
// which has room for it.
func (m *metadata) build(p *plan, r result, remaining int64, degraded string) *structpb.Struct {
	m.st.Fields = make(map[string]*structpb.Value, metaFields)
	m.str(MetaScope, policyName(p.req.Scope))
	if p.rule != "" {
		m.str(MetaRule, p.rule)
	}
	m.str(MetaDecision, r.String())
	if degraded != "" {
		m.str(MetaDegraded, degraded)
	}
	m.num.NumberValue = float64(remaining)
	v := &m.vals[m.n]
	m.n++
	v.Kind = &m.num
	m.st.Fields[MetaRemaining] = v
	return &m.st
}

// str sets field k to the string v.
func (m *metadata) str(k, v string) {
	sv := &m.strs[m.s]
	m.s++
	sv.StringValue = v
	val := &m.vals[m.n]
	m.n++
	val.Kind = sv
	m.st.Fields[k] = val
}

// verdictMetadata is the metadata of a request answered without a count:
// a failure, or the policy's lists.
func verdictMetadata(p *plan, r result) *structpb.Struct {
	st := &structpb.Struct{Fields: make(map[string]*structpb.Value, 4)}
	st.Fields[MetaScope] = structpb.NewStringValue(policyName(p.req.Scope))
	if p.rule != "" {
		st.Fields[MetaRule] = structpb.NewStringValue(p.rule)
	}
	st.Fields[MetaDecision] = structpb.NewStringValue(r.String())
	return st
}
