package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/floodgate-rl/floodgate/internal/prom"
	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/policy"
	rlsconf "github.com/floodgate-rl/floodgate/policy/rls"
	"github.com/floodgate-rl/floodgate/rls"
)

// parseRLSConfig parses --rls-config: it loads and validates the file or
// directory, so that an invalid configuration stops floodgate before it
// serves, naming the first problem. It comes after --strategy, whose limits
// every rule must respect.
func parseRLSConfig(c *Config, v string) error {
	c.RLSConfigPath, c.RLSConfig = "", nil
	if v == "" {
		return nil
	}
	lc, err := rlsconf.Load(v)
	if err == nil {
		err = rls.CheckStrategy(lc, c.Strategy)
	}
	if err != nil {
		return firstRLSError(err, v)
	}
	c.RLSConfigPath, c.RLSConfig = v, lc
	return nil
}

// firstRLSError shortens a list of configuration errors to its first, for
// one line of a flag error, saying how many more check-rls-config lists.
func firstRLSError(err error, path string) error {
	var es rlsconf.Errors
	if !errors.As(err, &es) || len(es) < 2 {
		return err
	}
	return fmt.Errorf("%v (and %d more: floodgate check-rls-config %s lists them all)", es[0], len(es)-1, path)
}

// newRLSServer builds the rate limit service on the strategy --strategy
// names (with memcached, inside the per-replica fallback), with cfg's
// configuration, fail mode and headers; onDenied (the console's, or nil)
// hears of every denial.
func newRLSServer(cfg Config, strategies map[string]limiter.Strategy, onDenied func(scope, rule, identity string, retryAfter time.Duration, now time.Time), reg prometheus.Registerer, log *slog.Logger) (*rls.Server, error) {
	ms, ok := strategies[cfg.Strategy].(limiter.MultiStrategy)
	if !ok {
		return nil, fmt.Errorf("rls server: strategy %s (%T) cannot decide several rules at once", cfg.Strategy, strategies[cfg.Strategy])
	}
	srv, err := rls.NewServer(rls.Config{
		Limits:                 cfg.RLSConfig,
		Strategy:               ms,
		StrategyName:           cfg.Strategy,
		FailMode:               cfg.FailMode,
		Headers:                cfg.Headers,
		DegradedHeaderToClient: cfg.DegradedHeaderToClient,
		OnDenied:               onDenied,
		Logger:                 log,
		Registerer:             reg,
	})
	if err != nil {
		return nil, fmt.Errorf("rls server: %w", err)
	}
	return srv, nil
}

