package engine

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport/proto"
)

// TestQuotaCollections: a quota's MaxCollections bounds how many of the
// collections its pattern matches hold data, together, so a token allowed
// a wildcard pattern cannot spread data over collections without end (a
// quota of records and bytes is each collection's). A change that adds
// data to one more collection is refused ErrQuotaExceeded; the
// collections already counted take writes (within their own bounds);
// a delete in a collection not counted is refused too (it would hold a
// tombstone there: TestQuotaTombstonesAreHeldToIt); another instance on the same store
// counts the same collections; a collection that held data before the
// bound was set is counted, not refused.
func TestQuotaCollections(t *testing.T) {
	ctx := context.Background()
	st := memory.New()
	defer st.Close()
	open := func(qs ...Quota) *Engine {
		e, err := Open(Config{Store: st, Replica: "srv", PollInterval: -1, Quotas: qs})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		return e
	}
	set := func(coll, id string, w int64) crdt.Change {
		return crdt.Change{Collection: coll, Record: crdt.SetField(id, "f", value(t, w), crdt.Stamp{Wall: w, Replica: "c1"})}
	}
	apply := func(e *Engine, chs ...crdt.Change) []Result {
		t.Helper()
		res, err := e.Apply(ctx, chs)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	// Written before the bound: t.old holds data.
	if res := apply(open(), set("t.old", "r", 1)); res[0].Status != StatusApplied {
		t.Fatalf("the write before any quota: %+v", res)
	}
	q := Quota{Pattern: "t.*", MaxCollections: 3}
	e := open(q)
	for i, c := range []string{"t.a", "t.b"} {
		if res := apply(e, set(c, "r", int64(2+i))); res[0].Status != StatusApplied {
			t.Fatalf("the first write of %s, collection %d of 3: %+v", c, i+1, res)
		}
	}
	// t.old holds data: counted (3 of 3), not refused.
	if res := apply(e, set("t.old", "r2", 5)); res[0].Status != StatusApplied {
		t.Fatalf("a write to t.old, which held data before the bound: %+v", res)
	}
	res := apply(e,
		set("t.c", "r", 6), // a fourth collection: refused
		crdt.Change{Collection: "t.d", Record: crdt.DeleteRecord("r", crdt.Stamp{Wall: 6, Replica: "c1"})}, // a fourth collection of tombstones: refused
		set("t.a", "r2", 6), // counted already
		set("u.a", "r", 6),  // another pattern
	)
	want := []Status{StatusRefused, StatusRefused, StatusApplied, StatusApplied}
	for i, r := range res {
		if r.Status != want[i] {
			t.Errorf("change %d: %v (%v), want %v", i, r.Status, r.Err, want[i])
		}
	}
	for i := range 2 {
		if !errors.Is(res[i].Err, ErrQuotaExceeded) {
			t.Errorf("the fourth collection, change %d: %v; want ErrQuotaExceeded", i, res[i].Err)
		}
	}
	// Another instance on the same store counts the same collections.
	other := open(q)
	if res := apply(other, set("t.e", "r", 7)); res[0].Status != StatusRefused || !errors.Is(res[0].Err, ErrQuotaExceeded) {
		t.Errorf("a fourth collection through another instance: %+v; want refused ErrQuotaExceeded", res)
	}
	if res := apply(other, set("t.b", "r2", 7)); res[0].Status != StatusApplied {
		t.Errorf("a counted collection through another instance: %+v", res)
	}
	// One push of many new collections counts each.
	wide := open(Quota{Pattern: "w.*", MaxCollections: 2})
	var chs []crdt.Change
	for i := range 5 {
		chs = append(chs, set(fmt.Sprintf("w.c%d", i), "r", 8))
	}
	applied := 0
	for _, r := range apply(wide, chs...) {
		if r.Status == StatusApplied {
			applied++
		}
	}
	if applied != 2 {
		t.Errorf("one push to 5 new collections under a bound of 2: %d applied", applied)
	}
}

// TestQuotaNotOfReserved: a quota whose pattern matches everything bounds
// the tenants' collections, never the server's own (its leases, horizons
// and counts), which it must go on writing whatever a tenant holds.
func TestQuotaNotOfReserved(t *testing.T) {
	ctx := context.Background()
	st := memory.New()
	defer st.Close()
	clk := &fakeClock{ms: 1_700_000_000_000}
	e, err := Open(Config{Store: st, Replica: "srv", Now: clk.now, PollInterval: -1, CollectGrace: -1, CollectEvery: -1,
		Rules:  []Rule{{Pattern: "notes", MaxOffline: time.Hour}},
		Quotas: []Quota{{Pattern: "*", MaxRecords: 1, MaxCollections: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	writeNotes(t, e, "n")
	_, cur, err := pullNotes(t, e, Cursor{}, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, who := range []string{"alice", "bob", "carol"} {
		if err := e.NoteLease(ctx, "notes", Lease{Replica: proto.ReplicaFor(who, "dev"), Cursor: cur, Pending: -1}); err != nil {
			t.Fatalf("the lease of %s: %v", who, err)
		}
	}
	if _, err := e.Collect(ctx); err != nil {
		t.Fatalf("a collection run: %v", err)
	}
	if _, err := e.store.Get(ctx, proto.LeaseCollection, "notes/"+proto.ReplicaFor("carol", "dev")); err != nil {
		t.Fatalf("the third lease: %v; want it written", err)
	}
}

// TestQuotaCollectionsRefusedChangeNotCounted: a change the rules refuse
// (here, out of the writer's write scope) adds no data, so it counts no
// collection: otherwise a writer whose every change is refused could
// take all of a pattern's collections, for ever (a counted collection
// stays counted), while none holds data.
func TestQuotaCollectionsRefusedChangeNotCounted(t *testing.T) {
	ctx := context.Background()
	st := memory.New()
	defer st.Close()
	e, err := Open(Config{Store: st, Replica: "srv", PollInterval: -1, Quotas: []Quota{{Pattern: "t.*", MaxCollections: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	own := WithWriteScope(func(string) (*scope.Pred, error) { return mustScope(t, "eq", "owner", "a"), nil })
	stamp := crdt.Stamp{Wall: 1, Replica: "c1"}
	res, err := e.Apply(ctx, []crdt.Change{{Collection: "t.x", Record: crdt.SetField("r", "owner", value(t, "b"), stamp)}}, own)
	if err != nil || res[0].Status != StatusRefused || !errors.Is(res[0].Err, ErrOutOfScope) {
		t.Fatalf("a change out of the write scope: %+v, %v; want refused %v", res, err, ErrOutOfScope)
	}
	stamp.Wall++
	res, err = e.Apply(ctx, []crdt.Change{{Collection: "t.y", Record: crdt.SetField("r", "owner", value(t, "a"), stamp)}}, own)
	if err != nil || res[0].Status != StatusApplied {
		t.Fatalf("the first change that holds data, in t.y, under a bound of one collection: %+v, %v; want applied", res, err)
	}
}
