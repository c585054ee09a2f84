package dynamodb

import (
	"context"
	"strings"
	"testing"
	"time"

	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/convergo/convergo/crdt"
)

// TestCaptureAfterStampAhead: a client's stamps may run up to the drift
// bound ahead of the server's clock. A foreign write made after such a
// client write of the same field is stamped after what the record holds,
// so it wins; before, it was stamped with the capturing server's clock
// alone and lost to the client's earlier write, silently.
func TestCaptureAfterStampAhead(t *testing.T) {
	db, streams, _ := testClients(t)
	table := testTable(t, db)
	srv := openTest(t, db, streams, table)
	captureWithStore(t, srv)
	ctx := context.Background()

	ahead := crdt.Stamp{Wall: time.Now().Add(4 * time.Minute).UnixMilli(), Replica: "client"}
	if _, err := srv.Apply(ctx, []crdt.Change{{Collection: "todos", Record: crdt.SetField("a", "title", val(t, "client"), ahead)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.PutItem(ctx, &awsdynamodb.PutItemInput{TableName: &table, Item: map[string]types.AttributeValue{
		attrPK: s("todos#a"), attrSK: n(0), "title": s("foreign"),
	}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the foreign write to be captured", func() bool { return srv.CaptureStats().Captured >= 1 })
	e, err := srv.Get(ctx, "todos", "a")
	if err != nil {
		t.Fatal(err)
	}
	f := e.Record.Fields["title"]
	if got := decodeValues(t, e.Record)["title"]; got != "foreign" {
		t.Fatalf("title %#v stamped %v: the foreign write made after the client's (stamped %v, ahead of the server) lost to it", got, f.Stamp, ahead)
	}
	if f.Stamp.Compare(ahead) <= 0 || !strings.HasPrefix(f.Stamp.Replica, DefaultStreamReplica+"-") {
		t.Fatalf("foreign title stamped %v; want a stream replica id and a stamp after the client's %v", f.Stamp, ahead)
	}
}
