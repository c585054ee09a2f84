package dynamodb

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// withoutLogItems rewrites a Query reply as DynamoDB may answer while a
// transaction is being applied: a Query is read-committed per item, not
// isolated from a TransactWriteItems, so it can return a later item of the
// transaction and not yet an earlier one. The items at seqs are left out.
func withoutLogItems(t *testing.T, seqs ...uint64) func([]byte) []byte {
	return func(body []byte) []byte {
		var out map[string]any
		if err := json.Unmarshal(body, &out); err != nil {
			t.Errorf("query reply: %v", err)
			return body
		}
		items, _ := out["Items"].([]any)
		kept := items[:0]
		for _, it := range items {
			sk, _ := it.(map[string]any)[attrSK].(map[string]any)["N"].(string)
			if !slices.Contains(seqs, mustSeq(t, sk)) {
				kept = append(kept, it)
			}
		}
		out["Items"], out["Count"] = kept, len(kept)
		b, err := json.Marshal(out)
		if err != nil {
			t.Errorf("query reply: %v", err)
			return body
		}
		return b
	}
}

func mustSeq(t *testing.T, s string) uint64 {
	var v uint64
	if _, err := fmt.Sscan(s, &v); err != nil {
		t.Errorf("sk %q: %v", s, err)
	}
	return v
}

// applyNew writes new records ids of coll with one Apply, which commits them
// in one transaction: seqs first, first+1, ...
func applyNew(t *testing.T, s *Store, coll string, wall int64, ids ...string) {
	t.Helper()
	var changes []crdt.Change
	for _, id := range ids {
		changes = append(changes, crdt.Change{Collection: coll, Record: crdt.SetField(id, "f", val(t, wall), stamp(wall, "w"))})
	}
	res, err := s.Apply(context.Background(), changes)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(res); i++ {
		if res[i].Seq != res[i-1].Seq+1 {
			t.Fatalf("results %v: want consecutive seqs of one transaction", res)
		}
	}
}

// drainLog pulls coll from after to its end, pages of limit records, and
// returns every entry delivered, in order.
func drainLog(t *testing.T, s *Store, coll string, after uint64, limit int) []stores.Entry {
	t.Helper()
	var got []stores.Entry
	for range 100 {
		p, err := s.Pull(context.Background(), coll, after, stores.PageLimit{Records: limit, Bytes: stores.DefaultPageBytes})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, p.Entries...)
		if p.Next < after {
			t.Fatalf("cursor went back from %d to %d", after, p.Next)
		}
		after = p.Next
		if !p.More && len(p.Entries) == 0 {
			return got
		}
	}
	t.Fatal("the log does not end")
	return nil
}

func entryList(es []stores.Entry) string {
	var b bytes.Buffer
	for _, e := range es {
		fmt.Fprintf(&b, " %s@%d", e.Record.ID, e.Seq)
	}
	return b.String()
}

// TestPullTransactionSeenInPart: a Query that returns seq 3 of a
// transaction that wrote 1..3 but not yet seq 2 (as a read-committed Query
// of DynamoDB can, while the transaction is applied item by item) must not
// move the reader's cursor past 2: every record is delivered, once.
func TestPullTransactionSeenInPart(t *testing.T) {
	for _, tc := range []struct {
		name   string
		hide   []uint64
		limit  int
		before []string // records written, each in its own transaction, first
	}{
		{name: "middle", hide: []uint64{2}, limit: 10},
		{name: "all but the last", hide: []uint64{1, 2}, limit: 10},
		{name: "after another transaction", hide: []uint64{2}, limit: 10, before: []string{"x"}},
		{name: "page of two", hide: []uint64{2}, limit: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hiding := false
			s, ft := faultStore(t, Config{}, nil)
			for i, id := range tc.before {
				applyNew(t, s, "tx", int64(i+1), id)
			}
			applyNew(t, s, "tx", 10, "a", "b", "c")
			first := uint64(len(tc.before)) + 1
			hide := make([]uint64, len(tc.hide))
			for i, q := range tc.hide {
				hide[i] = q + first - 1
			}
			ft.mu.Lock()
			ft.pick = func(op string, body []byte) fault {
				// The first Query of the log misses the hidden items;
				// every later one sees the whole transaction.
				if op == "Query" && bytes.Contains(body, []byte(logPK("tx"))) && !hiding {
					hiding = true
					return fault{reply: withoutLogItems(t, hide...)}
				}
				return fault{}
			}
			ft.mu.Unlock()
			got := drainLog(t, s, "tx", 0, tc.limit)
			ids := map[string]int{}
			for _, e := range got {
				ids[e.Record.ID]++
			}
			want := append(slices.Clone(tc.before), "a", "b", "c")
			for _, id := range want {
				if ids[id] != 1 {
					t.Fatalf("delivered%s: %s %d times, want once each of %v", entryList(got), id, ids[id], want)
				}
			}
			if !hiding {
				t.Fatal("no Query of the log was answered in part")
			}
		})
	}
}

