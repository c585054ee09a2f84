package dynamodb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

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

// TestRepairUnreadableRecordItems: record items that hold no readable
// record (no rec attribute, one of another type, bytes that are no
// record, another record's) are dropped by the rebuild, counted in the
// report's Lost and in a new epoch, history lost, as Redis's Repair does,
// not left unlisted and uncounted: such an item is in no log, so no
// reader pulls it, and a write of its id meets it for ever.
func TestRepairUnreadableRecordItems(t *testing.T) {
	db, _, _ := testClients(t)
	table := plainTable(t, db)
	st := openTest(t, db, nil, table)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const coll = "todos"
	for _, id := range []string{"r1", "r2"} {
		ch := crdt.Change{Collection: coll, Record: crdt.SetField(id, "n", val(t, id), stamp(1, "w"))}
		if _, err := st.Apply(ctx, []crdt.Change{ch}); err != nil {
			t.Fatal(err)
		}
	}
	other, err := crdt.EncodeRecord(crdt.SetField("r1", "n", val(t, "x"), stamp(2, "w")))
	if err != nil {
		t.Fatal(err)
	}
	bad := map[string]types.AttributeValue{
		"b1": nil,                         // no rec
		"b2": s("not binary"),             // rec of another type
		"b3": b([]byte{0xff, 0x00, 0x01}), // no record
		"b4": b(other),                    // another record's
	}
	for id, rec := range bad {
		item := map[string]types.AttributeValue{attrPK: s(recordPK(coll, id)), attrSK: n(0), attrSeq: n(9), attrCvg: n(1)}
		if rec != nil {
			item[attrRec] = rec
		}
		if _, err := db.PutItem(ctx, &awsdynamodb.PutItemInput{TableName: &table, Item: item}); err != nil {
			t.Fatal(err)
		}
	}
	before, err := st.Meta(ctx, coll)
	if err != nil {
		t.Fatal(err)
	}
	for _, run := range []struct {
		name   string
		repair func() (stores.RepairReport, error)
	}{
		{"Repair", func() (stores.RepairReport, error) { return st.Repair(ctx, coll) }},
		{"RepairAll", func() (stores.RepairReport, error) {
			var rep stores.RepairReport
			err := st.RepairAll(ctx, func(c string, r stores.RepairReport) {
				if c == coll {
					rep = r
				}
			})
			return rep, err
		}},
	} {
		rep, err := run.repair()
		if err != nil {
			t.Fatalf("%s: %v", run.name, err)
		}
		want := stores.RepairReport{Records: 2, Lost: len(bad), Head: 2}
		if run.name == "RepairAll" {
			want.Lost = 0 // the first run dropped them
		}
		if rep != want {
			t.Fatalf("%s reported %+v; want %+v", run.name, rep, want)
		}
	}
	after, err := st.Meta(ctx, coll)
	if err != nil {
		t.Fatal(err)
	}
	if after.Lost <= before.Epoch {
		t.Fatalf("meta %+v after a repair that dropped unreadable records, was %+v: want a new epoch, history lost", after, before)
	}
	for id := range bad {
		out, err := db.GetItem(ctx, &awsdynamodb.GetItemInput{TableName: &table, Key: key(recordPK(coll, id), 0), ConsistentRead: ptr(true)})
		if err != nil {
			t.Fatal(err)
		}
		if out.Item != nil {
			t.Fatalf("record item %s is still there after the repair: %v", id, out.Item)
		}
		ch := crdt.Change{Collection: coll, Record: crdt.SetField(id, "n", val(t, id), stamp(3, "w"))}
		if _, err := st.Apply(ctx, []crdt.Change{ch}); err != nil {
			t.Fatalf("write %s after the repair: %v", id, err)
		}
	}
	ids := pullIDs(ctx, t, st, coll)
	slices.Sort(ids)
	if want := []string{"b1", "b2", "b3", "b4", "r1", "r2"}; !slices.Equal(ids, want) {
		t.Fatalf("a pull from the beginning delivers %v; want %v", ids, want)
	}
}

