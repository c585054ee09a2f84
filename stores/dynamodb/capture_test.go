package dynamodb

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/storetest"
)

const jsWriterDir = "testdata/jswriter"

// jsWriter returns the node binary that runs testdata/jswriter/put.mjs, or
// skips (fails under CONVERGO_REQUIRE_SERVICES=1) when node or the
// writer's node_modules are missing.
func jsWriter(t *testing.T) string {
	t.Helper()
	missing := func(msg string) {
		t.Helper()
		if os.Getenv(storetest.RequireEnvVar) == "1" {
			t.Fatalf("%s (%s=1)", msg, storetest.RequireEnvVar)
		}
		t.Skip(msg)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("node is not installed: the JavaScript writer needs Node.js 18 or newer")
	}
	if _, err := os.Stat(filepath.Join(jsWriterDir, "node_modules", "@aws-sdk", "client-dynamodb")); err != nil {
		missing("stores/dynamodb/testdata/jswriter/node_modules is missing: run `npm ci --prefix stores/dynamodb/testdata/jswriter`")
	}
	return node
}

// putJS writes item (DynamoDB JSON) to table with the AWS SDK for
// JavaScript v3. The item goes through standard input: one argument holds
// at most 128 KiB on Linux.
func putJS(t *testing.T, node, endpoint, table, item string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "put.mjs", table, "-")
	cmd.Stdin = strings.NewReader(item)
	cmd.Dir = jsWriterDir
	cmd.Env = append(os.Environ(), "CONVERGO_DYNAMODB_ENDPOINT="+endpoint)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node put.mjs: %v\n%s%s", err, out, stderr.String())
	}
	t.Logf("node put.mjs: %s", strings.TrimSpace(string(out)))
}

// awaitSub waits until sub reports a head of at least seq.
func awaitSub(t *testing.T, sub *engine.Subscription, seq uint64) uint64 {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case got := <-sub.C():
			if got >= seq {
				return got
			}
		case <-deadline:
			t.Fatalf("subscriber of %s saw no head >= %d within 30s", sub.Collection(), seq)
		}
	}
}

func decodeValues(t *testing.T, r crdt.Record) map[string]any {
	t.Helper()
	out := map[string]any{}
	for name, v := range r.Values() {
		var x any
		if err := crdt.DecodeValue(v, &x); err != nil {
			t.Fatalf("field %s: %v", name, err)
		}
		out[name] = x
	}
	return out
}

