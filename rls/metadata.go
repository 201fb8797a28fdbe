package rls

import (
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/floodgate-rl/floodgate/authz"
)

// MetadataNamespace is where Envoy's ratelimit HTTP filter stores a
// response's dynamic_metadata (unless its metadata_namespace says
// otherwise), so an access log reads a field f as
// %DYNAMIC_METADATA(envoy.filters.http.ratelimit:f)%.
//
// Every answer carries the fields of the ext_authz API's metadata
// (authz.MetaScope and the others), with the values of this API: scope
// "rls:<domain>" (the scope of the domain's counters, as the console
// names it), rule the key of the rule the rate-limit headers describe
// (the denying rule with the longest wait, else the one with the least
// room; absent when no rule was decided), decision the result of
// floodgate_rls_decisions_total, remaining that rule's requests left
// (absent without one), and degraded the reason of a decision made without
// the shared store. Every value comes from the configuration and the
// decision: the domain and the keys are the configuration's (a domain
// longer than 128 bytes is cut).
const MetadataNamespace = "envoy.filters.http.ratelimit"

// answerMeta holds the dynamic metadata of one answer, in its answerBuf.
// Its string values are shared: the scope and the rule formatted when the
// configuration was put in force (ruleText), the decisions once.
type answerMeta struct {
	st    structpb.Struct
	left  structpb.Value
	leftN structpb.Value_NumberValue
}

// metadata sets the dynamic metadata of b's answer to p: decision is its
// result, binding the index in p.rules of the rule the headers describe
// (-1 for none), reason the degraded reason ("" for none).
func (b *answerBuf) metadata(p *plan, decision string, binding int, reason string) {
	m := &b.meta
	m.st.Fields = make(map[string]*structpb.Value, 5)
	scope := p.scope
	if scope == nil {
		scope = metadataScope(p.domain)
	}
	m.st.Fields[authz.MetaScope] = scope
	m.st.Fields[authz.MetaDecision] = decisionValue(decision)
	if binding >= 0 {
		r := &p.rules[binding]
		m.st.Fields[authz.MetaRule] = r.texts().rule
		m.leftN.NumberValue = float64(max(min(r.decision.Remaining, int64(r.limit.RequestsPerUnit)), 0))
		m.left.Kind = &m.leftN
		m.st.Fields[authz.MetaRemaining] = &m.left
	}
	if reason != "" {
		m.st.Fields[authz.MetaDegraded] = structpb.NewStringValue(reason)
	}
	b.resp.DynamicMetadata = &m.st
}

// decisionValues are the metadata's decision values, the results of
// floodgate_rls_decisions_total, shared by every answer.
var decisionValues = func() map[string]*structpb.Value {
	m := make(map[string]*structpb.Value)
	for _, d := range []string{"allowed", "denied", "fallback_allowed", "fallback_denied", "fail_open", "fail_closed", "unlimited", "unknown_domain", "refused"} {
		m[d] = structpb.NewStringValue(d)
	}
	return m
}()

// decisionValue is the metadata's decision field of result d.
func decisionValue(d string) *structpb.Value {
	if v := decisionValues[d]; v != nil {
		return v
	}
	return structpb.NewStringValue(d)
}

// answerDecision is the result of floodgate_rls_decisions_total that an
// answer to a decided plan (or one without rules) counts.
func answerDecision(p *plan, allowed bool, reason string) string {
	switch {
	case len(p.enforced) == 0 && len(p.shadow) == 0 && p.unknownDomain:
		return "unknown_domain"
	case len(p.enforced) == 0 && len(p.shadow) == 0:
		return "unlimited"
	case reason != "" && allowed:
		return "fallback_allowed"
	case reason != "":
		return "fallback_denied"
	case allowed:
		return "allowed"
	}
	return "denied"
}
