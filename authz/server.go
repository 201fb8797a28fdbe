package authz

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/policy"
)

// FailMode says how Check answers when the limiter cannot decide: the
// Strategy returned an error (usually wrapping limiter.ErrStoreUnavailable),
// the request's deadline had already passed, or the translation panicked.
// The zero value is FailOpen.
type FailMode int

const (
	// FailOpen allows the request: status OK without rate-limit headers.
	FailOpen FailMode = iota
	// FailClosed denies the request with HTTP 503 and the body
	// "Rate limiter unavailable" (gRPC status code Unavailable).
	FailClosed
)

// failModeNames are the FailModes as ParseFailMode reads them and String
// writes them, by value.
var failModeNames = [...]string{FailOpen: "open", FailClosed: "closed"}

// ParseFailMode parses "open" or "closed".
func ParseFailMode(s string) (FailMode, error) {
	if i := slices.Index(failModeNames[:], s); i >= 0 {
		return FailMode(i), nil
	}
	return 0, fmt.Errorf("parse fail mode %q: want \"open\" or \"closed\"", s)
}

// String returns "open" or "closed" (ParseFailMode's input), or
// "FailMode(n)" for an invalid value.
func (m FailMode) String() string {
	if m >= 0 && int(m) < len(failModeNames) {
		return failModeNames[m]
	}
	return "FailMode(" + strconv.Itoa(int(m)) + ")"
}

// DegradedStrategy is a limiter.Strategy that can say that a decision was
// made on a degraded path: resilient.Fallback, which decides with a
// per-replica in-memory limiter while memcached is unavailable, is one.
// NewServer checks whether its strategy implements it.
type DegradedStrategy interface {
	limiter.Strategy
	// AllowDegraded is Allow, and also returns why the decision is
	// degraded: "" for a normal decision, else a short token such as
	// "memcached-unavailable", sent in the DegradedHeader.
	AllowDegraded(ctx context.Context, req limiter.Request, now time.Time) (d limiter.Decision, reason string, err error)
}

// DegradedHeader is set, with the reason as its value, on the request sent
// upstream (ok_response.headers) when a DegradedStrategy allowed it on its
// degraded path, whatever Config.Headers says, so that the upstream and
// Envoy's access log (%REQ(X-FLOODGATE-DEGRADED)%) see which requests were
// not held to the shared limit. It is not sent to the client, allowed or
// denied, since it tells an attacker when the limit is weak, unless
// Config.DegradedHeaderToClient asks for it. A value a client sent itself
// is removed from every other request Check allows (ok_response.
// headers_to_remove; Envoy sends it to floodgate unless allowed_headers
// leaves it out), so the upstream can trust it. Such decisions are
// counted as floodgate_decisions_total{result="fallback_allowed"} or
// {result="fallback_denied"}.
const DegradedHeader = "X-Floodgate-Degraded"

// degradedKey is DegradedHeader as Envoy spells request header names.
const degradedKey = "x-floodgate-degraded"

