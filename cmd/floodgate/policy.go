package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

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

// policyWords are what the --policy reloader's metrics and log lines say.
var policyWords = reloadWords{
	reloads:     "floodgate_policy_reloads_total",
	lastSuccess: "floodgate_policy_last_reload_success_timestamp_seconds",
	files:       "the --policy file",
	subject:     "policy", kept: "policy", pathAttr: "file", errText: oneLine,
}

// newPolicyReloader installs current (loaded from path) in az and returns
// the reloader that keeps az's policy in step with path, with its metrics
// (floodgate_policy_*) registered on reg: a valid new version replaces the
// policy atomically; an invalid one is logged once and counted, and the
// policy in force stays. A policy.Watcher tells the versions apart.
func newPolicyReloader(path string, current *policy.Policy, az *authz.Server, reg prometheus.Registerer, log *slog.Logger) (*reloader, error) {
	if err := az.SetPolicy(current); err != nil {
		return nil, fmt.Errorf("--policy %s: %w", path, err)
	}
	inForce := func() string {
		if p := az.Policy(); p != nil {
			return p.Digest
		}
		return ""
	}
	r, err := newReloader(policyWords, path, inForce, reg, log)
	if err != nil {
		return nil, err
	}
	loaded := func(p *policy.Policy) {
		r.loaded(az.SetPolicy(p), "rules", len(p.Rules), "sha256", shortDigest(p.Digest))
	}
	// The Watcher reports each distinct problem once.
	w := policy.NewWatcher(path, current, loaded, r.rejected)
	r.poll = func() { w.Poll() }
	return r, nil
}

// startPolicy installs cfg's policy, if any, in az and starts reloading the
// file as it changes (looking every policy.DefaultPollInterval), until ctx
// is done or stop is called.
func startPolicy(ctx context.Context, cfg Config, az *authz.Server, reg prometheus.Registerer, log *slog.Logger) (stop func(), err error) {
	return startReloading(ctx, cfg.PolicyFile, policy.DefaultPollInterval, func() (*reloader, error) {
		return newPolicyReloader(cfg.PolicyFile, cfg.Policy, az, reg, log)
	})
}
