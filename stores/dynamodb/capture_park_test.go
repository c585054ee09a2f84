package dynamodb

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
)

// fenceCollection leaves coll as a run of Reshard to k shards interrupted
// after its fence leaves it: every write to coll is refused
// (ErrUnavailable) until a run of Reshard to k finishes the rebuild.
func fenceCollection(t *testing.T, db *awsdynamodb.Client, table, coll string, k int) {
	t.Helper()
	for _, pk := range []string{epochPK(coll), headPK(coll)} {
		if _, err := db.UpdateItem(context.Background(), &awsdynamodb.UpdateItemInput{
			TableName: &table, Key: key(pk, 0),
			UpdateExpression:          ptr("SET #rs = :k"),
			ExpressionAttributeNames:  map[string]string{"#rs": attrResharding},
			ExpressionAttributeValues: map[string]types.AttributeValue{":k": n(uint64(k))},
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCaptureParksFencedCollection: a foreign write to a collection whose
// writers are fenced out (a reshard interrupted and not run again) must
// not stop capture for the other collections. Before, the engine failed
// the whole captured batch, the consumer read the same records again
// forever, and a foreign write to another collection was never applied
// (and dropped by the stream after 24 hours). The fenced collection's
// writes are parked, shown, and applied in order once the fence lifts.
func TestCaptureParksFencedCollection(t *testing.T) {
	db, streams, _ := testClients(t)
	table := testTable(t, db)
	logs := &syncBuffer{}
	srv, err := New(context.Background(), Config{
		Client: db, Streams: streams, Table: table,
		PollInterval: 50 * time.Millisecond, ShardRefresh: time.Second,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	eng, err := engine.Open(engine.Config{Store: srv, PollInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	ctx := context.Background()

	if _, err := srv.Apply(ctx, []crdt.Change{{Collection: "locked", Record: crdt.SetField("z", "title", val(t, "client"), stamp(time.Now().UnixMilli(), "client"))}}); err != nil {
		t.Fatal(err)
	}
	fenceCollection(t, db, table, "locked", 3)

	put := func(pk, title string) {
		t.Helper()
		if _, err := db.PutItem(ctx, &awsdynamodb.PutItemInput{TableName: &table, Item: map[string]types.AttributeValue{
			attrPK: s(pk), attrSK: n(0), "title": s(title),
		}}); err != nil {
			t.Fatal(err)
		}
	}
	put("locked#a", "first")
	put("locked#a", "second") // a later write of the same item: applied after the first
	put("todos#b", "other")

	waitValues(t, srv, "todos", "b", "the foreign write to todos/b to be captured while collection locked is fenced",
		func(v map[string]any) bool { return v["title"] == "other" })

	waitFor(t, "the fenced collection's foreign writes to be parked", func() bool { return srv.CaptureStats().Parked == 2 })
	parked := srv.ParkedCaptures()
	if len(parked) != 2 || parked[0].Key != "locked#a" || parked[1].Key != "locked#a" || parked[0].Position >= parked[1].Position || parked[0].Reason == "" {
		t.Fatalf("ParkedCaptures: %+v, want the two writes of locked#a in stream order, with the reason", parked)
	}
	if v := valuesOf(t, srv, "locked", "a"); v != nil {
		t.Fatalf("locked/a is %v while its collection is fenced", v)
	}

	// Parked at info, a warning once the first retry fails too, and
	// debug on the later retries.
	waitFor(t, "two retries of the parked writes", func() bool { return strings.Contains(logs.String(), "parked foreign writes still fail") })
	if n := strings.Count(logs.String(), "level=INFO msg=\"foreign writes of a collection parked"); n != 1 {
		t.Fatalf("%d logs of the collection parked, want 1 at info (on entering the parked state):\n%s", n, logs)
	}
	if n := strings.Count(logs.String(), "level=WARN msg=\"foreign writes of a collection still parked after a retry"); n != 1 {
		t.Fatalf("%d warnings of the collection still parked, want 1 (on its first failed retry, not per retry):\n%s", n, logs)
	}

	// The fence lifts: the parked writes are applied, in order.
	if err := srv.Reshard(ctx, "locked", 3); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for v := valuesOf(t, srv, "locked", "a"); v == nil || v["title"] != "second"; v = valuesOf(t, srv, "locked", "a") {
		if time.Now().After(deadline) {
			t.Fatalf("locked/a is %v a minute after the fence lifted, want title %q (the later of the parked writes); parked %+v", v, "second", srv.ParkedCaptures())
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitFor(t, "the parked list to empty", func() bool { return srv.CaptureStats().Parked == 0 && len(srv.ParkedCaptures()) == 0 })
	if !strings.Contains(logs.String(), "level=INFO msg=\"parked foreign writes of a collection applied") {
		t.Fatalf("no log of the parked writes applied:\n%s", logs)
	}
	if st := srv.CaptureStats(); st.Refused+st.Rejected != 0 {
		t.Fatalf("capture stats %+v: nothing was to be refused", st)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use, for logs.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
