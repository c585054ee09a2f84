package storetest

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// testInvalid checks that invalid names are refused with ErrInvalid before
// anything is written.
func testInvalid(t *testing.T, f Factory) {
	s := open(t, f)
	ctx := context.Background()
	good := chg("ok", crdt.SetField("r", "f", val(t, 1), st(1, "a")))
	badColls := []string{"", " ", "a b", "{x}", "-a", ".a", "a:b", "a/b", "a*", "ü", strings.Repeat("c", crdt.MaxCollectionBytes+1)}
	badIDs := []string{"", "a\x00b", "line\nbreak", "\xff\xfe", "\u0085", strings.Repeat("i", crdt.MaxIDBytes+1)}
	for _, c := range badColls {
		_, err := s.Apply(ctx, []crdt.Change{good, chg(c, crdt.SetField("r", "f", val(t, 1), st(1, "a")))})
		wantErr(t, fmt.Sprintf("Apply to collection %q", c), err, stores.ErrInvalid)
		_, err = s.Pull(ctx, c, 0, lim(10))
		wantErr(t, fmt.Sprintf("Pull of collection %q", c), err, stores.ErrInvalid)
		_, err = s.Get(ctx, c, "r")
		wantErr(t, fmt.Sprintf("Get from collection %q", c), err, stores.ErrInvalid)
		_, err = s.Head(ctx, c)
		wantErr(t, fmt.Sprintf("Head of collection %q", c), err, stores.ErrInvalid)
	}
	for _, id := range badIDs {
		_, err := s.Apply(ctx, []crdt.Change{good, chg("ok", crdt.SetField(id, "f", val(t, 1), st(1, "a")))})
		wantErr(t, fmt.Sprintf("Apply to id %q", id), err, stores.ErrInvalid)
		_, err = s.Get(ctx, "ok", id)
		wantErr(t, fmt.Sprintf("Get of id %q", id), err, stores.ErrInvalid)
	}
	if h := head(t, s, "ok"); h != 0 {
		t.Fatalf("batches with an invalid change wrote their valid change: Head = %d, want 0", h)
	}
	res, err := s.Apply(ctx, nil)
	if err != nil || len(res) != 0 {
		t.Fatalf("Apply of an empty batch: %d results, error %v; want none and nil", len(res), err)
	}
}

// testBatchLimit checks that a batch of MaxBatch changes is taken and one
// more is refused whole.
func testBatchLimit(t *testing.T, f Factory) {
	s := open(t, f)
	batch := make([]crdt.Change, stores.MaxBatch+1)
	for i := range batch {
		batch[i] = chg("bl", crdt.SetField(fmt.Sprintf("r%d", i), "f", val(t, i), st(1, "a")))
	}
	_, err := s.Apply(context.Background(), batch)
	wantErr(t, fmt.Sprintf("Apply of %d changes", len(batch)), err, stores.ErrInvalid)
	if h := head(t, s, "bl"); h != 0 {
		t.Fatalf("refused batch wrote: Head = %d", h)
	}
	res := apply(t, s, batch[:stores.MaxBatch]...)
	for i, r := range res {
		if !r.Changed {
			t.Fatalf("change %d of a full batch: Changed = false", i)
		}
	}
	if n := len(pullAll(t, s, "bl", 0, stores.MaxPage)); n != stores.MaxBatch {
		t.Fatalf("log holds %d records after a full batch, want %d", n, stores.MaxBatch)
	}
}

// blob returns a canonical byte-string value of exactly n encoded bytes.
// (25 and 258 are impossible sizes: no byte string encodes to them.)
func blob(t testing.TB, n int, fill byte) []byte {
	t.Helper()
	for _, h := range []struct{ head, lo, hi int }{{1, 0, 23}, {2, 24, 0xff}, {3, 0x100, 0xffff}, {5, 0x10000, 1<<32 - 1}} {
		if l := n - h.head; l >= h.lo && l <= h.hi {
			b := val(t, []byte(strings.Repeat(string(fill), l)))
			if len(b) != n {
				t.Fatalf("blob of %d bytes encodes to %d", n, len(b))
			}
			return b
		}
	}
	t.Fatalf("no byte string encodes to %d bytes", n)
	return nil
}

