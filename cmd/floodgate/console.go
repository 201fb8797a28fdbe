package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/floodgate-rl/floodgate/authz"
	"github.com/floodgate-rl/floodgate/console"
	"github.com/floodgate-rl/floodgate/console/topk"
	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/resilient"
	"github.com/floodgate-rl/floodgate/rls"
)

// parseConsoleAddr parses --console-addr: host:port, or "off" (or "" on
// the command line) for no console.
func parseConsoleAddr(c *Config, v string) (err error) {
	if v == "" || v == "off" {
		c.ConsoleAddr = ""
		return nil
	}
	c.ConsoleAddr, err = parseAddr(v)
	if err != nil {
		return errors.New(`want host:port, e.g. 127.0.0.1:9091, or "off"`)
	}
	return nil
}

// consoleSetup is the console's state: built before the servers whose
// denials it hears (OnDenied), served once they exist (serve). A nil
// *consoleSetup is the console turned off; its methods do nothing.
type consoleSetup struct {
	cfg     Config
	log     *slog.Logger
	tracker *topk.Tracker
	rec     *topk.Recorder
	cluster *topk.Cluster // with memcached: the cluster-wide view
	reloads reloadErrors
}

// newConsoleSetup returns the console of cfg (nil without --console-addr).
// With memcached, store (the memcached store itself, unwrapped: the
// console's few calls are not decisions and stay out of the store
// metrics) carries the published summaries.
func newConsoleSetup(cfg Config, store limiter.Store, log *slog.Logger) (*consoleSetup, error) {
	if cfg.ConsoleAddr == "" {
		return nil, nil
	}
	c := &consoleSetup{cfg: cfg, log: log, tracker: topk.NewTracker(topk.Config{})}
	c.rec = topk.NewRecorder(c.tracker, 0, c.show)
	if vs, ok := store.(topk.ValueStore); ok && len(cfg.MemcacheServers) > 0 {
		cl, err := topk.NewCluster(topk.ClusterConfig{Store: vs, Tracker: c.tracker, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("console: %w", err)
		}
		c.cluster = cl
	}
	return c, nil
}

// onDenied is the hook authz and rls call on each denial; nil without a
// console.
func (c *consoleSetup) onDenied() func(scope, rule, identity string, retryAfter time.Duration, now time.Time) {
	if c == nil {
		return nil
	}
	return c.rec.Denied
}

// show is the form in which the console keeps and shows a requestor: as
// authz.DisplayIdentity shows it, and for the rate limit service's
// counters (whose descriptor values may be credentials) a fingerprint,
// unless --console-show-identities.
func (c *consoleSetup) show(scope, identity string) string {
	if strings.HasPrefix(scope, "rls:") && !c.cfg.ConsoleShowIdentities {
		sum := sha256.Sum256([]byte(identity))
		return authz.FingerprintPrefix + hex.EncodeToString(sum[:6])
	}
	return authz.DisplayIdentity(identity, c.cfg.ConsoleShowIdentities)
}

// consoleDeps are the servers and registry the console looks at.
type consoleDeps struct {
	az         *authz.Server
	rls        *rls.Server
	reg        *prometheus.Registry
	strategies map[string]limiter.Strategy
	storeKind  string
}

// serve starts the console's listener, its recorder, its rate sampler and,
// with memcached, its publishing; stop ends them all. When the listener
// cannot be opened it logs why and serves no console: floodgate decides
// all the same.
func (c *consoleSetup) serve(ctx context.Context, d consoleDeps) (stop func(), err error) {
	if c == nil {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", c.cfg.ConsoleAddr)
	if err != nil {
		// The console is an operator's aid, off the decision path: a port
		// taken by another process must not stop floodgate deciding.
		c.log.Error("console not served, floodgate goes on without it", "console_addr", c.cfg.ConsoleAddr, "err", err)
		return func() {}, nil
	}
	rates := console.NewRates(d.reg)
	var src console.TopSource = console.Local{T: c.tracker}
	replica := "local"
	if c.cluster != nil {
		src, replica = c.cluster, c.cluster.Replica()
	}
	srv, err := console.New(console.Config{
		Top:     src,
		Peek:    peekerOf(d.strategies),
		Resolve: c.resolver(d.az, d.strategies),
		Display: func(id string) string { return c.show("", id) },
		Status:  func() console.Status { return c.status(d, rates, replica) },
		Logger:  c.log,
	})
	if err != nil {
		ln.Close()
		return nil, err
	}
	hs := &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(c.log.Handler(), slog.LevelWarn),
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { c.rec.Run(ctx) })
	wg.Go(func() { rates.Run(ctx, 5*time.Second) })
	if c.cluster != nil {
		wg.Go(func() { c.cluster.Run(ctx) })
	}
	wg.Go(func() {
		if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			c.log.Error("console server failed", "err", err)
		}
	})
	c.log.Info("console serving", "console_addr", ln.Addr().String(), "show_identities", c.cfg.ConsoleShowIdentities, "replica", replica)
	return func() {
		sctx, scancel := context.WithTimeout(context.Background(), time.Second)
		defer scancel()
		hs.Shutdown(sctx)
		cancel()
		wg.Wait()
	}, nil
}

// peeker is what the console's Peeker uses of a strategy: limiter.Sliding's
// Peek, or resilient.Fallback's, which passes it to the shared store's.
type peeker interface {
	Peek(ctx context.Context, req limiter.Request, now time.Time) (limiter.Usage, error)
}

