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

// answerMeta holds the dynamic metadata of one answer, so that it costs
// one allocation and its map.
type answerMeta struct {
	st                                    structpb.Struct
	scope, rule, decision, degraded, left structpb.Value
	scopeS, ruleS, decisionS, degradedS   structpb.Value_StringValue
	leftN                                 structpb.Value_NumberValue
}

// metadata returns the dynamic metadata of an answer to p: decision is
// its result, binding the index in p.rules of the rule the headers
// describe (-1 for none), reason the degraded reason ("" for none).
func (s *Server) metadata(p *plan, decision string, binding int, reason string) *structpb.Struct {
	m := new(answerMeta)
	m.st.Fields = make(map[string]*structpb.Value, 5)
	m.str(authz.MetaScope, &m.scope, &m.scopeS, counterScope+truncate(p.domain, 128))
	m.str(authz.MetaDecision, &m.decision, &m.decisionS, decision)
	if binding >= 0 {
		r := &p.rules[binding]
		m.str(authz.MetaRule, &m.rule, &m.ruleS, r.limit.Key)
		m.leftN.NumberValue = float64(max(min(r.decision.Remaining, int64(r.limit.RequestsPerUnit)), 0))
		m.left.Kind = &m.leftN
		m.st.Fields[authz.MetaRemaining] = &m.left
	}
	if reason != "" {
		m.str(authz.MetaDegraded, &m.degraded, &m.degradedS, reason)
	}
	return &m.st
}

// str sets field k to v, held in val and sv.
func (m *answerMeta) str(k string, val *structpb.Value, sv *structpb.Value_StringValue, v string) {
	sv.StringValue = v
	val.Kind = sv
	m.st.Fields[k] = val
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
