package authz

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/floodgate-rl/floodgate/internal/prom"
	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/policy"
)

// ShadowHeader is added with the value "would-deny" to the client's response
// (ok_response.response_headers_to_add, whatever [Config].Headers says) when a
// shadow rule of the policy would have denied a request that was allowed.
const ShadowHeader = "X-Floodgate-Shadow"

// shadowWouldDeny is the value of ShadowHeader and of MetaShadow.
const shadowWouldDeny = "would-deny"

// shadowValue is MetaShadow's value, shared.
var shadowValue = structpb.NewStringValue(shadowWouldDeny)

// BlockedBody is the body of the HTTP 403 answer to a requestor on the
// policy's blocklist.
const BlockedBody = "Forbidden by rate-limit policy"

// activePolicy is a policy.Policy prepared for a Server: rule keys parsed
// with the server's trusted hop count, and shadow counters resolved. It is
// immutable.
type activePolicy struct {
	p      *policy.Policy
	keys   map[*policy.Rule]KeySpec            // rules that set a key
	shadow map[*policy.Rule]prometheus.Counter // shadow rules
	series map[*policy.Rule]*decisionSeries    // enforcing rules: their floodgate_decisions_total series
	lists  bool                                // allowlist or blocklist not empty
}

// SetPolicy makes p the Server's policy, atomically: a Check sees either
// the previous policy or p, whole. nil removes the policy. It returns an
// error, and keeps the previous policy, when a rule names a strategy the
// Server does not have (see [Config].Strategies), or leaves the strategy to
// the default one and sets a limit that strategy cannot enforce
// ([policy.CheckLimit]). It is safe to call concurrently with Check and with
// itself.
//
// Where a rule matches, its values decide: its key, strategy, limit (or
// tier's limit) and scope override the route's floodgate.* context
// extensions and the server defaults; the route's extensions still decide
// what the rule leaves unset (key, strategy), and everything when no rule
// matches. See package policy for the order of evaluation.
func (s *Server) SetPolicy(p *policy.Policy) error {
	s.pm.setMu.Lock() // one installation at a time, for the shadow series
	defer s.pm.setMu.Unlock()
	if p == nil {
		s.installPolicy(nil)
		return nil
	}
	ap := &activePolicy{
		p:      p,
		keys:   make(map[*policy.Rule]KeySpec),
		shadow: make(map[*policy.Rule]prometheus.Counter),
		lists:  p.Allowlist.Len() > 0 || p.Blocklist.Len() > 0,
	}
	if err := p.CheckStrategy(s.strategies.def.name); err != nil {
		return fmt.Errorf("set policy: %w", err)
	}
	for _, r := range p.Rules {
		if r.Key != "" {
			k, err := ParseKey(r.Key, s.key.hops)
			if err != nil {
				return fmt.Errorf("set policy: rule %s: %w", r.Name, err)
			}
			ap.keys[r] = k
		}
		if _, ok := s.strategies.get(r.Strategy); !ok {
			return fmt.Errorf("set policy: rule %s: strategy %s: not available on this server (have %s)", r.Name, r.Strategy, s.strategies.names())
		}
		if r.Shadow {
			ap.shadow[r] = s.pm.shadowDenials.WithLabelValues(r.Name)
		}
	}
	s.installPolicy(ap)
	return nil
}

// installPolicy swaps in ap and drops the series of floodgate_decisions_total
// and the shadow counters of rules it no longer has.
func (s *Server) installPolicy(ap *activePolicy) {
	var stale []seriesKey
	if ap == nil {
		_, stale = s.m.labels.forPolicy(nil)
	} else {
		ap.series, stale = s.m.labels.forPolicy(ap.p)
	}
	old := s.policy.Swap(ap)
	s.m.labels.drop(stale)
	if old == nil {
		return
	}
	for r := range old.shadow {
		if ap == nil || !hasShadowRule(ap, r.Name) {
			s.pm.shadowDenials.DeleteLabelValues(r.Name)
		}
	}
}

func hasShadowRule(ap *activePolicy, name string) bool {
	for r := range ap.shadow {
		if r.Name == name {
			return true
		}
	}
	return false
}

// Policy returns the Server's current policy; nil when it has none.
func (s *Server) Policy() *policy.Policy {
	if ap := s.policy.Load(); ap != nil {
		return ap.p
	}
	return nil
}

// listVerdict is the allowlist's or blocklist's say about a request.
type listVerdict uint8

