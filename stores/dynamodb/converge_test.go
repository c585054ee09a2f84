package dynamodb

import (
	"testing"

	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/storetest"
)

// TestConverge runs the engine convergence simulation on DynamoDB Local,
// on a table without a stream (see TestConformance), with 30 histories:
// every call is a round trip to the emulator, and rapid's 100 took 25 s
// under -race.
func TestConverge(t *testing.T) {
	db, _, _ := testClients(t)
	storetest.ConvergeN(t, func(t testing.TB) stores.Store {
		return openTest(t, db, nil, plainTable(t, db))
	}, 30)
}
