package memcache

import (
	"testing"

	"github.com/floodgate-rl/floodgate/internal/testutil"
	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/storetest"
)

func TestSwapConformance(t *testing.T) {
	storetest.RunSwap(t, func(t *testing.T) limiter.Store {
		mc := testutil.StartMemcached(t)
		return newStore(t, []string{mc.Addr()}, Config{})
	})
}
