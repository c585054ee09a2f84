package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"pgregory.net/rapid"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/crdttest"
	"github.com/convergo/convergo/stores"
)

type mergeStep struct {
	change  crdt.Record // its ID is filled in by the test
	changed bool
}

type mergeCase struct {
	name   string
	steps  []mergeStep
	want   crdt.Record // its ID is filled in by the test
	exists bool
}

func mergeCases(t testing.TB) []mergeCase {
	x, y := val(t, "x"), val(t, "y") // "y" encodes to larger bytes than "x"
	none := crdt.Stamp{}
	set := func(name string, v []byte, s crdt.Stamp) crdt.Record { return crdt.SetField("", name, v, s) }
	unset := func(name string, s crdt.Stamp) crdt.Record { return crdt.UnsetField("", name, s) }
	del := func(s crdt.Stamp) crdt.Record { return crdt.DeleteRecord("", s) }
	fields := func(kv ...any) map[string]crdt.Field {
		m := map[string]crdt.Field{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1].(crdt.Field)
		}
		return m
	}
	fld := func(v []byte, s crdt.Stamp) crdt.Field { return crdt.Field{Stamp: s, Value: v} }
	return []mergeCase{
		{
			name:   "newer write wins",
			steps:  []mergeStep{{set("f", x, st(10, "a")), true}, {set("f", y, st(20, "a")), true}},
			want:   rec("", none, fields("f", fld(y, st(20, "a")))),
			exists: true,
		},
		{
			name:   "older write loses",
			steps:  []mergeStep{{set("f", y, st(20, "a")), true}, {set("f", x, st(10, "b")), false}},
			want:   rec("", none, fields("f", fld(y, st(20, "a")))),
			exists: true,
		},
		{
			name:   "logical counter orders equal wall times",
			steps:  []mergeStep{{set("f", x, crdt.Stamp{Wall: 10, Logical: 1, Replica: "a"}), true}, {set("f", y, crdt.Stamp{Wall: 10, Replica: "b"}), false}},
			want:   rec("", none, fields("f", fld(x, crdt.Stamp{Wall: 10, Logical: 1, Replica: "a"}))),
			exists: true,
		},
		{
			name:   "replica orders equal times",
			steps:  []mergeStep{{set("f", x, st(10, "b")), true}, {set("f", y, st(10, "a")), false}},
			want:   rec("", none, fields("f", fld(x, st(10, "b")))),
			exists: true,
		},
		{
			name:   "fields merge independently",
			steps:  []mergeStep{{rec("", none, fields("f", fld(x, st(10, "a")), "g", fld(y, st(30, "a")))), true}, {rec("", none, fields("f", fld(y, st(20, "b")), "g", fld(x, st(20, "b")))), true}},
			want:   rec("", none, fields("f", fld(y, st(20, "b")), "g", fld(y, st(30, "a")))),
			exists: true,
		},
		{
			name:   "the same change twice",
			steps:  []mergeStep{{set("f", x, st(10, "a")), true}, {set("f", x, st(10, "a")), false}},
			want:   rec("", none, fields("f", fld(x, st(10, "a")))),
			exists: true,
		},
		{
			name:   "unset hides the older value",
			steps:  []mergeStep{{set("f", x, st(10, "a")), true}, {unset("f", st(20, "a")), true}, {set("f", y, st(15, "b")), false}},
			want:   rec("", none, fields("f", crdt.Field{Stamp: st(20, "a")})),
			exists: false,
		},
		{
			name:   "newer value after unset",
			steps:  []mergeStep{{unset("f", st(20, "a")), true}, {set("f", y, st(30, "b")), true}},
			want:   rec("", none, fields("f", fld(y, st(30, "b")))),
			exists: true,
		},
		{
			name:   "delete hides fields at or before its stamp",
			steps:  []mergeStep{{set("f", x, st(10, "a")), true}, {set("g", y, st(30, "a")), true}, {set("h", x, st(20, "a")), true}, {del(st(20, "a")), true}},
			want:   rec("", st(20, "a"), fields("g", fld(y, st(30, "a")))),
			exists: true,
		},
		{
			name:   "delete of every field",
			steps:  []mergeStep{{set("f", x, st(10, "a")), true}, {del(st(20, "b")), true}},
			want:   rec("", st(20, "b"), nil),
			exists: false,
		},
		{
			name:   "write older than the delete stays hidden",
			steps:  []mergeStep{{del(st(20, "a")), true}, {set("f", x, st(10, "a")), false}, {set("f", x, st(20, "a")), false}},
			want:   rec("", st(20, "a"), nil),
			exists: false,
		},
		{
			name:   "write after delete revives",
			steps:  []mergeStep{{set("f", x, st(10, "a")), true}, {del(st(20, "a")), true}, {set("g", y, st(30, "b")), true}},
			want:   rec("", st(20, "a"), fields("g", fld(y, st(30, "b")))),
			exists: true,
		},
		{
			name:   "older delete is a no-op",
			steps:  []mergeStep{{del(st(20, "a")), true}, {del(st(10, "b")), false}, {del(st(20, "a")), false}},
			want:   rec("", st(20, "a"), nil),
			exists: false,
		},
		{
			name:   "newer delete replaces the older",
			steps:  []mergeStep{{set("f", x, st(25, "a")), true}, {del(st(20, "a")), true}, {del(st(30, "b")), true}},
			want:   rec("", st(30, "b"), nil),
			exists: false,
		},
	}
}

