package console

import (
	"context"
	"time"

	"github.com/floodgate-rl/floodgate/console/topk"
	"github.com/floodgate-rl/floodgate/policy"
)

// TopSource gives the summaries of denials: a *topk.Cluster (with
// memcached, cluster-wide) or Local (this replica's).
type TopSource interface {
	Summary(ctx context.Context, scope string, w topk.Window, now time.Time) (*topk.Summary, topk.Coverage)
	Scopes(ctx context.Context, now time.Time) ([]string, topk.Coverage)
}

// Local is the TopSource of one replica's Tracker, for the in-memory
// store.
type Local struct{ T *topk.Tracker }

// Summary implements TopSource.
func (l Local) Summary(_ context.Context, scope string, w topk.Window, now time.Time) (*topk.Summary, topk.Coverage) {
	return l.T.Summary(scope, w, now), topk.Coverage{Replicas: 1}
}

// Scopes implements TopSource.
func (l Local) Scopes(_ context.Context, now time.Time) ([]string, topk.Coverage) {
	return l.T.Scopes(now), topk.Coverage{Replicas: 1}
}

// Top is the answer of GET /api/v1/top (see the package doc).
type Top struct {
	Scope  string `json:"scope"`
	Window string `json:"window"`
	At     string `json:"at"`
	// TotalDenials is every denial of the scope in the window (exact, over
	// the replicas covered).
	TotalDenials uint64 `json:"total_denials"`
	// ErrorBound bounds the denials of any requestor not listed, and how
	// much a listed one's denials may be overestimated.
	ErrorBound uint64       `json:"error_bound"`
	Replicas   int          `json:"replicas"`
	Unreadable int          `json:"unreadable_replicas"`
	ClusterErr string       `json:"cluster_error,omitempty"`
	Requestors []TopRequest `json:"requestors"`
}

// TopRequest is one requestor of a Top list.
type TopRequest struct {
	Identity string `json:"identity"`
	// Denials is an upper bound of its denials; DenialsMin a lower one.
	Denials    uint64  `json:"denials"`
	DenialsMin uint64  `json:"denials_min"`
	Share      float64 `json:"share"`
	FirstSeen  string  `json:"first_seen"`
	LastSeen   string  `json:"last_seen"`
	// RetryAfter is the current N: the seconds until the latest 429 it got
	// said it would be let in; 0 once that time has passed.
	RetryAfter int64  `json:"retry_after"`
	Rule       string `json:"rule,omitempty"`
}

// top builds the Top list of scope.
func (s *Server) top(ctx context.Context, scope string, w topk.Window, n int, now time.Time) Top {
	sum, cov := s.src.Summary(ctx, scope, w, now)
	t := Top{
		Scope: scope, Window: w.String(), At: stamp(now),
		TotalDenials: sum.Total(), ErrorBound: sum.Floor(),
		Replicas: cov.Replicas, Unreadable: cov.Unreadable, ClusterErr: cov.Err,
		Requestors: []TopRequest{},
	}
	for _, e := range sum.Top(n) {
		r := TopRequest{
			Identity: e.Item, Denials: e.Count, DenialsMin: e.Count - e.Err,
			FirstSeen: stamp(time.Unix(0, e.First)), LastSeen: stamp(time.Unix(0, e.Last)),
			RetryAfter: policy.CeilSeconds(time.Unix(0, e.RetryUntil).Sub(now)), Rule: e.Rule,
		}
		if t.TotalDenials > 0 {
			r.Share = float64(min(e.Count, t.TotalDenials)) / float64(t.TotalDenials)
		}
		t.Requestors = append(t.Requestors, r)
	}
	return t
}
