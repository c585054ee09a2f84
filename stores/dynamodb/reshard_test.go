package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"testing"

	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// TestReshard rebuilds a collection's log from K = 1 to 4, 2 and back to
// 1 on DynamoDB Local. After each rebuild: K and the epoch are new (cause
// rebuilt, nothing lost), every record is in its shard's log once, at its
// record's seq, numbered 1..n in each shard without a gap; the heads and
// usage agree; an instance that still routes by the old K fails one call
// (ErrUnavailable) and then writes into the new shards. A rebuild
// interrupted after its fence refuses writers until a second run finishes
// it, and refuses a different K meanwhile.
func TestReshard(t *testing.T) {
	db, _, _ := testClients(t)
	table := plainTable(t, db)
	ctx := context.Background()
	a, stale := openTest(t, db, nil, table), openTest(t, db, nil, table)
	const coll = "todos"
	want := map[string]crdt.Record{}
	put := func(s *Store, id string, wall int64) error {
		ch := crdt.Change{Collection: coll, Record: crdt.SetField(id, "title", val(t, fmt.Sprint(id, wall)), stamp(wall, "client"))}
		if _, err := s.Apply(ctx, []crdt.Change{ch}); err != nil {
			return err
		}
		r, ok := want[id]
		if !ok {
			r = crdt.Record{ID: id}
		}
		r.Merge(ch.Record)
		want[id] = r
		return nil
	}
	for i := range 40 {
		if err := put(a, fmt.Sprint("r", i), 1); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 10 { // updates: their first log entries were compacted
		if err := put(a, fmt.Sprint("r", i), 2); err != nil {
			t.Fatal(err)
		}
	}
	if err := put(stale, "s0", 1); err != nil { // stale caches K = 1 and the head
		t.Fatal(err)
	}
	usageBefore, err := a.Usage(ctx, coll)
	if err != nil {
		t.Fatal(err)
	}

	// check checks the logs of K shards; fresh ones (just rebuilt) are
	// numbered 1..n in each shard, and the heads sum to the records.
	check := func(k int, fresh bool) {
		t.Helper()
		m, err := a.Meta(ctx, coll)
		if err != nil {
			t.Fatal(err)
		}
		if m.Shards != k {
			t.Fatalf("Meta.Shards = %d, want %d", m.Shards, k)
		}
		seen := 0
		for sh := range k {
			var p stores.Page
			if k == 1 {
				p, err = a.Pull(ctx, coll, 0, stores.PageLimit{Records: 1000, Bytes: stores.DefaultPageBytes})
			} else {
				p, err = a.PullShard(ctx, coll, sh, 0, stores.PageLimit{Records: 1000, Bytes: stores.DefaultPageBytes})
			}
			if err != nil {
				t.Fatal(err)
			}
			for i, e := range p.Entries {
				if fresh && e.Seq != uint64(i+1) || i > 0 && e.Seq <= p.Entries[i-1].Seq {
					t.Fatalf("K=%d shard %d: entry %d at seq %d: a gap", k, sh, i, e.Seq)
				}
				if got := stores.ShardOf(e.Record.ID, k); got != sh {
					t.Fatalf("K=%d: %s in shard %d, belongs in %d", k, e.Record.ID, sh, got)
				}
				w, ok := want[e.Record.ID]
				if !ok || !e.Record.Equal(w.Normalize()) {
					t.Fatalf("K=%d: log holds %v, want %v", k, e.Record, w)
				}
				g, err := a.Get(ctx, coll, e.Record.ID)
				if err != nil || g.Seq != e.Seq {
					t.Fatalf("K=%d: record %s at seq %d (%v), log entry at %d", k, e.Record.ID, g.Seq, err, e.Seq)
				}
				seen++
			}
		}
		if seen != len(want) {
			t.Fatalf("K=%d: logs hold %d records, want %d", k, seen, len(want))
		}
		head, err := a.Head(ctx, coll)
		if err != nil || fresh && head != uint64(len(want)) {
			t.Fatalf("K=%d: head %d (%v), want %d", k, head, err, len(want))
		}
	}

	epoch := func() stores.Meta {
		t.Helper()
		m, err := a.Meta(ctx, coll)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	for i, k := range []int{4, 2, 1} {
		before := epoch()
		if err := a.Reshard(ctx, coll, k); err != nil {
			t.Fatalf("reshard to %d: %v", k, err)
		}
		check(k, true)
		after := epoch()
		if after.Epoch <= before.Epoch || after.Lost != before.Lost {
			t.Fatalf("reshard to %d: epoch %+v after %+v, want a new epoch of cause rebuilt", k, after, before)
		}
		u, err := a.Usage(ctx, coll)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 && u != usageBefore {
			t.Fatalf("usage %+v after the rebuild, %+v before", u, usageBefore)
		}
		// The stale instance routes by the old K: refused once, then right.
		id := fmt.Sprint("s", k)
		if err := put(stale, id, 3); !errors.Is(err, stores.ErrUnavailable) {
			t.Fatalf("a write routed by the old K after resharding to %d: %v, want ErrUnavailable", k, err)
		}
		if err := put(stale, id, 3); err != nil {
			t.Fatalf("the retry: %v", err)
		}
		check(k, false)
		if err := put(a, "r0", int64(10+k)); err != nil {
			t.Fatal(err)
		}
		check(k, false)
	}

	// Interrupted after the fence: writers are refused until a second run.
	if _, err := db.UpdateItem(ctx, &awsdynamodb.UpdateItemInput{
		TableName: &table, Key: key(epochPK(coll), 0),
		UpdateExpression:          ptr("SET #rs = :k"),
		ExpressionAttributeNames:  map[string]string{"#rs": attrResharding},
		ExpressionAttributeValues: map[string]types.AttributeValue{":k": n(3)},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.UpdateItem(ctx, &awsdynamodb.UpdateItemInput{
		TableName: &table, Key: key(headPK(coll), 0),
		UpdateExpression:          ptr("SET #rs = :k"),
		ExpressionAttributeNames:  map[string]string{"#rs": attrResharding},
		ExpressionAttributeValues: map[string]types.AttributeValue{":k": n(3)},
	}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := put(a, "r1", 20); !errors.Is(err, stores.ErrUnavailable) {
			t.Fatalf("a write during a rebuild: %v, want ErrUnavailable", err)
		}
	}
	delete(want, "r1") // not written
	if err := a.Reshard(ctx, coll, 2); !errors.Is(err, stores.ErrInvalid) {
		t.Fatalf("reshard to 2 while one to 3 is unfinished: %v, want ErrInvalid", err)
	}
	if err := a.Reshard(ctx, coll, 3); err != nil {
		t.Fatal(err)
	}
	r1, err := a.Get(ctx, coll, "r1")
	if err != nil {
		t.Fatal(err)
	}
	want["r1"] = r1.Record
	check(3, true)
	if err := put(a, "r1", 21); err != nil {
		t.Fatal(err)
	}
	check(3, false)
}
