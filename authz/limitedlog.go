package authz

import (
	"context"
	"hash/maphash"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/floodgate-rl/floodgate/limiter"
)

// Bounds of the "requestor limited" log.
const (
	// limitedSeen is the most (scope, requestor) pairs remembered as logged
	// in their window. Past it, until a sweep frees some, a first denial
	// is counted as a suppressed line.
	limitedSeen = 4096
	// limitedRate and limitedBurst bound the lines written: 10 a second,
	// 20 at once. The others are counted as suppressed.
	limitedRate  = 10
	limitedBurst = 20
	// limitedSweepEvery is the least time between two sweeps of expired
	// pairs when the set is full, so a full set costs a denial a map
	// lookup, not a walk of the set.
	limitedSweepEvery = time.Second
)

// limitedLog writes one line the first time a requestor is denied in a
// scope within its window:
//
//	level=INFO msg="requestor limited" scope=login rule=login identity=ip:203.0.113.7 limit=5 window=60 retry_after=42 decision=denied suppressed=0
//
// with the rule only when one decided, the identity as DisplayIdentity
// shows it, the window and retry_after (the 429's N) in seconds, and
// suppressed the first denials not logged since the previous line (over
// limitedRate, or with limitedSeen pairs remembered). Its memory is
// bounded (limitedSeen hashes); a denial of a pair already logged costs a
// hash and a map lookup. It is safe for concurrent use.
type limitedLog struct {
	log  *slog.Logger
	show bool // identities in full (Config.ShowIdentities)
	seed maphash.Seed

	mu         sync.Mutex
	seen       map[uint64]int64 // pair hash -> end of the window its line covers (Unix ns)
	lines      *rate.Limiter
	sweptAt    time.Time
	suppressed int64
}

func newLimitedLog(log *slog.Logger, show bool) *limitedLog {
	return &limitedLog{
		log:   log,
		show:  show,
		seed:  maphash.MakeSeed(),
		seen:  make(map[uint64]int64),
		lines: rate.NewLimiter(limitedRate, limitedBurst),
	}
}

// note takes a denial of p's requestor, decided at now, and logs it when
// it is the first of its scope and requestor within the window.
func (l *limitedLog) note(p *plan, d limiter.Decision, res result, now time.Time) {
	if !l.log.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	h := l.hash(p.req)
	l.mu.Lock()
	until, ok := l.seen[h]
	if ok && now.UnixNano() < until {
		l.mu.Unlock()
		return
	}
	if len(l.seen) >= limitedSeen {
		l.sweep(now)
	}
	if len(l.seen) >= limitedSeen {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	_, window := echo(p.req, d)
	l.seen[h] = now.Add(window).UnixNano()
	if !l.lines.AllowN(now, 1) {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := l.suppressed
	l.suppressed = 0
	l.mu.Unlock()
	l.write(p, d, res, suppressed)
}

// write writes the line of a first denial.
func (l *limitedLog) write(p *plan, d limiter.Decision, res result, suppressed int64) {
	limit, window := echo(p.req, d)
	attrs := make([]slog.Attr, 0, 8)
	attrs = append(attrs, slog.String("scope", policyName(p.req.Scope)))
	if p.rule != "" {
		attrs = append(attrs, slog.String("rule", p.rule))
	}
	attrs = append(attrs,
		slog.String("identity", DisplayIdentity(p.req.Requestor, l.show)),
		slog.Int64("limit", limit),
		slog.Int64("window", int64(window/time.Second)),
		slog.Int64("retry_after", RetryAfterSeconds(d.RetryAfter)),
		slog.String("decision", res.String()),
		slog.Int64("suppressed", suppressed),
	)
	l.log.LogAttrs(context.Background(), slog.LevelInfo, "requestor limited", attrs...)
}

// sweep forgets the pairs whose window has ended, at most once per
// limitedSweepEvery. l.mu is held.
func (l *limitedLog) sweep(now time.Time) {
	if now.Sub(l.sweptAt) < limitedSweepEvery && !l.sweptAt.IsZero() {
		return
	}
	l.sweptAt = now
	ns := now.UnixNano()
	for h, until := range l.seen {
		if ns >= until {
			delete(l.seen, h)
		}
	}
}

// hash is the key of r's scope and requestor in seen.
func (l *limitedLog) hash(r limiter.Request) uint64 {
	var h maphash.Hash
	h.SetSeed(l.seed)
	h.WriteString(r.Scope)
	h.WriteByte(0)
	h.WriteString(r.Requestor)
	return h.Sum64()
}