// testMerge applies each step of each case in its own Apply call and checks
// Changed, Seq and the merged state.
func testMerge(t *testing.T, f Factory) {
	s := open(t, f)
	for i, tc := range mergeCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("r%d", i)
			var seq uint64
			for j, step := range tc.steps {
				step.change.ID = id
				res := apply(t, s, chg("m", step.change))[0]
				if res.Changed != step.changed {
					t.Fatalf("step %d %s: Changed = %v, want %v", j, fmtRecord(step.change), res.Changed, step.changed)
				}
				switch {
				case step.changed && res.Seq <= seq:
					t.Fatalf("step %d changed the record but its seq %d is not above %d", j, res.Seq, seq)
				case !step.changed && res.Seq != seq:
					t.Fatalf("step %d changed nothing but reports seq %d, want the record's %d", j, res.Seq, seq)
				}
				seq = res.Seq
			}
			want := tc.want
			want.ID = id
			e := get(t, s, "m", id)
			wantRecord(t, "merged record", e.Record, want)
			if e.Seq != seq {
				t.Fatalf("Get seq = %d, want %d", e.Seq, seq)
			}
			if e.Record.Exists() != tc.exists {
				t.Fatalf("Exists() = %v, want %v", e.Record.Exists(), tc.exists)
			}
		})
	}
}

// testMergeInOneBatch applies the steps of each case as one batch: they must
// merge in order, with the same results as separate calls.
func testMergeInOneBatch(t *testing.T, f Factory) {
	s := open(t, f)
	for i, tc := range mergeCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("r%d", i)
			batch := make([]crdt.Change, len(tc.steps))
			for j, step := range tc.steps {
				step.change.ID = id
				batch[j] = chg("b", step.change)
			}
			res := apply(t, s, batch...)
			var seq uint64
			for j, step := range tc.steps {
				if res[j].Changed != step.changed {
					t.Fatalf("change %d: Changed = %v, want %v", j, res[j].Changed, step.changed)
				}
				if step.changed && res[j].Seq <= seq {
					t.Fatalf("change %d: seq %d not above %d", j, res[j].Seq, seq)
				}
				if !step.changed && res[j].Seq != seq {
					t.Fatalf("change %d changed nothing but reports seq %d, want %d", j, res[j].Seq, seq)
				}
				seq = res[j].Seq
			}
			want := tc.want
			want.ID = id
			e := get(t, s, "b", id)
			wantRecord(t, "merged record", e.Record, want)
			if e.Seq != seq {
				t.Fatalf("Get seq = %d, want %d", e.Seq, seq)
			}
		})
	}
}

