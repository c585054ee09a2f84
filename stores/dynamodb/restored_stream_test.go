package dynamodb

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/dynamodb/dynamotest"
	"github.com/convergo/convergo/stores/storetest"
)

// restoreInPlace deletes table and restores backup under its name as
// DynamoDB does: a new table, the items put in with no stream (a restore
// does not bring the stream settings back), then the stream enabled again
// by the operator.
func restoreInPlace(t *testing.T, db *awsdynamodb.Client, table, backup string) {
	t.Helper()
	ctx := context.Background()
	if _, err := db.DeleteTable(ctx, &awsdynamodb.DeleteTableInput{TableName: &table}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the store meets the table missing
	if err := createTable(ctx, db, table, false); err != nil {
		t.Fatal(err)
	}
	dynamotest.CopyTable(t, db, backup, table)
	if _, err := db.UpdateTable(ctx, &awsdynamodb.UpdateTableInput{
		TableName:           &table,
		StreamSpecification: &types.StreamSpecification{StreamEnabled: ptr(true), StreamViewType: types.StreamViewTypeNewAndOldImages},
	}); err != nil {
		t.Fatalf("enable the restored table's stream: %v", err)
	}
}

// TestStreamAfterRestoreInPlace: a store with a stream consumer that runs
// through a restore in place (the table deleted, the backup restored under
// its name, its stream enabled again) reads the restored table's stream:
// a foreign write to an item captured before the backup and one to a new
// item are captured, and a write by another server wakes its watchers,
// within a bound. Its consumer says at warn or error that it changed
// streams, and the copy starts its new epoch (the consumer saw the table
// change although the store made no other request of it meanwhile).
func TestStreamAfterRestoreInPlace(t *testing.T) {
	ctx := context.Background()
	db, streams, _ := testClients(t)
	table := testTable(t, db)
	var logs storetest.LogBuffer
	srv, err := New(ctx, Config{
		Client: db, Streams: streams, Table: table,
		PollInterval: 50 * time.Millisecond, ShardRefresh: time.Second,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	defer func() {
		if t.Failed() {
			t.Logf("store logs:\n%s", logs.String())
		}
	}()
	captureWithStore(t, srv)
	notes := make(chan stores.Notification, 256)
	defer srv.Watch(func(n stores.Notification) {
		select {
		case notes <- n:
		default:
		}
	})()
	foreign := func(id, title string) {
		t.Helper()
		if _, err := db.PutItem(ctx, &awsdynamodb.PutItemInput{TableName: &table, Item: map[string]types.AttributeValue{
			attrPK: s("todos#" + id), attrSK: n(0), "title": s(title),
		}}); err != nil {
			t.Fatal(err)
		}
	}
	titled := func(title string) func(map[string]any) bool {
		return func(v map[string]any) bool { return v["title"] == title }
	}

	foreign("x", "before the backup")
	waitValues(t, srv, "todos", "x", "capture before the backup", titled("before the backup"))
	before, err := srv.Meta(ctx, "todos")
	if err != nil {
		t.Fatal(err)
	}
	backup := plainTable(t, db)
	dynamotest.CopyTable(t, db, table, backup)

	restoreInPlace(t, db, table, backup)
	foreign("x", "after the restore")
	foreign("y", "new after the restore")
	waitValues(t, srv, "todos", "x", "capture of an item captured before the backup, after the restore", titled("after the restore"))
	waitValues(t, srv, "todos", "y", "capture of a new item after the restore", titled("new after the restore"))

	other, err := New(ctx, Config{Client: db, Table: table})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	res, err := other.Apply(ctx, []crdt.Change{{Collection: "notes", Record: crdt.SetField("a", "f", val(t, 1), stamp(1, "c"))}})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.After(30 * time.Second)
	for woken := false; !woken; {
		select {
		case n := <-notes:
			woken = n.Collection == "notes" && n.Seq >= res[0].Seq
		case <-deadline:
			t.Fatal("no wake-up for another server's write to the restored table within 30s")
		}
	}

	if l := logs.String(); !strings.Contains(l, "stream") || !(strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR")) || !strings.Contains(l, "new stream") {
		t.Errorf("logs: %q; want the change of stream said at warn or error", l)
	}
	after, err := srv.Meta(ctx, "todos")
	if err != nil {
		t.Fatal(err)
	}
	if after.Epoch <= before.Epoch || after.Lost <= before.Epoch {
		t.Errorf("Meta %+v after the restore in place, %+v before: want a new epoch, history lost", after, before)
	}
}

// TestStreamEnabledAgain: a stream disabled and enabled again on the same
// table is a new stream too; the consumer drains the old one and reads the
// new one, so foreign writes made after are captured.
func TestStreamEnabledAgain(t *testing.T) {
	ctx := context.Background()
	db, streams, _ := testClients(t)
	table := testTable(t, db)
	srv := openTest(t, db, streams, table)
	captureWithStore(t, srv)
	put := func(id string) {
		t.Helper()
		if _, err := db.PutItem(ctx, &awsdynamodb.PutItemInput{TableName: &table, Item: map[string]types.AttributeValue{
			attrPK: s("todos#" + id), attrSK: n(0), "title": s(id),
		}}); err != nil {
			t.Fatal(err)
		}
	}
	stream := func(on bool) {
		t.Helper()
		spec := &types.StreamSpecification{StreamEnabled: ptr(on)}
		if on {
			spec.StreamViewType = types.StreamViewTypeNewAndOldImages
		}
		if _, err := db.UpdateTable(ctx, &awsdynamodb.UpdateTableInput{TableName: &table, StreamSpecification: spec}); err != nil {
			t.Fatalf("stream enabled %v: %v", on, err)
		}
	}
	put("a")
	waitValues(t, srv, "todos", "a", "capture before", func(map[string]any) bool { return true })
	stream(false)
	stream(true)
	put("b")
	waitValues(t, srv, "todos", "b", "capture from the stream enabled again", func(map[string]any) bool { return true })
}
