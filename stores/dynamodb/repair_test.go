package dynamodb

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// pullIDs returns the ids a pull of every shard of coll from the beginning
// delivers, in the order of each shard's log.
func pullIDs(ctx context.Context, t *testing.T, st *Store, coll string) []string {
	t.Helper()
	m, err := st.Meta(ctx, coll)
	if err != nil {
		t.Fatal(err)
	}
	lim := stores.PageLimit{Records: 1000, Bytes: stores.DefaultPageBytes}
	var ids []string
	for sh := range max(m.Shards, 1) {
		var p stores.Page
		if m.Shards > 1 {
			p, err = st.PullShard(ctx, coll, sh, 0, lim)
		} else {
			p, err = st.Pull(ctx, coll, 0, lim)
		}
		if err != nil {
			t.Fatal(err)
		}
		if p.More {
			t.Fatalf("shard %d: more than one page", sh)
		}
		for _, e := range p.Entries {
			ids = append(ids, e.Record.ID)
		}
	}
	return ids
}

// TestRepairRecordWithoutLogEntry: a table restored from a backup that
// holds a record item without its log entry (DynamoDB's backups keep no
// transaction's items together: the record item after a commit, the log
// before it, whose old entry the commit deleted). A client heals after the
// reset: it gives the record back, the store answers duplicate (the
// record item holds it already), and the record is never pulled. Repair
// rebuilds the log from the record items: a new epoch, cause rebuilt, and
// a pull from the beginning delivers every record once.
func TestRepairRecordWithoutLogEntry(t *testing.T) {
	db, _, _ := testClients(t)
	table := plainTable(t, db)
	st := openTest(t, db, nil, table)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const coll = "todos"
	r2 := crdt.Change{Collection: coll, Record: crdt.SetField("r2", "n", val(t, 2), stamp(2, "w"))}
	for _, ch := range []crdt.Change{
		{Collection: coll, Record: crdt.SetField("r1", "n", val(t, 1), stamp(1, "w"))},
		r2,
		{Collection: coll, Record: crdt.SetField("r3", "n", val(t, 3), stamp(3, "w"))},
	} {
		if _, err := st.Apply(ctx, []crdt.Change{ch}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.DeleteItem(ctx, &awsdynamodb.DeleteItemInput{TableName: &table, Key: key(logPK(coll), 2)}); err != nil {
		t.Fatal(err)
	}
	st = openTest(t, db, nil, table)
	res, err := st.Apply(ctx, []crdt.Change{r2}) // the heal gives r2 back
	if err != nil {
		t.Fatal(err)
	}
	if ids := pullIDs(ctx, t, st, coll); slices.Contains(ids, "r2") {
		t.Fatalf("before the repair a pull delivers %v: the damage is not the one this test repairs", ids)
	}
	before, err := st.Meta(ctx, coll)
	if err != nil {
		t.Fatal(err)
	}

	rep, err := st.Repair(ctx, coll)
	if err != nil {
		t.Fatalf("repair: %v", err)
	}
	if rep != (stores.RepairReport{Records: 3, Head: 3}) {
		t.Errorf("repair reported %+v, want 3 records, head 3", rep)
	}
	after, err := st.Meta(ctx, coll)
	if err != nil {
		t.Fatal(err)
	}
	if after.Epoch <= before.Epoch || after.Lost != before.Lost {
		t.Fatalf("epoch %+v after the repair, %+v before: want a new epoch of cause rebuilt", after, before)
	}
	ids := pullIDs(ctx, t, st, coll)
	if !slices.Equal(ids, []string{"r1", "r2", "r3"}) {
		t.Fatalf("the give-back of r2 was answered %+v, and after the repair a pull from the beginning delivers %v, want [r1 r2 r3]", res[0], ids)
	}
	// The log is whole again: a write goes after the rebuilt entries.
	if _, err := st.Apply(ctx, []crdt.Change{{Collection: coll, Record: crdt.SetField("r4", "n", val(t, 4), stamp(4, "w"))}}); err != nil {
		t.Fatal(err)
	}
	if ids := pullIDs(ctx, t, st, coll); !slices.Equal(ids, []string{"r1", "r2", "r3", "r4"}) {
		t.Fatalf("after a write a pull delivers %v", ids)
	}
}

// TestRepairHealthy: Repair of a healthy collection, of one log and of
// four shards, keeps K and usage, loses nothing and starts a new epoch of
// cause rebuilt; a pull from the beginning then delivers every record
// once, as it is, at its record's seq. A second Repair does it again.
func TestRepairHealthy(t *testing.T) {
	db, _, _ := testClients(t)
	for _, k := range []int{1, 4} {
		t.Run(fmt.Sprint("K=", k), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			st := openShards(t, db, nil, plainTable(t, db), k)
			const coll = "todos"
			want := map[string]crdt.Record{}
			put := func(id string, wall int64) {
				t.Helper()
				ch := crdt.Change{Collection: coll, Record: crdt.SetField(id, "title", val(t, fmt.Sprint(id, wall)), stamp(wall, "client"))}
				if _, err := st.Apply(ctx, []crdt.Change{ch}); err != nil {
					t.Fatal(err)
				}
				r, ok := want[id]
				if !ok {
					r = crdt.Record{ID: id}
				}
				r.Merge(ch.Record)
				want[id] = r
			}
			for i := range 30 {
				put(fmt.Sprint("r", i), 1)
			}
			for i := range 8 { // updates: their first log entries were compacted
				put(fmt.Sprint("r", i), 2)
			}
			usage, err := st.Usage(ctx, coll)
			if err != nil {
				t.Fatal(err)
			}
			for run := range 2 {
				before, err := st.Meta(ctx, coll)
				if err != nil {
					t.Fatal(err)
				}
				rep, err := st.Repair(ctx, coll)
				if err != nil {
					t.Fatalf("repair %d: %v", run, err)
				}
				if rep.Records != len(want) || rep.Lost != 0 {
					t.Fatalf("repair %d reported %+v, want %d records", run, rep, len(want))
				}
				after, err := st.Meta(ctx, coll)
				if err != nil {
					t.Fatal(err)
				}
				if after.Epoch <= before.Epoch || after.Lost != before.Lost || after.Shards != before.Shards || max(after.Shards, 1) != k {
					t.Fatalf("repair %d: Meta %+v after, %+v before: want a new epoch of cause rebuilt, K = %d", run, after, before, k)
				}
				if u, err := st.Usage(ctx, coll); err != nil || u != usage {
					t.Fatalf("repair %d: usage %+v (%v), %+v before", run, u, err, usage)
				}
				ids := pullIDs(ctx, t, st, coll)
				if len(ids) != len(want) {
					t.Fatalf("repair %d: a pull delivers %d records, want %d: %v", run, len(ids), len(want), ids)
				}
				seen := map[string]bool{}
				for _, id := range ids {
					if seen[id] {
						t.Fatalf("repair %d: %s pulled twice", run, id)
					}
					seen[id] = true
					g, err := st.Get(ctx, coll, id)
					if err != nil {
						t.Fatal(err)
					}
					if w, ok := want[id]; !ok || !g.Record.Equal(w.Normalize()) {
						t.Fatalf("repair %d: %s is %v, want %v", run, id, g.Record, w)
					}
				}
			}
			put("r0", 3) // writers go on in the rebuilt log
			if ids := pullIDs(ctx, t, st, coll); len(ids) != len(want) {
				t.Fatalf("after a write a pull delivers %d records, want %d", len(ids), len(want))
			}
		})
	}
}

// TestRepairAll repairs every collection of a table, of one log shard and
// of four, and lists each once.
func TestRepairAll(t *testing.T) {
	db, _, _ := testClients(t)
	table := plainTable(t, db)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	one, four := openTest(t, db, nil, table), openShards(t, db, nil, table, 4)
	for i, st := range []*Store{one, four} {
		coll := []string{"a", "b.x"}[i]
		for _, id := range []string{"r1", "r2#3", "r3"} {
			if _, err := st.Apply(ctx, []crdt.Change{{Collection: coll, Record: crdt.SetField(id, "n", val(t, 1), stamp(1, "w"))}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	got := map[string]stores.RepairReport{}
	var order []string
	if err := one.RepairAll(ctx, func(coll string, rep stores.RepairReport) {
		got[coll] = rep
		order = append(order, coll)
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(order, []string{"a", "b.x"}) || got["a"].Records != 3 || got["b.x"].Records != 3 {
		t.Fatalf("RepairAll repaired %v: %+v, want a and b.x of 3 records each", order, got)
	}
	for _, coll := range order {
		m, err := four.Meta(ctx, coll)
		if err != nil {
			t.Fatal(err)
		}
		if ids := pullIDs(ctx, t, four, coll); len(ids) != 3 || max(m.Shards, 1) != map[string]int{"a": 1, "b.x": 4}[coll] {
			t.Fatalf("%s after RepairAll: %d shards, a pull delivers %v", coll, m.Shards, ids)
		}
	}
}
