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

// TestConformanceReopen opens a second store on the same table after
// closing the first, as a restarted server does.
func TestConformanceReopen(t *testing.T) {
	db, _, _ := testClients(t)
	storetest.RunReopen(t, func(t testing.TB) stores.Store {
		return openTest(t, db, nil, plainTable(t, db))
	}, func(t testing.TB, s stores.Store) stores.Store {
		table := s.(*Store).table
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		return openTest(t, db, nil, table)
	})
}

func BenchmarkStore(b *testing.B) {
	db, _, _ := testClients(b)
	storetest.Bench(b, func(t testing.TB) stores.Store {
		return openTest(t, db, nil, plainTable(t, db))
	})
}

// TestConformanceShards runs the suite against shard 2 of collections of
// four log shards (storetest.RunShard), and TestShardsMerge the engine's
// merge of all four.
func TestConformanceShards(t *testing.T) {
	db, _, _ := testClients(t)
	storetest.RunShard(t, func(t testing.TB) stores.Store {
		return openShards(t, db, nil, plainTable(t, db), 4)
	}, 4, 2)
}