const (
	listNone    listVerdict = iota
	listBlocked             // on the blocklist: 403
	listAllowed             // on the allowlist: allowed, not counted
)

// plan is how one request is decided: the Request for its strategy, or a
// list verdict, and the shadow decisions to make alongside; the rule that
// decides it and the series that count it.
type plan struct {
	req      limiter.Request
	strategy namedStrategy
	list     listVerdict
	shadows  []shadowPlan
	rule     string          // the deciding rule's name; "" for none
	series   *decisionSeries // floodgate_decisions_total of the scope and rule
}

// shadowPlan is a shadow rule's decision to make.
type shadowPlan struct {
	rule     *policy.Rule
	req      limiter.Request
	strategy namedStrategy
	denials  prometheus.Counter
}

// plan works out how req is decided: the server defaults, overridden by the
// route's context extensions, overridden by the matching policy rule.
func (s *Server) plan(req *authv3.CheckRequest) plan {
	route, routeKey, routeStrategy := s.request(req)
	ap := s.policy.Load()
	if ap == nil {
		route.Requestor = routeKey.Identity(req)
		return plan{req: route, strategy: s.strategy(routeStrategy), series: s.m.labels.route(route.Scope)}
	}
	attrs := req.GetAttributes()
	in := policyInput(attrs, route.Scope)
	rule, shadows := ap.p.Match(in)
	r, key, strategy := ap.apply(rule, in, route, routeKey, routeStrategy)
	if rule != nil && rule.Strategy == "" && strategy != "" {
		strategy = s.fitRule(r, strategy, attrs.GetContextExtensions())
	}
	r.Requestor = key.Identity(req)
	p := plan{req: r, strategy: s.strategy(strategy)}
	if ds, ok := ap.series[rule]; ok {
		p.rule, p.series = rule.Name, ds
	} else {
		p.series = s.m.labels.route(r.Scope)
	}
	if ap.lists {
		addr := clientAddr(attrs, key)
		switch {
		case ap.p.Blocked(r.Requestor, addr):
			p.list = listBlocked
			return p
		case ap.p.Allowed(r.Requestor, addr):
			p.list = listAllowed
			return p
		}
	}
	for _, sr := range shadows {
		sreq, skey, sstrategy := ap.apply(sr, in, route, routeKey, routeStrategy)
		sreq.Requestor = skey.Identity(req)
		p.shadows = append(p.shadows, shadowPlan{rule: sr, req: sreq, strategy: s.strategy(sstrategy), denials: ap.shadow[sr]})
	}
	return p
}

// apply returns the Request (without its Requestor), key and strategy name
// of a request that rule (nil: none) matched, given the route's.
func (ap *activePolicy) apply(rule *policy.Rule, in policy.Input, r limiter.Request, key KeySpec, strategy string) (limiter.Request, KeySpec, string) {
	if rule == nil {
		return r, key, strategy
	}
	_, l := rule.LimitFor(in)
	r.Scope, r.Limit, r.Window, r.Burst = rule.Scope, l.Limit, l.Window, l.Burst
	if k, ok := ap.keys[rule]; ok {
		key = k
	}
	if rule.Strategy != "" {
		strategy = rule.Strategy
	}
	return r, key, strategy
}

// strategy returns the strategy called name, or the default one. Names come
// from valid extensions (checked against the server's strategies) and
// installed policies (checked by SetPolicy), so the default is never used
// in place of a named one.
func (s *Server) strategy(name string) namedStrategy {
	if n, ok := s.strategies.get(name); ok {
		return n
	}
	return s.strategies.def
}

// shadows makes the shadow decisions of p and reports whether any would have
// denied. A shadow decision never changes the answer: a failing one is
// logged (rate-limited) and ignored.
func (s *Server) shadows(ctx context.Context, p plan, now time.Time) bool {
	wouldDeny := false
	for _, sp := range p.shadows {
		d, _, err := sp.strategy.allow(ctx, sp.req, now)
		if err != nil {
			s.pm.shadowFailLog.Do(func() {
				s.log.Warn("shadow rule failed to decide, ignored", "rule", sp.rule.Name, "error", err)
			})
			continue
		}
		if !d.Allowed {
			wouldDeny = true
			sp.denials.Inc()
		}
	}
	return wouldDeny
}

