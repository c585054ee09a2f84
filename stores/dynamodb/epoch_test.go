package dynamodb

import (
	"context"
	"testing"
	"time"

	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/storetest"
)

// openClocked is openTest without a stream, with now as Config.Now.
func openClocked(t testing.TB, db *awsdynamodb.Client, table string, now func() time.Time) *Store {
	t.Helper()
	s, err := New(context.Background(), Config{Client: db, Table: table, Now: now})
	if err != nil {
		t.Fatalf("new store: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// epochItems holds the store item and a collection's epoch item as they
// are in the table (nil where missing).
type epochItems [2]map[string]types.AttributeValue

func epochKeys(coll string) [2]map[string]types.AttributeValue {
	return [2]map[string]types.AttributeValue{key(storePK, 0), key(epochPK(coll), 0)}
}

func readEpochItems(t testing.TB, db *awsdynamodb.Client, table, coll string) epochItems {
	t.Helper()
	var items epochItems
	for i, k := range epochKeys(coll) {
		out, err := db.GetItem(context.Background(), &awsdynamodb.GetItemInput{TableName: &table, Key: k, ConsistentRead: ptr(true)})
		if err != nil {
			t.Fatal(err)
		}
		items[i] = out.Item
	}
	return items
}

// putBack writes the items back, as a restored copy of the table holds
// them.
func (items epochItems) putBack(t testing.TB, db *awsdynamodb.Client, table, coll string) {
	t.Helper()
	ctx := context.Background()
	for i, k := range epochKeys(coll) {
		var err error
		if items[i] == nil {
			_, err = db.DeleteItem(ctx, &awsdynamodb.DeleteItemInput{TableName: &table, Key: k})
		} else {
			_, err = db.PutItem(ctx, &awsdynamodb.PutItemInput{TableName: &table, Item: items[i]})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestBumps runs the kit's bump checks, each store on its own table; a
// restore puts back the store item and the collection's epoch item as
// they were saved, a table restored from a backup. The store item is
// made before it is saved, as every table in use has one.
func TestBumps(t *testing.T) {
	db, _, _ := testClients(t)
	storetest.RunBumps(t, func(t testing.TB, now func() time.Time) stores.Store {
		return openClocked(t, db, plainTable(t, db), now)
	}, func(t testing.TB, st stores.Store, coll string) func() {
		s := st.(*Store)
		if _, err := s.Identity(context.Background()); err != nil { // the store item exists
			t.Fatal(err)
		}
		saved := readEpochItems(t, db, s.table, coll)
		return func() { saved.putBack(t, db, s.table, coll) }
	})
}

// TestBumpKeepsShards: a bump keeps the epoch item's other attributes
// (its shard count, written by a store with other defaults).
func TestBumpKeepsShards(t *testing.T) {
	db, _, _ := testClients(t)
	table := plainTable(t, db)
	clock := newFakeClock()
	ctx := context.Background()
	s := openClocked(t, db, table, clock.Now)
	sharded, err := New(ctx, Config{Client: db, Table: table, Now: clock.Now, DefaultShards: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer sharded.Close()
	if _, err := sharded.Apply(ctx, []crdt.Change{{Collection: "c", Record: crdt.SetField("r", "f", val(t, 1), stamp(1, "a"))}}); err != nil {
		t.Fatal(err)
	}
	at := uint64(clock.Now().Unix())
	if err := s.BumpEpoch(ctx, "c", stores.Rebuilt); err != nil {
		t.Fatal(err)
	}
	if err := s.BumpEpochs(ctx); err != nil {
		t.Fatal(err)
	}
	m, err := s.Meta(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	want := stores.MetaOf(at, at, 0)
	want.Shards = 2
	if m != want {
		t.Fatalf("after BumpEpoch and BumpEpochs at %d of a collection of 2 shards: Meta %+v, want %+v", at, m, want)
	}
}

// TestReshardEpochIsNextEpoch: the Rebuilt epoch a reshard ends with is
// stores.NextEpoch of the collection's counter too.
func TestReshardEpochIsNextEpoch(t *testing.T) {
	db, _, _ := testClients(t)
	table := plainTable(t, db)
	clock := newFakeClock()
	ctx := context.Background()
	s := openClocked(t, db, table, clock.Now)
	for _, id := range []string{"a", "b", "c"} {
		if _, err := s.Apply(ctx, []crdt.Change{{Collection: "c", Record: crdt.SetField(id, "f", val(t, 1), stamp(1, "a"))}}); err != nil {
			t.Fatal(err)
		}
	}
	at := uint64(clock.Now().Unix())
	for i, k := range []int{2, 1} {
		if err := s.Reshard(ctx, "c", k); err != nil {
			t.Fatalf("reshard to %d: %v", k, err)
		}
		m, err := s.Meta(ctx, "c")
		if err != nil {
			t.Fatal(err)
		}
		want := stores.MetaOf(0, at+uint64(i), 0)
		want.Shards = k
		if m != want {
			t.Fatalf("reshard %d to %d with the clock at %d: Meta %+v, want %+v", i+1, k, at, m, want)
		}
	}
}