// Config configures a Server. Limit and Window are required; every other zero
// value is usable.
type Config struct {
	// Limit is the default number of requests a requestor may make per
	// Window; at least 1. Routes override it with the floodgate.limit
	// context extension.
	Limit int64
	// Window is the default sliding window: a whole number of seconds, at
	// least 1s. Routes override it with floodgate.window.
	Window time.Duration
	// Key says how the requestor identity is taken from a request; the zero
	// value is the "source" form. Its TrustedHops also applies to per-route
	// "xff" keys (floodgate.key).
	Key KeySpec
	// Headers adds X-RateLimit-* and RateLimit-Policy/RateLimit headers to
	// allowed responses. Denied responses always carry them.
	Headers bool
	// FailMode says how to answer when the limiter fails; the zero value is
	// FailOpen.
	FailMode FailMode
	// DegradedHeaderToClient also sends the DegradedHeader to the client:
	// on the response of an allowed request (response_headers_to_add) and
	// on the 429 of a denied one. The zero value sends it upstream only.
	DegradedHeaderToClient bool
	// Logger receives failures (rate-limited), invalid context extensions
	// (once per distinct value), recovered panics, and at level Info one
	// line the first time a requestor is denied in a scope within its
	// window ("requestor limited", at most 10 a second, with a count of
	// the lines suppressed). nil discards logs.
	Logger *slog.Logger
	// ShowIdentities logs identities taken from a header (API keys) as they
	// are; the zero value logs their fingerprint (see DisplayIdentity).
	// Addresses are always logged as they are.
	ShowIdentities bool
	// DegradedReasons are the reasons the strategy may give for a degraded
	// decision (see DegradedStrategy), such as "memcached-unavailable":
	// their floodgate_degraded_decisions_total series are exported at 0
	// from the start, for dashboards and alerts. Other reasons are counted
	// too, from their first decision.
	DegradedReasons []string
	// OnDenied, when not nil, is told of every request answered with a
	// 429 (degraded decisions included): its scope, the deciding rule's
	// name ("" for none), the requestor's identity, the wait the 429 tells
	// it and the decision's instant. It runs on the decision's path and
	// must not block; the console's topk.Recorder.Denied queues it.
	OnDenied func(scope, rule, identity string, retryAfter time.Duration, now time.Time)
	// Registerer receives the Server's metrics (see NewServer). nil registers
	// nothing; the metrics are still counted but never exported.
	Registerer prometheus.Registerer
	// Now is the clock whose time is passed to the Strategy. nil means
	// time.Now. Check latency is always measured with the real clock.
	Now func() time.Time
	// Strategy is the name of the strategy NewServer is given, one of
	// limiter.Strategies(); "" means limiter.DefaultStrategy. Requests that
	// choose no strategy, or choose this name, use it.
	Strategy string
	// Strategies are the strategies a route (the floodgate.strategy context
	// extension) or a policy rule may choose, by name (limiter.Strategies()
	// spells them), typically all of them built by limiter.NewStrategy on
	// one store. nil offers only the default. A name the Server lacks is an
	// invalid extension value, and a policy rule naming it is refused by
	// SetPolicy.
	Strategies map[string]limiter.Strategy
}

// Server implements the Envoy external authorization service
// (envoy.service.auth.v3.Authorization) on top of a limiter.Strategy. Create
// one with NewServer; it is safe for concurrent use.
type Server struct {
	authv3.UnimplementedAuthorizationServer

	strategies strategySet // the default and those routes and rules may choose

	limit    int64
	window   time.Duration
	key      KeySpec
	headers  bool
	failMode FailMode
	log      *slog.Logger
	now      func() time.Time

	// degradedToClient is Config.DegradedHeaderToClient.
	degradedToClient bool

	// limitValue and policyValue are the X-RateLimit-Limit value and the
	// RateLimit-Policy field of the server defaults, formatted once.
	limitValue, policyValue string

	onDenied  func(scope, rule, identity string, retryAfter time.Duration, now time.Time) // Config.OnDenied
	overrides overrideCache
	limited   *limitedLog // the first denial of a requestor in a scope and window
	m         *metrics
	pm        *policyMetrics
	policy    atomic.Pointer[activePolicy] // nil: no policy

	failLog     rate.Sometimes // strategy failures: the first, then one per interval
	failsUnlog  atomic.Int64   // failures since the last failure log
	overflowLog rate.Sometimes // invalid extension values that cannot be remembered
	panicLog    rate.Sometimes // recovered panics
}

var _ authv3.AuthorizationServer = (*Server)(nil)

// logInterval is the minimum time between repeated log lines about failures,
// panics and invalid extension values beyond the remembered set.
const logInterval = 10 * time.Second

