package dynamodb

import (
	"context"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// updateJS changes an item of table with an UpdateItem of the AWS SDK for
// JavaScript v3 (testdata/jswriter/update.mjs).
func updateJS(t *testing.T, node, endpoint, table, key, expr, values, names string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := []string{"update.mjs", table, key, expr}
	if values != "" || names != "" {
		args = append(args, values, names)
	}
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Dir = jsWriterDir
	cmd.Env = append(os.Environ(), "CONVERGO_DYNAMODB_ENDPOINT="+endpoint)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node update.mjs: %v\n%s%s", err, out, stderr.String())
	}
	t.Logf("node update.mjs: %s", strings.TrimSpace(string(out)))
}

func jsKey(pk string) string { return `{"pk":{"S":"` + pk + `"},"sk":{"N":"0"}}` }

// valuesOf returns the decoded values of a record, or nil when it is absent.
func valuesOf(t *testing.T, s *Store, coll, id string) map[string]any {
	t.Helper()
	e, err := s.Get(context.Background(), coll, id)
	if err != nil {
		return nil
	}
	return decodeValues(t, e.Record)
}

// waitValues waits until record coll/id satisfies ok.
func waitValues(t *testing.T, s *Store, coll, id, what string, ok func(map[string]any) bool) map[string]any {
	t.Helper()
	var v map[string]any
	waitFor(t, what, func() bool {
		v = valuesOf(t, s, coll, id)
		return v != nil && ok(v)
	})
	return v
}

// sleepPastMinute waits until the wall clock is in a later minute than
// after. DynamoDB Local rounds a stream record's ApproximateCreationDateTime
// down to the minute (AWS to the second), so a stamp derived from it only
// shows a foreign write as later than a client write of the same minute
// once the minute has passed: waiting makes the tests below fail on code
// that stamps from the stream's time, whatever second they start at.
func sleepPastMinute(after time.Time) {
	next := after.Truncate(time.Minute).Add(time.Minute + 200*time.Millisecond)
	time.Sleep(time.Until(next))
}

// TestCaptureOnlyChangedAttributes is D2 (lost update) and D3
// (resurrection): a foreign UpdateItem that sets one attribute must write
// that field only. A client's newer title survives a foreign SET done, and
// after a client deleted a record a foreign SET views brings back views
// alone, not the fields the delete removed.
func TestCaptureOnlyChangedAttributes(t *testing.T) {
	t.Parallel() // it mostly waits for the minute to turn
	db, streams, endpoint := testClients(t)
	node := jsWriter(t)
	table := testTable(t, db)
	s := openTest(t, db, streams, table)
	captureWithStore(t, s)
	ctx := context.Background()

	putJS(t, node, endpoint, table, `{"pk":{"S":"todos#a"},"sk":{"N":"0"},"title":{"S":"foreign title"},"done":{"BOOL":false}}`)
	putJS(t, node, endpoint, table, `{"pk":{"S":"todos#b"},"sk":{"N":"0"},"title":{"S":"doomed"},"n":{"N":"1"}}`)
	waitValues(t, s, "todos", "a", "todos/a to be captured", func(map[string]any) bool { return true })
	waitValues(t, s, "todos", "b", "todos/b to be captured", func(map[string]any) bool { return true })

	// A client edits a's title and deletes b, after the captures.
	now := time.Now()
	client := crdt.Stamp{Wall: now.UnixMilli(), Replica: "client"}
	if _, err := s.Apply(ctx, []crdt.Change{
		{Collection: "todos", Record: crdt.SetField("a", "title", val(t, "client title"), client)},
		{Collection: "todos", Record: crdt.DeleteRecord("b", client)},
	}); err != nil {
		t.Fatal(err)
	}
	sleepPastMinute(now)

	updateJS(t, node, endpoint, table, jsKey("todos#a"), "SET done = :t", `{":t":{"BOOL":true}}`, "")
	updateJS(t, node, endpoint, table, jsKey("todos#b"), "SET #v = :one", `{":one":{"N":"1"}}`, `{"#v":"views"}`)

	a := waitValues(t, s, "todos", "a", "the foreign SET done to be captured", func(v map[string]any) bool { return v["done"] == true })
	if a["title"] != "client title" {
		t.Errorf("D2 lost update: after a foreign SET done, title is %#v, want the client's newer %q", a["title"], "client title")
	}
	b := waitValues(t, s, "todos", "b", "the foreign SET views to be captured", func(v map[string]any) bool { return v["views"] != nil })
	if want := map[string]any{"views": int64(1)}; !reflect.DeepEqual(b, want) {
		t.Errorf("D3 resurrection: after a client delete and a foreign SET views, b is %#v, want %#v", b, want)
	}
}