// TestPullCompactedInTransaction: an entry of a transaction that a later
// transaction compacted away is no hole to wait for: the reader checks it
// once (one TransactGetItems) and delivers every record once. A log with
// no such gap costs no read besides the Queries.
func TestPullCompactedInTransaction(t *testing.T) {
	s, ft := faultStore(t, Config{}, nil)
	applyNew(t, s, "cp", 1, "a", "b", "c")
	got := drainLog(t, s, "cp", 0, 10)
	if entryList(got) != " a@1 b@2 c@3" {
		t.Fatalf("delivered%s, want a@1 b@2 c@3", entryList(got))
	}
	if n := ft.count("TransactGetItems"); n != 0 {
		t.Fatalf("%d TransactGetItems for a log without gaps, want 0", n)
	}
	applyNew(t, s, "cp", 2, "b") // b moves from 2 to 4
	got = drainLog(t, s, "cp", 0, 10)
	if entryList(got) != " a@1 c@3 b@4" {
		t.Fatalf("delivered%s, want a@1 c@3 b@4", entryList(got))
	}
	if n := ft.count("TransactGetItems"); n != 1 {
		t.Fatalf("%d TransactGetItems for one compacted entry, want 1", n)
	}
}

// TestPullOldLogEntries: log entries written before entries named their
// transaction (no tx attribute) read as before.
func TestPullOldLogEntries(t *testing.T) {
	s, ft := faultStore(t, Config{}, nil)
	applyNew(t, s, "old", 1, "a", "b", "c")
	applyNew(t, s, "old", 2, "b")
	db, _, _ := testClients(t)
	for _, seq := range []uint64{1, 3, 4} {
		if _, err := db.UpdateItem(context.Background(), &awsdynamodb.UpdateItemInput{
			TableName: &s.table, Key: key(logPK("old"), seq),
			UpdateExpression:         ptr("REMOVE #t"),
			ExpressionAttributeNames: map[string]string{"#t": attrTx},
		}); err != nil {
			t.Fatal(err)
		}
	}
	got := drainLog(t, s, "old", 0, 10)
	if entryList(got) != " a@1 c@3 b@4" {
		t.Fatalf("delivered%s, want a@1 c@3 b@4", entryList(got))
	}
	if n := ft.count("TransactGetItems"); n != 0 {
		t.Fatalf("%d TransactGetItems for entries that name no transaction, want 0", n)
	}
}

func TestTxSeqs(t *testing.T) {
	for _, seqs := range [][]uint64{{1, 2}, {7, 8, 9, 10}, {1, 3, 4}, {5, 100, 1 << 40}, {1<<64 - 2, 1<<64 - 1}} {
		enc := appendTxSeqs(nil, seqs)
		got, err := txSeqs(map[string]types.AttributeValue{attrTx: b(enc)})
		if err != nil || !slices.Equal(got, seqs) {
			t.Errorf("%v: decoded %v, %v", seqs, got, err)
		}
	}
	if got, err := txSeqs(map[string]types.AttributeValue{}); got != nil || err != nil {
		t.Errorf("no attribute: %v, %v; want nil, nil", got, err)
	}
	for _, bad := range [][]byte{nil, {1}, {1, 2, 1}, {1, 1, 0}, {1, 1, 1, 1}, {1, 200, 1}, {0x80}} {
		if _, err := txSeqs(map[string]types.AttributeValue{attrTx: b(bad)}); err == nil {
			t.Errorf("%x: decoded", bad)
		}
	}
}

