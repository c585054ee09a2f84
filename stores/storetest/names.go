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

// Names a hostile client may choose, within what crdt accepts, to make two
// different (collection, record) pairs meet in one store key, a prefix
// range or a key of the store's own: collections that extend one another
// or spell a store's internal names and separators, and ids and field names
// that hold the separators, brackets and prefixes stores build keys with,
// or differ only in case, composition or width (every store is byte-exact).
var (
	hostileCollections = []string{
		"a", "a.b", "a-b", "a_b", "a_", "a.", "a-", "A", "a.b.c", "ab",
		"convergo", "store", "meta", "heads", "epochs", "usage", "format", "identity",
		"r", "l", "h", "e", "c", "id", "epoch", "server", "seq", "log", "cs",
		"_convergo.deny", "_convergo.leases", "_convergo.horizons", "_",
	}
	hostileIDs = []string{
		"x", "X", "#", "##", "x#", "#x", "a#x", "b#x", "a.b#x", "~", "~r#a#x", "~h#a", "~l#a", "~e#a", "~store",
		"/", "a/x", ":", "x:", ":x", "r:a", "l:a", "{", "}", "{}", "{a}", "{a}:r", "{convergo}:id", "}{",
		"=c", "*", "?", "[", "\\", "%", "'", "\"", " ", "x ", " x",
		"é", "e\u0301", "ß", "ss", "SS", "ſ", "s", "K", "\u212a", "ｘ", "\u00a0", "\u200b", "\ufeff",
		"\U0001F600", "\ufffd",
	}
	hostileFields = []string{"f", "F", "=c", "vf", "sf", "pk", "sk", "rec", "seq", "id", "head", "cvg", "k", "#", "{", "é", "e\u0301"}
)

