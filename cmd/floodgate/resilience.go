package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/floodgate-rl/floodgate/internal/prom"
	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/memory"
	"github.com/floodgate-rl/floodgate/limiter/resilient"
)

// degradedReason is the X-Floodgate-Degraded value of decisions made by the
// per-replica limiter.
const degradedReason = "memcached-unavailable"

// overloadReason is the X-Floodgate-Degraded value of decisions made by the
// per-replica fallback because this replica waited too long for memcached,
// which did not fail.
const overloadReason = "memcached-overloaded"

// resilientStrategies builds the strategies floodgate decides with, one per
// name in names, all on the one store. With the in-memory store each is
// newStrategy(name, store). With memcached, store is wrapped once in a
// circuit breaker (resilient.Breaker, with its metrics and logs), and
// with --fail-mode local each strategy on it is wrapped in a
// resilient.Fallback whose local strategy, newStrategy on a memory.Store of
// this process shared by all of them, decides while memcached is
// unavailable. No bulkhead: the memcached store pipelines every call over
// at most --memcache-max-conns connections per server, and fails a call
// that waited --memcache-timeout for one with limiter.ErrOverloaded,
// unsent, which is what a bulkhead would add.
//
// closeFn releases the strategies, the local store and the breaker (whose
// timer probes memcached while it is open).
func resilientStrategies(cfg Config, storeKind string, store limiter.Store, names []string, newStrategy newStrategyFunc,
	reg prometheus.Registerer, log *slog.Logger,
) (strategies map[string]limiter.Strategy, closeFn func() error, err error) {
	b := &stackBuilder{names: names, newStrategy: newStrategy}
	if strategies, err = b.build(cfg, storeKind, store, reg, log); err != nil {
		b.Close()
		return nil, nil, err
	}
	return strategies, b.Close, nil
}

// newStrategyFunc builds the strategy called name on st; private says
// that only this process counts in st (the in-memory store of --memory or
// of the per-replica fallback), so the strategy needs no skew margin and
// no bound on a decision's time (limiter.StrategyConfig.Private).
type newStrategyFunc func(name string, st limiter.Store, private bool) (limiter.Strategy, error)

// stackBuilder builds the strategies of resilientStrategies and keeps what
// must be closed, in the order it was made.
type stackBuilder struct {
	names       []string
	newStrategy newStrategyFunc
	closers     []io.Closer
}

// Close closes everything built, the last made first.
func (b *stackBuilder) Close() error {
	var errs []error
	for i := len(b.closers) - 1; i >= 0; i-- {
		errs = append(errs, b.closers[i].Close())
	}
	return errors.Join(errs...)
}

func (b *stackBuilder) closeLater(v any) {
	if c, ok := v.(io.Closer); ok {
		b.closers = append(b.closers, c)
	}
}

// build is resilientStrategies; on error, what it made is in b.closers.
func (b *stackBuilder) build(cfg Config, storeKind string, store limiter.Store, reg prometheus.Registerer, log *slog.Logger) (map[string]limiter.Strategy, error) {
	if storeKind != "memcache" {
		return b.each(store, true)
	}
	breaker, err := b.breaker(cfg, store, reg, log)
	if err != nil {
		return nil, err
	}
	primary, err := b.each(breaker, false)
	if err != nil || !cfg.LocalFallback {
		return primary, err
	}
	mem := memory.New(time.Now)
	b.closeLater(mem)
	local, err := b.each(mem, true)
	if err != nil {
		return nil, err
	}
	strategies := make(map[string]limiter.Strategy, len(b.names))
	var fallbacks []*resilient.Fallback
	for _, name := range b.names {
		fb := resilient.NewFallback(primary[name], local[name], resilient.FallbackConfig{Reason: degradedReason, OverloadReason: overloadReason, Logger: log})
		b.closeLater(fb)
		fallbacks = append(fallbacks, fb)
		strategies[name] = fb
	}
	if err := registerReconcileMetrics(reg, fallbacks); err != nil {
		return nil, err
	}
	return strategies, nil
}

// each builds a strategy per name on st, private when only this process
// counts in st.
func (b *stackBuilder) each(st limiter.Store, private bool) (map[string]limiter.Strategy, error) {
	m := make(map[string]limiter.Strategy, len(b.names))
	for _, name := range b.names {
		s, err := b.newStrategy(name, st, private)
		if err != nil {
			return nil, fmt.Errorf("strategy %s: %w", name, err)
		}
		b.closeLater(s)
		m[name] = s
	}
	return m, nil
}

