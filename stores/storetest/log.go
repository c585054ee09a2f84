package storetest

import (
	"context"
	"fmt"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// fill writes n new records r0..r(n-1) to coll in batches and returns their
// seqs in order.
func fill(t testing.TB, s stores.Store, coll string, n int) []uint64 {
	t.Helper()
	seqs := make([]uint64, 0, n)
	for start := 0; start < n; start += stores.MaxBatch {
		batch := make([]crdt.Change, 0, min(n-start, stores.MaxBatch))
		for i := start; i < n && i < start+stores.MaxBatch; i++ {
			batch = append(batch, chg(coll, crdt.SetField(fmt.Sprintf("r%d", i), "n", val(t, i), st(int64(i+1), "w"))))
		}
		for _, r := range apply(t, s, batch...) {
			seqs = append(seqs, r.Seq)
		}
	}
	return seqs
}

// testCollections checks that collections have their own records, logs and
// sequence numbers.
func testCollections(t *testing.T, f Factory) {
	s := open(t, f)
	fill(t, s, "one", 5)
	res := apply(t, s, chg("two", crdt.SetField("r0", "n", val(t, "other"), st(1, "w"))))[0]
	if h1 := head(t, s, "one"); res.Seq > h1 {
		// Not a requirement of its own, but with independent counters the
		// first change of "two" cannot be above five changes of "one".
		t.Fatalf("first change of a new collection took seq %d, above the other collection's head %d: collections share a counter", res.Seq, h1)
	}
	if !res.Changed {
		t.Fatal("same record id in another collection: Changed = false, want true")
	}
	if a, b := get(t, s, "one", "r0").Record, get(t, s, "two", "r0").Record; a.Equal(b) {
		t.Fatalf("records of two collections with one id are equal: %s", fmtRecord(a))
	}
	if n := len(pullAll(t, s, "two", 0, 10)); n != 1 {
		t.Fatalf("Pull of collection two: %d entries, want 1", n)
	}
	if n := len(pullAll(t, s, "one", 0, 10)); n != 5 {
		t.Fatalf("Pull of collection one: %d entries, want 5", n)
	}
	_, err := s.Get(context.Background(), "three", "r0")
	wantErr(t, "Get from an unknown collection", err, stores.ErrNotFound)
	// Names that differ only by case or by a suffix are different collections.
	apply(t, s, chg("One", crdt.SetField("x", "n", val(t, 1), st(1, "w"))), chg("one.x", crdt.SetField("y", "n", val(t, 1), st(1, "w"))))
	if n := len(pullAll(t, s, "one", 0, 10)); n != 5 {
		t.Fatalf("Pull of collection one after writes to One and one.x: %d entries, want 5", n)
	}
	for _, c := range []string{"One", "one.x"} {
		if n := len(pullAll(t, s, c, 0, 10)); n != 1 {
			t.Fatalf("Pull of collection %s: %d entries, want 1", c, n)
		}
	}
}

// testPaging walks a log with several page sizes and checks every page's
// Next and More.
func testPaging(t *testing.T, f Factory) {
	s := open(t, f)
	const n = 25
	seqs := fill(t, s, "pg", n)
	for _, limit := range []int{1, 7, 25, 26, stores.MaxPage} {
		t.Run(fmt.Sprint("limit ", limit), func(t *testing.T) {
			var cursor uint64
			var got []string
			for pages := 0; ; pages++ {
				if pages > n+1 {
					t.Fatal("paging does not end")
				}
				p := pull(t, s, "pg", cursor, limit)
				for _, e := range p.Entries {
					got = append(got, e.Record.ID)
				}
				left := n - len(got)
				if wantLen := min(limit, left+len(p.Entries)); len(p.Entries) != wantLen {
					t.Fatalf("page %d: %d entries, want %d", pages, len(p.Entries), wantLen)
				}
				if p.More != (left > 0) {
					t.Fatalf("page %d: More = %v with %d records left", pages, p.More, left)
				}
				cursor = p.Next
				if !p.More {
					break
				}
			}
			for i, id := range got {
				if want := fmt.Sprintf("r%d", i); id != want {
					t.Fatalf("entry %d is %s, want %s (ascending seq order)", i, id, want)
				}
			}
			if cursor != seqs[n-1] {
				t.Fatalf("final cursor %d, want the last seq %d", cursor, seqs[n-1])
			}
		})
	}
	// From the middle of the log, and past its end.
	p := pull(t, s, "pg", seqs[9], 5)
	if len(p.Entries) != 5 || p.Entries[0].Record.ID != "r10" || !p.More {
		t.Fatalf("page after seq of r9: %d entries starting %v, More %v; want 5 from r10 and More", len(p.Entries), p.Entries, p.More)
	}
	last := seqs[n-1]
	for _, after := range []uint64{last, last + 1, 1 << 62} {
		p := pull(t, s, "pg", after, 10)
		if len(p.Entries) != 0 || p.Next != after || p.More {
			t.Fatalf("page after %d: %d entries, Next %d, More %v; want an empty page with Next %d", after, len(p.Entries), p.Next, p.More, after)
		}
	}
	// An unknown collection has an empty log.
	if p := pull(t, s, "nothing", 3, 10); len(p.Entries) != 0 || p.Next != 3 || p.More {
		t.Fatalf("unknown collection: %+v, want an empty page with Next 3", p)
	}
}

// testPageLimits checks limits 1 and MaxPage on a log longer than MaxPage,
// and refuses limits outside 1..MaxPage.
func testPageLimits(t *testing.T, f Factory) {
	s := open(t, f)
	seqs := fill(t, s, "big", stores.MaxPage+1)
	p := pull(t, s, "big", 0, stores.MaxPage)
	if len(p.Entries) != stores.MaxPage || !p.More || p.Next != seqs[stores.MaxPage-1] {
		t.Fatalf("page of MaxPage: %d entries, More %v, Next %d; want %d, true, %d", len(p.Entries), p.More, p.Next, stores.MaxPage, seqs[stores.MaxPage-1])
	}
	p = pull(t, s, "big", p.Next, stores.MaxPage)
	if len(p.Entries) != 1 || p.More || p.Entries[0].Seq != seqs[stores.MaxPage] {
		t.Fatalf("last page: %d entries, More %v; want 1 entry at seq %d, no More", len(p.Entries), p.More, seqs[stores.MaxPage])
	}
	p = pull(t, s, "big", seqs[stores.MaxPage-2], 1)
	if len(p.Entries) != 1 || !p.More || p.Next != seqs[stores.MaxPage-1] {
		t.Fatalf("page of 1: %d entries, More %v, Next %d", len(p.Entries), p.More, p.Next)
	}
	for _, limit := range []stores.PageLimit{
		{Records: 0, Bytes: 1000}, {Records: -1, Bytes: 1000}, {Records: stores.MaxPage + 1, Bytes: 1000}, {Records: 1 << 40, Bytes: 1000},
		{Records: 10, Bytes: 0}, {Records: 10, Bytes: -1}, {},
	} {
		_, err := s.Pull(context.Background(), "big", 0, limit)
		wantErr(t, fmt.Sprintf("Pull with limit %+v", limit), err, stores.ErrInvalid)
	}
}

// testCompaction checks that the log holds each record once, at the seq of
// its latest change, in its current state.
func testCompaction(t *testing.T, f Factory) {
	s := open(t, f)
	seqs := fill(t, s, "c", 10)
	mid := head(t, s, "c")
	res := apply(t, s,
		chg("c", crdt.SetField("r3", "n", val(t, "three"), st(100, "w"))),
		chg("c", crdt.DeleteRecord("r5", st(101, "w"))),
		chg("c", crdt.SetField("r3", "m", val(t, "more"), st(102, "w"))),
		chg("c", crdt.SetField("r0", "n", val(t, "old"), st(0, "w"))), // older than r0's write
	)
	if res[3].Changed || res[3].Seq != seqs[0] {
		t.Fatalf("older write to r0: result %+v, want {Changed:false Seq:%d}", res[3], seqs[0])
	}
	all := pullAll(t, s, "c", 0, 4)
	if len(all) != 10 {
		t.Fatalf("log has %d entries, want each of 10 records once", len(all))
	}
	order := []string{"r0", "r1", "r2", "r4", "r6", "r7", "r8", "r9", "r5", "r3"}
	for i, e := range all {
		if e.Record.ID != order[i] {
			t.Fatalf("entry %d is %s, want %s", i, e.Record.ID, order[i])
		}
		g := get(t, s, "c", e.Record.ID)
		if g.Seq != e.Seq || !g.Record.Equal(e.Record) {
			t.Fatalf("entry %d: Pull gives %s at %d, Get gives %s at %d", i, fmtRecord(e.Record), e.Seq, fmtRecord(g.Record), g.Seq)
		}
	}
	if all[0].Seq != seqs[0] {
		t.Fatalf("unchanged r0 moved from seq %d to %d", seqs[0], all[0].Seq)
	}
	want3 := crdt.Record{ID: "r3", Fields: map[string]crdt.Field{
		"n": {Stamp: st(100, "w"), Value: val(t, "three")},
		"m": {Stamp: st(102, "w"), Value: val(t, "more")},
	}}
	wantRecord(t, "r3 in the log", all[9].Record, want3)
	wantRecord(t, "r5 in the log", all[8].Record, crdt.Record{ID: "r5", Deleted: st(101, "w")})
	// A reader that had pulled up to mid sees only the two changed records.
	since := pullAll(t, s, "c", mid, 1)
	if len(since) != 2 || since[0].Record.ID != "r5" || since[1].Record.ID != "r3" {
		t.Fatalf("pull after %d: %d entries, want r5 and r3", mid, len(since))
	}
	if since[1].Seq != head(t, s, "c") {
		t.Fatalf("last entry at seq %d, Head %d", since[1].Seq, head(t, s, "c"))
	}
}

// testGetHead checks Get, Head and ErrNotFound.
func testGetHead(t *testing.T, f Factory) {
	s := open(t, f)
	ctx := context.Background()
	_, err := s.Get(ctx, "g", "nobody")
	wantErr(t, "Get from an empty store", err, stores.ErrNotFound)
	if h := head(t, s, "g"); h != 0 {
		t.Fatalf("Head of an empty collection = %d", h)
	}
	r := crdt.Record{ID: "someone", Fields: map[string]crdt.Field{
		"name": {Stamp: st(1, "a"), Value: val(t, "Ada")},
		"age":  {Stamp: st(2, "b"), Value: val(t, 36)},
		"nick": {Stamp: st(3, "b")},
	}}
	res := apply(t, s, chg("g", r))[0]
	e := get(t, s, "g", "someone")
	wantRecord(t, "Get", e.Record, r)
	if e.Seq != res.Seq || head(t, s, "g") != res.Seq {
		t.Fatalf("Get seq %d, Head %d, want %d", e.Seq, head(t, s, "g"), res.Seq)
	}
	_, err = s.Get(ctx, "g", "someone-else")
	wantErr(t, "Get of an unknown id", err, stores.ErrNotFound)
	_, err = s.Get(ctx, "h", "someone")
	wantErr(t, "Get from another collection", err, stores.ErrNotFound)
	// A deleted record is still there, as a tombstone.
	apply(t, s, chg("g", crdt.DeleteRecord("someone", st(10, "a"))))
	e = get(t, s, "g", "someone")
	wantRecord(t, "Get of a deleted record", e.Record, crdt.Record{ID: "someone", Deleted: st(10, "a")})
	if e.Record.Exists() {
		t.Fatal("deleted record exists")
	}
	// Values come back byte for byte, and Get returns a copy.
	e.Record.Fields = map[string]crdt.Field{"x": {Stamp: st(99, "z"), Value: val(t, 1)}}
	wantRecord(t, "Get after changing an earlier result", get(t, s, "g", "someone").Record, crdt.Record{ID: "someone", Deleted: st(10, "a")})
	// Ids may hold any valid text.
	for _, id := range []string{"with space", "ünïcødé", "a/b:c{d}", "*", fmt.Sprintf("%0*d", crdt.MaxIDBytes, 7)} {
		rec := crdt.SetField(id, "f", val(t, id), st(20, "a"))
		apply(t, s, chg("ids", rec))
		wantRecord(t, fmt.Sprintf("record %.20q", id), get(t, s, "ids", id).Record, rec)
	}
}