// NewServer returns a Server that asks s about every request, with the
// defaults in cfg. It returns an error when s is nil, cfg.Limit or cfg.Window
// is invalid or more than the default strategy can serve (a sliding log
// takes at most limiter.MaxSlidingLogLimit), cfg.FailMode is neither
// FailOpen nor FailClosed, or a metric
// cannot be registered (for example because another Server registered it on
// the same Registerer). It registers:
//
//   - floodgate_decisions_total{result="allowed|denied|fail_open|fail_closed|
//     fallback_allowed|fallback_denied", scope, rule} (fallback_*: decided
//     on a DegradedStrategy's degraded path; scope and rule are bounded,
//     see MaxLabelValues)
//   - floodgate_check_duration_seconds (histogram of Check latency)
//   - floodgate_invalid_overrides_total{name="floodgate.limit|..."} (requests
//     that carried an invalid context extension, counted on every such request)
//   - floodgate_check_panics_total
//
// and, for policies (see SetPolicy), the results allowlisted and blocked of
// floodgate_decisions_total, and floodgate_shadow_denials_total{rule}.
//
// s is the default strategy, called cfg.Strategy; cfg.Strategies offers
// others by name. NewServer returns an error when a name is not one of
// limiter.Strategies() or a strategy is nil.
func NewServer(s limiter.Strategy, cfg Config) (*Server, error) {
	if s == nil {
		return nil, errors.New("new authz server: nil strategy")
	}
	if err := (limiter.Request{Limit: cfg.Limit, Window: cfg.Window}).Validate(); err != nil {
		return nil, fmt.Errorf("new authz server: %w", err)
	}
	if cfg.FailMode != FailOpen && cfg.FailMode != FailClosed {
		return nil, fmt.Errorf("new authz server: invalid fail mode %s", cfg.FailMode)
	}
	strategies, err := newStrategySet(s, cfg.Strategy, cfg.Strategies)
	if err != nil {
		return nil, fmt.Errorf("new authz server: %w", err)
	}
	if err := serves(strategies.def.name, limiter.Request{Limit: cfg.Limit, Window: cfg.Window}); err != nil {
		return nil, fmt.Errorf("new authz server: default strategy: %w", err)
	}
	srv := &Server{
		strategies:  strategies,
		limit:       cfg.Limit,
		window:      cfg.Window,
		key:         cfg.Key,
		headers:     cfg.Headers,
		failMode:    cfg.FailMode,
		log:         cfg.Logger,
		now:         cfg.Now,
		limitValue:  strconv.FormatInt(cfg.Limit, 10),
		policyValue: string(appendPolicyField(nil, defaultPolicy, cfg.Limit, cfg.Window)),
		overrides:   overrideCache{hops: cfg.Key.hops},
		m:           newMetrics(),
		failLog:     rate.Sometimes{First: 1, Interval: logInterval},
		overflowLog: rate.Sometimes{First: 1, Interval: logInterval},
		panicLog:    rate.Sometimes{First: 1, Interval: logInterval},

		degradedToClient: cfg.DegradedHeaderToClient,
		onDenied:         cfg.OnDenied,
	}
	srv.pm = newPolicyMetrics()
	for _, reason := range cfg.DegradedReasons {
		if validDegradedReason(reason) {
			srv.m.degraded.WithLabelValues(reason, "allowed")
			srv.m.degraded.WithLabelValues(reason, "denied")
		}
	}
	srv.overrides.hasStrategy = func(name string) bool { _, ok := srv.strategies.get(name); return ok }
	if srv.log == nil {
		srv.log = slog.New(slog.DiscardHandler)
	}
	srv.limited = newLimitedLog(srv.log, cfg.ShowIdentities)
	if srv.now == nil {
		srv.now = time.Now
	}
	if cfg.Registerer != nil {
		if err := srv.pm.register(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("new authz server: %w", err)
		}
		if err := srv.m.register(cfg.Registerer); err != nil {
			srv.pm.unregister(cfg.Registerer)
			return nil, fmt.Errorf("new authz server: %w", err)
		}
	}
	return srv, nil
}

// Register registers s as the Authorization service of g.
func (s *Server) Register(g *grpc.Server) {
	authv3.RegisterAuthorizationServer(g, s)
}

// Check answers one Envoy ext_authz request. It always returns a response and
// a nil error, so Envoy's failure_mode_allow and status_on_error never come
// into play: when the limiter fails, the deadline has passed or the
// translation panics, the response follows the configured FailMode. req may be
// nil (limited under FallbackIdentity).
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (resp *authv3.CheckResponse, _ error) {
	start := time.Now()
	defer func() {
		if v := recover(); v != nil {
			resp = s.recovered(v)
		}
		s.m.duration.Observe(time.Since(start).Seconds())
	}()
	resp = s.check(ctx, req)
	if _, spoofed := lookupHeader(req.GetAttributes(), degradedKey); spoofed {
		resp = withoutSpoofedDegraded(resp)
	}
	return resp, nil
}