// bigRecord returns a record of id with fields f0000.. whose values are
// sized so that the record encodes to exactly size bytes.
func bigRecord(t testing.TB, id string, fields, size int) crdt.Record {
	t.Helper()
	r := crdt.Record{ID: id, Fields: make(map[string]crdt.Field, fields)}
	for i := range fields {
		r.Fields[fmt.Sprintf("f%04d", i)] = crdt.Field{Stamp: st(int64(1000+i), "big"), Value: blob(t, 100, byte('a'+i%26))}
	}
	enc, _ := crdt.EncodeRecord(r)
	// Grow the values evenly, then fix the remainder on the first field.
	per := (size - len(enc)) / fields
	for name, fl := range r.Fields {
		fl.Value = blob(t, len(fl.Value)+per, fl.Value[len(fl.Value)-1])
		r.Fields[name] = fl
	}
	for range 4 {
		enc, _ = crdt.EncodeRecord(r)
		if len(enc) == size {
			return r
		}
		fl := r.Fields["f0000"]
		fl.Value = blob(t, len(fl.Value)+size-len(enc), 'z')
		r.Fields["f0000"] = fl
	}
	t.Fatalf("cannot size a record of %d fields to %d bytes (got %d)", fields, size, len(enc))
	return crdt.Record{}
}

// testSizeLimits writes values and records at the crdt size limits and
// reads them back whole.
func testSizeLimits(t *testing.T, f Factory) {
	s := open(t, f)
	t.Run("largest value", func(t *testing.T) {
		v := blob(t, crdt.MaxValueBytes, 'v')
		if err := crdt.CanonicalValue(v); err != nil {
			t.Fatalf("test value: %v", err)
		}
		r := crdt.SetField("v", "big", v, st(1, "a"))
		apply(t, s, chg("size", r))
		wantRecord(t, "Get", get(t, s, "size", "v").Record, r)
	})
	t.Run("largest record with the most fields", func(t *testing.T) {
		r := bigRecord(t, "many", crdt.MaxFieldsPerRecord, crdt.MaxRecordBytes)
		if err := r.Validate(); err != nil {
			t.Fatalf("test record: %v", err)
		}
		res := apply(t, s, chg("size", r))[0]
		wantRecord(t, "Get", get(t, s, "size", "many").Record, r)
		p := pull(t, s, "size", res.Seq-1, 1)
		if len(p.Entries) != 1 {
			t.Fatalf("Pull: %d entries, want 1", len(p.Entries))
		}
		wantRecord(t, "Pull", p.Entries[0].Record, r)
	})
	t.Run("largest record built by merges", func(t *testing.T) {
		r := bigRecord(t, "merged", crdt.MaxFieldsPerRecord, crdt.MaxRecordBytes)
		names := r.FieldNames()
		var batch []crdt.Change
		for i := 0; i < len(names); i += 256 {
			part := crdt.Record{ID: r.ID, Fields: map[string]crdt.Field{}}
			for _, n := range names[i:min(i+256, len(names))] {
				part.Fields[n] = r.Fields[n]
			}
			batch = append(batch, chg("size", part))
		}
		apply(t, s, batch...)
		wantRecord(t, "Get", get(t, s, "size", "merged").Record, r)
	})
	t.Run("longest names", func(t *testing.T) {
		coll := strings.Repeat("C", crdt.MaxCollectionBytes)
		id := strings.Repeat("i", crdt.MaxIDBytes)
		r := crdt.SetField(id, strings.Repeat("n", crdt.MaxFieldNameBytes), val(t, 1), crdt.Stamp{Wall: crdt.MaxWall, Logical: crdt.MaxLogical, Replica: strings.Repeat("r", crdt.MaxReplicaBytes)})
		apply(t, s, chg(coll, r))
		wantRecord(t, "Get", get(t, s, coll, id).Record, r)
		if p := pull(t, s, coll, 0, 1); len(p.Entries) != 1 || !p.Entries[0].Record.Equal(r) {
			t.Fatalf("Pull: %d entries, want the record", len(p.Entries))
		}
	})
}