// peekerOf returns the console's Peeker over strategies: a lookup reads the
// store of the strategy that decides the requestor, read-only; a strategy
// without a lookup (the value strategies) fails with console.ErrNoLookup.
func peekerOf(strategies map[string]limiter.Strategy) console.Peeker {
	return console.PeekFunc(func(ctx context.Context, name string, req limiter.Request, now time.Time) (console.Usage, error) {
		p, ok := strategies[name].(peeker)
		if !ok {
			return console.Usage{}, fmt.Errorf("strategy %s: %w", name, console.ErrNoLookup)
		}
		u, err := p.Peek(ctx, req, now)
		if errors.Is(err, resilient.ErrNoPeek) {
			err = fmt.Errorf("strategy %s: %w", name, console.ErrNoLookup)
		}
		return console.Usage{Count: u.Count, Remaining: u.Remaining, RetryAfter: u.RetryAfter, Minutes: u.Minutes}, err
	})
}

// status describes the replica for the console.
func (c *consoleSetup) status(d consoleDeps, rates *console.Rates, replica string) console.Status {
	m := gatherValues(d.reg)
	st := console.Status{
		Version: Version(), Replica: replica, Store: d.storeKind,
		Defaults: fmt.Sprintf("%d per %s, key %s, strategy %s, fail mode %s",
			c.cfg.Limit, c.cfg.Window, c.cfg.Key.String(), c.cfg.Strategy, c.cfg.FailModeName()),
		FallbackReconciled:   m["floodgate_fallback_reconciled_total"],
		FallbackUnreconciled: m["floodgate_fallback_unreconciled_total"],
		Rates:                freshRates(rates),
		DroppedDenials:       c.rec.Dropped(),
	}
	if d.storeKind == "memcache" {
		st.Store += " " + strings.Join(c.cfg.MemcacheServers, ",")
	}
	if v, ok := m["floodgate_store_breaker_state"]; ok {
		st.Breaker = []string{"closed", "open", "half_open"}[min(max(int(v), 0), 2)]
	}
	if p := d.az.Policy(); p != nil {
		st.Policy = console.ConfigState{Path: c.cfg.PolicyFile, Version: shortDigest(p.Digest), Rules: len(p.Rules)}
	}
	st.Policy.LastReload = unixStamp(m["floodgate_policy_last_reload_success_timestamp_seconds"])
	st.Policy.ReloadErrors = m[`floodgate_policy_reloads_total{result="error"}`]
	if l := d.rls.Limits(); l != nil {
		st.RLS = console.ConfigState{Path: c.cfg.RLSConfigPath, Version: shortDigest(l.Digest), Rules: len(l.Limits())}
	}
	st.RLS.LastReload = unixStamp(m["floodgate_rls_config_last_reload_success_timestamp_seconds"])
	st.RLS.ReloadErrors = m[`floodgate_rls_config_reloads_total{result="error"}`]
	st.Policy.LastError, st.Policy.LastErrorAt = c.reloads.last("policy")
	st.RLS.LastError, st.RLS.LastErrorAt = c.reloads.last("rls")
	return st
}

// freshRates samples the counters now (at most once a second counts) and
// returns the rates over the last minute.
func freshRates(r *console.Rates) []console.Rate {
	r.Sample(time.Now())
	return r.Rates()
}

// gatherValues reads reg's gauges and counters by name, and by name and
// result label as name{result="..."}.
func gatherValues(reg prometheus.Gatherer) map[string]float64 {
	out := make(map[string]float64)
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			out[mf.GetName()] += v
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" {
					out[mf.GetName()+`{result="`+l.GetValue()+`"}`] += v
				}
			}
		}
	}
	return out
}

// unixStamp formats a Unix time in seconds for the console; "" for 0.
func unixStamp(sec float64) string {
	if sec <= 0 {
		return ""
	}
	return time.Unix(int64(sec), 0).UTC().Format(time.RFC3339)
}

// reloadErrors keeps the last problem of each reloaded file, as its
// reloader logged it: the console shows it.
type reloadErrors struct {
	mu   sync.Mutex
	msgs map[string][2]string // what -> error, when
}

func (r *reloadErrors) set(what, msg string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.msgs == nil {
		r.msgs = make(map[string][2]string)
	}
	r.msgs[what] = [2]string{msg, at.UTC().Format(time.RFC3339)}
}

func (r *reloadErrors) last(what string) (msg, at string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.msgs[what]
	return m[0], m[1]
}

// reloadLog returns log for the reloader of what ("policy", "rls"): the
// same logger, which also remembers the error of every line logged at
// level Error (a rejected version) for the console.
func (c *consoleSetup) reloadLog(log *slog.Logger, what string) *slog.Logger {
	if c == nil {
		return log
	}
	return slog.New(&errorCapture{Handler: log.Handler(), keep: func(msg string, at time.Time) { c.reloads.set(what, msg, at) }})
}

// errorCapture is a slog.Handler that passes every record on and gives
// the "error" attribute of records at level Error to keep.
type errorCapture struct {
	slog.Handler
	keep func(msg string, at time.Time)
}

func (h *errorCapture) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		msg := r.Message
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "error" {
				msg = a.Value.String()
				return false
			}
			return true
		})
		h.keep(msg, r.Time)
	}
	return h.Handler.Handle(ctx, r)
}

func (h *errorCapture) WithAttrs(as []slog.Attr) slog.Handler {
	return &errorCapture{Handler: h.Handler.WithAttrs(as), keep: h.keep}
}

func (h *errorCapture) WithGroup(name string) slog.Handler {
	return &errorCapture{Handler: h.Handler.WithGroup(name), keep: h.keep}
}
