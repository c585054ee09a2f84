package storetest

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// Bench runs the store benchmarks against stores from newStore. Each
// benchmark reports records/s besides the time per operation.
//
//   - ApplyNew100: a batch of 100 new records of 3 fields.
//   - ApplyUpdate100: a batch of 100 updates to existing records.
//   - ApplyParallel10: concurrent batches of 10 new records, from
//     GOMAXPROCS×4 goroutines: what group commit is for.
//   - Pull1000: a page of 1000 records of a 10,000-record log.
//   - Get: one record by id.
func Bench(b *testing.B, newStore Factory) {
	b.Run("ApplyNew100", func(b *testing.B) { benchApply(b, newStore, false) })
	b.Run("ApplyUpdate100", func(b *testing.B) { benchApply(b, newStore, true) })
	b.Run("ApplyParallel10", func(b *testing.B) { benchParallel(b, newStore) })
	b.Run("Pull1000", func(b *testing.B) { benchPull(b, newStore) })
	b.Run("Get", func(b *testing.B) { benchGet(b, newStore) })
}

func benchRecord(b testing.TB, id string, wall int64) crdt.Record {
	r := crdt.Record{ID: id, Fields: map[string]crdt.Field{
		"title": {Stamp: crdt.Stamp{Wall: wall, Replica: "bench"}, Value: val(b, "buy milk and "+id)},
		"done":  {Stamp: crdt.Stamp{Wall: wall, Replica: "bench"}, Value: val(b, false)},
		"order": {Stamp: crdt.Stamp{Wall: wall, Replica: "bench"}, Value: val(b, wall)},
	}}
	return r
}

func benchApply(b *testing.B, newStore Factory, update bool) {
	s := open(b, newStore)
	ctx := context.Background()
	const size, existing = 100, 1000
	if update {
		for i := 0; i < existing; i += size {
			batch := make([]crdt.Change, size)
			for j := range batch {
				batch[j] = chg("bench", benchRecord(b, fmt.Sprintf("r%d", i+j), 1))
			}
			apply(b, s, batch...)
		}
	}
	batches := make([][]crdt.Change, 0, 64)
	n := 0
	next := func() []crdt.Change {
		batch := make([]crdt.Change, size)
		for j := range batch {
			if update {
				batch[j] = chg("bench", benchRecord(b, fmt.Sprintf("r%d", (n*size+j)%existing), int64(2+n)))
			} else {
				batch[j] = chg("bench", benchRecord(b, fmt.Sprintf("r%d", n*size+j), 1))
			}
		}
		n++
		return batch
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		batches = append(batches[:0], next())
		b.StartTimer()
		res, err := s.Apply(ctx, batches[0])
		if err != nil {
			b.Fatal(err)
		}
		if !res[0].Changed {
			b.Fatal("benchmark change altered nothing")
		}
	}
	b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "records/s")
}

func benchParallel(b *testing.B, newStore Factory) {
	s := open(b, newStore)
	ctx := context.Background()
	const size = 10
	var next atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := next.Add(1)
			batch := make([]crdt.Change, size)
			for j := range batch {
				batch[j] = chg("bench", benchRecord(b, fmt.Sprintf("p%d-%d", n, j), 1))
			}
			if _, err := s.Apply(ctx, batch); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "records/s")
}

func benchPull(b *testing.B, newStore Factory) {
	s := open(b, newStore)
	ctx := context.Background()
	const records, page = 10000, 1000
	for i := 0; i < records; i += stores.MaxBatch {
		batch := make([]crdt.Change, stores.MaxBatch)
		for j := range batch {
			batch[j] = chg("bench", benchRecord(b, fmt.Sprintf("r%d", i+j), 1))
		}
		apply(b, s, batch...)
	}
	var cursor uint64
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		p, err := s.Pull(ctx, "bench", cursor, stores.PageLimit{Records: page, Bytes: 1 << 30})
		if err != nil {
			b.Fatal(err)
		}
		if len(p.Entries) != page {
			b.Fatalf("page of %d entries, want %d", len(p.Entries), page)
		}
		cursor = p.Next
		if !p.More {
			cursor = 0
		}
	}
	b.ReportMetric(float64(b.N*page)/b.Elapsed().Seconds(), "records/s")
}

func benchGet(b *testing.B, newStore Factory) {
	s := open(b, newStore)
	ctx := context.Background()
	batch := make([]crdt.Change, 1000)
	for j := range batch {
		batch[j] = chg("bench", benchRecord(b, fmt.Sprintf("r%d", j), 1))
	}
	apply(b, s, batch...)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := s.Get(ctx, "bench", fmt.Sprintf("r%d", i%1000)); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
