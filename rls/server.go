package rls

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/floodgate-rl/floodgate/authz"
	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/policy"
	rlsconf "github.com/floodgate-rl/floodgate/policy/rls"
)

// Bounds of one request. Envoy sends one descriptor per rate_limits item of
// the route, a handful; a request beyond these is refused (see the package
// documentation).
const (
	// MaxDescriptors is the most descriptors a request may have.
	MaxDescriptors = 256
	// MaxRules is the most rules (enforced and shadow) a request may need
	// decided: at most this many counters are read and counted.
	MaxRules = 64
)

// DegradedMultiStrategy is a limiter.MultiStrategy that can say that a
// decision was made on a degraded path, as authz.DegradedStrategy does for
// one request: resilient.Fallback is one. NewServer checks whether its
// strategy implements it.
type DegradedMultiStrategy interface {
	limiter.MultiStrategy
	// AllowAllDegraded is AllowAll, and also returns why the decisions are
	// degraded: "" for normal ones, else a short token such as
	// "memcached-unavailable", sent in authz.DegradedHeader.
	AllowAllDegraded(ctx context.Context, reqs []limiter.Request, now time.Time) ([]limiter.Decision, string, error)
	// AllowDegraded is AllowAllDegraded of one request.
	AllowDegraded(ctx context.Context, req limiter.Request, now time.Time) (limiter.Decision, string, error)
}

// Config configures a Server. Strategy is required; every other zero value
// is usable.
type Config struct {
	// Limits is the configuration to match descriptors against; nil has no
	// domain, so every answer is OK. SetLimits replaces it.
	Limits *rlsconf.Config
	// Strategy decides the rules; floodgate gives the one --strategy
	// names, on the shared store, wrapped in the per-replica fallback.
	Strategy limiter.MultiStrategy
	// StrategyName is the strategy's name (limiter.Strategies), for
	// refusing a configuration it cannot enforce; "" means
	// limiter.DefaultStrategy.
	StrategyName string
	// FailMode says how to answer when the strategy fails; the zero value
	// is authz.FailOpen.
	FailMode authz.FailMode
	// Headers adds RateLimit-Policy and RateLimit to every answer with an
	// enforced rule (see the package documentation); Retry-After is always
	// sent with a denial.
	Headers bool
	// DegradedHeaderToClient also sends authz.DegradedHeader to the client
	// (response_headers_to_add); otherwise only the request sent upstream
	// carries it.
	DegradedHeaderToClient bool
	// Logger receives failures (rate-limited), ignored overrides and
	// unknown domains (each once) and recovered panics. nil discards logs.
	Logger *slog.Logger
	// Registerer receives the Server's metrics (see NewServer); nil
	// registers nothing.
	Registerer prometheus.Registerer
	// Now is the clock passed to the strategy; nil means time.Now.
	Now func() time.Time
	// OnDenied, when not nil, is told of every enforced rule that denied
	// a request: the scope "rls:" and the domain, the rule's key, the
	// counter's identity (policy/rls's CounterKey), the wait and the
	// decision's instant. It must not block, as authz.Config.OnDenied.
	OnDenied func(scope, rule, identity string, retryAfter time.Duration, now time.Time)
}

// Server implements envoy.service.ratelimit.v3.RateLimitService on a
// limiter.MultiStrategy. Create one with NewServer; it is safe for
// concurrent use, and SetLimits may be called while it serves.
type Server struct {
	rlsv3.UnimplementedRateLimitServiceServer

	strategy     limiter.MultiStrategy
	degraded     DegradedMultiStrategy // strategy, when it is one
	strategyName string
	failMode     authz.FailMode
	headers      bool
	toClient     bool
	log          *slog.Logger
	now          func() time.Time
	onDenied     func(scope, rule, identity string, retryAfter time.Duration, now time.Time)

	active atomic.Pointer[active] // never nil after NewServer
	m      *metrics
	once   onceLog // unknown domains and ignored overrides, each logged once

	failLog    rate.Sometimes
	failsUnlog atomic.Int64
	shadowLog  rate.Sometimes
	panicLog   rate.Sometimes
}

