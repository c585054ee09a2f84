package storetest

import (
	"fmt"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// testPageBytes checks that pages are cut by the encoded size of their
// records as well as by count: records in seq order up to PageLimit.Bytes,
// the first record always, and More when the cut left entries behind.
func testPageBytes(t *testing.T, f Factory) {
	s := open(t, f)
	const kib = 1 << 10
	// Seven records of 100 KiB, one of 260 KiB (alone larger than the
	// budget below) in the middle, and a small one at the end.
	var recs []crdt.Record
	for i := range 3 {
		recs = append(recs, bigRecord(t, fmt.Sprintf("a%d", i), 4, 100*kib))
	}
	recs = append(recs, bigRecord(t, "huge", 8, 260*kib))
	for i := range 4 {
		recs = append(recs, bigRecord(t, fmt.Sprintf("b%d", i), 4, 100*kib))
	}
	recs = append(recs, crdt.SetField("small", "n", val(t, 1), st(1, "w")))
	for _, r := range recs {
		apply(t, s, chg("pb", r)) // one by one: seqs in this order
	}
	sizes := map[string]int{}
	for _, r := range recs {
		enc, err := crdt.EncodeRecord(r)
		if err != nil {
			t.Fatal(err)
		}
		sizes[r.ID] = len(enc)
	}
	// want cuts recs into pages as the contract says.
	want := func(limit stores.PageLimit) [][]string {
		var pages [][]string
		var cur []string
		used := 0
		for _, r := range recs {
			if len(cur) > 0 && (len(cur) == limit.Records || used+sizes[r.ID] > limit.Bytes) {
				pages = append(pages, cur)
				cur, used = nil, 0
			}
			cur = append(cur, r.ID)
			used += sizes[r.ID]
		}
		return append(pages, cur)
	}
	for _, tc := range []struct {
		name  string
		limit stores.PageLimit
		pages int // a hand count, to keep want honest
	}{
		{"250 KiB", stores.PageLimit{Records: stores.MaxPage, Bytes: 250 * kib}, 5},
		{"exactly two records", stores.PageLimit{Records: stores.MaxPage, Bytes: 200 * kib}, 6},
		{"a byte short of two records", stores.PageLimit{Records: stores.MaxPage, Bytes: 200*kib - 1}, 8},
		{"one byte", stores.PageLimit{Records: stores.MaxPage, Bytes: 1}, 9},
		{"count before bytes", stores.PageLimit{Records: 2, Bytes: 1 << 30}, 5},
		{"everything", stores.PageLimit{Records: stores.MaxPage, Bytes: 1 << 30}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantPages := want(tc.limit)
			if len(wantPages) != tc.pages {
				t.Fatalf("test bug: the reference cuts %d pages, the hand count is %d", len(wantPages), tc.pages)
			}
			var cursor uint64
			seen := map[string]bool{}
			for i, w := range wantPages {
				p, err := s.Pull(t.Context(), "pb", cursor, tc.limit)
				if err != nil {
					t.Fatalf("page %d: Pull(after %d, %+v): %v", i, cursor, tc.limit, err)
				}
				checkPage(t, p, cursor, tc.limit.Records)
				var got []string
				total := 0
				for _, e := range p.Entries {
					got = append(got, e.Record.ID)
					if seen[e.Record.ID] {
						t.Fatalf("page %d: record %s again", i, e.Record.ID)
					}
					seen[e.Record.ID] = true
					enc, _ := crdt.EncodeRecord(e.Record)
					total += len(enc)
				}
				if fmt.Sprint(got) != fmt.Sprint(w) {
					t.Fatalf("page %d after %d: records %v, want %v", i, cursor, got, w)
				}
				if len(got) > 1 && total > tc.limit.Bytes {
					t.Fatalf("page %d: %d records of %d bytes, over the budget of %d", i, len(got), total, tc.limit.Bytes)
				}
				if last := i == len(wantPages)-1; p.More == last {
					t.Fatalf("page %d of %d: More = %v", i+1, len(wantPages), p.More)
				}
				cursor = p.Next
			}
			if len(seen) != len(recs) {
				t.Fatalf("walked %d records, want %d", len(seen), len(recs))
			}
		})
	}
	// A record alone over the budget travels alone, wherever it is.
	a2 := get(t, s, "pb", "a2")
	p, err := s.Pull(t.Context(), "pb", a2.Seq, stores.PageLimit{Records: stores.MaxPage, Bytes: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Entries) != 1 || p.Entries[0].Record.ID != "huge" || !p.More {
		t.Fatalf("page after a2 with a 1-byte budget: %d entries, More %v; want huge alone and More", len(p.Entries), p.More)
	}
	wantRecord(t, "huge", p.Entries[0].Record, recs[3])
}

// testPageBytesLarge checks that a page under a byte budget far above
// DefaultPageBytes (a server's MaxPageBytes may be set so) holds every
// record the budget allows, large records among them, however the store
// wrote them: records written two to a batch, one of each pair changed
// again since (a store that commits a batch as one unit and compacts the
// log may have to look for the entry it no longer holds), read back in
// one page.
func testPageBytesLarge(t *testing.T, f Factory) {
	s := open(t, f)
	const pairs = 20
	want := map[string]crdt.Record{}
	for i := range pairs {
		a := bigRecord(t, fmt.Sprintf("a%02d", i), 4, crdt.MaxRecordBytes-1000)
		b := bigRecord(t, fmt.Sprintf("b%02d", i), 4, crdt.MaxRecordBytes-1000)
		apply(t, s, chg("pl", a), chg("pl", b))
		want[a.ID], want[b.ID] = a, b
	}
	for i := range pairs {
		c := crdt.SetField(fmt.Sprintf("a%02d", i), "n", val(t, i), st(9000, "w"))
		apply(t, s, chg("pl", c))
		r := want[c.ID]
		r.Merge(c)
		want[c.ID] = r
	}
	limit := stores.PageLimit{Records: stores.MaxPage, Bytes: 1 << 30}
	p, err := s.Pull(t.Context(), "pl", 0, limit)
	if err != nil {
		t.Fatalf("Pull(after 0, %+v) of %d records of about %d bytes: %v", limit, 2*pairs, crdt.MaxRecordBytes, err)
	}
	checkPage(t, p, 0, limit.Records)
	if len(p.Entries) != 2*pairs || p.More {
		t.Fatalf("Pull under a budget of %d bytes: %d records, More %v; want all %d in one page", limit.Bytes, len(p.Entries), p.More, 2*pairs)
	}
	for _, e := range p.Entries {
		wantRecord(t, "Pull of "+e.Record.ID, e.Record, want[e.Record.ID])
		delete(want, e.Record.ID)
	}
	if len(want) != 0 {
		t.Fatalf("Pull missed %d records", len(want))
	}
}