// withoutSpoofedDegraded makes an allowed resp remove the DegradedHeader a
// client sent, unless resp sets it: a decision on the degraded path
// overwrites the client's value instead (Envoy applies headers_to_remove
// after headers).
func withoutSpoofedDegraded(resp *authv3.CheckResponse) *authv3.CheckResponse {
	if resp.GetStatus().GetCode() != int32(codes.OK) {
		return resp
	}
	ok := resp.GetOkResponse()
	if ok == nil {
		ok = &authv3.OkHttpResponse{}
		resp.HttpResponse = &authv3.CheckResponse_OkResponse{OkResponse: ok}
	}
	for _, h := range ok.GetHeaders() {
		if h.GetHeader().GetKey() == DegradedHeader {
			return resp
		}
	}
	ok.HeadersToRemove = append(ok.HeadersToRemove, degradedKey)
	return resp
}

func (s *Server) check(ctx context.Context, req *authv3.CheckRequest) *authv3.CheckResponse {
	p := s.plan(req)
	if err := ctx.Err(); err != nil {
		return s.failure(&p, fmt.Errorf("check: before asking the limiter: %w", err))
	}
	switch p.list {
	case listBlocked:
		return s.blockedResponse(&p)
	case listAllowed:
		return s.allowlistedResponse(&p)
	}
	now := s.now()
	d, reason, err := p.strategy.allow(ctx, p.req, now)
	if err != nil {
		return s.failure(&p, fmt.Errorf("check: %w", err))
	}
	wouldDeny := s.shadows(ctx, p, now)
	if reason != "" {
		return withShadow(s.degradedResponse(&p, d, reason, now), d.Allowed && wouldDeny)
	}
	if d.Allowed {
		p.series.inc(resultAllowed)
		return withShadow(s.allowedResponse(&p, d, resultAllowed, ""), wouldDeny)
	}
	p.series.inc(resultDenied)
	s.limited.note(&p, d, resultDenied, now)
	return s.deniedResponse(&p, d, resultDenied, "")
}

// degradedResponse answers a decision made on a DegradedStrategy's degraded
// path: as any other, plus the DegradedHeader on the request sent upstream
// (and, with Config.DegradedHeaderToClient, on the client's response), and
// counted apart.
func (s *Server) degradedResponse(p *plan, d limiter.Decision, reason string, now time.Time) *authv3.CheckResponse {
	if !validDegradedReason(reason) {
		reason = "degraded"
	}
	h := headerOption(DegradedHeader, reason)
	if !d.Allowed {
		p.series.inc(resultFallbackDenied)
		s.m.degraded.WithLabelValues(reason, "denied").Inc()
		s.limited.note(p, d, resultFallbackDenied, now)
		resp := s.deniedResponse(p, d, resultFallbackDenied, reason)
		if s.degradedToClient {
			dr := resp.GetDeniedResponse()
			dr.Headers = append(dr.Headers, h)
		}
		return resp
	}
	p.series.inc(resultFallbackAllowed)
	s.m.degraded.WithLabelValues(reason, "allowed").Inc()
	resp := s.allowedResponse(p, d, resultFallbackAllowed, reason)
	ok := resp.GetOkResponse()
	if ok == nil {
		ok = &authv3.OkHttpResponse{}
		resp.HttpResponse = &authv3.CheckResponse_OkResponse{OkResponse: ok}
	}
	ok.Headers = append(ok.Headers, h)
	if s.degradedToClient {
		ok.ResponseHeadersToAdd = append(ok.ResponseHeadersToAdd, h)
	}
	return resp
}