var _ rlsv3.RateLimitServiceServer = (*Server)(nil)

// logInterval is the least time between repeated log lines about failures
// and panics.
const logInterval = 10 * time.Second

// NewServer returns a Server deciding with cfg.Strategy. It returns an
// error when the strategy is nil or unknown, the fail mode is invalid,
// cfg.Limits has a rule the strategy cannot enforce (see CheckStrategy), or
// a metric cannot be registered. It registers:
//
//   - floodgate_rls_decisions_total{result="allowed|denied|fallback_allowed|
//     fallback_denied|fail_open|fail_closed|unlimited|unknown_domain|refused"}
//   - floodgate_rls_descriptors_total{result="ok|over_limit|shadow|unlimited|
//     no_rule|replaced|negative_hits"}
//   - floodgate_rls_shadow_over_limit_total{rule}
//   - floodgate_rls_invalid_overrides_total
//   - floodgate_rls_call_duration_seconds
//   - floodgate_rls_panics_total
func NewServer(cfg Config) (*Server, error) {
	if cfg.Strategy == nil {
		return nil, errors.New("new rls server: nil strategy")
	}
	name, err := limiter.ParseStrategy(cfg.StrategyName)
	if err != nil {
		return nil, fmt.Errorf("new rls server: %w", err)
	}
	if cfg.FailMode != authz.FailOpen && cfg.FailMode != authz.FailClosed {
		return nil, fmt.Errorf("new rls server: invalid fail mode %s", cfg.FailMode)
	}
	s := &Server{
		strategy:     cfg.Strategy,
		strategyName: name,
		failMode:     cfg.FailMode,
		headers:      cfg.Headers,
		toClient:     cfg.DegradedHeaderToClient,
		log:          cfg.Logger,
		now:          cfg.Now,
		onDenied:     cfg.OnDenied,
		m:            newMetrics(),
		failLog:      rate.Sometimes{First: 1, Interval: logInterval},
		shadowLog:    rate.Sometimes{First: 1, Interval: logInterval},
		panicLog:     rate.Sometimes{First: 1, Interval: logInterval},
	}
	s.degraded, _ = cfg.Strategy.(DegradedMultiStrategy)
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if err := s.SetLimits(cfg.Limits); err != nil {
		return nil, fmt.Errorf("new rls server: %w", err)
	}
	if cfg.Registerer != nil {
		if err := s.m.register(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("new rls server: %w", err)
		}
	}
	return s, nil
}

// Register registers s as the RateLimitService of g.
func (s *Server) Register(g *grpc.Server) {
	rlsv3.RegisterRateLimitServiceServer(g, s)
}

// SetLimits puts c in force for every request that starts after it
// returns; nil has no domain. It refuses, keeping the configuration in
// force, a c with a rule the Server's strategy cannot enforce.
func (s *Server) SetLimits(c *rlsconf.Config) error {
	if err := CheckStrategy(c, s.strategyName); err != nil {
		return err
	}
	a := &active{limits: c, scopes: make(map[string]*structpb.Value), texts: ruleTexts(c)}
	if c != nil {
		for _, d := range c.Domains() {
			a.scopes[d] = metadataScope(d)
		}
	}
	old := s.active.Swap(a)
	if old != nil {
		s.m.forgetShadows(old.limits, c)
	}
	return nil
}

// active is the configuration in force, with what its answers say that
// only it fixes, formatted once.
type active struct {
	limits *rlsconf.Config // nil: no domain
	// scopes holds the metadata scope of every domain (never nil).
	scopes map[string]*structpb.Value
	// texts holds the text of every rule but the unlimited ones.
	texts map[*rlsconf.Limit]*ruleText
}