// testTies checks that writes with equal stamps are decided the same way in
// either order: an unset beats a value, else the larger value bytes win.
func testTies(t *testing.T, f Factory) {
	s := open(t, f)
	same := st(50, "a")
	small, large := val(t, "x"), val(t, "y")
	for _, tc := range []struct {
		name string
		a, b crdt.Field
		want crdt.Field
	}{
		{"larger bytes win", crdt.Field{Stamp: same, Value: small}, crdt.Field{Stamp: same, Value: large}, crdt.Field{Stamp: same, Value: large}},
		{"longer value with the same prefix wins", crdt.Field{Stamp: same, Value: val(t, []byte{1})}, crdt.Field{Stamp: same, Value: val(t, []byte{1, 0})}, crdt.Field{Stamp: same, Value: val(t, []byte{1, 0})}},
		{"unset beats a value", crdt.Field{Stamp: same, Value: large}, crdt.Field{Stamp: same}, crdt.Field{Stamp: same}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for order, pair := range [][2]crdt.Field{{tc.a, tc.b}, {tc.b, tc.a}} {
				id := fmt.Sprintf("%s-%d", tc.name[:5], order)
				r0 := crdt.Record{ID: id, Fields: map[string]crdt.Field{"f": pair[0]}}
				r1 := crdt.Record{ID: id, Fields: map[string]crdt.Field{"f": pair[1]}}
				res := apply(t, s, chg("t", r0), chg("t", r1))
				wantChanged := pair[1].Stamp == tc.want.Stamp && string(pair[1].Value) == string(tc.want.Value) && (pair[1].Value == nil) == (tc.want.Value == nil)
				if res[1].Changed != wantChanged {
					t.Fatalf("order %d: second change Changed = %v, want %v", order, res[1].Changed, wantChanged)
				}
				want := crdt.Record{ID: id, Fields: map[string]crdt.Field{"f": tc.want}}
				wantRecord(t, fmt.Sprintf("order %d", order), get(t, s, "t", id).Record, want)
			}
		})
	}
	t.Run("delete at an equal stamp hides", func(t *testing.T) {
		for order := range 2 {
			id := fmt.Sprintf("del-%d", order)
			cs := []crdt.Change{chg("t", crdt.SetField(id, "f", large, same)), chg("t", crdt.DeleteRecord(id, same))}
			if order == 1 {
				cs[0], cs[1] = cs[1], cs[0]
			}
			res := apply(t, s, cs...)
			if want := order == 0; res[1].Changed != want {
				t.Fatalf("order %d: second change Changed = %v, want %v", order, res[1].Changed, want)
			}
			wantRecord(t, fmt.Sprintf("order %d", order), get(t, s, "t", id).Record, crdt.Record{ID: id, Deleted: same})
		}
	})
}

// testResults checks sequence numbers: the first change of an empty
// collection and every later one take increasing numbers, Head follows, and
// a change that alters nothing on an unknown record reports seq 0.
func testResults(t *testing.T, f Factory) {
	s := open(t, f)
	if h := head(t, s, "res"); h != 0 {
		t.Fatalf("Head of an empty collection = %d, want 0", h)
	}
	var last uint64
	for i := range 5 {
		id := fmt.Sprintf("r%d", i)
		res := apply(t, s, chg("res", crdt.SetField(id, "f", val(t, i), st(int64(i+1), "a"))))[0]
		if !res.Changed || res.Seq <= last {
			t.Fatalf("new record %d: result %+v, want Changed with seq above %d", i, res, last)
		}
		last = res.Seq
		if h := head(t, s, "res"); h != res.Seq {
			t.Fatalf("Head = %d after a change took seq %d", h, res.Seq)
		}
		if e := get(t, s, "res", id); e.Seq != res.Seq {
			t.Fatalf("Get seq = %d, want %d", e.Seq, res.Seq)
		}
	}
	// A change with no fields and no delete alters nothing, even on a record
	// the store never saw: it takes no seq and creates no record.
	res := apply(t, s, chg("res", crdt.Record{ID: "empty"}))[0]
	if res.Changed || res.Seq != 0 {
		t.Fatalf("empty change to an unknown record: result %+v, want {Changed:false Seq:0}", res)
	}
	_, err := s.Get(context.Background(), "res", "empty")
	wantErr(t, "Get after an empty change", err, stores.ErrNotFound)
	if h := head(t, s, "res"); h != last {
		t.Fatalf("Head = %d after an empty change, want %d", h, last)
	}
	// A batch of new records takes increasing numbers in batch order.
	batch := make([]crdt.Change, 10)
	for i := range batch {
		batch[i] = chg("res", crdt.SetField(fmt.Sprintf("b%d", i), "f", val(t, i), st(100, "a")))
	}
	for i, r := range apply(t, s, batch...) {
		if !r.Changed || r.Seq <= last {
			t.Fatalf("batch change %d: result %+v, want Changed with seq above %d", i, r, last)
		}
		last = r.Seq
	}
	if h := head(t, s, "res"); h != last {
		t.Fatalf("Head = %d, want %d", h, last)
	}
}