// breaker wraps store in the circuit breaker, with its metrics and logs.
// It is closed after every strategy on it (its timer probes memcached
// while it is open).
func (b *stackBuilder) breaker(cfg Config, store limiter.Store, reg prometheus.Registerer, log *slog.Logger) (*resilient.Breaker, error) {
	transitions := prom.CounterVec("floodgate_store_breaker_transitions_total",
		"State changes of the memcached circuit breaker, by the state entered: open, half_open (probing), closed.", "to")
	bl := breakerLog{logger: log, local: cfg.LocalFallback, failMode: cfg.FailModeName()}
	breaker := resilient.NewBreaker(store, resilient.BreakerConfig{
		OnTransition: func(tr resilient.Transition) {
			transitions.WithLabelValues(tr.To.String()).Inc()
			bl.log(tr)
		},
	})
	b.closers = append(b.closers, breaker)
	if err := registerBreakerMetrics(reg, breaker, transitions); err != nil {
		return nil, err
	}
	return breaker, nil
}

// breakerLog logs the transitions of the memcached circuit breaker: opening
// (WARN) and closing (INFO) once per outage; each probe at DEBUG.
type breakerLog struct {
	logger   *slog.Logger
	local    bool
	failMode string
}

func (l breakerLog) log(tr resilient.Transition) {
	switch {
	case tr.From == resilient.Closed && tr.To == resilient.Open:
		then := "deciding with the per-replica in-memory limiter"
		if !l.local {
			then = "applying fail mode " + l.failMode
		}
		l.logger.Warn("memcached circuit breaker opened: "+then,
			"consecutive_failures", tr.Failures, "probe_in", tr.Backoff.String(), "error", tr.Err)
	case tr.To == resilient.HalfOpen:
		l.logger.Debug("memcached circuit breaker probing")
	case tr.To == resilient.Open:
		l.logger.Debug("memcached circuit breaker probe failed", "probe_in", tr.Backoff.String(), "error", tr.Err)
	case tr.To == resilient.Closed:
		l.logger.Info("memcached circuit breaker closed: counting in memcached again",
			"outage", tr.At.Sub(tr.OutageStart).Round(time.Millisecond).String(), "calls_not_sent", tr.Rejected)
	}
}

// registerBreakerMetrics registers the metrics of the breaker b: its state
// (a gauge) and the calls it did not send (read at scrape time), and its
// transitions, with every state present from the start.
func registerBreakerMetrics(reg prometheus.Registerer, b *resilient.Breaker, transitions *prometheus.CounterVec) error {
	for _, st := range []resilient.State{resilient.Closed, resilient.Open, resilient.HalfOpen} {
		transitions.WithLabelValues(st.String())
	}
	if err := prom.Register(reg,
		prom.GaugeFunc("floodgate_store_breaker_state",
			"State of the memcached circuit breaker: 0 closed (memcached in use), 1 open (not called), 2 half-open (probing).",
			func() float64 { return float64(b.State()) }),
		prom.CounterFunc("floodgate_store_breaker_rejected_total",
			"memcached calls not made because the circuit breaker was open; each failed at once instead of waiting for a timeout.",
			func() float64 { return float64(b.Rejected()) }),
		transitions,
	); err != nil {
		return fmt.Errorf("register breaker metrics: %w", err)
	}
	return nil
}

// registerReconcileMetrics exports what the fallbacks charged to memcached
// after an outage, and what they could not.
func registerReconcileMetrics(reg prometheus.Registerer, fallbacks []*resilient.Fallback) error {
	sum := func(f func(*resilient.Fallback) uint64) func() float64 {
		return func() float64 {
			var n uint64
			for _, fb := range fallbacks {
				n += f(fb)
			}
			return float64(n)
		}
	}
	if err := prom.Register(reg,
		prom.CounterFunc("floodgate_fallback_reconciled_total",
			"Requests the per-replica fallback allowed while memcached failed and then charged to memcached, in the seconds they were allowed in.",
			sum((*resilient.Fallback).Reconciled)),
		prom.CounterFunc("floodgate_fallback_unreconciled_total",
			"Requests the per-replica fallback allowed and never charged to memcached: out of their window by the time it answered, or past the bound on pending charges.",
			sum((*resilient.Fallback).Unreconciled)),
	); err != nil {
		return fmt.Errorf("register fallback metrics: %w", err)
	}
	return nil
}
