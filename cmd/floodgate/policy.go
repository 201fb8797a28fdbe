package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/floodgate-rl/floodgate/authz"
	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/policy"
)

// parseStrategy parses --strategy: a name of limiter.Strategies.
func parseStrategy(c *Config, v string) error {
	name, err := limiter.ParseStrategy(v)
	if err != nil {
		return errors.New("want one of " + strings.Join(limiter.Strategies(), ", "))
	}
	c.Strategy = name
	return nil
}

// parsePolicy parses --policy: it loads and validates the file, so that an
// invalid policy stops floodgate before it serves, with the line at fault.
// It comes after --strategy, whose limits the rules that leave the
// strategy to the route must respect.
func parsePolicy(c *Config, v string) error {
	c.PolicyFile, c.Policy = "", nil
	if v == "" {
		return nil
	}
	p, err := policy.Load(v)
	if err != nil {
		return err
	}
	if err := p.CheckStrategy(c.Strategy); err != nil {
		return err
	}
	c.PolicyFile, c.Policy = v, p
	return nil
}

// policyReloader keeps the authz server's policy in step with --policy: a
// valid new version replaces the policy atomically; an invalid one is
// logged once and counted, and the policy in force stays.
type policyReloader struct {
	path    string
	az      *authz.Server
	log     *slog.Logger
	watcher *policy.Watcher

	reloadsOK, reloadsError prometheus.Counter
	lastSuccess             prometheus.Gauge
}

// newPolicyReloader installs current (loaded from path) in az and returns
// the reloader that watches path, with its metrics registered on reg:
//
//   - floodgate_policy_reloads_total{result="ok|error"}: changes of the
//     file applied, or rejected (unreadable, invalid, or refused by the
//     server);
//   - floodgate_policy_last_reload_success_timestamp_seconds: when a
//     version of the file was last put in force, including at startup.
func newPolicyReloader(path string, current *policy.Policy, az *authz.Server, reg prometheus.Registerer, log *slog.Logger) (*policyReloader, error) {
	if err := az.SetPolicy(current); err != nil {
		return nil, fmt.Errorf("--policy %s: %w", path, err)
	}
	reloads := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "floodgate_policy_reloads_total",
		Help: "Changes of the --policy file: ok (the new version is in force) or error (rejected: the previous version stays in force).",
	}, []string{"result"})
	r := &policyReloader{
		path:         path,
		az:           az,
		log:          log,
		reloadsOK:    reloads.WithLabelValues("ok"),
		reloadsError: reloads.WithLabelValues("error"),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "floodgate_policy_last_reload_success_timestamp_seconds",
			Help: "Unix time at which a version of the --policy file was last put in force (at startup, or by a reload).",
		}),
	}
	for _, c := range []prometheus.Collector{reloads, r.lastSuccess} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register policy metrics: %w", err)
		}
	}
	r.lastSuccess.SetToCurrentTime()
	r.watcher = policy.NewWatcher(path, current, r.loaded, r.rejected)
	return r, nil
}

// loaded puts a new valid version of the file in force.
func (r *policyReloader) loaded(p *policy.Policy) {
	if err := r.az.SetPolicy(p); err != nil {
		r.rejected(err)
		return
	}
	r.reloadsOK.Inc()
	r.lastSuccess.SetToCurrentTime()
	r.log.Info("policy reloaded", "file", r.path, "rules", len(p.Rules), "sha256", shortDigest(p.Digest))
}

// rejected logs and counts a version of the file that cannot be put in
// force: one line per distinct problem (the Watcher reports each once).
func (r *policyReloader) rejected(err error) {
	r.reloadsError.Inc()
	kept := "none"
	if p := r.az.Policy(); p != nil {
		kept = shortDigest(p.Digest)
	}
	r.log.Error("policy reload rejected, keeping the policy in force", "file", r.path, "error", oneLine(err), "kept_sha256", kept)
}

// run polls the file every interval until ctx is done.
func (r *policyReloader) run(ctx context.Context, interval time.Duration) {
	r.watcher.Run(ctx, interval)
}

// shortDigest is the first 12 hex digits of a policy digest, as
// check-policy prints it.
func shortDigest(d string) string {
	if len(d) > 12 {
		return d[:12]
	}
	return d
}

// startPolicy installs cfg's policy, if any, in az and starts reloading the
// file as it changes (looking every policy.DefaultPollInterval), until ctx
// is done or stop is called.
func startPolicy(ctx context.Context, cfg Config, az *authz.Server, reg prometheus.Registerer, log *slog.Logger) (stop func(), err error) {
	return startPolicyEvery(ctx, cfg, az, reg, log, policy.DefaultPollInterval)
}

// startPolicyEvery is startPolicy polling every interval.
func startPolicyEvery(ctx context.Context, cfg Config, az *authz.Server, reg prometheus.Registerer, log *slog.Logger, interval time.Duration) (stop func(), err error) {
	if cfg.PolicyFile == "" {
		return func() {}, nil
	}
	r, err := newPolicyReloader(cfg.PolicyFile, cfg.Policy, az, reg, log)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.run(ctx, interval)
	}()
	var once sync.Once
	return func() { once.Do(func() { cancel(); <-done }) }, nil
}