// testNoop checks that changes that alter nothing take no sequence number,
// leave Head alone and add nothing to the log.
func testNoop(t *testing.T, f Factory) {
	s := open(t, f)
	first := apply(t, s,
		chg("n", crdt.SetField("r", "f", val(t, 2), st(20, "a"))),
		chg("n", crdt.SetField("q", "f", val(t, 1), st(20, "a"))),
		chg("n", crdt.DeleteRecord("r", st(10, "a"))),
	)
	rseq := first[2].Seq
	h := head(t, s, "n")
	noops := []crdt.Change{
		chg("n", crdt.SetField("r", "f", val(t, 2), st(20, "a"))), // the same write
		chg("n", crdt.SetField("r", "f", val(t, 3), st(10, "a"))), // an older write
		chg("n", crdt.DeleteRecord("r", st(5, "b"))),              // an older delete
		chg("n", crdt.UnsetField("r", "f", st(19, "z"))),          // an older unset
	}
	for i, r := range apply(t, s, noops...) {
		if r.Changed || r.Seq != rseq {
			t.Fatalf("no-op %d: result %+v, want {Changed:false Seq:%d}", i, r, rseq)
		}
	}
	if got := head(t, s, "n"); got != h {
		t.Fatalf("Head moved from %d to %d on no-ops", h, got)
	}
	if p := pull(t, s, "n", h, 10); len(p.Entries) != 0 {
		t.Fatalf("log grew on no-ops: %d entries after %d", len(p.Entries), h)
	}
	all := pullAll(t, s, "n", 0, 10)
	if len(all) != 2 || all[0].Record.ID != "q" || all[1].Record.ID != "r" {
		t.Fatalf("log after no-ops: got %d entries, want q then r", len(all))
	}
}

// testReplay applies a batch, then the whole batch again and parts of it:
// nothing changes. Then it replays a batch that was half applied.
func testReplay(t *testing.T, f Factory) {
	s := open(t, f)
	batch := []crdt.Change{
		chg("p", crdt.SetField("a", "f", val(t, "1"), st(10, "x"))),
		chg("p", crdt.SetField("b", "f", val(t, "2"), st(11, "x"))),
		chg("p", crdt.SetField("a", "g", val(t, "3"), st(12, "x"))),
		chg("p", crdt.DeleteRecord("b", st(13, "x"))),
		chg("q", crdt.SetField("a", "f", val(t, "4"), st(14, "x"))),
		chg("p", crdt.SetField("c", "f", val(t, "5"), st(15, "x"))),
	}
	first := apply(t, s, batch...)
	state := snapshot(t, s, []string{"p", "q"})
	check := func(what string, part []crdt.Change) {
		t.Helper()
		for i, r := range apply(t, s, part...) {
			if r.Changed {
				t.Fatalf("%s: change %d changed its record again", what, i)
			}
		}
		if got := snapshot(t, s, []string{"p", "q"}); !got.equal(state) {
			t.Fatalf("%s changed the store:\n got  %v\n want %v", what, got, state)
		}
	}
	check("whole replay", batch)
	check("replay of the first half", batch[:3])
	check("replay of the second half", batch[3:])
	check("replay of one change", batch[4:5])
	check("reversed replay", []crdt.Change{batch[5], batch[4], batch[3], batch[2], batch[1], batch[0]})
	// Results of a replay report the records' current seqs.
	res := apply(t, s, batch[5])
	if res[0].Seq != first[5].Seq {
		t.Fatalf("replayed change reports seq %d, want %d", res[0].Seq, first[5].Seq)
	}

	// A batch whose first half was applied before (a retry after an error)
	// applies the rest exactly once.
	s2 := open(t, f)
	apply(t, s2, batch[:3]...)
	res = apply(t, s2, batch...)
	for i, r := range res {
		if want := i >= 3; r.Changed != want {
			t.Fatalf("retried batch: change %d Changed = %v, want %v", i, r.Changed, want)
		}
	}
	if got := snapshot(t, s2, []string{"p", "q"}); !got.sameRecords(state) {
		t.Fatalf("retried batch: got %v, want the records %v", got, state)
	}
}