// TestPullSparseTransaction: a transaction that changed a record twice took
// a seq its log does not hold (the record's first change); the reader
// does not look for it, and finds the entry it missed.
func TestPullSparseTransaction(t *testing.T) {
	s, ft := faultStore(t, Config{}, nil)
	set := func(id string, wall int64) crdt.Change {
		return crdt.Change{Collection: "sp", Record: crdt.SetField(id, "f", val(t, wall), stamp(wall, "w"))}
	}
	if _, err := s.Apply(context.Background(), []crdt.Change{set("a", 1), set("b", 1), set("b", 2), set("c", 1)}); err != nil {
		t.Fatal(err)
	}
	if got := entryList(drainLog(t, s, "sp", 0, 10)); got != " a@1 b@3 c@4" {
		t.Fatalf("delivered%s, want a@1 b@3 c@4", got)
	}
	if n := ft.count("TransactGetItems"); n != 0 {
		t.Fatalf("%d TransactGetItems for a log without gaps, want 0", n)
	}
	ft.mu.Lock()
	ft.pick = nth("Query", logPK("sp"), 1, fault{reply: withoutLogItems(t, 3)})
	ft.mu.Unlock()
	if got := entryList(drainLog(t, s, "sp", 0, 10)); got != " a@1 b@3 c@4" {
		t.Fatalf("delivered%s, want a@1 b@3 c@4", got)
	}
}

// TestPullHoleReadAgain: the TransactGetItems that reads a missed entry
// is read again when it is cancelled by a transaction in progress, and
// when it was ordered before the transaction the page saw in part (the
// record of the entry the page read is older than that entry): it then
// says nothing of the missed entry, which is not to be taken for
// compacted.
func TestPullHoleReadAgain(t *testing.T) {
	cancelled := fault{status: 400, body: `{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException","Message":"Transaction cancelled, please refer cancellation reasons for specific reasons [None, TransactionConflict]","CancellationReasons":[{"Code":"None"},{"Code":"TransactionConflict","Message":"Transaction is ongoing for the item"}]}`}
	before := fault{reply: func(body []byte) []byte {
		// The table as it was before the transaction: neither the
		// record of the entry the page read (c), nor that entry, nor
		// the missed entry.
		return []byte(`{"Responses":[{},{},{}]}`)
	}}
	for _, tc := range []struct {
		name string
		f    fault
	}{{"cancelled", cancelled}, {"ordered before", before}} {
		t.Run(tc.name, func(t *testing.T) {
			s, ft := faultStore(t, Config{}, nil)
			applyNew(t, s, "ra", 1, "a", "b", "c")
			hid, faulted := false, false
			ft.mu.Lock()
			ft.pick = func(op string, body []byte) fault {
				switch {
				case op == "Query" && !hid:
					hid = true
					return fault{reply: withoutLogItems(t, 2)}
				case op == "TransactGetItems" && !faulted:
					faulted = true
					return tc.f
				}
				return fault{}
			}
			ft.mu.Unlock()
			if got := entryList(drainLog(t, s, "ra", 0, 10)); got != " a@1 b@2 c@3" {
				t.Fatalf("delivered%s, want a@1 b@2 c@3", got)
			}
			if n := ft.count("TransactGetItems"); n != 2 {
				t.Fatalf("%d TransactGetItems, want 2 (one faulted, one read again)", n)
			}
		})
	}
}

