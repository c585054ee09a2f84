package dynamodb

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// TestHeadBehindLog: a table restored from a backup holds a collection's
// head item from before its last commits while their log entries and
// record items are in the copy (DynamoDB's backups and point-in-time
// restores do not keep items of one transaction together: "backups do not
// guarantee causal consistency across items"). Writes to the collection
// then go on: an update of the record at the head's next seq, and a new
// record whose seq the log already holds, are applied under seqs above
// every one the log holds (no seq handed out twice), every record is
// pulled once at its latest state, and the collection starts a new epoch,
// history lost.
func TestHeadBehindLog(t *testing.T) {
	db, _, _ := testClients(t)
	table := plainTable(t, db)
	st := openTest(t, db, nil, table)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const coll = "todos"
	for i := 1; i <= 3; i++ {
		ch := crdt.Change{Collection: coll, Record: crdt.SetField(fmt.Sprintf("r%d", i), "n", val(t, i), stamp(int64(i), "w"))}
		if _, err := st.Apply(ctx, []crdt.Change{ch}); err != nil {
			t.Fatal(err)
		}
	}
	before, err := st.Meta(ctx, coll)
	if err != nil {
		t.Fatal(err)
	}
	// The copy's head item is the one of the first commit.
	if _, err := db.UpdateItem(ctx, &awsdynamodb.UpdateItemInput{
		TableName:                 &table,
		Key:                       key(headPK(coll), 0),
		UpdateExpression:          ptr("SET #h = :h"),
		ExpressionAttributeNames:  map[string]string{"#h": attrHead},
		ExpressionAttributeValues: map[string]types.AttributeValue{":h": n(1)},
	}); err != nil {
		t.Fatal(err)
	}
	// A store opened on the restored table, as a server started after the
	// restore is.
	st = openTest(t, db, nil, table)
	writes := []crdt.Change{
		{Collection: coll, Record: crdt.SetField("r2", "n", val(t, 20), stamp(20, "w"))},
		{Collection: coll, Record: crdt.SetField("r4", "n", val(t, 4), stamp(4, "w"))},
	}
	for _, ch := range writes {
		res, err := st.Apply(ctx, []crdt.Change{ch})
		if err != nil {
			t.Fatalf("apply %s after the head was set back: %v", ch.Record.ID, err)
		}
		if res[0].Seq <= 3 {
			t.Fatalf("apply %s: seq %d, which the log held already (at most 3)", ch.Record.ID, res[0].Seq)
		}
	}
	page, err := st.Pull(ctx, coll, 0, stores.PageLimit{Records: 100, Bytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, e := range page.Entries {
		if _, dup := got[e.Record.ID]; dup {
			t.Fatalf("record %s pulled twice: %v", e.Record.ID, page.Entries)
		}
		got[e.Record.ID] = e.Record.Fields["n"].Stamp.Wall
	}
	want := map[string]int64{"r1": 1, "r2": 20, "r3": 3, "r4": 4}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("pulled %v, want %v", got, want)
	}
	after, err := st.Meta(ctx, coll)
	if err != nil {
		t.Fatal(err)
	}
	if after.Lost <= before.Epoch {
		t.Fatalf("meta %+v after the head was found behind the log, was %+v: want a new epoch, history lost", after, before)
	}
}

// TestHeadSetRightWithItsEpoch: the process that finds a head behind its
// log stops right after its write that sets the head right (every request
// after it fails, as none reaches DynamoDB from a process that died). The
// head set right and the new epoch are one state: a store opened
// afterwards must not find the head right without the new epoch, history
// lost, which nothing would start any more (the next write meets a head
// that is right), so that readers of the restored copy, whose cursors may
// name entries the copy lacks, would never be reset.
func TestHeadSetRightWithItsEpoch(t *testing.T) {
	var mu sync.Mutex
	armed, stopped := false, false
	s, _ := faultStore(t, Config{}, func(op string, body []byte) fault {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case stopped:
			return fault{status: 400, body: `{"__type":"com.amazonaws.dynamodb.v20120810#ValidationException","message":"injected: the process stopped"}`}
		case armed && bytes.Contains(body, []byte(`SET #h = :top`)):
			stopped = true // this write goes through; nothing after it
		}
		return fault{}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const coll = "todos"
	for i := 1; i <= 3; i++ {
		ch := crdt.Change{Collection: coll, Record: crdt.SetField(fmt.Sprintf("r%d", i), "n", val(t, i), stamp(int64(i), "w"))}
		if _, err := s.Apply(ctx, []crdt.Change{ch}); err != nil {
			t.Fatal(err)
		}
	}
	db, _, _ := testClients(t)
	plain := openTest(t, db, nil, s.table)
	before, err := plain.Meta(ctx, coll)
	if err != nil {
		t.Fatal(err)
	}
	setHead(t, db, s.table, coll, 1) // the restored copy's head item
	mu.Lock()
	armed = true
	mu.Unlock()
	ch := crdt.Change{Collection: coll, Record: crdt.SetField("r4", "n", val(t, 4), stamp(4, "w"))}
	_, err = s.Apply(ctx, []crdt.Change{ch})
	t.Logf("apply after the head was set back, the process stopping after the head's write: %v", err)
	mu.Lock()
	wrote := stopped
	mu.Unlock()
	if !wrote {
		t.Fatal("no write set the head right")
	}

	plain = openTest(t, db, nil, s.table)
	head, err := plain.Head(ctx, coll)
	if err != nil {
		t.Fatal(err)
	}
	after, err := plain.Meta(ctx, coll)
	if err != nil {
		t.Fatal(err)
	}
	if head > 1 && after.Lost <= before.Epoch {
		t.Fatalf("the head was set right (1 → %d), but the collection's meta is %+v, was %+v: no new epoch, history lost", head, after, before)
	}
}

// setHead sets coll's head item to head, as a restored copy may hold it.
func setHead(t *testing.T, db *awsdynamodb.Client, table, coll string, head uint64) {
	t.Helper()
	if _, err := db.UpdateItem(context.Background(), &awsdynamodb.UpdateItemInput{
		TableName:                 &table,
		Key:                       key(headPK(coll), 0),
		UpdateExpression:          ptr("SET #h = :h"),
		ExpressionAttributeNames:  map[string]string{"#h": attrHead},
		ExpressionAttributeValues: map[string]types.AttributeValue{":h": n(head)},
	}); err != nil {
		t.Fatal(err)
	}
}
