package storetest

import (
	"context"
	"errors"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// purgeEpochBumps are the ways a collection's epoch changes between the
// engine's reading of it (with the heads its read horizon is made of)
// and its Purge: a rebuild (BumpEpoch, Rebuilt), the engine's proof that
// the log went back (BumpEpoch, HistoryLost) and a restore
// (BumpEpochs).
var purgeEpochBumps = []struct {
	name string
	bump func(context.Context, stores.Store, string) error
}{
	{"Rebuilt", func(ctx context.Context, s stores.Store, coll string) error {
		return s.BumpEpoch(ctx, coll, stores.Rebuilt)
	}},
	{"HistoryLost", func(ctx context.Context, s stores.Store, coll string) error {
		return s.BumpEpoch(ctx, coll, stores.HistoryLost)
	}},
	{"BumpEpochs", func(ctx context.Context, s stores.Store, _ string) error { return s.BumpEpochs(ctx) }},
}

// testPurgeEpoch checks that Purge purges only in the epoch its horizon
// is of. The read horizon's positions are of one history of the log:
// after a new epoch began (the store went back and the log's positions
// are handed out again, or the log was rebuilt), a position at or below
// it may hold an entry no reader of the new epoch has read, and a
// tombstone removed there would bring its record back to the readers
// that hold it, or hide its delete from those that do not. So a Purge
// whose horizon is of an epoch the collection has left refuses
// (ErrEpochChanged) and changes nothing; under the new epoch it purges.
func testPurgeEpoch(t *testing.T, f Factory) {
	for _, b := range purgeEpochBumps {
		t.Run(b.name, func(t *testing.T) {
			s := open(t, f)
			p := purger(t, s)
			ctx := context.Background()
			const coll = "purge-epoch"
			apply(t, s,
				chg(coll, crdt.SetField("x", "f", val(t, 1), st(10, "w"))),
				chg(coll, crdt.SetField("live", "f", val(t, 2), st(10, "w"))),
				chg(coll, crdt.DeleteRecord("x", st(20, "w"))),
			)
			m := meta(t, s, coll)
			h := horizon(t, s, coll, head(t, s, coll), 100)
			before := pullAll(t, s, coll, 0, stores.MaxPage)
			u0 := usageMatches(t, s, coll, "before the purge")

			if err := b.bump(ctx, s, coll); err != nil {
				t.Fatalf("bump: %v", err)
			}
			if now := meta(t, s, coll); now.Epoch == m.Epoch {
				t.Fatalf("epoch %d after the bump, the same as before", now.Epoch)
			}
			res, err := p.Purge(ctx, coll, h, stores.PurgeScan{})
			if !errors.Is(err, stores.ErrEpochChanged) {
				t.Errorf("Purge under a horizon of epoch %d after the collection's epoch changed: error %v (purged %+v), want one wrapping %v", m.Epoch, err, res, stores.ErrEpochChanged)
			}
			after := pullAll(t, s, coll, 0, stores.MaxPage)
			if len(after) != len(before) {
				t.Fatalf("after the refused purge the log holds %d entries, want the %d before", len(after), len(before))
			}
			for i, e := range after {
				if e.Seq != before[i].Seq || !e.Record.Equal(before[i].Record) {
					t.Fatalf("after the refused purge, entry %d is %d %s, want %d %s as before", i, e.Seq, fmtRecord(e.Record), before[i].Seq, fmtRecord(before[i].Record))
				}
			}
			if u := usageMatches(t, s, coll, "after the refused purge"); u != u0 {
				t.Fatalf("usage %+v after the refused purge, want %+v as before", u, u0)
			}

			// Under a horizon of the new epoch, the purge goes ahead.
			h = horizon(t, s, coll, head(t, s, coll), 100)
			total, _ := purgeAll(t, p, coll, h, 0)
			if total.Records != 1 {
				t.Fatalf("Purge under a horizon of the new epoch removed %d records, want 1 (x)", total.Records)
			}
			usageMatches(t, s, coll, "after the purge")
		})
	}
}