// storeState is the state of a set of collections: heads and records with
// their seqs.
type storeState struct {
	heads   map[string]uint64
	entries map[string]stores.Entry // key collection/id
}

func (a storeState) String() string {
	return fmt.Sprintf("heads %v, %d records", a.heads, len(a.entries))
}

func (a storeState) equal(b storeState) bool {
	if len(a.heads) != len(b.heads) {
		return false
	}
	for c, h := range a.heads {
		if b.heads[c] != h {
			return false
		}
	}
	if len(a.entries) != len(b.entries) {
		return false
	}
	for k, e := range a.entries {
		if f, ok := b.entries[k]; !ok || f.Seq != e.Seq || !f.Record.Equal(e.Record) {
			return false
		}
	}
	return true
}

func (a storeState) sameRecords(b storeState) bool {
	if len(a.entries) != len(b.entries) {
		return false
	}
	for k, e := range a.entries {
		if f, ok := b.entries[k]; !ok || !f.Record.Equal(e.Record) {
			return false
		}
	}
	return true
}

func snapshot(t testing.TB, s stores.Store, colls []string) storeState {
	t.Helper()
	st := storeState{heads: map[string]uint64{}, entries: map[string]stores.Entry{}}
	for _, c := range colls {
		st.heads[c] = head(t, s, c)
		for _, e := range pullAll(t, s, c, 0, 7) {
			st.entries[c+"/"+e.Record.ID] = e
		}
	}
	return st
}

// testSameRecordInBatch checks that several changes to one record in one
// batch merge in order, each that alters the record taking its own seq,
// and that the log holds the record once, at the last.
func testSameRecordInBatch(t *testing.T, f Factory) {
	s := open(t, f)
	res := apply(t, s,
		chg("s", crdt.SetField("r", "a", val(t, 1), st(10, "x"))),
		chg("s", crdt.SetField("r", "a", val(t, 2), st(20, "x"))),
		chg("s", crdt.SetField("r", "a", val(t, 0), st(15, "x"))), // older: no-op
		chg("s", crdt.SetField("o", "a", val(t, 9), st(10, "x"))),
		chg("s", crdt.SetField("r", "b", val(t, 3), st(30, "x"))),
	)
	wantChanged := []bool{true, true, false, true, true}
	for i, r := range res {
		if r.Changed != wantChanged[i] {
			t.Fatalf("change %d: Changed = %v, want %v", i, r.Changed, wantChanged[i])
		}
	}
	if !(res[0].Seq < res[1].Seq && res[1].Seq < res[3].Seq && res[3].Seq < res[4].Seq) {
		t.Fatalf("seqs of the changes that altered records are not increasing: %+v", res)
	}
	if res[2].Seq != res[1].Seq {
		t.Fatalf("no-op after a change in the same batch reports seq %d, want %d", res[2].Seq, res[1].Seq)
	}
	e := get(t, s, "s", "r")
	want := crdt.Record{ID: "r", Fields: map[string]crdt.Field{
		"a": {Stamp: st(20, "x"), Value: val(t, 2)},
		"b": {Stamp: st(30, "x"), Value: val(t, 3)},
	}}
	wantRecord(t, "record", e.Record, want)
	if e.Seq != res[4].Seq || head(t, s, "s") != res[4].Seq {
		t.Fatalf("Get seq %d, Head %d, want both %d", e.Seq, head(t, s, "s"), res[4].Seq)
	}
	all := pullAll(t, s, "s", 0, 10)
	if len(all) != 2 || all[0].Record.ID != "o" || all[1].Record.ID != "r" || all[1].Seq != res[4].Seq {
		t.Fatalf("log: got %d entries, want o then r at seq %d", len(all), res[4].Seq)
	}
}