// testNames writes one record per hostile (collection, id) pair, each with
// fields of hostile names holding values that name the pair, and checks
// that every collection reads back exactly its own records (Get, Pull,
// Head, Usage) and that no write touched another pair's record.
func testNames(t *testing.T, f Factory) {
	s := open(t, f)
	ctx := context.Background()
	type key struct{ coll, id string }
	want := map[key]crdt.Record{}
	var batch []crdt.Change
	for i, coll := range hostileCollections {
		if err := crdt.ValidateCollection(coll); err != nil {
			t.Fatalf("probe collection %q is not valid: %v", coll, err)
		}
		for j, id := range hostileIDs {
			if err := crdt.ValidateID(id); err != nil {
				t.Fatalf("probe id %q is not valid: %v", id, err)
			}
			r := crdt.Record{ID: id, Fields: map[string]crdt.Field{}}
			for _, name := range hostileFields {
				r.Fields[name] = crdt.Field{Stamp: st(int64(1+i*len(hostileIDs)+j), "w"), Value: val(t, coll+"\x00"+id+"\x00"+name)}
			}
			want[key{coll, id}] = r
			batch = append(batch, chg(coll, r))
		}
	}
	for start := 0; start < len(batch); start += stores.MaxBatch {
		res := apply(t, s, batch[start:min(start+stores.MaxBatch, len(batch))]...)
		for i, r := range res {
			if !r.Changed {
				c := batch[start+i]
				t.Fatalf("change %q/%q to a new record did not change it: another pair shares its key", c.Collection, c.Record.ID)
			}
		}
	}
	for _, coll := range hostileCollections {
		var ids []string
		var pulled stores.Usage
		for _, e := range pullAll(t, s, coll, 0, 97) {
			pulled.Records++
			pulled.Bytes += int64(len(crdt.AppendRecord(nil, e.Record)))
			r, ok := want[key{coll, e.Record.ID}]
			if !ok {
				t.Fatalf("Pull(%q) returned record %q, which was written to no such pair", coll, e.Record.ID)
			}
			wantRecord(t, fmt.Sprintf("Pull(%q) record %q", coll, e.Record.ID), e.Record, r)
			ids = append(ids, e.Record.ID)
		}
		slices.Sort(ids)
		wantIDs := slices.Clone(hostileIDs)
		slices.Sort(wantIDs)
		if !slices.Equal(ids, wantIDs) {
			t.Fatalf("Pull(%q): ids %q, want %q", coll, ids, wantIDs)
		}
		if h := head(t, s, coll); h != uint64(len(hostileIDs)) {
			t.Fatalf("Head(%q) = %d, want %d (one per record written to it)", coll, h, len(hostileIDs))
		}
		for _, id := range hostileIDs {
			wantRecord(t, fmt.Sprintf("Get(%q, %q)", coll, id), get(t, s, coll, id).Record, want[key{coll, id}])
		}
		if u, ok := s.(stores.Usager); ok {
			got, err := u.Usage(ctx, coll)
			if err != nil {
				t.Fatalf("Usage(%q): %v", coll, err)
			}
			if got != pulled {
				t.Fatalf("Usage(%q) = %+v, want %+v (from a pull)", coll, got, pulled)
			}
		}
	}
	// A collection that was never written, whose name extends or is
	// extended by written ones, holds nothing.
	for _, coll := range []string{"a.b.", "a.bc", "aa", "a.b.c.d", "convergo.x", "B"} {
		if h := head(t, s, coll); h != 0 {
			t.Fatalf("Head(%q) of a collection never written = %d", coll, h)
		}
		if p := pull(t, s, coll, 0, 10); len(p.Entries) != 0 {
			t.Fatalf("Pull(%q) of a collection never written returned %d records, the first %q", coll, len(p.Entries), p.Entries[0].Record.ID)
		}
		if _, err := s.Get(ctx, coll, "x"); err == nil {
			t.Fatalf("Get(%q, x) of a collection never written found a record", coll)
		}
	}
	if _, err := s.Identity(ctx); err != nil {
		t.Fatalf("Identity after writing collections named like the store's own keys: %v", err)
	}
	// A new epoch of a collection named like the store's own keys is that
	// collection's alone: the identity and every other collection's epoch
	// stay.
	id, err := s.Identity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	metas := map[string]stores.Meta{}
	for _, coll := range hostileCollections {
		m, err := s.Meta(ctx, coll)
		if err != nil {
			t.Fatalf("Meta(%q): %v", coll, err)
		}
		metas[coll] = m
	}
	bumped := map[string]bool{"convergo": true, "store": true, "epoch": true, "epochs": true, "meta": true, "identity": true}
	for coll := range bumped {
		if err := s.BumpEpoch(ctx, coll, stores.HistoryLost); err != nil {
			t.Fatalf("BumpEpoch(%q): %v", coll, err)
		}
	}
	if got, err := s.Identity(ctx); err != nil || got != id {
		t.Fatalf("Identity after new epochs of collections named like the store's own keys: %q, %v; was %q", got, err, id)
	}
	for _, coll := range hostileCollections {
		m, err := s.Meta(ctx, coll)
		if err != nil {
			t.Fatalf("Meta(%q): %v", coll, err)
		}
		if moved := m != metas[coll]; moved != bumped[coll] {
			t.Fatalf("Meta(%q) went from %+v to %+v after new epochs of %v", coll, metas[coll], m, bumped)
		}
	}
}

