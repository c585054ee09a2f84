package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// TestPurgeEpochMovesBeforeTransaction: the collection's epoch changes
// after Purge read it (and found it the horizon's) and before its
// transaction commits: a bump of the collection's counter (its epoch
// item) or of the store-wide one (the store item, `convergo store
// mark-restored`). The transaction's condition checks fail it, nothing is
// purged, and Purge says ErrEpochChanged. Each with the counters absent
// (never bumped) and present (bumped once before).
func TestPurgeEpochMovesBeforeTransaction(t *testing.T) {
	for _, b := range []struct {
		name string
		bump func(context.Context, *Store) error
	}{
		{"BumpEpoch", func(ctx context.Context, s *Store) error { return s.BumpEpoch(ctx, "c", stores.HistoryLost) }},
		{"BumpEpochs", func(ctx context.Context, s *Store) error { return s.BumpEpochs(ctx) }},
	} {
		for _, before := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/bumped-before=%v", b.name, before), func(t *testing.T) {
				ctx := context.Background()
				armed, bumped := false, false
				var other *Store
				s, _ := faultStore(t, Config{}, func(op string, _ []byte) fault {
					if op == "TransactWriteItems" && armed && !bumped {
						bumped = true
						if err := b.bump(ctx, other); err != nil {
							t.Error(err)
						}
					}
					return fault{}
				})
				plain, _, _ := testClients(t)
				other = openTest(t, plain, nil, s.table)
				if before {
					if err := other.BumpEpoch(ctx, "c", stores.Rebuilt); err != nil {
						t.Fatal(err)
					}
					if err := other.BumpEpochs(ctx); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := s.Apply(ctx, []crdt.Change{
					{Collection: "c", Record: crdt.SetField("x", "f", []byte{0x01}, crdt.Stamp{Wall: 10, Replica: "w"})},
					{Collection: "c", Record: crdt.DeleteRecord("x", crdt.Stamp{Wall: 20, Replica: "w"})},
				}); err != nil {
					t.Fatal(err)
				}
				m, err := s.Meta(ctx, "c")
				if err != nil {
					t.Fatal(err)
				}
				head, err := s.Head(ctx, "c")
				if err != nil {
					t.Fatal(err)
				}
				armed = true
				res, err := s.Purge(ctx, "c", stores.Horizon{Epoch: m.Epoch, Read: []uint64{head}, Wall: 100}, stores.PurgeScan{})
				if !bumped {
					t.Fatal("the purge wrote nothing")
				}
				if !errors.Is(err, stores.ErrEpochChanged) {
					t.Errorf("Purge whose epoch changed before its transaction: %+v, %v; want %v", res, err, stores.ErrEpochChanged)
				}
				if _, err := s.Get(ctx, "c", "x"); err != nil {
					t.Errorf("x after the purge: %v; want its tombstone kept", err)
				}
			})
		}
	}
}
