package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// Factory returns a new, empty store that shares no state with any other
// store it returned: stores on a shared server isolate by a fresh key prefix
// or table name. It calls t.Fatal when the store cannot be opened and
// registers in t.Cleanup whatever must be removed afterwards. Run and Bench
// close the stores they get.
type Factory func(t testing.TB) stores.Store

// Run runs the conformance suite against the stores newStore returns, each
// check in its own subtest with its own store.
func Run(t *testing.T, newStore Factory) {
	t.Helper()
	for _, tc := range []struct {
		name string
		run  func(*testing.T, Factory)
	}{
		{"Merge", testMerge},
		{"MergeInOneBatch", testMergeInOneBatch},
		{"Ties", testTies},
		{"Results", testResults},
		{"Lost", testLost},
		{"NoopTakesNoSeq", testNoop},
		{"Replay", testReplay},
		{"SameRecordInBatch", testSameRecordInBatch},
		{"CollectionsIndependent", testCollections},
		{"Paging", testPaging},
		{"PageLimits", testPageLimits},
		{"PageBytes", testPageBytes},
		{"PageBytesLarge", testPageBytesLarge},
		{"Compaction", testCompaction},
		{"GetHead", testGetHead},
		{"InvalidInput", testInvalid},
		{"BatchLimit", testBatchLimit},
		{"SizeLimits", testSizeLimits},
		{"TooLarge", testTooLarge},
		{"MatchesReference", testReference},
		{"ConcurrentWriters", testConcurrent},
		{"Watch", testWatch},
		{"WatchStop", testWatchStop},
		{"WatchNoop", testWatchNoop},
		{"Cancelled", testCancelled},
		{"Closed", testClosed},
		{"CloseWhileBusy", testCloseWhileBusy},
		{"Identity", testIdentity},
		{"Epochs", testEpochs},
		{"Usage", testUsage},
		{"Purge", testPurge},
		{"PurgeResume", testPurgeResume},
		{"PurgeConcurrent", testPurgeConcurrent},
		{"PurgeLarge", testPurgeLarge},
		{"PurgeTwice", testPurgeTwice},
		{"PurgeEpoch", testPurgeEpoch},
		{"DeleteAsRead", testDeleteAsRead},
		{"Names", testNames},
		{"LongestNamesInBatch", testLongestNamesInBatch},
		{"RefusalNames", testRefusalNames},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, newStore) })
	}
}

// open returns a store from f that is closed when the test ends.
func open(t testing.TB, f Factory) stores.Store {
	t.Helper()
	s := f(t)
	if s == nil {
		t.Fatal("factory returned a nil store")
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// st returns the stamp (wall, 0, replica).
func st(wall int64, replica string) crdt.Stamp {
	return crdt.Stamp{Wall: wall, Replica: replica}
}

// val encodes v as a canonical field value.
func val(t testing.TB, v any) []byte {
	t.Helper()
	b, err := crdt.EncodeValue(v)
	if err != nil {
		t.Fatalf("encode value %v: %v", v, err)
	}
	return b
}

// rec builds a record.
func rec(id string, deleted crdt.Stamp, fields map[string]crdt.Field) crdt.Record {
	return crdt.Record{ID: id, Deleted: deleted, Fields: fields}
}

func chg(coll string, r crdt.Record) crdt.Change {
	return crdt.Change{Collection: coll, Record: r}
}

// apply applies changes and fails the test on error or a wrong number of
// results.
func apply(t testing.TB, s stores.Store, changes ...crdt.Change) []stores.Result {
	t.Helper()
	res, err := s.Apply(context.Background(), changes)
	if err != nil {
		t.Fatalf("Apply(%d changes): %v", len(changes), err)
	}
	if len(res) != len(changes) {
		t.Fatalf("Apply(%d changes) returned %d results", len(changes), len(res))
	}
	return res
}

func get(t testing.TB, s stores.Store, coll, id string) stores.Entry {
	t.Helper()
	e, err := s.Get(context.Background(), coll, id)
	if err != nil {
		t.Fatalf("Get(%s, %s): %v", coll, id, err)
	}
	return e
}

func head(t testing.TB, s stores.Store, coll string) uint64 {
	t.Helper()
	h, err := s.Head(context.Background(), coll)
	if err != nil {
		t.Fatalf("Head(%s): %v", coll, err)
	}
	return h
}

func pull(t testing.TB, s stores.Store, coll string, after uint64, limit int) stores.Page {
	t.Helper()
	p, err := s.Pull(context.Background(), coll, after, lim(limit))
	if err != nil {
		t.Fatalf("Pull(%s, after %d, limit %d): %v", coll, after, limit, err)
	}
	checkPage(t, p, after, limit)
	return p
}

// lim is a page limit of n records and stores.DefaultPageBytes.
func lim(n int) stores.PageLimit {
	return stores.PageLimit{Records: n, Bytes: stores.DefaultPageBytes}
}

// checkPage checks the shape every page must have.
func checkPage(t testing.TB, p stores.Page, after uint64, limit int) {
	t.Helper()
	if len(p.Entries) > limit {
		t.Fatalf("page after %d has %d entries, more than the limit %d", after, len(p.Entries), limit)
	}
	prev := after
	seen := map[string]bool{}
	for i, e := range p.Entries {
		if e.Seq <= prev {
			t.Fatalf("page after %d: entry %d has seq %d, not above %d", after, i, e.Seq, prev)
		}
		if seen[e.Record.ID] {
			t.Fatalf("page after %d: record %q appears twice", after, e.Record.ID)
		}
		seen[e.Record.ID] = true
		prev = e.Seq
	}
	if p.Next != prev {
		t.Fatalf("page after %d with %d entries: Next = %d, want %d", after, len(p.Entries), p.Next, prev)
	}
	if len(p.Entries) == 0 && p.More {
		t.Fatalf("empty page after %d says More", after)
	}
}

// pullAll pulls every page after cursor with the given limit.
func pullAll(t testing.TB, s stores.Store, coll string, after uint64, limit int) []stores.Entry {
	t.Helper()
	var all []stores.Entry
	for {
		p := pull(t, s, coll, after, limit)
		all = append(all, p.Entries...)
		after = p.Next
		if !p.More {
			return all
		}
	}
}

func wantErr(t testing.TB, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want one wrapping %v", what, err, target)
	}
}

func wantRecord(t testing.TB, what string, got, want crdt.Record) {
	t.Helper()
	if !got.Equal(want) {
		t.Fatalf("%s:\n got  %s\n want %s", what, fmtRecord(got), fmtRecord(want))
	}
}

// fmtRecord formats r with its fields in name order, for failure messages.
func fmtRecord(r crdt.Record) string {
	var b strings.Builder
	fmt.Fprintf(&b, "{id %q", r.ID)
	if !r.Deleted.IsZero() {
		fmt.Fprintf(&b, " deleted %s", r.Deleted)
	}
	names := r.FieldNames()
	slices.Sort(names)
	for _, n := range names {
		f := r.Fields[n]
		if f.Value == nil {
			fmt.Fprintf(&b, " %s=<unset>@%s", n, f.Stamp)
			continue
		}
		v := fmt.Sprintf("%x", f.Value)
		if len(v) > 16 {
			v = fmt.Sprintf("%s…(%d bytes)", v[:16], len(f.Value))
		}
		fmt.Fprintf(&b, " %s=%s@%s", n, v, f.Stamp)
	}
	b.WriteString("}")
	return b.String()
}
