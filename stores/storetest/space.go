package storetest

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// SpaceEnv enables BenchSpace: it writes a million records, which no CI
// run should, so it runs only with CONVERGO_SPACE_BENCH=1.
const SpaceEnv = "CONVERGO_SPACE_BENCH"

// BenchSpace measures what tombstone collection gives back. One store gets
// n records created and deleted, and survivors records that stay; it is
// purged under a horizon past everything. A second store gets the
// survivors alone. live reports the bytes a store takes (each store says
// what it measures); the benchmark reports both and their ratio
// (purged/survivors, ideally 1). It runs once, whatever b.N.
func BenchSpace(b *testing.B, newStore Factory, live func(testing.TB, stores.Store) int64, n, survivors int) {
	if os.Getenv(SpaceEnv) != "1" {
		b.Skipf("set %s=1 to run the space benchmark (it writes %d records)", SpaceEnv, n+survivors)
	}
	ctx := context.Background()
	const coll = "space"
	title := func(i int) []byte { return val(b, fmt.Sprintf("a task title of some length, number %d", i)) }
	yes := val(b, true)
	write := func(s stores.Store, from, to int, prefix string, wall int64, deleted bool) {
		batch := make([]crdt.Change, 0, stores.MaxBatch)
		flush := func() {
			if _, err := s.Apply(ctx, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
		for i := from; i < to; i++ {
			id := fmt.Sprintf("%s-%08d", prefix, i)
			stamp := crdt.Stamp{Wall: wall, Replica: "replica-0123456789ab"}
			var r crdt.Record
			if deleted {
				r = crdt.DeleteRecord(id, stamp)
			} else {
				r = crdt.Record{ID: id, Fields: map[string]crdt.Field{"title": {Stamp: stamp, Value: title(i)}, "done": {Stamp: stamp, Value: yes}}}
			}
			batch = append(batch, crdt.Change{Collection: coll, Record: r})
			if len(batch) == stores.MaxBatch {
				flush()
			}
		}
		if len(batch) > 0 {
			flush()
		}
	}
	const wall = int64(1_700_000_000_000)
	purged := newStore(b)
	write(purged, 0, n, "gone", wall, false)
	write(purged, 0, survivors, "kept", wall, false)
	write(purged, 0, n, "gone", wall+1, true)
	before := live(b, purged)
	head, err := purged.Head(ctx, coll)
	if err != nil {
		b.Fatal(err)
	}
	p, ok := purged.(stores.Purger)
	if !ok {
		b.Skip("the store does not purge")
	}
	h := horizon(b, purged, coll, head, wall+2)
	if sh, ok := purged.(stores.Sharder); ok {
		if h.Read, err = sh.ShardHeads(ctx, coll); err != nil {
			b.Fatal(err)
		}
	}
	total, _ := purgeAll(b, p, coll, h, 0)
	if total.Records != n {
		b.Fatalf("the purge removed %d records, want %d", total.Records, n)
	}
	after1 := live(b, purged)
	var got stores.Usage
	if u, ok := purged.(stores.Usager); ok {
		if got, err = u.Usage(ctx, coll); err != nil {
			b.Fatal(err)
		}
	}
	// The purged store is closed and dropped before the survivors' store
	// is made, so that a store measured by its process's heap is alone.
	if err := purged.Close(); err != nil {
		b.Fatal(err)
	}
	purged, p = nil, nil
	only := newStore(b)
	defer only.Close()
	write(only, 0, survivors, "kept", wall, false)
	base := live(b, only)
	if u, ok := only.(stores.Usager); ok {
		want, err := u.Usage(ctx, coll)
		if err != nil {
			b.Fatal(err)
		}
		if got != want {
			b.Fatalf("usage after the purge %+v, survivors alone %+v", got, want)
		}
	}
	b.ReportMetric(float64(before), "bytes-before")
	b.ReportMetric(float64(after1), "bytes-purged")
	b.ReportMetric(float64(base), "bytes-survivors")
	b.ReportMetric(float64(after1)/float64(base), "ratio")
	b.Logf("%d deleted + %d survivors: %d bytes before the purge, %d after (%d records, %d record bytes reclaimed, %d per tombstone); survivors alone %d; ratio %.3f",
		n, survivors, before, after1, total.Records, total.Bytes, total.Bytes/int64(max(total.Records, 1)), base, float64(after1)/float64(base))
	// The allowance of docs/benchmarks.md ("Tombstone collection: space").
	if limit := spaceAllowance(base); after1 > limit {
		b.Errorf("the purged store takes %d bytes, over the allowance of %d (1.10 × survivors alone + 1 MiB)", after1, limit)
	}
}

// spaceAllowance is the most bytes a purged store may take when the
// survivors alone take base: 1.10 × base + 1 MiB.
func spaceAllowance(base int64) int64 { return base + base/10 + 1<<20 }
