package rls

import (
	"strconv"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/protobuf/types/known/durationpb"

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

// smallAnswer is the most descriptors whose statuses an answerBuf holds
// itself; an answer to more allocates them apart.
const smallAnswer = 2

// answerBuf holds the messages of one answer, so that an answer to one or
// two descriptors costs one allocation (and the map of its metadata)
// instead of several per descriptor. What only the configuration fixes
// (a rule's current_limit, RateLimit-Policy, the metadata's strings) is
// shared by every answer, in the rule's ruleText: a message is only read
// once built, and reading is safe concurrently.
type answerBuf struct {
	resp  rlsv3.RateLimitResponse
	meta  answerMeta
	msgs  []rlsv3.RateLimitResponse_DescriptorStatus // msgArr, or allocated
	waits []durationpb.Duration                      // one per enforced rule: waitArr, or allocated

	listArr [smallAnswer]*rlsv3.RateLimitResponse_DescriptorStatus
	msgArr  [smallAnswer]rlsv3.RateLimitResponse_DescriptorStatus
	waitArr [smallAnswer]durationpb.Duration

	headerArr [3]*corev3.HeaderValue // response_headers_to_add's usual ones
	headerVal [2]corev3.HeaderValue  // Retry-After and RateLimit
	headerN   int                    // headerVal used
}

// newAnswer returns the buffer of an answer with n statuses (resp.Statuses
// set, every one zero) and room for the waits of enforced rules.
func newAnswer(n, enforced int) *answerBuf {
	b := new(answerBuf)
	list, msgs := b.listArr[:], b.msgArr[:]
	if n > smallAnswer {
		list, msgs = make([]*rlsv3.RateLimitResponse_DescriptorStatus, n), make([]rlsv3.RateLimitResponse_DescriptorStatus, n)
	}
	list, b.msgs = list[:n], msgs[:n]
	for i := range list {
		list[i] = &b.msgs[i]
	}
	b.resp.Statuses = list
	b.waits = b.waitArr[:]
	if enforced > smallAnswer {
		b.waits = make([]durationpb.Duration, enforced)
	}
	return b
}

// addHeader appends a header to response_headers_to_add, held in b while
// it has room. (The rate limit service API has no append action: Envoy
// adds them.)
func (b *answerBuf) addHeader(k, v string) {
	var h *corev3.HeaderValue
	if b.headerN < len(b.headerVal) {
		h = &b.headerVal[b.headerN]
		b.headerN++
	} else {
		h = new(corev3.HeaderValue)
	}
	h.Key, h.Value = k, v
	b.addShared(h)
}

// addShared appends a header shared by several answers (never changed) to
// response_headers_to_add.
func (b *answerBuf) addShared(h *corev3.HeaderValue) {
	if b.resp.ResponseHeadersToAdd == nil {
		b.resp.ResponseHeadersToAdd = b.headerArr[:0]
	}
	b.resp.ResponseHeadersToAdd = append(b.resp.ResponseHeadersToAdd, h)
}

// answer is the response to a decided plan (or one without rules to
// decide): the statuses, and the body and headers of the outcome.
func (s *Server) answer(p *plan, allowed bool, reason string) *rlsv3.RateLimitResponse {
	b := newAnswer(len(p.statuses), len(p.enforced))
	binding, wait := -1, time.Duration(0) // the rule the headers describe
	e := 0
	for i, st := range p.statuses {
		ds := &b.msgs[i]
		switch st.kind {
		case kindEnforced:
			r := &p.rules[st.rule]
			d := r.decision
			ds.Code = rlsv3.RateLimitResponse_OK
			if !d.Allowed {
				ds.Code = rlsv3.RateLimitResponse_OVER_LIMIT
			}
			ds.CurrentLimit = r.texts().currentLimit
			ds.LimitRemaining = clampRemaining(d.Remaining)
			if d.Remaining <= 0 {
				b.waits[e].Seconds = authz.RetryAfterSeconds(d.RetryAfter)
			}
			ds.DurationUntilReset = &b.waits[e]
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
	b.resp.OverallCode = rlsv3.RateLimitResponse_OK
	if !allowed {
		b.resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT
	}
	s.addHeaders(b, p, allowed, binding, reason)
	b.metadata(p, answerDecision(p, allowed, reason), binding, reason)
	return &b.resp
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

// addHeaders adds the body and headers of the outcome to b's response: for
// a denial the body, Retry-After and the rate-limit headers of the denying
// rule; for an allowance, with Config.Headers, the rate-limit headers of
// the rule with the least room; and the DegradedHeader of a decision made
// on a degraded path.
func (s *Server) addHeaders(b *answerBuf, p *plan, allowed bool, binding int, reason string) {
	if binding >= 0 {
		r := &p.rules[binding]
		n := int64(0)
		if !allowed || r.decision.Remaining <= 0 {
			n = authz.RetryAfterSeconds(r.decision.RetryAfter)
		}
		if !allowed {
			ns := strconv.FormatInt(n, 10)
			body := make([]byte, 0, len(deniedBodyPrefix)+len(ns)+len(" seconds"))
			b.resp.RawBody = append(append(append(body, deniedBodyPrefix...), ns...), " seconds"...)
			b.addHeader("Retry-After", ns)
		}
		if !allowed || s.headers {
			remaining := max(min(r.decision.Remaining, int64(r.limit.RequestsPerUnit)), 0)
			t := r.texts()
			b.addShared(t.policy)
			b.addHeader("RateLimit", rateLimitField(t, remaining, n))
		}
	}
	if reason != "" {
		if allowed {
			b.resp.RequestHeadersToAdd = []*corev3.HeaderValue{{Key: authz.DegradedHeader, Value: reason}}
		}
		if s.toClient {
			b.addHeader(authz.DegradedHeader, reason)
		}
	}
}

// texts returns the text of r's rule: the one SetLimits formatted, else
// (an override) formatted now.
func (r *rule) texts() *ruleText {
	if r.text == nil {
		r.text = newRuleText(r.limit, r.window, r.mult)
	}
	return r.text
}

// refusedResponse answers a request refused for its size: OVER_LIMIT,
// nothing counted, a body saying why.
func (s *Server) refusedResponse(p *plan) *rlsv3.RateLimitResponse {
	b := newAnswer(p.descriptors, 0)
	for i := range b.msgs {
		b.msgs[i].Code = rlsv3.RateLimitResponse_OVER_LIMIT
	}
	b.resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT
	b.resp.RawBody = []byte(refusedBodyStart + p.refused)
	b.metadata(p, "refused", -1, "")
	return &b.resp
}

// failOpenResponse answers OK when the limiter failed: every status OK,
// without limits, and no header.
func (s *Server) failOpenResponse(p *plan) *rlsv3.RateLimitResponse {
	b := newAnswer(len(p.statuses), 0)
	for i, st := range p.statuses {
		b.msgs[i].Code = rlsv3.RateLimitResponse_OK
		if st.kind != kindEnforced && st.kind != kindShadow {
			b.msgs[i].LimitRemaining = maxRemaining
		}
	}
	b.resp.OverallCode = rlsv3.RateLimitResponse_OK
	b.metadata(p, "fail_open", -1, "")
	return &b.resp
}

// unavailableResponse denies when the limiter failed (FailClosed): the
// enforced statuses OVER_LIMIT with their limits, the others OK, and the
// body "Rate limiter unavailable"; no Retry-After, as no wait is known.
func (s *Server) unavailableResponse(p *plan) *rlsv3.RateLimitResponse {
	b := newAnswer(len(p.statuses), 0)
	for i, st := range p.statuses {
		ds := &b.msgs[i]
		ds.Code = rlsv3.RateLimitResponse_OK
		switch st.kind {
		case kindEnforced:
			ds.Code = rlsv3.RateLimitResponse_OVER_LIMIT
			ds.CurrentLimit = p.rules[st.rule].texts().currentLimit
		case kindShadow:
		default:
			ds.LimitRemaining = maxRemaining
		}
	}
	b.resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT
	b.resp.RawBody = []byte(unavailableBody)
	b.metadata(p, "fail_closed", -1, "")
	return &b.resp
}

// clampRemaining fits a Decision's Remaining into limit_remaining.
func clampRemaining(n int64) uint32 {
	return uint32(min(max(n, 0), maxRemaining))
}
