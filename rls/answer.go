package rls

import (
	"strconv"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/floodgate-rl/floodgate/authz"
	"github.com/floodgate-rl/floodgate/limiter"
)

// Bodies of the answers that deny. deniedBodyPrefix is followed by the
// wait and " seconds", as the ext_authz API words it.
const (
	deniedBodyPrefix = "Rate limit exceeded. Try again in "
	unavailableBody  = "Rate limiter unavailable"
	refusedBodyStart = "Rate limit request refused: "
)

// statusMsgs holds the messages of a response's statuses, so that they
// cost a few allocations instead of several per descriptor.
type statusMsgs struct {
	list   []*rlsv3.RateLimitResponse_DescriptorStatus
	msgs   []rlsv3.RateLimitResponse_DescriptorStatus
	limits []rlsv3.RateLimitResponse_RateLimit
	waits  []durationpb.Duration
}

func newStatusMsgs(n int) *statusMsgs {
	m := &statusMsgs{
		list: make([]*rlsv3.RateLimitResponse_DescriptorStatus, n),
		msgs: make([]rlsv3.RateLimitResponse_DescriptorStatus, n),
	}
	for i := range m.list {
		m.list[i] = &m.msgs[i]
	}
	return m
}

// answer is the response to a decided plan (or one without rules to
// decide): the statuses, and the body and headers of the outcome.
func (s *Server) answer(p *plan, allowed bool, reason string) *rlsv3.RateLimitResponse {
	m := newStatusMsgs(len(p.statuses))
	m.limits = make([]rlsv3.RateLimitResponse_RateLimit, len(p.enforced))
	m.waits = make([]durationpb.Duration, len(p.enforced))
	binding, wait := -1, time.Duration(0) // the rule the headers describe
	e := 0
	for i, st := range p.statuses {
		ds := &m.msgs[i]
		switch st.kind {
		case kindEnforced:
			r := &p.rules[st.rule]
			d := r.decision
			ds.Code = rlsv3.RateLimitResponse_OK
			if !d.Allowed {
				ds.Code = rlsv3.RateLimitResponse_OVER_LIMIT
			}
			ds.CurrentLimit = r.currentLimit(&m.limits[e])
			ds.LimitRemaining = clampRemaining(d.Remaining)
			if d.Remaining <= 0 {
				m.waits[e].Seconds = authz.RetryAfterSeconds(d.RetryAfter)
			}
			ds.DurationUntilReset = &m.waits[e]
			e++
			if closer(allowed, d, binding, p, wait) {
				binding, wait = st.rule, d.RetryAfter
			}
			s.m.descriptors[descriptorKind(d)].Inc()
		case kindShadow:
			ds.Code = rlsv3.RateLimitResponse_OK
			if r := &p.rules[st.rule]; r.decided {
				ds.LimitRemaining = clampRemaining(r.decision.Remaining)
			}
			s.m.descriptors[kindShadow].Inc()
		default:
			ds.Code, ds.LimitRemaining = rlsv3.RateLimitResponse_OK, maxRemaining
			s.m.descriptors[st.kind].Inc()
		}
	}
	resp := &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK, Statuses: m.list}
	if !allowed {
		resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT
	}
	s.addHeaders(resp, p, allowed, binding, reason)
	resp.DynamicMetadata = s.metadata(p, answerDecision(p, allowed, reason), binding, reason)
	return resp
}

// closer reports whether decision d, of a rule in p, should replace the
// binding rule (index binding in p.rules, with wait) as the one the
// headers describe: for an allowed request the rule with the least room,
// for a denied one the denying rule with the longest wait.
func closer(allowed bool, d limiter.Decision, binding int, p *plan, wait time.Duration) bool {
	if !allowed {
		return !d.Allowed && (binding < 0 || d.RetryAfter > wait)
	}
	return binding < 0 || d.Remaining < p.rules[binding].decision.Remaining
}

// descriptorKind is the descriptors-metric index of an enforced decision.
func descriptorKind(d limiter.Decision) kind {
	if d.Allowed {
		return kindEnforced
	}
	return descriptorOverLimit
}

// addHeaders adds the body and headers of the outcome to resp: for a
// denial the body, Retry-After and the rate-limit headers of the denying
// rule; for an allowance, with Config.Headers, the rate-limit headers of
// the rule with the least room; and the DegradedHeader of a decision made
// on a degraded path.
func (s *Server) addHeaders(resp *rlsv3.RateLimitResponse, p *plan, allowed bool, binding int, reason string) {
	var h []*corev3.HeaderValue
	if binding >= 0 {
		r := &p.rules[binding]
		n := int64(0)
		if !allowed || r.decision.Remaining <= 0 {
			n = authz.RetryAfterSeconds(r.decision.RetryAfter)
		}
		if !allowed {
			ns := strconv.FormatInt(n, 10)
			resp.RawBody = []byte(deniedBodyPrefix + ns + " seconds")
			h = append(h, header("Retry-After", ns))
		}
		if !allowed || s.headers {
			remaining := max(min(r.decision.Remaining, int64(r.limit.RequestsPerUnit)), 0)
			name := r.policyName()
			h = append(h,
				header("RateLimit-Policy", policyField(name, int64(r.limit.RequestsPerUnit), r.window)),
				header("RateLimit", rateLimitField(name, remaining, n)))
		}
	}
	if reason != "" {
		if allowed {
			resp.RequestHeadersToAdd = []*corev3.HeaderValue{header(authz.DegradedHeader, reason)}
		}
		if s.toClient {
			h = append(h, header(authz.DegradedHeader, reason))
		}
	}
	resp.ResponseHeadersToAdd = h
}