// testTooLarge checks that a change whose merge would break a record limit
// is refused with ErrTooLarge and leaves the record as it was.
func testTooLarge(t *testing.T, f Factory) {
	s := open(t, f)
	ctx := context.Background()
	refused := func(t *testing.T, id string, c crdt.Record) {
		t.Helper()
		before := get(t, s, "tl", id)
		h := head(t, s, "tl")
		_, err := s.Apply(ctx, []crdt.Change{chg("tl", c)})
		wantErr(t, "Apply past a limit", err, stores.ErrTooLarge)
		after := get(t, s, "tl", id)
		if after.Seq != before.Seq || !after.Record.Equal(before.Record) {
			t.Fatalf("refused change altered the record: %s at %d, was %s at %d", fmtRecord(after.Record), after.Seq, fmtRecord(before.Record), before.Seq)
		}
		if got := head(t, s, "tl"); got != h {
			t.Fatalf("refused change moved Head from %d to %d", h, got)
		}
	}
	t.Run("bytes", func(t *testing.T) {
		full := bigRecord(t, "bytes", 100, crdt.MaxRecordBytes-1000)
		apply(t, s, chg("tl", full))
		refused(t, "bytes", crdt.SetField("bytes", "more", blob(t, 2000, 'm'), st(5000, "a")))
		// A change that keeps the record within the limit is taken.
		small := crdt.SetField("bytes", "f0001", val(t, 1), st(5000, "a"))
		if !apply(t, s, chg("tl", small))[0].Changed {
			t.Fatal("change that shrinks a large record was not applied")
		}
	})
	t.Run("bytes, exactly", func(t *testing.T) {
		// A record a byte short of the limit; a change that makes it
		// exactly the limit is taken, one that makes it a byte over is
		// refused, and so is a change of another field by as much.
		full := bigRecord(t, "exact", 100, crdt.MaxRecordBytes-1)
		apply(t, s, chg("tl", full))
		grow := func(name string, by int, wall int64) crdt.Record {
			v := full.Fields[name].Value
			return crdt.SetField("exact", name, blob(t, len(v)+by, 'g'), st(wall, "big")) // a stamp as long as the one it replaces
		}
		refused(t, "exact", grow("f0001", 2, 6000))
		refused(t, "exact", grow("f0002", 2, 6000))
		if !apply(t, s, chg("tl", grow("f0001", 1, 6001)))[0].Changed {
			t.Fatal("a change that makes the record exactly crdt.MaxRecordBytes was not applied")
		}
		if enc, _ := crdt.EncodeRecord(get(t, s, "tl", "exact").Record); len(enc) != crdt.MaxRecordBytes {
			t.Fatalf("the record is %d bytes, want exactly %d", len(enc), crdt.MaxRecordBytes)
		}
		refused(t, "exact", grow("f0002", 1, 6002))
	})
	t.Run("fields", func(t *testing.T) {
		r := crdt.Record{ID: "fields", Fields: map[string]crdt.Field{}}
		for i := range crdt.MaxFieldsPerRecord {
			r.Fields[fmt.Sprintf("f%d", i)] = crdt.Field{Stamp: st(1, "a"), Value: val(t, i)}
		}
		apply(t, s, chg("tl", r))
		refused(t, "fields", crdt.SetField("fields", "one-more", val(t, 1), st(2, "a")))
		// Unsets are fields too.
		refused(t, "fields", crdt.UnsetField("fields", "one-more", st(2, "a")))
		// Once a delete has dropped the fields, new ones fit.
		apply(t, s, chg("tl", crdt.DeleteRecord("fields", st(3, "a"))))
		if !apply(t, s, chg("tl", crdt.SetField("fields", "one-more", val(t, 1), st(4, "a"))))[0].Changed {
			t.Fatal("write after the delete was not applied")
		}
	})
}