// testReference applies random batches of random changes to a few records
// and compares the store with merges done in Go, including replays.
func testReference(t *testing.T, f Factory) {
	s := open(t, f)
	n := 0
	crdttest.Check(t, func(rt *rapid.T) { // no failure files in the caller's tree
		n++
		coll := fmt.Sprintf("ref%d", n)
		ids := []string{"a", "b", "c"}
		replicas := []string{"r1", "r2"}
		values := [][]byte{val(t, 1), val(t, 2), val(t, "x"), val(t, nil)}
		genStamp := rapid.Custom(func(rt *rapid.T) crdt.Stamp {
			return crdt.Stamp{
				Wall:    rapid.Int64Range(1, 6).Draw(rt, "wall"),
				Logical: rapid.Uint32Range(0, 1).Draw(rt, "logical"),
				Replica: rapid.SampledFrom(replicas).Draw(rt, "replica"),
			}
		})
		genChange := rapid.Custom(func(rt *rapid.T) crdt.Change {
			r := crdt.Record{ID: rapid.SampledFrom(ids).Draw(rt, "id")}
			if rapid.IntRange(0, 4).Draw(rt, "delete") == 0 {
				r.Deleted = genStamp.Draw(rt, "deleted")
			}
			for _, name := range rapid.SliceOfNDistinct(rapid.SampledFrom([]string{"f", "g", "h"}), 0, 3, rapid.ID[string]).Draw(rt, "fields") {
				if r.Fields == nil {
					r.Fields = map[string]crdt.Field{}
				}
				fl := crdt.Field{Stamp: genStamp.Draw(rt, "stamp")}
				if k := rapid.IntRange(0, len(values)).Draw(rt, "value"); k < len(values) {
					fl.Value = values[k]
				}
				r.Fields[name] = fl
			}
			return chg(coll, r)
		})
		batches := rapid.SliceOfN(rapid.SliceOfN(genChange, 1, 6), 1, 5).Draw(rt, "batches")

		model := map[string]crdt.Record{}
		var all []crdt.Change
		for _, b := range batches {
			res, err := s.Apply(context.Background(), b)
			if err != nil {
				rt.Fatalf("Apply: %v", err)
			}
			for i, c := range b {
				cur := model[c.Record.ID]
				changed := cur.Merge(c.Record)
				model[c.Record.ID] = cur
				if res[i].Changed != changed {
					rt.Fatalf("change %s: Changed = %v, reference says %v", fmtRecord(c.Record), res[i].Changed, changed)
				}
				if lost := crdt.LostFields(c.Record, cur); !slices.Equal(res[i].Lost, lost) {
					rt.Fatalf("change %s: Lost = %q, reference says %q", fmtRecord(c.Record), res[i].Lost, lost)
				}
			}
			all = append(all, b...)
		}
		// Replaying everything, in one batch, changes nothing.
		for i, r := range applyR(rt, s, all) {
			if r.Changed {
				rt.Fatalf("replayed change %d (%s) changed its record", i, fmtRecord(all[i].Record))
			}
		}
		for id, want := range model {
			e, err := s.Get(context.Background(), coll, id)
			switch {
			case err == nil:
				if !e.Record.Equal(want) {
					rt.Fatalf("record %s:\n got  %s\n want %s", id, fmtRecord(e.Record), fmtRecord(want))
				}
			case errors.Is(err, stores.ErrNotFound) && want.Equal(crdt.Record{ID: id}):
				// Only changes that altered nothing reached the record.
			default:
				rt.Fatalf("Get %s: %v (want %s)", id, err, fmtRecord(want))
			}
		}
	})
}

func applyR(rt *rapid.T, s stores.Store, cs []crdt.Change) []stores.Result {
	var out []stores.Result
	for len(cs) > 0 {
		n := min(len(cs), stores.MaxBatch)
		res, err := s.Apply(context.Background(), cs[:n])
		if err != nil {
			rt.Fatalf("Apply: %v", err)
		}
		out = append(out, res...)
		cs = cs[n:]
	}
	return out
}