// TestCaptureJSWriter has a program that is not Convergo (the AWS SDK for
// JavaScript) put and then replace an item in the table, and checks that a
// Convergo subscriber on the store sees the record, with the values the
// writer wrote, through the stream consumer and the normal merge path.
func TestCaptureJSWriter(t *testing.T) {
	db, streams, endpoint := testClients(t)
	node := jsWriter(t)
	table := testTable(t, db)
	s := openTest(t, db, streams, table)
	// The store's own Apply as the sink, until engine.Open registers the
	// engine's (which then replaces this one).
	captureWithStore(t, s)
	eng, err := engine.Open(engine.Config{Store: s, PollInterval: -1}) // notifications only
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	sub, err := eng.Subscribe("todos")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ctx := context.Background()

	putJS(t, node, endpoint, table, `{"pk":{"S":"todos#42"},"sk":{"N":"0"},`+
		`"title":{"S":"buy milk"},"done":{"BOOL":false},"n":{"N":"3"},"price":{"N":"2.5"},`+
		`"tags":{"SS":["b","a"]},"meta":{"M":{"k":{"L":[{"N":"-1"},{"NULL":true},{"B":"AQI="}]}}}}`)
	seq := awaitSub(t, sub, 1)
	page, err := eng.Pull(ctx, "todos", engine.Cursor{}, engine.PageLimit{Records: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Entries) != 1 || page.Entries[0].Record.ID != "42" || page.Entries[0].Seq != seq {
		t.Fatalf("Pull after the JS put: %+v, want record 42 at seq %d", page, seq)
	}
	rec := page.Entries[0].Record
	want := map[string]any{
		"title": "buy milk", "done": false, "n": int64(3), "price": 2.5,
		"tags": []any{"a", "b"},
		"meta": map[string]any{"k": []any{int64(-1), nil, []byte{1, 2}}},
	}
	if got := decodeValues(t, rec); !reflect.DeepEqual(got, want) {
		t.Fatalf("captured values:\n got %#v\nwant %#v", got, want)
	}
	for name, f := range rec.Fields {
		if !strings.HasPrefix(f.Stamp.Replica, DefaultStreamReplica+"-") || f.Stamp.Wall <= 0 {
			t.Fatalf("field %s stamped %s, want a stamp derived from the stream record", name, f.Stamp)
		}
	}

	// A PutItem replacing the item without "price" unsets it; a changed
	// title wins over the first one (a later stream record).
	putJS(t, node, endpoint, table, `{"pk":{"S":"todos#42"},"sk":{"N":"0"},`+
		`"title":{"S":"buy oat milk"},"done":{"BOOL":true},"n":{"N":"3"},`+
		`"tags":{"SS":["b","a"]},"meta":{"M":{"k":{"L":[{"N":"-1"},{"NULL":true},{"B":"AQI="}]}}}}`)
	seq2 := awaitSub(t, sub, seq+1)
	got, err := eng.GetRecord(ctx, "todos", "42")
	if err != nil {
		t.Fatal(err)
	}
	if got.Seq != seq2 {
		t.Fatalf("record at seq %d, subscriber saw %d", got.Seq, seq2)
	}
	vals := decodeValues(t, got.Record)
	if vals["title"] != "buy oat milk" || vals["done"] != true {
		t.Fatalf("after the second put: %#v", vals)
	}
	if _, ok := vals["price"]; ok {
		t.Fatalf("price survived a put that removed it: %#v", vals)
	}
	if f := got.Record.Fields["price"]; f.Value != nil || f.Stamp.IsZero() {
		t.Fatalf("price field %+v, want an unset with a stamp", f)
	}

	// A second store instance replays the stream from its start: the same
	// stream records derive the same stamps, so nothing changes. It has read
	// the writer's two records once it passed over or captured both. (Not
	// once its Records count reaches the first instance's: that one counts
	// again the records it read again when engine.Open replaced its sink.)
	head, _ := s.Head(ctx, "todos")
	s2 := openTest(t, db, streams, table)
	captureWithStore(t, s2)
	waitFor(t, "the second consumer to read the writer's two records", func() bool {
		st := s2.CaptureStats()
		return st.Captured+st.Replayed >= 2
	})
	if st := s2.CaptureStats(); st.Refused != 0 || st.Rejected != 0 {
		t.Fatalf("the replay refused or rejected a record: %+v", st)
	}
	if h, _ := s2.Head(ctx, "todos"); h != head {
		t.Fatalf("replaying the stream moved the head from %d to %d", head, h)
	}
	again, _ := s2.Get(ctx, "todos", "42")
	if !again.Record.Equal(got.Record) {
		t.Fatalf("replay changed the record:\n got %v\nwant %v", again.Record, got.Record)
	}
}

// TestTwoInstances has two store instances (two servers) on one table: a
// write through one reaches a Watch on the other through the stream.
func TestTwoInstances(t *testing.T) {
	db, streams, _ := testClients(t)
	table := testTable(t, db)
	a := openTest(t, db, streams, table)
	b := openTest(t, db, streams, table)
	ctx := context.Background()

	notes := make(chan stores.Notification, 64)
	stop := b.Watch(func(n stores.Notification) {
		select {
		case notes <- n:
		default:
		}
	})
	defer stop()

	res, err := a.Apply(ctx, []crdt.Change{
		{Collection: "notes", Record: crdt.SetField("n1", "text", val(t, "hello"), stamp(1000, "client-a"))},
		{Collection: "notes", Record: crdt.SetField("n2", "text", val(t, "world"), stamp(1001, "client-a"))},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := res[1].Seq
	deadline := time.After(30 * time.Second)
	for seen := false; !seen; {
		select {
		case n := <-notes:
			seen = n.Collection == "notes" && n.Seq >= want
		case <-deadline:
			t.Fatalf("instance b heard of no head >= %d of notes within 30s", want)
		}
	}
	page, err := b.Pull(ctx, "notes", 0, stores.PageLimit{Records: 10, Bytes: stores.DefaultPageBytes})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Entries) != 2 || page.Next != want {
		t.Fatalf("b pulled %+v, want both records up to %d", page, want)
	}

	// Both instances write the same record concurrently: the transactions
	// serialize, both changes survive, and each takes its own seq.
	errs := make(chan error, 2)
	for i, st := range []*Store{a, b} {
		go func() {
			_, err := st.Apply(ctx, []crdt.Change{{Collection: "notes", Record: crdt.SetField("n1", []string{"x", "y"}[i], val(t, i), stamp(2000, "client-b"))}})
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	e, err := a.Get(ctx, "notes", "n1")
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Record.Values()) != 3 || e.Seq != want+2 {
		t.Fatalf("after concurrent writes from both instances: %v at seq %d, want 3 fields at %d", e.Record, e.Seq, want+2)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