// currentLimit fills m with r's limit as Envoy's status reports it and
// returns it.
func (r *rule) currentLimit(m *rlsv3.RateLimitResponse_RateLimit) *rlsv3.RateLimitResponse_RateLimit {
	m.Name = r.limit.Name
	m.RequestsPerUnit = r.limit.RequestsPerUnit
	m.Unit = rlsv3.RateLimitResponse_RateLimit_Unit(r.limit.Unit)
	if r.mult > 0 {
		m.UnitMultiplier = wrapperspb.UInt32(r.mult)
	}
	return m
}

// policyName names r in RateLimit-Policy and RateLimit: its name, else its
// key.
func (r *rule) policyName() string {
	if r.limit.Name != "" {
		return r.limit.Name
	}
	return r.limit.Key
}

// refusedResponse answers a request refused for its size: OVER_LIMIT,
// nothing counted, a body saying why.
func (s *Server) refusedResponse(p *plan) *rlsv3.RateLimitResponse {
	m := newStatusMsgs(p.descriptors)
	for i := range m.msgs {
		m.msgs[i].Code = rlsv3.RateLimitResponse_OVER_LIMIT
	}
	return &rlsv3.RateLimitResponse{
		OverallCode:     rlsv3.RateLimitResponse_OVER_LIMIT,
		Statuses:        m.list,
		RawBody:         []byte(refusedBodyStart + p.refused),
		DynamicMetadata: s.metadata(p, "refused", -1, ""),
	}
}

// failOpenResponse answers OK when the limiter failed: every status OK,
// without limits, and no header.
func (s *Server) failOpenResponse(p *plan) *rlsv3.RateLimitResponse {
	m := newStatusMsgs(len(p.statuses))
	for i, st := range p.statuses {
		m.msgs[i].Code = rlsv3.RateLimitResponse_OK
		if st.kind != kindEnforced && st.kind != kindShadow {
			m.msgs[i].LimitRemaining = maxRemaining
		}
	}
	return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK, Statuses: m.list, DynamicMetadata: s.metadata(p, "fail_open", -1, "")}
}

// unavailableResponse denies when the limiter failed (FailClosed): the
// enforced statuses OVER_LIMIT with their limits, the others OK, and the
// body "Rate limiter unavailable"; no Retry-After, as no wait is known.
func (s *Server) unavailableResponse(p *plan) *rlsv3.RateLimitResponse {
	m := newStatusMsgs(len(p.statuses))
	m.limits = make([]rlsv3.RateLimitResponse_RateLimit, len(p.enforced))
	e := 0
	for i, st := range p.statuses {
		ds := &m.msgs[i]
		ds.Code = rlsv3.RateLimitResponse_OK
		switch st.kind {
		case kindEnforced:
			ds.Code = rlsv3.RateLimitResponse_OVER_LIMIT
			ds.CurrentLimit = p.rules[st.rule].currentLimit(&m.limits[e])
			e++
		case kindShadow:
		default:
			ds.LimitRemaining = maxRemaining
		}
	}
	return &rlsv3.RateLimitResponse{
		OverallCode:     rlsv3.RateLimitResponse_OVER_LIMIT,
		Statuses:        m.list,
		RawBody:         []byte(unavailableBody),
		DynamicMetadata: s.metadata(p, "fail_closed", -1, ""),
	}
}

// header returns a header for response_headers_to_add or
// request_headers_to_add. (The rate limit service API has no append
// action: Envoy adds them.)
func header(k, v string) *corev3.HeaderValue {
	return &corev3.HeaderValue{Key: k, Value: v}
}

// clampRemaining fits a Decision's Remaining into limit_remaining.
func clampRemaining(n int64) uint32 {
	return uint32(min(max(n, 0), maxRemaining))
}

// policyField is a RateLimit-Policy item (draft-ietf-httpapi-ratelimit-
// headers-10): "name";q=quota;w=window-seconds.
func policyField(name string, quota int64, window time.Duration) string {
	b := appendSFString(make([]byte, 0, len(name)+32), name)
	b = append(b, ";q="...)
	b = strconv.AppendInt(b, quota, 10)
	b = append(b, ";w="...)
	return string(strconv.AppendInt(b, int64(window/time.Second), 10))
}

// rateLimitField is a RateLimit item: "name";r=remaining;t=reset-seconds.
func rateLimitField(name string, remaining, reset int64) string {
	b := appendSFString(make([]byte, 0, len(name)+32), name)
	b = append(b, ";r="...)
	b = strconv.AppendInt(b, remaining, 10)
	b = append(b, ";t="...)
	return string(strconv.AppendInt(b, reset, 10))
}

// appendSFString appends s as a structured-field string (RFC 8941): in
// double quotes, with '"' and '\' escaped. Bytes a string cannot hold
// (controls, DEL and beyond ASCII, which a configuration's keys may have)
// become '?', so the header stays valid.
func appendSFString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c > 0x7e:
			b = append(b, '?')
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