// rlsWords are what the --rls-config reloader's metrics and log lines say.
var rlsWords = reloadWords{
	reloads:     "floodgate_rls_config_reloads_total",
	lastSuccess: "floodgate_rls_config_last_reload_success_timestamp_seconds",
	files:       "the --rls-config files",
	subject:     "rls config", kept: "config", pathAttr: "path",
	errText: func(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") },
}

// newRLSReloader returns the reloader that keeps the rate limit service's
// configuration in step with path, whose content current is in force in
// srv: a valid new version replaces it atomically; an invalid one is logged
// once and counted, and the configuration in force stays. It polls: every
// poll loads the file or directory and compares its digest (names and
// contents of its files) with the last one seen, so the symbolic-link swap
// of a Kubernetes ConfigMap volume is seen like any other change. Its
// metrics, registered on reg, are the reloader's floodgate_rls_config_*
// and floodgate_rls_config_domains and floodgate_rls_config_rules (gauges
// of the configuration in force).
func newRLSReloader(path string, current *rlsconf.Config, srv *rls.Server, reg prometheus.Registerer, log *slog.Logger) (*reloader, error) {
	count := func(f func(*rlsconf.Config) int) func() float64 {
		return func() float64 {
			if c := srv.Limits(); c != nil {
				return float64(f(c))
			}
			return 0
		}
	}
	inForce := func() string {
		if c := srv.Limits(); c != nil {
			return c.Digest
		}
		return ""
	}
	r, err := newReloader(rlsWords, path, inForce, reg, log,
		prom.GaugeFunc("floodgate_rls_config_domains", "Domains of the --rls-config in force.",
			count(func(c *rlsconf.Config) int { return len(c.Domains()) })),
		prom.GaugeFunc("floodgate_rls_config_rules", "Rules (descriptors with a rate_limit) of the --rls-config in force.",
			count(func(c *rlsconf.Config) int { return len(c.Limits()) })),
	)
	if err != nil {
		return nil, err
	}
	r.poll = rlsPoll(r, srv, current.Digest)
	return r, nil
}

// rlsPoll returns the poll of r: it loads the configuration once and puts a
// changed valid version in force in srv, or reports a changed problem,
// each distinct state once; last is the digest of the version in force.
func rlsPoll(r *reloader, srv *rls.Server, last string) func() {
	return func() {
		c, err := rlsconf.Load(r.path)
		if err != nil {
			if state := "error:" + err.Error(); state != last {
				last = state
				r.rejected(err)
			}
			return
		}
		if c.Digest == last {
			return
		}
		last = c.Digest
		r.loaded(srv.SetLimits(c), "domains", len(c.Domains()), "rules", len(c.Limits()), "sha256", shortDigest(c.Digest))
	}
}

// startRLSConfig starts reloading --rls-config as it changes (looking every
// policy.DefaultPollInterval), until ctx is done or stop is called. Without
// --rls-config it does nothing.
func startRLSConfig(ctx context.Context, cfg Config, srv *rls.Server, reg prometheus.Registerer, log *slog.Logger) (stop func(), err error) {
	return startReloading(ctx, cfg.RLSConfigPath, policy.DefaultPollInterval, func() (*reloader, error) {
		return newRLSReloader(cfg.RLSConfigPath, cfg.RLSConfig, srv, reg, log)
	})
}

// rlsAttrs are the attributes of the startup line about the rate limit
// service's configuration; none without --rls-config.
func rlsAttrs(cfg Config) []any {
	if cfg.RLSConfig == nil {
		return nil
	}
	return []any{"rls_config", cfg.RLSConfigPath, "rls_domains", strings.Join(cfg.RLSConfig.Domains(), ","),
		"rls_rules", len(cfg.RLSConfig.Limits()), "rls_sha256", shortDigest(cfg.RLSConfig.Digest)}
}

// checkRLSConfigUsage is the help of the check-rls-config subcommand.
const checkRLSConfigUsage = `Usage: floodgate check-rls-config PATH

Validates the rate limit service configuration at PATH (see --rls-config):
one YAML file, or a directory of them (*.yaml, *.yml), one domain each, in
envoyproxy/ratelimit's format. It prints every rule as floodgate
understands it, one line each (key: limit, then name, replaces and shadow
mode, and where it is), then a summary line starting with "valid:".

Exit status: 0 when PATH is valid; 2 when it is not, with every problem on
stderr, one line each: floodgate: FILE:LINE: FIELD: reason
`

// checkRLSConfig runs `floodgate check-rls-config PATH`: args are the
// arguments after the subcommand. It returns the exit status.
func checkRLSConfig(args []string, stdout, stderr io.Writer) int {
	return runCheck(args, checkRLSConfigUsage, "check-rls-config takes one argument, a file or a directory: floodgate check-rls-config PATH", validateRLSConfig, stdout, stderr)
}

// validateRLSConfig returns the rules of the configuration at path, one
// line each, and a summary line "valid: ..."; or every problem it has
// ("FILE:LINE: FIELD: reason") and a line that counts them.
func validateRLSConfig(path string) (listing, problems []string) {
	c, err := rlsconf.Load(path)
	if err != nil {
		var es rlsconf.Errors
		if !errors.As(err, &es) {
			es = rlsconf.Errors{{File: path, Msg: err.Error()}}
		}
		for _, e := range es {
			problems = append(problems, oneLine(e))
		}
		return nil, append(problems, fmt.Sprintf("%s: %d %s", path, len(es), plural(len(es), "error", "errors")))
	}
	for _, l := range c.Limits() {
		listing = append(listing, ruleLine(l))
	}
	return append(listing, fmt.Sprintf("valid: domains=%d rules=%d sha256=%s", len(c.Domains()), len(c.Limits()), shortDigest(c.Digest))), nil
}

// ruleLine describes one rule for check-rls-config:
// "KEY: 5/minute name=login replaces=a,b shadow (FILE:LINE)".
func ruleLine(l *rlsconf.Limit) string {
	var b strings.Builder
	b.WriteString(l.Key)
	b.WriteString(": ")
	if l.Unlimited {
		b.WriteString("unlimited")
	} else {
		b.WriteString(strconv.FormatUint(uint64(l.RequestsPerUnit), 10) + "/" + l.Unit.String())
	}
	if l.Name != "" {
		b.WriteString(" name=" + strconv.Quote(l.Name))
	}
	if len(l.Replaces) > 0 {
		b.WriteString(" replaces=" + strconv.Quote(strings.Join(l.Replaces, ",")))
	}
	if l.ShadowMode {
		b.WriteString(" shadow")
	}
	fmt.Fprintf(&b, " (%s:%d)", l.File, l.Line)
	return b.String()
}

// plural returns one when n is 1, else many.
func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
