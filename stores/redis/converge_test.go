package redis

import (
	"testing"

	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/storetest"
)

// TestConverge runs the engine convergence simulation on a single Redis
// and on a Redis Cluster.
func TestConverge(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		storetest.Converge(t, func(t testing.TB) stores.Store { return openStore(t, tg, Options{}) })
	})
}
