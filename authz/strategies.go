package authz

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/floodgate-rl/floodgate/limiter"
)

// namedStrategy is one of a Server's strategies.
type namedStrategy struct {
	name     string
	strategy limiter.Strategy
	degraded DegradedStrategy // strategy, when it implements DegradedStrategy
}

// allow asks the strategy, through AllowDegraded when it has it.
func (n namedStrategy) allow(ctx context.Context, r limiter.Request, now time.Time) (limiter.Decision, string, error) {
	if n.degraded != nil {
		return n.degraded.AllowDegraded(ctx, r, now)
	}
	d, err := n.strategy.Allow(ctx, r, now)
	return d, "", err
}

func newNamedStrategy(name string, s limiter.Strategy) namedStrategy {
	n := namedStrategy{name: name, strategy: s}
	n.degraded, _ = s.(DegradedStrategy)
	return n
}

// strategySet holds a Server's strategies: the default one, and those a
// route (floodgate.strategy) or a policy rule may choose by name. The
// Server knows them only as limiter.Strategy values under their names, so
// a new strategy never changes package authz. It is immutable.
type strategySet struct {
	def    namedStrategy
	byName map[string]namedStrategy
}

// newStrategySet builds the set of NewServer: def is the strategy called
// defName ("" meaning limiter.DefaultStrategy), others the strategies by
// name (which may include defName, for the same or another instance: def
// wins).
func newStrategySet(def limiter.Strategy, defName string, others map[string]limiter.Strategy) (strategySet, error) {
	name, err := limiter.ParseStrategy(defName)
	if err != nil {
		return strategySet{}, fmt.Errorf("default strategy: %w", err)
	}
	set := strategySet{def: newNamedStrategy(name, def), byName: map[string]namedStrategy{name: newNamedStrategy(name, def)}}
	for n, s := range others {
		if n == "" {
			return strategySet{}, errors.New("strategies: empty name")
		}
		if _, err := limiter.ParseStrategy(n); err != nil {
			return strategySet{}, fmt.Errorf("strategies: %w", err)
		}
		if s == nil {
			return strategySet{}, fmt.Errorf("strategies: %s is nil", n)
		}
		if n != name {
			set.byName[n] = newNamedStrategy(n, s)
		}
	}
	return set, nil
}

// get returns the strategy called name, the default for "", and false when
// the Server has none of that name.
func (ss *strategySet) get(name string) (namedStrategy, bool) {
	if name == "" || name == ss.def.name {
		return ss.def, true
	}
	n, ok := ss.byName[name]
	return n, ok
}

// names lists the available strategies, sorted.
func (ss *strategySet) names() string {
	names := make([]string, 0, len(ss.byName))
	for n := range ss.byName {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// tokenBucketSpan is the bound of limiter.TokenBucket on Burst (Limit when
// Burst is zero) times Window in milliseconds, and on Limit: 2^61. The
// limiter does not export it; serves must agree with newGCRA in
// limiter/tokenbucket.go.
const tokenBucketSpan = 1 << 61

// serves reports whether the strategy called name (one of
// limiter.Strategies) can decide r, by the strategy's own rules: r is valid
// (limiter.Request.Validate), a sliding log takes at most
// limiter.MaxSlidingLogLimit, and a token bucket's burst times its window
// in milliseconds stays within 2^61. A Request it refuses would make every
// decision fail, and the fail mode answer.
func serves(name string, r limiter.Request) error {
	if err := r.Validate(); err != nil {
		return err
	}
	switch name {
	case limiter.StrategySlidingLog:
		if r.Limit > limiter.MaxSlidingLogLimit {
			return fmt.Errorf("limit %d: strategy %s takes at most %d", r.Limit, name, limiter.MaxSlidingLogLimit)
		}
	case limiter.StrategyTokenBucket:
		burst := r.Burst
		if burst == 0 {
			burst = r.Limit
		}
		if r.Limit > tokenBucketSpan || burst > tokenBucketSpan/r.Window.Milliseconds() {
			return fmt.Errorf("limit %d, burst %d per %s: strategy %s takes burst times window (ms) up to 2^61", r.Limit, burst, r.Window, name)
		}
	}
	return nil
}