// testLongestNamesInBatch writes, in one batch with small changes of other
// collections, records at every name limit at once (the longest collection
// name, the longest ids, as many fields of the longest names as fit, the
// longest replica ids) and as large as a record may be: a store whose keys or
// items grow with the names must still take them, or a client's change
// near the limits fails everybody's batch.
func testLongestNamesInBatch(t *testing.T, f Factory) {
	s := open(t, f)
	coll := strings.Repeat("Z", crdt.MaxCollectionBytes)
	replica := strings.Repeat("r", crdt.MaxReplicaBytes)
	var batch []crdt.Change
	var big []crdt.Record
	for i := range 3 {
		id := fmt.Sprintf("%d%s", i, strings.Repeat("\U0010FFFF", (crdt.MaxIDBytes-1)/4))
		id += strings.Repeat("i", crdt.MaxIDBytes-len(id))
		r := crdt.Record{ID: id, Deleted: crdt.Stamp{Wall: crdt.MaxWall - 1, Logical: crdt.MaxLogical, Replica: replica}, Fields: map[string]crdt.Field{}}
		for j := range 800 { // 1,024 of the longest names and stamps would not fit
			name := fmt.Sprintf("%04d%s", j, strings.Repeat("n", crdt.MaxFieldNameBytes-4))
			r.Fields[name] = crdt.Field{Stamp: crdt.Stamp{Wall: crdt.MaxWall, Logical: crdt.MaxLogical, Replica: replica}, Value: val(t, 1)}
		}
		enc, err := crdt.EncodeRecord(r)
		if err != nil {
			t.Fatal(err)
		}
		// Fill the record up to the size limit on its first field.
		first := fmt.Sprintf("%04d%s", 0, strings.Repeat("n", crdt.MaxFieldNameBytes-4))
		fl := r.Fields[first]
		fl.Value = blob(t, len(fl.Value)+crdt.MaxRecordBytes-len(enc), 'v')
		r.Fields[first] = fl
		if enc, _ := crdt.EncodeRecord(r); len(enc) != crdt.MaxRecordBytes {
			t.Fatalf("record of %d bytes, want %d", len(enc), crdt.MaxRecordBytes)
		}
		big = append(big, r)
		batch = append(batch, chg("small", crdt.SetField(fmt.Sprint("before", i), "f", val(t, i), st(1, "w"))), chg(coll, r))
	}
	batch = append(batch, chg("small", crdt.SetField("after", "f", val(t, 1), st(1, "w"))))
	for i, r := range apply(t, s, batch...) {
		if !r.Changed {
			t.Fatalf("change %d (%q) not applied", i, batch[i].Collection)
		}
	}
	for _, r := range big {
		wantRecord(t, "Get of a record at every limit", get(t, s, coll, r.ID).Record, r)
	}
	got := pullAll(t, s, coll, 0, 1)
	if len(got) != len(big) {
		t.Fatalf("Pull: %d records, want %d", len(got), len(big))
	}
	if n := len(pullAll(t, s, "small", 0, 100)); n != 4 {
		t.Fatalf("Pull(small): %d records, want 4", n)
	}
}

// testRefusalNames checks that a change refused past a limit is refused
// as too large whatever its record's id says: a store that reports the
// refusal in text it then reads back must not mistake an id that spells
// another error ("convergo:corrupt") for that error, which would count and
// log damage that is not there and answer the client with another code.
func testRefusalNames(t *testing.T, f Factory) {
	s := open(t, f)
	ctx := context.Background()
	for _, id := range []string{"convergo:corrupt", "x convergo:corrupt key y", "convergo:malformed", "convergo:seq-exhausted", " script: x", "ERR", "LOADING", "NOSCRIPT", "MOVED 1 127.0.0.1:1", "TRYAGAIN"} {
		full := bigRecord(t, id, 100, crdt.MaxRecordBytes-1000)
		apply(t, s, chg("refused", full))
		_, err := s.Apply(ctx, []crdt.Change{chg("refused", crdt.SetField(id, "more", blob(t, 2000, 'm'), st(5000, "a")))})
		if errors.Is(err, stores.ErrCorrupt) || errors.Is(err, stores.ErrUnavailable) || errors.Is(err, stores.ErrInvalid) {
			t.Fatalf("record %q: a change past the size limit was refused as %v, want only stores.ErrTooLarge", id, err)
		}
		wantErr(t, fmt.Sprintf("record %q: a change past the size limit", id), err, stores.ErrTooLarge)
		wantRecord(t, fmt.Sprintf("record %q after the refusal", id), get(t, s, "refused", id).Record, full)
	}
}