// TestCaptureFairStamp is D4: a foreign write made after a client write of
// the same field wins, although the stream's time is rounded down (to the
// minute on DynamoDB Local); its stamp is the capturing server's clock, not
// earlier than the write. A second store instance replaying the stream
// changes nothing: the first capture's stamp is kept in the table.
func TestCaptureFairStamp(t *testing.T) {
	db, streams, endpoint := testClients(t)
	node := jsWriter(t)
	table := testTable(t, db)
	s := openTest(t, db, streams, table)
	captureWithStore(t, s)
	ctx := context.Background()

	if _, err := s.Apply(ctx, []crdt.Change{{Collection: "todos", Record: crdt.SetField("c", "title", val(t, "client"), crdt.Stamp{Wall: time.Now().UnixMilli(), Replica: "client"})}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	before := time.Now()
	putJS(t, node, endpoint, table, `{"pk":{"S":"todos#c"},"sk":{"N":"0"},"title":{"S":"foreign"}}`)
	waitValues(t, s, "todos", "c", "the later foreign write to win", func(v map[string]any) bool { return v["title"] == "foreign" })
	e, _ := s.Get(ctx, "todos", "c")
	f := e.Record.Fields["title"]
	if f.Stamp.Wall < before.UnixMilli() || f.Stamp.Wall > time.Now().UnixMilli() || !strings.HasPrefix(f.Stamp.Replica, DefaultStreamReplica+"-") {
		t.Fatalf("foreign title stamped %v; want the capture's time (after %d) and a stream replica id", f.Stamp, before.UnixMilli())
	}

	head, _ := s.Head(ctx, "todos")
	s2 := openTest(t, db, streams, table)
	captureWithStore(t, s2)
	// The second consumer has handled the foreign write once it captured it
	// again (the same stamp, from the ledger) or passed over it.
	deadline := time.Now().Add(2 * time.Minute)
	for st := s2.CaptureStats(); st.Captured+st.Replayed == 0; st = s2.CaptureStats() {
		if time.Now().After(deadline) {
			t.Fatalf("the second consumer handled no foreign write within 2 minutes: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if h, _ := s2.Head(ctx, "todos"); h != head {
		t.Fatalf("replaying the stream moved the head from %d to %d", head, h)
	}
	again, _ := s2.Get(ctx, "todos", "c")
	if !again.Record.Equal(e.Record) {
		t.Fatalf("replay changed the record:\n got %v\nwant %v", again.Record, e.Record)
	}
}

// TestCaptureReservedName is D5: a foreign item with an attribute named
// like Convergo's layout marker (cvg) is captured like any other; only the
// key attributes pk and sk are reserved.
func TestCaptureReservedName(t *testing.T) {
	db, streams, endpoint := testClients(t)
	node := jsWriter(t)
	table := testTable(t, db)
	s := openTest(t, db, streams, table)
	captureWithStore(t, s)

	putJS(t, node, endpoint, table, `{"pk":{"S":"todos#d"},"sk":{"N":"0"},"cvg":{"N":"7"},"title":{"S":"has cvg"}}`)
	got := waitValues(t, s, "todos", "d", "the item with a cvg attribute to be captured", func(map[string]any) bool { return true })
	if want := map[string]any{"cvg": int64(7), "title": "has cvg"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("captured %#v, want %#v", got, want)
	}
	// The consumer counts the capture once the sink has returned, just
	// after the record became readable.
	deadline := time.Now().Add(30 * time.Second)
	st := s.CaptureStats()
	for st.Captured == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		st = s.CaptureStats()
	}
	if st.Captured == 0 || st.Refused+st.Rejected != 0 {
		t.Fatalf("capture stats %+v", st)
	}
	_ = stores.ErrInvalid
}
