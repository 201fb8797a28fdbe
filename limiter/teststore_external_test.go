package limiter_test

import (
	"testing"
	"time"

	"github.com/floodgate-rl/floodgate/limiter"
	"github.com/floodgate-rl/floodgate/limiter/storetest"
)

// TestTestStoreConformance holds the internal tests' store to the contract
// of limiter.Store, as the stores floodgate runs on are.
func TestTestStoreConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) limiter.Store { return limiter.NewTestStore(time.Now) })
}