// Limits returns the configuration in force, nil for none.
func (s *Server) Limits() *rlsconf.Config { return s.active.Load().limits }

// CheckStrategy reports whether the strategy called name (limiter.
// Strategies; "" is the default) can enforce every rule of c: the
// sliding-log strategy takes at most limiter.MaxSlidingLogLimit requests
// per unit. The error lists every rule it cannot, with its file and line,
// as rlsconf.Errors.
func CheckStrategy(c *rlsconf.Config, name string) error {
	if c == nil {
		return nil
	}
	var errs rlsconf.Errors
	for _, l := range c.Limits() {
		if l.Unlimited {
			continue
		}
		if err := policy.CheckLimit(name, policy.Limit{Limit: int64(l.RequestsPerUnit), Window: l.Unit.Window()}); err != nil {
			errs = append(errs, rlsconf.Error{File: l.File, Line: l.Line, Field: "rate_limit.requests_per_unit", Msg: err.Error()})
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// ShouldRateLimit answers one request of Envoy's ratelimit filter. It always
// returns a response and a nil error (see the package documentation); req
// may be nil (no descriptor: OK).
func (s *Server) ShouldRateLimit(ctx context.Context, req *rlsv3.RateLimitRequest) (resp *rlsv3.RateLimitResponse, _ error) {
	start := time.Now()
	p := planPool.Get().(*plan)
	defer func() {
		if v := recover(); v != nil {
			resp = s.recovered(p, v)
		}
		p.reset()
		planPool.Put(p)
		s.m.duration.Observe(time.Since(start).Seconds())
	}()
	s.build(p, req)
	return s.decide(ctx, p), nil
}

// planPool holds plans between calls: a plan's arrays hold the usual
// handful of descriptors, a few kilobytes that every call would allocate.
// Nothing of a plan outlives its call: the response has its own messages.
var planPool = sync.Pool{New: func() any { return new(plan) }}

// decide answers the plan p.
func (s *Server) decide(ctx context.Context, p *plan) *rlsv3.RateLimitResponse {
	switch {
	case p.refused != "":
		s.m.refused.Inc()
		return s.refusedResponse(p)
	case len(p.enforced) == 0 && len(p.shadow) == 0:
		if p.unknownDomain {
			s.m.unknownDomain.Inc()
			s.once.do("domain "+p.domain, func() {
				s.log.Warn("rls request for a domain without configuration, answered OK", "domain", truncate(p.domain, 128), "descriptors", p.descriptors)
			})
		} else {
			s.m.unlimited.Inc()
		}
		return s.answer(p, true, "")
	}
	if err := ctx.Err(); err != nil {
		return s.failure(p, fmt.Errorf("should rate limit: before asking the limiter: %w", err))
	}
	now := s.now()
	ds, reason, err := s.allowAll(ctx, p, now)
	if err == nil && len(ds) != len(p.enforced) {
		err = fmt.Errorf("strategy returned %d decisions for %d requests", len(ds), len(p.enforced))
	}
	if err != nil {
		return s.failure(p, fmt.Errorf("should rate limit: %w", err))
	}
	allowed := p.apply(ds)
	if allowed {
		s.decideShadows(ctx, p, now)
	} else if s.onDenied != nil {
		for _, i := range p.enforced {
			if r := &p.rules[i]; !r.decision.Allowed {
				s.onDenied(counterScope+p.domain, r.limit.Key, r.req.Requestor, r.decision.RetryAfter, now)
			}
		}
	}
	s.count(allowed, reason)
	return s.answer(p, allowed, reason)
}

// allowAll asks the strategy about p's enforced requests, through
// AllowAllDegraded when it has it. An empty set (only shadow rules) is
// allowed without a call; a set of one goes through Allow, which is
// AllowAll of one request without the grouping of a set.
func (s *Server) allowAll(ctx context.Context, p *plan, now time.Time) ([]limiter.Decision, string, error) {
	reqs := p.enforcedRequests()
	switch {
	case len(reqs) == 0:
		return nil, "", nil
	case len(reqs) == 1 && s.degraded != nil:
		d, reason, err := s.degraded.AllowDegraded(ctx, reqs[0], now)
		p.decisionBuf[0] = d
		return p.decisionBuf[:1], reason, err
	case len(reqs) == 1:
		d, err := s.strategy.Allow(ctx, reqs[0], now)
		p.decisionBuf[0] = d
		return p.decisionBuf[:1], "", err
	case s.degraded != nil:
		return s.degraded.AllowAllDegraded(ctx, reqs, now)
	}
	ds, err := s.strategy.AllowAll(ctx, reqs, now)
	return ds, "", err
}

// decideShadows decides each shadow rule of an allowed request on its own:
// counted when it has room, never changing the answer. A failing one is
// logged now and then and answered as if it had room.
func (s *Server) decideShadows(ctx context.Context, p *plan, now time.Time) {
	for i := range p.shadow {
		r := &p.rules[p.shadow[i]]
		d, err := s.strategy.Allow(ctx, r.req, now)
		if err != nil {
			s.shadowLog.Do(func() {
				s.log.Warn("rls shadow rule failed to decide, ignored", "rule", r.limit.Key, "error", err)
			})
			continue
		}
		r.decision, r.decided = d, true
		if !d.Allowed {
			s.m.shadowOverLimit(r.limit.Key).Inc()
		}
	}
}

// count counts the outcome of a decided request.
func (s *Server) count(allowed bool, reason string) {
	switch {
	case reason != "" && allowed:
		s.m.fallbackAllowed.Inc()
		s.m.degraded.WithLabelValues(reason, "allowed").Inc()
	case reason != "":
		s.m.fallbackDenied.Inc()
		s.m.degraded.WithLabelValues(reason, "denied").Inc()
	case allowed:
		s.m.allowed.Inc()
	default:
		s.m.denied.Inc()
	}
}

// failure is the one place where a failed decision becomes an answer: it
// counts the outcome, logs it without flooding the log, and answers by the
// fail mode.
func (s *Server) failure(p *plan, err error) *rlsv3.RateLimitResponse {
	s.failsUnlog.Add(1)
	result := "fail_open"
	level := slog.LevelWarn
	if s.failMode == authz.FailClosed {
		result, level = "fail_closed", slog.LevelError
	}
	s.failLog.Do(func() {
		s.log.Log(context.Background(), level, "rate limiter failed, applying fail mode",
			"api", "rls",
			"fail_mode", s.failMode.String(),
			"result", result,
			"domain", truncate(p.domain, 128),
			"store_unavailable", errors.Is(err, limiter.ErrStoreUnavailable),
			"failures_since_last_log", s.failsUnlog.Swap(0),
			"error", err)
	})
	if s.failMode == authz.FailClosed {
		s.m.failClosed.Inc()
		return s.unavailableResponse(p)
	}
	s.m.failOpen.Inc()
	return s.failOpenResponse(p)
}

// recovered handles a panic in ShouldRateLimit: counted, logged with its
// stack (at most once per logInterval), and answered as a limiter failure.
func (s *Server) recovered(p *plan, v any) *rlsv3.RateLimitResponse {
	s.m.panics.Inc()
	s.panicLog.Do(func() {
		s.log.Error("should rate limit panicked", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	})
	if !p.complete {
		// The plan may be half built: answer for no descriptor at all, with
		// one status per descriptor Envoy sent.
		*p = plan{planState: planState{domain: p.domain, statuses: make([]status, p.descriptors)}}
	}
	return s.failure(p, fmt.Errorf("should rate limit panicked: %v", v))
}

// truncate shortens s for a log line.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return fmt.Sprintf("%s...(%d bytes)", s[:n], len(s))
}
