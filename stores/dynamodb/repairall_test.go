package dynamodb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// repairAllTable fills a table with colls collections (the odd ones of
// four log shards) of recs records each, the first few written twice (so
// that their old log entries are past the rebuilt ones), and returns the
// records, by collection and id.
func repairAllTable(ctx context.Context, t *testing.T, st, four *Store, colls, recs int) map[string]map[string]crdt.Record {
	t.Helper()
	want := map[string]map[string]crdt.Record{}
	for c := range colls {
		coll, w := fmt.Sprint("c", c), st
		if c%2 == 1 {
			w = four
		}
		want[coll] = map[string]crdt.Record{}
		for i := range recs + min(recs, 4) {
			id := fmt.Sprint("r", i%recs)
			ch := crdt.Change{Collection: coll, Record: crdt.SetField(id, "n", val(t, fmt.Sprint(coll, i)), stamp(int64(1+i/recs), "w"))}
			if _, err := w.Apply(ctx, []crdt.Change{ch}); err != nil {
				t.Fatal(err)
			}
			r, ok := want[coll][id]
			if !ok {
				r = crdt.Record{ID: id}
			}
			r.Merge(ch.Record)
			want[coll][id] = r
		}
	}
	return want
}

// checkRepaired: every collection of want pulls every record of it once,
// as it is, in its K, and takes writes again.
func checkRepaired(ctx context.Context, t *testing.T, st *Store, want map[string]map[string]crdt.Record) {
	t.Helper()
	for coll, recs := range want {
		m, err := st.Meta(ctx, coll)
		if err != nil {
			t.Fatal(err)
		}
		if c := coll[len(coll)-1] - '0'; max(m.Shards, 1) != map[bool]int{false: 1, true: 4}[c%2 == 1] {
			t.Fatalf("%s: %d shards after the repair", coll, m.Shards)
		}
		ids := pullIDs(ctx, t, st, coll)
		sorted := slices.Sorted(slices.Values(ids))
		if len(slices.Compact(sorted)) != len(ids) || len(ids) != len(recs) {
			t.Fatalf("%s: a pull delivers %v, want each of %d records once", coll, ids, len(recs))
		}
		for _, id := range ids {
			g, err := st.Get(ctx, coll, id)
			if err != nil {
				t.Fatal(err)
			}
			if w, ok := recs[id]; !ok || !g.Record.Equal(w.Normalize()) {
				t.Fatalf("%s/%s is %v, want %v", coll, id, g.Record, w)
			}
		}
		if _, err := st.Apply(ctx, []crdt.Change{{Collection: coll, Record: crdt.SetField("new", "n", val(t, 1), stamp(9, "w"))}}); err != nil {
			t.Fatalf("%s: a write after the repair: %v", coll, err)
		}
	}
}

// TestRepairAllScansOnce: RepairAll of N collections reads the table's
// record items with one Scan (and lists the collections with one Scan of
// keys), not one Scan of the whole table per collection.
func TestRepairAllScansOnce(t *testing.T) {
	ft := &faultTransport{next: http.DefaultTransport}
	var scans, recordScans int
	ft.pick = func(op string, body []byte) fault {
		if op == "Scan" {
			scans++
			if !bytes.Contains(body, []byte("ProjectionExpression")) {
				recordScans++
			}
		}
		return fault{}
	}
	db, _, _ := clientsVia(t, ft)
	table := plainTable(t, db)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, four := openTest(t, db, nil, table), openShards(t, db, nil, table, 4)
	const colls = 5
	want := repairAllTable(ctx, t, st, four, colls, 3)
	ft.mu.Lock()
	scans, recordScans = 0, 0
	ft.mu.Unlock()
	var done []string
	if err := st.RepairAll(ctx, func(coll string, rep stores.RepairReport) {
		done = append(done, coll)
		if rep.Records != 3 {
			t.Errorf("%s: repair reported %+v, want 3 records", coll, rep)
		}
	}); err != nil {
		t.Fatal(err)
	}
	ft.mu.Lock()
	gotScans, gotRecordScans := scans, recordScans
	ft.mu.Unlock()
	if gotRecordScans != 1 || gotScans != 2 {
		t.Fatalf("RepairAll of %d collections made %d Scans of the table, %d of them of record items; want 2, one of record items", colls, gotScans, gotRecordScans)
	}
	if len(done) != colls {
		t.Fatalf("RepairAll repaired %v", done)
	}
	checkRepaired(ctx, t, st, want)
}

