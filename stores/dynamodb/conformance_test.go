package dynamodb

import (
	"testing"

	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/storetest"
)

// TestConformance runs the stores.Store suite against DynamoDB Local, each
// subtest on its own table. The stream consumer is off here: its paths are
// covered by TestCaptureJSWriter and TestTwoInstances, and running the whole
// suite twice against the emulator costs minutes.
func TestConformance(t *testing.T) {
	db, _, _ := testClients(t)
	storetest.Run(t, func(t testing.TB) stores.Store {
		return openTest(t, db, nil, plainTable(t, db))
	})
}

func BenchmarkStore(b *testing.B) {
	db, _, _ := testClients(b)
	storetest.Bench(b, func(t testing.TB) stores.Store {
		return openTest(t, db, nil, plainTable(t, db))
	})
}
