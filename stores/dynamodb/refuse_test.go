package dynamodb

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// TestCaptureSkipsRefusedWrite is D1: a foreign program (the AWS SDK for
// JavaScript) writes an item whose
// change is valid alone but would grow the record, which a Convergo client
// made large, past crdt.MaxRecordBytes; then another item. The refused
// write is skipped for good and the consumer moves on: the second item is
// captured.
func TestCaptureSkipsRefusedWrite(t *testing.T) {
	db, streams, endpoint := testClients(t)
	node := jsWriter(t)
	table := testTable(t, db)
	st := openTest(t, db, streams, table)
	captureWithStore(t, st)
	ctx := context.Background()

	big := strings.Repeat("x", 100<<10)
	client := crdt.Record{ID: "1", Fields: map[string]crdt.Field{
		"a": {Stamp: stamp(1, "client"), Value: val(t, big)},
		"b": {Stamp: stamp(1, "client"), Value: val(t, big)},
	}}
	if _, err := st.Apply(ctx, []crdt.Change{{Collection: "todos", Record: client}}); err != nil {
		t.Fatal(err)
	}
	putJS(t, node, endpoint, table, `{"pk":{"S":"todos#1"},"sk":{"N":"0"},"c":{"S":"`+big+`"},"d":{"S":"`+big+`"}}`)
	putJS(t, node, endpoint, table, `{"pk":{"S":"todos#2"},"sk":{"N":"0"},"title":{"S":"after the refused one"}}`)
	waitFor(t, "the write after the refused one to be captured", func() bool {
		_, err := st.Get(ctx, "todos", "2")
		return err == nil
	})
	e, err := st.Get(ctx, "todos", "1")
	if err != nil {
		t.Fatal(err)
	}
	if !e.Record.Equal(client) {
		t.Fatalf("the refused write changed the record: %v", e.Record)
	}
	if n := st.CaptureStats().Refused; n != 1 {
		t.Fatalf("%d refusals counted, want 1", n)
	}
	// The operator's list names the item and the reason: too large, and
	// the limit it is over.
	if rej := st.RejectedCaptures(); len(rej) != 1 || rej[0].Key != "todos#1" || !strings.Contains(rej[0].Reason, stores.ErrTooLarge.Error()) || !strings.Contains(rej[0].Reason, strconv.Itoa(crdt.MaxRecordBytes)) || rej[0].StreamSeq == "" {
		t.Fatalf("rejected captures %+v, want todos#1 with the reason", rej)
	}
}
