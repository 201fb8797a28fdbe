package authz

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/policy"
)

// Context extension names read from attributes.context_extensions. Envoy sets
// them per route or virtual host with ExtAuthzPerRoute
// check_settings.context_extensions. Their values follow the grammar of
// package [policy], the same as the flags' and the policy file's, and an
// invalid one is refused in the same words.
const (
	// ExtLimit overrides [Config].Limit: a decimal integer, at least 1.
	ExtLimit = "floodgate.limit"
	// ExtWindow overrides [Config].Window: a window as [policy.ParseWindow]
	// reads it, a Go duration ("90s", "1h") of whole seconds from 1s to
	// [limiter.MaxWindow].
	ExtWindow = "floodgate.window"
	// ExtKey overrides [Config].Key: a form accepted by [ParseKey]. "xff" uses
	// the server's trusted hop count ([KeySpec.TrustedHops] of Config.Key).
	ExtKey = "floodgate.key"
	// ExtScope sets [limiter.Request].Scope, so the route's counters are
	// separate from other routes': a scope as [policy.CheckScope] checks it,
	// 1 to 64 characters of [A-Za-z0-9_.-]. It is also the policy name in
	// the RateLimit-Policy and RateLimit headers. The default scope is ""
	// (shown as "default" in those headers).
	ExtScope = "floodgate.scope"
	// ExtStrategy chooses the route's strategy by name ([limiter.Strategies]
	// spells them: "sliding", "fixed", "token-bucket", "sliding-log")
	// instead of [Config].Strategy. A name the Server was not given in
	// [Config].Strategies is invalid.
	ExtStrategy = "floodgate.strategy"
)

// A limit, window and strategy that are each valid but that the strategy
// cannot serve together (floodgate.limit above [limiter.MaxSlidingLogLimit]
// with the sliding-log strategy, say) are invalid too: the route's limit
// is dropped for the server's first, then its window, and only then its
// strategy (see Server.fit). A Server never asks a strategy a question it
// refuses to answer, which would be a failure, answered by the fail mode,
// on every request of the route.

// extNames lists the context extensions floodgate reads, in a fixed order.
var extNames = [...]string{ExtLimit, ExtWindow, ExtKey, ExtScope, ExtStrategy}

const (
	// maxOverrides caps the number of distinct (name, value) pairs whose parse
	// result is remembered. Beyond it values are parsed on every request and
	// invalid ones are logged at most once per overflow interval.
	maxOverrides = 1024
	// maxOverrideLen is the longest extension value floodgate accepts. Longer
	// values are invalid for every extension and are never remembered.
	maxOverrideLen = 512
)

// overrideKey identifies one extension value.
type overrideKey struct{ name, value string }

// override is the parse result of one extension value. Exactly one of the
// value fields is meaningful, according to the name; err is set when the value
// is invalid.
type override struct {
	limit    int64
	window   time.Duration
	key      KeySpec
	scope    string
	strategy string
	err      error
}

// overrideCache remembers parse results per distinct extension value. Reads
// are lock-free (an immutable map behind an atomic pointer); the rare insert
// copies the map under mu. The map never holds more than maxOverrides entries.
type overrideCache struct {
	hops int // server's X-Forwarded-For trusted hops, for ExtKey "xff"
	m    atomic.Pointer[map[overrideKey]override]
	mu   sync.Mutex

	// hasStrategy reports whether the server has the strategy called name,
	// for ExtStrategy; nil accepts every valid name.
	hasStrategy func(name string) bool
}

// lookup says how overrideCache.get found a value.
type lookup uint8

const (
	seen      lookup = iota // remembered earlier
	firstSeen               // parsed now and remembered: log it if invalid
	forgotten               // parsed now, not remembered (cache full or value too long)
)

// get returns the parse result of value for extension name, and whether it was
// remembered before.
func (c *overrideCache) get(name, value string) (override, lookup) {
	k := overrideKey{name, value}
	if m := c.m.Load(); m != nil {
		if o, ok := (*m)[k]; ok {
			return o, seen
		}
	}
	o := parseOverride(name, value, c.hops)
	if name == ExtStrategy && o.err == nil && c.hasStrategy != nil && !c.hasStrategy(o.strategy) {
		o.err = fmt.Errorf("strategy %s: not available on this server", o.strategy)
	}
	if len(value) > maxOverrideLen {
		return o, forgotten
	}
	return c.remember(k, o)
}

// mismatch says whether the combination k of values that do not go
// together (see Server.fit) was seen before, and remembers it if not.
func (c *overrideCache) mismatch(k overrideKey, err error) lookup {
	if m := c.m.Load(); m != nil {
		if _, ok := (*m)[k]; ok {
			return seen
		}
	}
	_, l := c.remember(k, override{err: err})
	return l
}

// remember stores o under k unless the cache is full or another goroutine
// stored k first, and returns what is stored (o when nothing is).
func (c *overrideCache) remember(k overrideKey, o override) (override, lookup) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.m.Load()
	if old != nil {
		if prev, ok := (*old)[k]; ok {
			return prev, seen // another goroutine remembered it first
		}
		if len(*old) >= maxOverrides {
			return o, forgotten
		}
	}
	var n map[overrideKey]override
	if old == nil {
		n = make(map[overrideKey]override, 1)
	} else {
		n = make(map[overrideKey]override, len(*old)+1)
		for k, v := range *old {
			n[k] = v
		}
	}
	n[k] = o
	c.m.Store(&n)
	return o, firstSeen
}

// parseOverride parses value as the extension name.
func parseOverride(name, value string, hops int) override {
	if len(value) > maxOverrideLen {
		return override{err: fmt.Errorf("%d bytes: longer than %d", len(value), maxOverrideLen)}
	}
	var o override
	switch name {
	case ExtLimit:
		o.limit, o.err = parseLimit(value)
	case ExtWindow:
		o.window, o.err = policy.ParseWindow(value)
	case ExtKey:
		o.key, o.err = ParseKey(value, hops)
	case ExtScope:
		o.scope, o.err = value, policy.CheckScope(value)
	case ExtStrategy:
		if value == "" {
			o.err = errors.New("empty strategy name")
		} else {
			o.strategy, o.err = limiter.ParseStrategy(value)
		}
	default:
		o.err = errors.New("unknown extension")
	}
	return o
}

func parseLimit(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("not a decimal integer: %w", err)
	}
	if n < 1 {
		return 0, fmt.Errorf("%d: must be at least 1", n)
	}
	return n, nil
}
