package rls

import (
	"strconv"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	rlsconf "github.com/floodgate-rl/floodgate/policy/rls"
)

// ruleText is what every answer about one rule says that only the rule
// fixes, formatted once: when SetLimits puts the rule's configuration in
// force, or when an override makes a rule, instead of in every answer. Its
// messages are shared by the answers, and never changed.
type ruleText struct {
	// currentLimit is the current_limit of the rule's statuses.
	currentLimit *rlsv3.RateLimitResponse_RateLimit
	// policy is the RateLimit-Policy header (policyField).
	policy *corev3.HeaderValue
	// rateLimit is the RateLimit field up to the remaining requests:
	// "name";r= (rateLimitField).
	rateLimit string
	// rule is the metadata's rule field: the rule's key.
	rule *structpb.Value
}

// newRuleText formats the text of rule l, of the given window; mult is an
// override's unit_multiplier, 0 without one.
func newRuleText(l *rlsconf.Limit, window time.Duration, mult uint32) *ruleText {
	name := policyName(l)
	t := &ruleText{
		currentLimit: &rlsv3.RateLimitResponse_RateLimit{
			Name:            l.Name,
			RequestsPerUnit: l.RequestsPerUnit,
			Unit:            rlsv3.RateLimitResponse_RateLimit_Unit(l.Unit),
		},
		policy:    &corev3.HeaderValue{Key: "RateLimit-Policy", Value: policyField(name, int64(l.RequestsPerUnit), window)},
		rateLimit: string(append(appendSFString(make([]byte, 0, len(name)+8), name), ";r="...)),
		rule:      structpb.NewStringValue(l.Key),
	}
	if mult > 0 {
		t.currentLimit.UnitMultiplier = wrapperspb.UInt32(mult)
	}
	return t
}

// policyName names rule l in RateLimit-Policy and RateLimit: its name, else
// its key.
func policyName(l *rlsconf.Limit) string {
	if l.Name != "" {
		return l.Name
	}
	return l.Key
}

// ruleTexts returns the text of every rule of c but the unlimited ones, by
// rule.
func ruleTexts(c *rlsconf.Config) map[*rlsconf.Limit]*ruleText {
	texts := make(map[*rlsconf.Limit]*ruleText)
	if c == nil {
		return texts
	}
	for _, l := range c.Limits() {
		if !l.Unlimited {
			texts[l] = newRuleText(l, l.Unit.Window(), 0)
		}
	}
	return texts
}

// metadataScope is the scope field of the dynamic metadata of an answer
// in domain (see MetadataNamespace).
func metadataScope(domain string) *structpb.Value {
	return structpb.NewStringValue(counterScope + truncate(domain, 128))
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

// rateLimitField is a RateLimit item, "name";r=remaining;t=reset-seconds,
// of the rule of text t.
func rateLimitField(t *ruleText, remaining, reset int64) string {
	var buf [80]byte // on the stack for the usual name: one allocation, the string
	b := append(buf[:0], t.rateLimit...)
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