// TestPullHolesOverOneRead: the entries a page missed of transactions
// being applied are read with TransactGetItems, whose answer DynamoDB
// holds to 4 MB of items. Three transactions of six records near
// crdt.MaxRecordBytes each, seen by the page's Queries only by their last
// entries (as while all three were applied), miss some 4.6 MB of entries:
// the page must still read them, and deliver every record once.
func TestPullHolesOverOneRead(t *testing.T) {
	s, ft := faultStore(t, Config{}, nil)
	big := strings.Repeat("x", crdt.MaxValueBytes-16)
	var hide []uint64
	for tx := range 3 {
		var changes []crdt.Change
		for i := range 6 {
			r := crdt.Record{ID: fmt.Sprintf("t%d-%d", tx, i), Fields: map[string]crdt.Field{}}
			for _, f := range []string{"a", "b"} {
				r.Fields[f] = crdt.Field{Stamp: stamp(int64(10+tx), "w"), Value: val(t, big)}
			}
			changes = append(changes, crdt.Change{Collection: "hb", Record: r})
		}
		res, err := s.Apply(context.Background(), changes)
		if err != nil {
			t.Fatal(err)
		}
		for i := range res {
			if res[i].Seq != res[0].Seq+uint64(i) {
				t.Fatalf("transaction %d: results %v, want consecutive seqs of one transaction", tx, res)
			}
			if i < len(res)-1 {
				hide = append(hide, res[i].Seq)
			}
		}
	}
	hiding := true
	ft.mu.Lock()
	ft.pick = func(op string, body []byte) fault {
		if op == "Query" && hiding {
			return fault{reply: withoutLogItems(t, hide...)}
		}
		return fault{}
	}
	ft.mu.Unlock()
	p, err := s.Pull(context.Background(), "hb", 0, stores.PageLimit{Records: stores.MaxPage, Bytes: 1 << 30})
	ft.mu.Lock()
	hiding = false
	ft.mu.Unlock()
	if err != nil {
		t.Fatalf("Pull of a page that missed %d entries of 3 transactions: %v", len(hide), err)
	}
	if len(p.Entries) != 18 {
		t.Fatalf("Pull: %d records%s, want all 18", len(p.Entries), entryList(p.Entries))
	}
	for i, e := range p.Entries {
		if e.Seq != uint64(i+1) || len(e.Record.Fields) != 2 {
			t.Fatalf("Pull: entry %d is %s@%d with %d fields, want seq %d whole", i, e.Record.ID, e.Seq, len(e.Record.Fields), i+1)
		}
	}
}

// TestPullHolesReadRefusedForSize: a TransactGetItems DynamoDB cancels for a
// validation error (as it may for items over 4 MB) is no transaction in
// progress, which reading the same items again would outwait: the page
// reads the transactions' gaps again in halves, and delivers every record
// once.
func TestPullHolesReadRefusedForSize(t *testing.T) {
	refused := fault{status: 400, body: `{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException","Message":"Transaction cancelled, please refer cancellation reasons for specific reasons [ValidationError]","CancellationReasons":[{"Code":"ValidationError","Message":"the aggregate size of the items exceeds 4 MB"}]}`}
	s, ft := faultStore(t, Config{MaxAttempts: 3}, nil)
	for tx := range 3 {
		applyNew(t, s, "rs", int64(tx+1), fmt.Sprintf("a%d", tx), fmt.Sprintf("b%d", tx))
	}
	// Compact the first entry of each transaction away: three gaps.
	for tx := range 3 {
		applyNew(t, s, "rs", int64(10+tx), fmt.Sprintf("a%d", tx))
	}
	ft.mu.Lock()
	ft.pick = func(op string, body []byte) fault {
		// Any read of more than one transaction's gap (three items
		// each: the record item, the entry read, the entry missed).
		if op == "TransactGetItems" && bytes.Count(body, []byte(`"Get"`)) > 3 {
			return refused
		}
		return fault{}
	}
	ft.mu.Unlock()
	got := drainLog(t, s, "rs", 0, 100)
	if list := entryList(got); list != " b0@2 b1@4 b2@6 a0@7 a1@8 a2@9" {
		t.Fatalf("delivered%s, want b0@2 b1@4 b2@6 a0@7 a1@8 a2@9", list)
	}
}
