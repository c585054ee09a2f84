package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// TestPurgeAfterReshardElsewhere: an instance computes a horizon of a
// collection of K = 2 shards, and before it purges, another instance
// rebuilds the log into 4 shards (new epoch, records numbered anew). The
// horizon's positions are of the old logs: the purge must refuse, not
// apply them to the new logs by the K it still has cached, where a
// position below the horizon holds a record whose delete no reader had
// read in the old log.
func TestPurgeAfterReshardElsewhere(t *testing.T) {
	db, _, _ := testClients(t)
	table := plainTable(t, db)
	a, p := openShards(t, db, nil, table, 2), openShards(t, db, nil, table, 2)
	ctx := context.Background()
	const coll = "c"
	// x: deleted last, so that it heads its shard of 2, and in shard 0 or
	// 1 of 4, numbered anew at the bottom of that log.
	x := ""
	for i := 0; x == ""; i++ {
		if id := fmt.Sprint("x", i); stores.ShardOf(id, 4) < 2 {
			x = id
		}
	}
	var changes []crdt.Change
	for i := range 24 {
		changes = append(changes, crdt.Change{Collection: coll, Record: crdt.SetField(fmt.Sprint("r", i), "f", []byte{0x01}, crdt.Stamp{Wall: 10, Replica: "w"})})
	}
	changes = append(changes, crdt.Change{Collection: coll, Record: crdt.SetField(x, "f", []byte{0x01}, crdt.Stamp{Wall: 10, Replica: "w"})})
	if _, err := a.Apply(ctx, changes); err != nil {
		t.Fatal(err)
	}
	res, err := a.Apply(ctx, []crdt.Change{{Collection: coll, Record: crdt.DeleteRecord(x, crdt.Stamp{Wall: 20, Replica: "w"})}})
	if err != nil {
		t.Fatal(err)
	}
	heads, err := p.ShardHeads(ctx, coll) // p caches K = 2
	if err != nil {
		t.Fatal(err)
	}
	old := stores.ShardOf(x, 2)
	if heads[old] != res[0].Seq {
		t.Fatalf("x's delete at seq %d, shard %d's head %d", res[0].Seq, old, heads[old])
	}
	heads[old]-- // a reader has not read x's delete
	m, err := p.Meta(ctx, coll)
	if err != nil {
		t.Fatal(err)
	}
	h := stores.Horizon{Epoch: m.Epoch, Read: heads, Wall: 100}

	if err := a.Reshard(ctx, coll, 4); err != nil {
		t.Fatal(err)
	}
	_, err = p.Purge(ctx, coll, h, stores.PurgeScan{})
	if !errors.Is(err, stores.ErrEpochChanged) {
		t.Errorf("a purge under a horizon of 2 shards after the log was rebuilt into 4: %v; want %v", err, stores.ErrEpochChanged)
	}
	if _, gerr := a.Get(ctx, coll, x); errors.Is(gerr, stores.ErrNotFound) {
		t.Errorf("x's tombstone was purged, though no reader had read its delete (purge: %v)", err)
	}
}