// TestRepairAllInterrupted: a RepairAll that fails midway, after part of
// the rebuilt logs is written (records kept in memory a few at a time:
// rebuildBufferBytes made small), leaves collections fenced; a second run
// finishes them all, every record pulled once.
func TestRepairAllInterrupted(t *testing.T) {
	old := rebuildBufferBytes
	rebuildBufferBytes = 1 << 10
	t.Cleanup(func() { rebuildBufferBytes = old })
	ft := &faultTransport{next: http.DefaultTransport}
	const logPuts = 4 // transactions of rebuilt log entries that succeed
	puts, failed := 0, 0
	ft.pick = func(op string, body []byte) fault {
		if op != "TransactWriteItems" {
			return fault{}
		}
		if puts >= logPuts {
			failed++
			return fault{status: 400, body: `{"__type":"com.amazonaws.dynamodb.v20120810#ValidationException","message":"injected"}`}
		}
		if bytes.Contains(body, []byte(`"Put"`)) && bytes.Contains(body, []byte(`"~l#`)) {
			puts++
		}
		return fault{}
	}
	db, _, _ := testClients(t)
	table := plainTable(t, db)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, four := openTest(t, db, nil, table), openShards(t, db, nil, table, 4)
	want := repairAllTable(ctx, t, st, four, 4, 20)

	faulty, _, _ := clientsVia(t, ft)
	first := openTest(t, faulty, nil, table)
	firstErr := first.RepairAll(ctx, nil)
	if firstErr == nil {
		t.Fatal("the first RepairAll did not fail")
	}
	ft.mu.Lock()
	gotPuts, gotFailed := puts, failed
	ft.mu.Unlock()
	if gotPuts != logPuts || gotFailed == 0 {
		t.Fatalf("the first run wrote %d transactions of log entries, then %d failed: the interruption is not the one this test makes", gotPuts, gotFailed)
	}
	var fenced []string
	probe := openTest(t, db, nil, table) // no shard counts known: it reads the fences
	for _, coll := range slices.Sorted(maps.Keys(want)) {
		_, err := probe.Meta(ctx, coll)
		if errors.Is(err, stores.ErrFenced) {
			fenced = append(fenced, coll)
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if len(fenced) == 0 {
		t.Fatal("after the interrupted run no collection is fenced")
	}
	// The error names the collections it left fenced, for the operator
	// to know which the next run (or convergo repair) must finish.
	if want := fmt.Sprintf("%d collections left fenced", len(fenced)) + " (writers and readers refused until a rebuild finishes them): " + strings.Join(fenced, ", "); !strings.Contains(firstErr.Error(), want) {
		t.Fatalf("the first RepairAll failed with %q; want it to say %q", firstErr, want)
	}

	var done []string
	if err := st.RepairAll(ctx, func(coll string, rep stores.RepairReport) {
		done = append(done, coll)
		if rep.Records != 20 {
			t.Errorf("%s: the second run reported %+v, want 20 records", coll, rep)
		}
	}); err != nil {
		t.Fatalf("the second RepairAll: %v", err)
	}
	if !slices.Equal(done, []string{"c0", "c1", "c2", "c3"}) {
		t.Fatalf("the second RepairAll repaired %v", done)
	}
	checkRepaired(ctx, t, st, want)
}

// TestRebuildBufferDocumented: the docs state rebuildBufferBytes as it is.
func TestRebuildBufferDocumented(t *testing.T) {
	for path, phrase := range map[string]string{
		"../../docs/operations.md": "the records read are held up to %d MiB at a time",
		"../../docs/design.md":     "(up to %d MiB of them, `rebuildBufferBytes`",
	} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf(phrase, rebuildBufferBytes>>20)
		if !strings.Contains(strings.Join(strings.Fields(string(b)), " "), want) {
			t.Errorf("%s does not say %q", path, want)
		}
	}
}

// TestLeftFencedBounded: the error of a failed RepairAll names at most
// maxNamedFenced collections, and says how many more it left fenced.
func TestLeftFencedBounded(t *testing.T) {
	cause := errors.New("cause")
	var colls []string
	for i := range maxNamedFenced + 2 {
		colls = append(colls, fmt.Sprint("c", i))
	}
	for _, tc := range []struct {
		colls []string
		want  string
	}{
		{nil, "cause"},
		{colls[:1], "cause; 1 collection left fenced (writers and readers refused until a rebuild finishes them): c0"},
		{colls[:maxNamedFenced], "cause; " + fmt.Sprint(maxNamedFenced) + " collections left fenced (writers and readers refused until a rebuild finishes them): " + strings.Join(colls[:maxNamedFenced], ", ")},
		{colls, "cause; " + fmt.Sprint(maxNamedFenced+2) + " collections left fenced (writers and readers refused until a rebuild finishes them): " + strings.Join(colls[:maxNamedFenced], ", ") + " and 2 more"},
	} {
		err := leftFenced(cause, tc.colls)
		if err.Error() != tc.want || !errors.Is(err, cause) {
			t.Errorf("got %q, want %q wrapping the cause", err, tc.want)
		}
	}
	b, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("naming the collections it left fenced (the first %d, and how many in all)", maxNamedFenced); !strings.Contains(strings.Join(strings.Fields(string(b)), " "), want) {
		t.Errorf("docs/operations.md does not say %q", want)
	}
}
