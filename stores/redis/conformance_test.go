package redis

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/storetest"
)

// TestConformance runs the stores conformance suite against a single Redis
// and against a Redis Cluster; every subtest gets a store with its own key
// prefix, whose keys are deleted when it ends.
func TestConformance(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		storetest.Run(t, func(t testing.TB) stores.Store {
			return openStore(t, tg, Options{})
		})
	})
}

// TestConformanceReopen opens a second store on the same prefix after
// closing the first, as a restarted server does.
func TestConformanceReopen(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		prefixes := map[stores.Store]string{}
		storetest.RunReopen(t, func(t testing.TB) stores.Store {
			p := uniquePrefix()
			s := openStore(t, tg, Options{KeyPrefix: p})
			prefixes[s] = p
			return s
		}, func(t testing.TB, s stores.Store) stores.Store {
			p := prefixes[s]
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			return openStore(t, tg, Options{KeyPrefix: p})
		})
	})
}

// BenchmarkStore runs the shared store benchmarks on a single Redis.
func BenchmarkStore(b *testing.B) {
	tg := singleTarget(b)
	storetest.Bench(b, func(t testing.TB) stores.Store { return openStore(t, tg, Options{}) })
}

// BenchmarkApplyFields measures apply throughput in field changes per
// second on a single Redis: batches of records with several fields each,
// new records and updates of existing ones, from one goroutine (bound by
// the round trip) and from 8×GOMAXPROCS (bound by the server). Every field change wins, so the script writes it.
func BenchmarkApplyFields(b *testing.B) {
	tg := singleTarget(b)
	for _, bc := range []struct {
		name              string
		batch, fields, gs int
	}{
		{"batch1x1", 1, 1, 0},
		{"batch100x5", 100, 5, 0},
		{"batch1000x5", 1000, 5, 0},
		{"parallel/batch10x5", 10, 5, 8},
		{"parallel/batch100x5", 100, 5, 8},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := openStore(b, tg, Options{})
			ctx := context.Background()
			values := make([][]byte, bc.fields)
			names := make([]string, bc.fields)
			for i := range values {
				values[i] = mustValue(b, fmt.Sprintf("value of field %d", i))
				names[i] = fmt.Sprintf("f%d", i)
			}
			var workers atomic.Int64
			work := func(next func() bool) {
				replica := fmt.Sprintf("w%d", workers.Add(1))
				wall := int64(0)
				for next() {
					wall++
					batch := make([]crdt.Change, bc.batch)
					for j := range batch {
						// Record ids cycle over 2×batch ids: updates and
						// new records alternate.
						r := crdt.Record{ID: fmt.Sprintf("%s-%d", replica, (int(wall)*bc.batch+j)%(2*bc.batch)), Fields: make(map[string]crdt.Field, bc.fields)}
						for k := range bc.fields {
							r.Fields[names[k]] = crdt.Field{Stamp: crdt.Stamp{Wall: wall, Replica: replica}, Value: values[k]}
						}
						batch[j] = crdt.Change{Collection: "bench", Record: r}
					}
					res, err := s.Apply(ctx, batch)
					if err != nil {
						b.Error(err)
						return
					}
					if !res[len(res)-1].Changed {
						b.Error("a benchmark change altered nothing")
						return
					}
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			if bc.gs == 0 {
				work(b.Loop)
			} else {
				b.SetParallelism(bc.gs) // gs×GOMAXPROCS goroutines
				b.RunParallel(func(pb *testing.PB) { work(pb.Next) })
			}
			b.ReportMetric(float64(b.N*bc.batch*bc.fields)/b.Elapsed().Seconds(), "fields/s")
			b.ReportMetric(float64(b.N*bc.batch)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