// TestRepairInterruptedAfterDrops: a Repair that dropped an unreadable
// record item and stopped before its new epoch is finished by a second
// run, which finds nothing to drop: its new epoch is still history lost
// (clients give back what they hold), not rebuilt.
func TestRepairInterruptedAfterDrops(t *testing.T) {
	ft := &faultTransport{next: http.DefaultTransport}
	dropped := false
	ft.pick = func(op string, body []byte) fault {
		if op != "TransactWriteItems" && op != "UpdateItem" {
			return fault{}
		}
		if dropped {
			return fault{status: 400, body: `{"__type":"com.amazonaws.dynamodb.v20120810#ValidationException","message":"injected: the process stopped"}`}
		}
		if bytes.Contains(body, []byte(`"Delete"`)) && bytes.Contains(body, []byte(`~r#todos#b1`)) {
			dropped = true
		}
		return fault{}
	}
	db, _, _ := testClients(t)
	table := plainTable(t, db)
	st := openTest(t, db, nil, table)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const coll = "todos"
	ch := crdt.Change{Collection: coll, Record: crdt.SetField("r1", "n", val(t, 1), stamp(1, "w"))}
	if _, err := st.Apply(ctx, []crdt.Change{ch}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.PutItem(ctx, &awsdynamodb.PutItemInput{TableName: &table, Item: map[string]types.AttributeValue{
		attrPK: s(recordPK(coll, "b1")), attrSK: n(0), attrSeq: n(9), attrCvg: n(1),
	}}); err != nil {
		t.Fatal(err)
	}
	before, err := st.Meta(ctx, coll)
	if err != nil {
		t.Fatal(err)
	}
	faulty, _, _ := clientsVia(t, ft)
	if _, err := openTest(t, faulty, nil, table).Repair(ctx, coll); err == nil || !dropped {
		t.Fatalf("the first Repair: %v, dropped %v: the interruption is not the one this test makes", err, dropped)
	}
	rep, err := st.Repair(ctx, coll)
	if err != nil {
		t.Fatal(err)
	}
	if want := (stores.RepairReport{Records: 1, Head: 1}); rep != want {
		t.Fatalf("the second Repair reported %+v; want %+v", rep, want)
	}
	after, err := st.Meta(ctx, coll)
	if err != nil {
		t.Fatal(err)
	}
	if after.Lost <= before.Epoch {
		t.Fatalf("meta %+v after a repair whose first run dropped a record, was %+v: want a new epoch, history lost", after, before)
	}
}

// TestFencedCollectionSaysSo: a rebuild that stopped (an interrupted
// mark-restored, repair or reshard) leaves its collection fenced until
// it is run again. Its writers' and readers' error says so: it is
// stores.ErrFenced (the engine's readiness does not count it, the other
// collections being served) as well as ErrUnavailable (clients retry),
// and names the command that fenced it, since when, and that it must run
// again if it no longer runs.
func TestFencedCollectionSaysSo(t *testing.T) {
	db, _, _ := testClients(t)
	table := plainTable(t, db)
	st := openTest(t, db, nil, table)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tc := range []struct{ op, coll, command string }{
		{"repair", "todos", "convergo repair"},
		{"reshard", "notes", "convergo store reshard"},
	} {
		ch := crdt.Change{Collection: tc.coll, Record: crdt.SetField("r1", "n", val(t, 1), stamp(1, "w"))}
		if _, err := st.Apply(ctx, []crdt.Change{ch}); err != nil {
			t.Fatal(err)
		}
		k := 0
		if tc.op == "reshard" {
			k = 2
		}
		if _, _, err := st.startRebuild(ctx, tc.op, tc.coll, k); err != nil { // and stopped there
			t.Fatal(err)
		}
		plain := openTest(t, db, nil, table)
		_, applyErr := plain.Apply(ctx, []crdt.Change{ch})
		_, metaErr := plain.Meta(ctx, tc.coll)
		t.Logf("%s: %v", tc.op, applyErr)
		for what, err := range map[string]error{"apply": applyErr, "meta": metaErr} {
			if !errors.Is(err, stores.ErrFenced) || !errors.Is(err, stores.ErrUnavailable) {
				t.Fatalf("%s of %s fenced by an interrupted %s: %v; want stores.ErrFenced and stores.ErrUnavailable", what, tc.coll, tc.op, err)
			}
			for _, want := range []string{tc.command, "since", "run it again"} {
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("%s of %s fenced by an interrupted %s: %q does not say %q", what, tc.coll, tc.op, err, want)
				}
			}
		}
	}
}
