package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/floodgate-rl/floodgate/internal/periodic"
	"github.com/floodgate-rl/floodgate/internal/prom"
)

// reloader keeps a configuration read from files (--policy, --rls-config)
// in step with them: it polls, puts each new valid version in force, and
// counts and logs each version put in force or rejected, one line each.
// How a poll tells a new version from the last is the file's own (poll);
// the rest is here, once. poll runs on one goroutine at a time.
type reloader struct {
	reloadWords
	path string
	log  *slog.Logger
	// poll looks at the files once and reports a new version to loaded or
	// rejected.
	poll func()
	// inForce is the digest of the version in force, "" for none.
	inForce func() string

	reloadsOK, reloadsError prometheus.Counter
	lastSuccess             prometheus.Gauge
}

// reloadWords are what a reloader's metrics and log lines call its files.
type reloadWords struct {
	// reloads and lastSuccess name the metrics of versions put in force or
	// rejected, and of when one was last put in force.
	reloads, lastSuccess string
	files                string             // the files in the metrics' help: "the --policy file"
	subject              string             // what the log lines say was reloaded: "policy"
	kept                 string             // what a rejection keeps in force: "policy", "config"
	pathAttr             string             // the log attribute of the path: "file", "path"
	errText              func(error) string // a rejection's error on one line
}

// newReloader returns the reloader of path, with its metrics and extra
// registered on reg:
//
//   - words.reloads{result="ok|error"}: versions of the files put in force,
//     or rejected (unreadable, invalid, or refused by the server);
//   - words.lastSuccess: when a version was last put in force, including
//     now, at startup.
//
// The caller sets poll.
func newReloader(words reloadWords, path string, inForce func() string, reg prometheus.Registerer, log *slog.Logger, extra ...prometheus.Collector) (*reloader, error) {
	reloads := prom.CounterVec(words.reloads,
		"Changes of "+words.files+": ok (the new version is in force) or error (rejected: the previous version stays in force).", "result")
	r := &reloader{
		reloadWords:  words,
		path:         path,
		log:          log,
		inForce:      inForce,
		reloadsOK:    reloads.WithLabelValues("ok"),
		reloadsError: reloads.WithLabelValues("error"),
		lastSuccess: prom.Gauge(words.lastSuccess,
			"Unix time at which a version of "+words.files+" was last put in force (at startup, or by a reload)."),
	}
	if err := prom.Register(reg, append([]prometheus.Collector{reloads, r.lastSuccess}, extra...)...); err != nil {
		return nil, fmt.Errorf("register %s metrics: %w", words.subject, err)
	}
	r.lastSuccess.SetToCurrentTime()
	return r, nil
}

// loaded counts and logs a new version that set put in force (a nil
// error), with attrs saying what it holds; or rejects it with set's error.
func (r *reloader) loaded(set error, attrs ...any) {
	if set != nil {
		r.rejected(set)
		return
	}
	r.reloadsOK.Inc()
	r.lastSuccess.SetToCurrentTime()
	r.log.Info(r.subject+" reloaded", append([]any{r.pathAttr, r.path}, attrs...)...)
}

// rejected logs and counts a version that cannot be put in force: one line
// with every problem, and the digest of the version kept.
func (r *reloader) rejected(err error) {
	r.reloadsError.Inc()
	kept := "none"
	if d := r.inForce(); d != "" {
		kept = shortDigest(d)
	}
	r.log.Error(r.subject+" reload rejected, keeping the "+r.kept+" in force", r.pathAttr, r.path, "error", r.errText(err), "kept_sha256", kept)
}

// startReloading builds the reloader of path with build and polls it every
// interval until ctx is done or stop is called. Without a path there is
// nothing to reload.
func startReloading(ctx context.Context, path string, interval time.Duration, build func() (*reloader, error)) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	r, err := build()
	if err != nil {
		return nil, err
	}
	return periodic.Start(ctx, interval, r.poll), nil
}

// shortDigest is the first 12 hex digits of a digest (of a policy, of an
// RLS configuration), as check-policy and check-rls-config print it.
func shortDigest(d string) string {
	if len(d) > 12 {
		return d[:12]
	}
	return d
}