// validDegradedReason reports whether reason can be sent as a header value
// as it is: 1 to 64 of [A-Za-z0-9._-].
func validDegradedReason(reason string) bool {
	if len(reason) == 0 || len(reason) > 64 {
		return false
	}
	for i := 0; i < len(reason); i++ {
		c := reason[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// request builds the limiter.Request for req from the server's defaults and
// the valid context extensions, without its Requestor, and returns the key
// and the strategy name ("" for the default) they choose.
func (s *Server) request(req *authv3.CheckRequest) (r limiter.Request, key KeySpec, strategy string) {
	r = limiter.Request{Limit: s.limit, Window: s.window}
	key = s.key
	if ext := req.GetAttributes().GetContextExtensions(); len(ext) > 0 {
		var set routeValues
		for i, name := range extNames {
			v, ok := ext[name]
			if !ok {
				continue
			}
			o, ok := s.override(i, name, v)
			if !ok {
				continue
			}
			switch name {
			case ExtLimit:
				r.Limit, set.limit = o.limit, true
			case ExtWindow:
				r.Window, set.window = o.window, true
			case ExtKey:
				key = o.key
			case ExtScope:
				r.Scope = o.scope
			case ExtStrategy:
				strategy, set.strategy = o.strategy, true
			}
		}
		if set != (routeValues{}) {
			r, strategy = s.fit(r, strategy, set, ext)
		}
	}
	return r, key, strategy
}

// routeValues says which of a Request's values (or, when dropped, which
// are set back to the server's) come from the route's context extensions.
type routeValues struct{ limit, window, strategy bool }

// fitOrder is the order in which fit tries to drop the route's values:
// first what the strategies bound (the limit, the window, both), and only
// then the strategy the route chose.
var fitOrder = [...]routeValues{
	{limit: true},
	{window: true},
	{limit: true, window: true},
	{strategy: true},
	{strategy: true, limit: true},
	{strategy: true, window: true},
	{strategy: true, limit: true, window: true},
}

// fit returns r and strategy (the route's, "" for the default) such that
// the strategy can decide r (see serves), so that values that are valid
// one by one but that the strategy cannot serve together (floodgate.limit
// 5000 with floodgate.strategy sliding-log) are not a failure on every
// request. When the route's values (set) do not fit, fit drops the fewest
// of them, in fitOrder, for the server's defaults; each value dropped is
// an invalid extension, counted and logged as ParseKey errors are (once
// per distinct combination). The defaults always fit: NewServer checks.
func (s *Server) fit(r limiter.Request, strategy string, set routeValues, ext map[string]string) (limiter.Request, string) {
	err := serves(s.strategy(strategy).name, r)
	if err == nil {
		return r, strategy
	}
	for _, drop := range fitOrder {
		if drop.limit && !set.limit || drop.window && !set.window || drop.strategy && !set.strategy {
			continue
		}
		fr, fs := r, strategy
		if drop.limit {
			fr.Limit = s.limit
		}
		if drop.window {
			fr.Window = s.window
		}
		if drop.strategy {
			fs = ""
		}
		if serves(s.strategy(fs).name, fr) != nil {
			continue
		}
		s.unfit(drop, r, strategy, ext, err)
		return fr, fs
	}
	// Unreachable while NewServer checks the defaults: the last order drops
	// every value the route set.
	return limiter.Request{Scope: r.Scope, Limit: s.limit, Window: s.window}, ""
}

// fitRule returns the route's strategy for r, the Request of a policy
// rule that leaves the strategy to the route, or "" (the default, which
// SetPolicy checked against the rule's limits) when that strategy cannot
// decide r: the route's strategy is then an invalid extension, as in fit.
func (s *Server) fitRule(r limiter.Request, strategy string, ext map[string]string) string {
	err := serves(s.strategy(strategy).name, r)
	if err == nil {
		return strategy
	}
	s.unfit(routeValues{strategy: true}, r, strategy, ext, err)
	return ""
}

// unfit counts and logs the route's values that fit dropped.
func (s *Server) unfit(drop routeValues, r limiter.Request, strategy string, ext map[string]string, err error) {
	name := s.strategy(strategy).name
	combo := name + "/" + strconv.FormatInt(r.Limit, 10) + "/" + r.Window.String()
	err = fmt.Errorf("does not fit the route's other values: %w", err)
	for i, ext1 := range extNames {
		switch {
		case ext1 == ExtLimit && drop.limit, ext1 == ExtWindow && drop.window, ext1 == ExtStrategy && drop.strategy:
			l := s.overrides.mismatch(overrideKey{"fit " + ext1, combo}, err)
			s.invalid(i, ext1, ext[ext1], err, l)
		}
	}
}

// override returns the parsed value of extension name (extNames[i]), or false
// when it is invalid; invalid values are counted every time and logged once
// per distinct value.
func (s *Server) override(i int, name, value string) (override, bool) {
	o, l := s.overrides.get(name, value)
	if o.err == nil {
		return o, true
	}
	s.invalid(i, name, value, o.err, l)
	return o, false
}

// invalid counts an invalid value of extension name (extNames[i]), every
// time, and logs it when l says it is seen for the first time (or, beyond
// the remembered set, now and then).
func (s *Server) invalid(i int, name, value string, err error, l lookup) {
	s.m.invalid[i].Inc()
	logIt := func() {
		s.log.Warn("invalid context extension ignored, using the server default",
			"name", name, "value", truncate(value, 128), "error", err)
	}
	switch l {
	case firstSeen:
		logIt()
	case forgotten:
		s.overflowLog.Do(logIt)
	}
}

// failure is the one place where a failed decision becomes a response: it
// counts the outcome, logs it without flooding the log, and answers according
// to the fail mode.
func (s *Server) failure(p *plan, err error) *authv3.CheckResponse {
	s.failsUnlog.Add(1)
	res := resultFailOpen
	if s.failMode == FailClosed {
		res = resultFailClosed
	}
	p.series.inc(res)
	s.failLog.Do(func() {
		level := slog.LevelWarn
		if s.failMode == FailClosed {
			level = slog.LevelError
		}
		s.log.Log(context.Background(), level, "rate limiter failed, applying fail mode",
			"fail_mode", s.failMode.String(),
			"result", res.String(),
			"scope", p.req.Scope,
			"store_unavailable", errors.Is(err, limiter.ErrStoreUnavailable),
			"failures_since_last_log", s.failsUnlog.Swap(0),
			"error", err)
	})
	if s.failMode == FailClosed {
		return &authv3.CheckResponse{
			DynamicMetadata: p.series.constMeta(p, res, ""),
			Status:          &rpcstatus.Status{Code: int32(codes.Unavailable), Message: "rate limiter unavailable"},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status:  &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
				Headers: []*corev3.HeaderValueOption{headerOption("Content-Type", "text/plain")},
				Body:    "Rate limiter unavailable",
			}},
		}
	}
	return &authv3.CheckResponse{
		DynamicMetadata: p.series.constMeta(p, res, ""),
		Status:          &rpcstatus.Status{Code: int32(codes.OK)},
	}
}

// recovered handles a panic in Check: counted, logged with its stack (at most
// once per logInterval), and answered as a limiter failure.
func (s *Server) recovered(v any) *authv3.CheckResponse {
	s.m.panics.Inc()
	s.panicLog.Do(func() {
		s.log.Error("check panicked", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	})
	return s.failure(&plan{series: s.m.labels.def}, fmt.Errorf("check panicked: %v", v))
}

// allowedResponse is status OK, with rate-limit headers when configured,
// and its metadata (res, with degraded the reason on a degraded path).
func (s *Server) allowedResponse(p *plan, d limiter.Decision, res result, degraded string) *authv3.CheckResponse {
	r := p.req
	limit, window := echo(r, d)
	remaining := min(max(d.Remaining, 0), limit)
	if !s.headers {
		m := new(bareMsgs)
		m.status.Code = int32(codes.OK)
		m.resp.Status = &m.status
		m.resp.DynamicMetadata = p.series.okMeta(p, res, remaining, degraded)
		return &m.resp
	}
	var reset int64
	if remaining == 0 {
		reset = RetryAfterSeconds(d.RetryAfter)
	}
	policy := policyName(r.Scope)

	// The header values, built in one buffer and sliced from one string:
	// the limit and the policy field (unless they are the server
	// defaults'), the remaining requests, the reset, the RateLimit field.
	var buf [256]byte
	b, ends := s.appendQuota(buf[:0], policy, limit, window)
	b = strconv.AppendInt(b, remaining, 10)
	endRemaining := len(b)
	b = strconv.AppendInt(b, reset, 10)
	endReset := len(b)
	b = appendRateLimitField(b, policy, remaining, reset)
	v := string(b)
	limitValue, policyValue := s.quotaValues(v, ends)

	m := new(allowedMsgs)
	m.status.Code = int32(codes.OK)
	m.ok.ResponseHeadersToAdd = setHeaders(m.list[:], m.opts[:], m.vals[:],
		"X-RateLimit-Limit", limitValue,
		"X-RateLimit-Remaining", v[ends.policy:endRemaining],
		"X-RateLimit-Reset", v[endRemaining:endReset],
		"RateLimit-Policy", policyValue,
		"RateLimit", v[endReset:],
	)
	m.wrap.OkResponse = &m.ok
	m.resp.Status = &m.status
	m.resp.HttpResponse = &m.wrap
	m.resp.DynamicMetadata = p.series.okMeta(p, res, remaining, degraded)
	return &m.resp
}

// allowedMsgs holds the messages of an allowed response with rate-limit
// headers, so that they cost one allocation instead of one each.
type allowedMsgs struct {
	resp   authv3.CheckResponse
	status rpcstatus.Status
	wrap   authv3.CheckResponse_OkResponse
	ok     authv3.OkHttpResponse
	list   [5]*corev3.HeaderValueOption
	opts   [5]corev3.HeaderValueOption
	vals   [5]corev3.HeaderValue
}

// bareMsgs holds the messages of an allowed response without rate-limit
// headers.
type bareMsgs struct {
	resp   authv3.CheckResponse
	status rpcstatus.Status
}

// deniedBodyPrefix starts the body of a 429; the wait in seconds and
// " seconds" follow.
const deniedBodyPrefix = "Rate limit exceeded. Try again in "

// deniedResponse is a non-OK status with an HTTP 429 and rate-limit
// headers, and its metadata (res, with degraded the reason on a degraded
// path).
func (s *Server) deniedResponse(p *plan, d limiter.Decision, res result, degraded string) *authv3.CheckResponse {
	if s.onDenied != nil {
		s.onDenied(p.req.Scope, p.rule, p.req.Requestor, d.RetryAfter, s.now())
	}
	r := p.req
	limit, window := echo(r, d)
	n := RetryAfterSeconds(d.RetryAfter)
	policy := policyName(r.Scope)

	// As in allowedResponse: every value in one string. N is sliced from
	// the body.
	var buf [256]byte
	b, ends := s.appendQuota(buf[:0], policy, limit, window)
	b = append(b, deniedBodyPrefix...)
	startN := len(b)
	b = strconv.AppendInt(b, n, 10)
	endN := len(b)
	b = append(b, " seconds"...)
	endBody := len(b)
	b = appendRateLimitField(b, policy, 0, n)
	v := string(b)
	limitValue, policyValue := s.quotaValues(v, ends)
	ns := v[startN:endN]

	m := new(deniedMsgs)
	m.status.Code = int32(codes.ResourceExhausted)
	m.status.Message = "rate limit exceeded"
	m.http.Code = typev3.StatusCode_TooManyRequests
	m.denied.Status = &m.http
	m.denied.Headers = setHeaders(m.list[:], m.opts[:], m.vals[:],
		"Retry-After", ns,
		"Content-Type", "text/plain",
		"X-RateLimit-Limit", limitValue,
		"X-RateLimit-Remaining", "0",
		"X-RateLimit-Reset", ns,
		"RateLimit-Policy", policyValue,
		"RateLimit", v[endBody:],
	)
	m.denied.Body = v[ends.policy:endBody]
	m.wrap.DeniedResponse = &m.denied
	m.resp.Status = &m.status
	m.resp.HttpResponse = &m.wrap
	m.resp.DynamicMetadata = p.series.constMeta(p, res, degraded)
	return &m.resp
}

// deniedMsgs holds the messages of a denied response, so that they cost one
// allocation instead of one each.
type deniedMsgs struct {
	resp   authv3.CheckResponse
	status rpcstatus.Status
	wrap   authv3.CheckResponse_DeniedResponse
	denied authv3.DeniedHttpResponse
	http   typev3.HttpStatus
	list   [7]*corev3.HeaderValueOption
	opts   [7]corev3.HeaderValueOption
	vals   [7]corev3.HeaderValue
}

// setHeaders fills list with options that replace the header kv[2i] with
// the value kv[2i+1], each option opts[i] with the HeaderValue vals[i], and
// returns list. The three have len(kv)/2 elements.
func setHeaders(list []*corev3.HeaderValueOption, opts []corev3.HeaderValueOption, vals []corev3.HeaderValue, kv ...string) []*corev3.HeaderValueOption {
	for i := range list {
		vals[i].Key, vals[i].Value = kv[2*i], kv[2*i+1]
		opts[i].Header = &vals[i]
		opts[i].AppendAction = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		list[i] = &opts[i]
	}
	return list
}

// quotaEnds says where appendQuota put the limit and the policy field; both
// are 0 when the server's precomputed values apply.
type quotaEnds struct{ limit, policy int }

// appendQuota appends the X-RateLimit-Limit value and the RateLimit-Policy
// field to b, unless they are those of the server's defaults, which were
// formatted once by NewServer.
func (s *Server) appendQuota(b []byte, policy string, limit int64, window time.Duration) ([]byte, quotaEnds) {
	if policy == defaultPolicy && limit == s.limit && window == s.window {
		return b, quotaEnds{}
	}
	b = strconv.AppendInt(b, limit, 10)
	end := len(b)
	b = appendPolicyField(b, policy, limit, window)
	return b, quotaEnds{limit: end, policy: len(b)}
}

// quotaValues returns the X-RateLimit-Limit value and the RateLimit-Policy
// field: sliced from v where appendQuota put them, else the server's.
func (s *Server) quotaValues(v string, ends quotaEnds) (limit, policy string) {
	if ends.policy == 0 {
		return s.limitValue, s.policyValue
	}
	return v[:ends.limit], v[ends.limit:ends.policy]
}

// echo returns the limit and window for response headers: the Decision's echo
// of the Request, or the Request's own when a Strategy left them unset.
func echo(r limiter.Request, d limiter.Decision) (int64, time.Duration) {
	limit, window := d.Limit, d.Window
	if limit < 1 {
		limit = r.Limit
	}
	if window < time.Second {
		window = r.Window
	}
	return limit, window
}

// RetryAfterSeconds is the wait a client is told when it has no quota left,
// in Retry-After, RateLimit's reset and RLS's duration_until_reset: d
// rounded up to whole seconds, at least 1.
func RetryAfterSeconds(d time.Duration) int64 {
	return max(policy.CeilSeconds(d), 1)
}

// defaultPolicy is the policy name of the default scope.
const defaultPolicy = "default"

// policyName is the quota policy name in RateLimit-Policy and RateLimit: the
// scope, or "default".
func policyName(scope string) string {
	if scope == "" {
		return defaultPolicy
	}
	return scope
}

// appendPolicyField appends a RateLimit-Policy item (draft-ietf-httpapi-
// ratelimit-headers-10): "name";q=quota;w=window-seconds. Scope names never
// need escaping inside a structured-field string.
func appendPolicyField(b []byte, name string, limit int64, window time.Duration) []byte {
	b = append(b, '"')
	b = append(b, name...)
	b = append(b, `";q=`...)
	b = strconv.AppendInt(b, limit, 10)
	b = append(b, ";w="...)
	return strconv.AppendInt(b, int64(window/time.Second), 10)
}

// appendRateLimitField appends a RateLimit item:
// "name";r=remaining;t=reset-seconds.
func appendRateLimitField(b []byte, name string, remaining, reset int64) []byte {
	b = append(b, '"')
	b = append(b, name...)
	b = append(b, `";r=`...)
	b = strconv.AppendInt(b, remaining, 10)
	b = append(b, ";t="...)
	return strconv.AppendInt(b, reset, 10)
}

// headerOption returns a HeaderValueOption that replaces any existing header k.
func headerOption(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: k, Value: v},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

// truncate shortens s for a log line.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "...(" + strconv.Itoa(len(s)) + " bytes)"
}
