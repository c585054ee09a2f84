package dynamodb

import (
	"testing"

	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/storetest"
)

// TestConformance runs the stores.Store suite against DynamoDB Local, each
// subtest on its own table.
func TestConformance(t *testing.T) {
	db, _, _ := testClients(t)
	storetest.Run(t, func(t testing.TB) stores.Store {
		return openTest(t, db, nil, testTable(t, db))
	})
}

// TestConformanceWithCapture runs the suite with the stream consumer on:
// its notifications and re-applies must not break any promise.
func TestConformanceWithCapture(t *testing.T) {
	if testing.Short() {
		t.Skip("short: the suite without capture covers the store")
	}
	db, streams, _ := testClients(t)
	storetest.Run(t, func(t testing.TB) stores.Store {
		return openTest(t, db, streams, testTable(t, db))
	})
}

func BenchmarkStore(b *testing.B) {
	db, _, _ := testClients(b)
	storetest.Bench(b, func(t testing.TB) stores.Store {
		return openTest(t, db, nil, testTable(t, db))
	})
}
