package engine

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores/memory"
)

// A delete or an unset makes room only where it replaces what the store
// holds. One of a record the collection does not hold (or holds deleted),
// or of a field its record does not hold, adds a record or a field of
// tombstones: at its quota the collection refuses it quota_exceeded, as a
// change that sets a value, or a writer could grow it without end by
// deleting ids it makes up, or unsetting 1,024 field names at a time.
// Deletes of its records and unsets of their fields still apply.
func TestQuotaTombstonesAreHeldToIt(t *testing.T) {
	ctx := context.Background()
	st := memory.New()
	defer st.Close()
	e, err := Open(Config{Store: st, Replica: "srv", PollInterval: -1,
		Quotas: []Quota{{Pattern: "n.*", MaxRecords: 2}, {Pattern: "b.*", MaxBytes: 40}, {Pattern: "c.*", MaxCollections: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	s := func(w int64) crdt.Stamp { return crdt.Stamp{Wall: w, Replica: "c1"} }
	set := func(coll, id, field string, w int64) crdt.Change {
		return crdt.Change{Collection: coll, Record: crdt.SetField(id, field, value(t, w), s(w))}
	}
	del := func(coll, id string, w int64) crdt.Change {
		return crdt.Change{Collection: coll, Record: crdt.DeleteRecord(id, s(w))}
	}
	unset := func(coll, id string, w int64, names ...string) crdt.Change {
		r := crdt.Record{ID: id, Fields: map[string]crdt.Field{}}
		for _, n := range names {
			r.Fields[n] = crdt.Field{Stamp: s(w)}
		}
		return crdt.Change{Collection: coll, Record: r}
	}
	apply := func(chs ...crdt.Change) []Result {
		t.Helper()
		res, err := e.Apply(ctx, chs)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	// Fill each quota: n.a holds 2 records, b.a over 40 bytes, and c.a
	// is the one collection c.* may hold.
	r1 := set("n.a", "r1", "f", 1)
	r1.Record.Fields["g"] = r1.Record.Fields["f"]
	for _, c := range []crdt.Change{set("n.a", "r0", "f", 1), r1,
		set("b.a", "r0", "f", 1), set("b.a", "r1", "f", 1), set("b.a", "r2", "f", 1), set("c.a", "r0", "f", 1)} {
		if res := apply(c); res[0].Status != StatusApplied {
			t.Fatalf("filling %s: %+v", c.Collection, res)
		}
	}
	if u, _ := e.usager.Usage(ctx, "b.a"); u.Bytes < 40 {
		t.Fatalf("b.a holds %d bytes, want at least its quota", u.Bytes)
	}
	names := make([]string, crdt.MaxFieldsPerRecord)
	for i := range names {
		names[i] = fmt.Sprintf("field-%04d", i)
	}
	for _, tc := range []struct {
		name   string
		change crdt.Change
		want   Status
	}{
		{"a delete of a record not held", del("n.a", "ghost", 2), StatusRefused},
		{"unsets of a record not held", unset("n.a", "ghost2", 2, names...), StatusRefused},
		{"an unset of a field its record lacks", unset("n.a", "r0", 2, "nosuch"), StatusRefused},
		{"bytes: a delete of a record not held", del("b.a", "ghost", 2), StatusRefused},
		{"bytes: unsets of fields their record lacks", unset("b.a", "r0", 2, names[:100]...), StatusRefused},
		{"collections: a delete in another collection", del("c.b", "ghost", 2), StatusRefused},
		{"collections: unsets in another collection", unset("c.b", "ghost2", 2, "f"), StatusRefused},
		{"an unset of a held field", unset("n.a", "r1", 2, "g"), StatusApplied},
		{"a delete of a held record", del("n.a", "r0", 3), StatusApplied},
		{"bytes: a delete of a held record", del("b.a", "r0", 3), StatusApplied},
		{"collections: a delete in the counted one", del("c.a", "r0", 3), StatusApplied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := apply(tc.change)
			if res[0].Status != tc.want {
				t.Fatalf("%v (%v), want %v", res[0].Status, res[0].Err, tc.want)
			}
			if tc.want == StatusRefused && !errors.Is(res[0].Err, ErrQuotaExceeded) {
				t.Fatalf("refused with %v, want ErrQuotaExceeded", res[0].Err)
			}
		})
	}
	for coll, want := range map[string]int64{"n.a": 2, "c.b": 0} {
		if u, _ := e.usager.Usage(ctx, coll); u.Records != want {
			t.Errorf("%s holds %d records, want %d", coll, u.Records, want)
		}
	}
}
