package redis

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// TestCompareAndSetFallback interleaves two stores on the same keys (two
// server instances): between the moment the first one reads the records of
// a batch and the moment its script runs, the second applies a batch of
// its own to some of the same records. The first one's script then finds
// those records changed and merges their changes itself. Both batches'
// results, and everything the store holds after, must equal the Go model
// applying the second batch and then the first, in order; and the
// fallback must have been taken (the test would prove nothing otherwise).
func TestCompareAndSetFallback(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		prefix := uniquePrefix()
		s := openStore(t, tg, Options{KeyPrefix: prefix})
		other := openStore(t, tg, Options{KeyPrefix: prefix})
		n := 0
		var fell uint64
		var colls []string
		rapid.Check(t, func(t *rapid.T) {
			n++
			coll := fmt.Sprintf("cas%d", n)
			m := newModel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			genBatch := func(label string) []crdt.Change {
				return rapid.SliceOfN(rapid.Custom(func(t *rapid.T) crdt.Change {
					return crdt.Change{Collection: coll, Record: genRecord("r1", "r2", "é").Draw(t, "record")}
				}), 1, 6).Draw(t, label)
			}
			for range rapid.IntRange(1, 4).Draw(t, "rounds") {
				mine, theirs := genBatch("mine"), genBatch("theirs")
				wantTheirs := m.apply(theirs)
				wantMine := m.apply(mine)
				var gotTheirs []stores.Result
				var errTheirs error
				ran := false
				s.commits.beforeExec = func(int) {
					if !ran {
						ran = true
						gotTheirs, errTheirs = other.Apply(ctx, theirs)
					}
				}
				gotMine, err := s.Apply(ctx, mine)
				s.commits.beforeExec = nil
				if err != nil || errTheirs != nil {
					t.Fatalf("apply: mine %v, theirs %v", err, errTheirs)
				}
				if !ran {
					t.Fatalf("the other store's batch did not run between the read and the script")
				}
				if !slices.EqualFunc(gotTheirs, wantTheirs, sameResult) {
					t.Fatalf("their results: got %+v, want %+v", gotTheirs, wantTheirs)
				}
				if !slices.EqualFunc(gotMine, wantMine, sameResult) {
					t.Fatalf("my results: got %+v, want %+v", gotMine, wantMine)
				}
			}
			checkAgainstModel(t, s, m, []string{coll})
			colls = append(colls, coll)
			fell = s.commits.fellBack.Load()
		})
		for _, coll := range colls {
			checkUsage(t, s, coll, "after interleaved batches")
		}
		if fell == 0 {
			t.Fatalf("no record took the script's merge: the interleaving never changed a record the first store had read")
		}
	})
}