// withShadow adds ShadowHeader: would-deny to an allowed response, and
// MetaShadow to its dynamic metadata, when wouldDeny is set.
func withShadow(resp *authv3.CheckResponse, wouldDeny bool) *authv3.CheckResponse {
	if !wouldDeny || resp.GetStatus().GetCode() != int32(codes.OK) {
		return resp
	}
	// The metadata may be shared (allowedMeta): copied, never changed.
	if md := resp.GetDynamicMetadata(); md != nil {
		fields := make(map[string]*structpb.Value, len(md.Fields)+1)
		for k, v := range md.Fields {
			fields[k] = v
		}
		fields[MetaShadow] = shadowValue
		resp.DynamicMetadata = &structpb.Struct{Fields: fields}
	}
	h := headerOption(ShadowHeader, shadowWouldDeny)
	if ok := resp.GetOkResponse(); ok != nil {
		ok.ResponseHeadersToAdd = append(ok.ResponseHeadersToAdd, h)
		return resp
	}
	resp.HttpResponse = &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
		ResponseHeadersToAdd: []*corev3.HeaderValueOption{h},
	}}
	return resp
}

// blockedResponse answers a requestor on the blocklist: HTTP 403 with
// BlockedBody. 403, not 429: the requestor is refused, not asked to retry
// later, so there is no Retry-After and no rate-limit header.
func (s *Server) blockedResponse(p *plan) *authv3.CheckResponse {
	p.series.inc(resultBlocked)
	return &authv3.CheckResponse{
		DynamicMetadata: p.series.constMeta(p, resultBlocked, ""),
		Status:          &rpcstatus.Status{Code: int32(codes.PermissionDenied), Message: "blocked by policy"},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden},
			Headers: []*corev3.HeaderValueOption{headerOption("Content-Type", "text/plain")},
			Body:    BlockedBody,
		}},
	}
}

// allowlistedResponse answers a requestor on the allowlist: status OK
// without rate-limit headers, since no limit applies.
func (s *Server) allowlistedResponse(p *plan) *authv3.CheckResponse {
	p.series.inc(resultAllowlisted)
	return &authv3.CheckResponse{
		DynamicMetadata: p.series.constMeta(p, resultAllowlisted, ""),
		Status:          &rpcstatus.Status{Code: int32(codes.OK)},
	}
}

// policyInput is what the policy matches a request on.
func policyInput(attrs *authv3.AttributeContext, scope string) policy.Input {
	http := attrs.GetRequest().GetHttp()
	in := policy.Input{
		Scope:    scope,
		Method:   http.GetMethod(),
		Path:     http.GetPath(),
		Header:   func(name string) (string, bool) { return lookupHeader(attrs, name) },
		Metadata: func(f policy.MetadataField) (string, bool) { return MetadataValue(attrs, f) },
	}
	if in.Method == "" {
		in.Method = requestHeader(attrs, ":method")
	}
	if in.Path == "" {
		in.Path = requestHeader(attrs, ":path")
	}
	return in
}

// clientAddr is the client address the allowlist and blocklist see: under
// an "xff" key the X-Forwarded-For entry the trusted hops vouch for (else
// the source address, as for the identity), otherwise the source address.
// It is the zero Addr when there is none.
func clientAddr(attrs *authv3.AttributeContext, key KeySpec) netip.Addr {
	if key.kind == keyXFF {
		if addr, ok := xffAddr(requestHeader(attrs, "x-forwarded-for"), key.hops); ok {
			return addr
		}
	}
	sa := attrs.GetSource().GetAddress().GetSocketAddress()
	if sa == nil {
		return netip.Addr{}
	}
	addr, _ := parseAddr(sa.GetAddress())
	return addr
}

// policyMetrics are the Server's collectors for policies.
type policyMetrics struct {
	shadowDenials *prometheus.CounterVec
	shadowFailLog rate.Sometimes
	setMu         sync.Mutex // serialises SetPolicy
}

func newPolicyMetrics() *policyMetrics {
	return &policyMetrics{
		shadowDenials: prom.CounterVec("floodgate_shadow_denials_total",
			"Requests a shadow rule of the policy would have denied (they were not denied for it), by rule name.", "rule"),
		shadowFailLog: rate.Sometimes{First: 1, Interval: logInterval},
	}
}

func (pm *policyMetrics) register(r prometheus.Registerer) error {
	if err := r.Register(pm.shadowDenials); err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	return nil
}

func (pm *policyMetrics) unregister(r prometheus.Registerer) {
	r.Unregister(pm.shadowDenials)
}
