package engine

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport/proto"
)

// A reader may name any collection its rights match, written or not, and
// each such read with a replica is a lease (bounded per subject and
// collection only). A collection run publishes no horizon for a
// collection never written: it has nothing to collect, and a horizon
// record, once written, is never removed, so one subject naming new
// collections at its rate would grow the horizon log, and every later
// run's work, without bound for every tenant of the store. A collection
// written later gets its horizon at the next run.
func TestNoHorizonOfUnwrittenCollections(t *testing.T) {
	const n = 200
	st := memory.New()
	t.Cleanup(func() { st.Close() })
	// The reader has changes queued for each (a floor): those reads hold
	// leases, up to the bound across collections.
	e, _, _ := openUnwritten(t, st, n, 1_699_999_999_000)
	if live, _ := leaseIDs(t, st); len(live) == 0 {
		t.Fatal("no lease of a collection never written: the run below tests nothing")
	}
	reps, err := e.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if horizons := horizonRecords(t, e); len(reps) != 0 || horizons != 0 {
		t.Fatalf("a run after reads of %d collections never written: %d reports, %d horizon records, want none", n, len(reps), horizons)
	}
	st0, err := e.Now("t.x0")
	if err != nil {
		t.Fatal(err)
	}
	v, _ := crdt.EncodeValue("a")
	if _, err := e.Apply(context.Background(), []crdt.Change{{Collection: "t.x0", Record: crdt.SetField("r", "f", v, st0)}}); err != nil {
		t.Fatal(err)
	}
	reps, err = e.Collect(context.Background())
	if err != nil || len(reps) != 1 || reps[0].Collection != "t.x0" || horizonRecords(t, e) != 1 {
		t.Fatalf("a run once t.x0 was written: %v, %v; want its horizon alone", reps, err)
	}
}

// openUnwritten opens an engine collecting "t.*" and notes a lease of one
// reader, with pending floor pending (negative: none), on each of n
// collections of it that nobody wrote, t.x0 to t.x<n-1>, one ms apart.
func openUnwritten(t *testing.T, st stores.Store, n int, pending int64) (*Engine, *fakeClock, string) {
	t.Helper()
	clk := &fakeClock{ms: 1_700_000_000_000}
	e := openT(t, st, clk, "srv")
	reader := proto.ReplicaFor("mallory", "dev")
	noteUnwritten(t, e, clk, reader, 0, n, pending)
	return e, clk, reader
}

// openT opens an instance on st collecting "t.*" (MaxOffline an hour).
func openT(t *testing.T, st stores.Store, clk *fakeClock, replica string) *Engine {
	t.Helper()
	e, err := Open(Config{Store: st, Replica: replica, Now: clk.now, PollInterval: -1,
		Rules:        []Rule{{Pattern: "t.*", MaxOffline: time.Hour}},
		CollectGrace: -1, CollectEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// noteUnwritten notes reader's lease from the start, with floor pending,
// on t.x<from> to t.x<from+n-1>, advancing clk by one ms before each.
func noteUnwritten(t *testing.T, e *Engine, clk *fakeClock, reader string, from, n int, pending int64) {
	t.Helper()
	for i := from; i < from+n; i++ {
		clk.ms++
		if err := e.NoteLease(context.Background(), fmt.Sprintf("t.x%d", i), Lease{Replica: reader, Pending: pending}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestNoLeaseOfUnwrittenCollections: a subject whose rights match a
// pattern may name a new collection on every read. A read of a collection
// never written that announces no pending floor holds nothing (the
// reader's cursor is the start, which is never reset, and there is
// nothing to collect): no lease record is written. One that announces a
// floor gets a lease, but one subject holds at most
// proto.MaxUnwrittenLeasesPerSubject of them across all the collections
// never written: an instance takes no more in a window, and a run keeps
// the subject's most recently seen and removes the others (and any lease
// of such a collection without a floor). Once the collection is written,
// leases of it are taken as on any collection.
func TestNoLeaseOfUnwrittenCollections(t *testing.T) {
	const n = 200
	bound := proto.MaxUnwrittenLeasesPerSubject
	floor := int64(1_699_999_999_000)
	ctx := context.Background()
	t.Run("no floor", func(t *testing.T) {
		st := memory.New()
		t.Cleanup(func() { st.Close() })
		openUnwritten(t, st, n, -1)
		if live, entries := leaseIDs(t, st); len(live) != 0 || entries != 0 {
			t.Fatalf("after reads without a floor of %d collections never written: %d lease records in %d log entries, want none", n, len(live), entries)
		}
	})
	t.Run("floors", func(t *testing.T) {
		st := memory.New()
		t.Cleanup(func() { st.Close() })
		e, clk, reader := openUnwritten(t, st, n, floor)
		if live, _ := leaseIDs(t, st); len(live) != bound {
			t.Fatalf("after reads with a floor of %d collections never written: %d lease records, want the bound %d", n, len(live), bound)
		}
		// Another instance takes as many again; another subject is not
		// counted against this one.
		e2 := openT(t, st, clk, "srv2")
		noteUnwritten(t, e2, clk, reader, n, n, floor)
		other := proto.ReplicaFor("bob", "dev")
		noteUnwritten(t, e2, clk, other, 0, 1, floor)
		if live, _ := leaseIDs(t, st); len(live) != 2*bound+1 {
			t.Fatalf("through two instances: %d lease records, want %d", len(live), 2*bound+1)
		}
		if _, err := e.Collect(ctx); err != nil {
			t.Fatal(err)
		}
		live, entries := leaseIDs(t, st)
		want := []string{"t.x0/" + other}
		for i := n; i < n+bound; i++ { // e2's, the most recently seen
			want = append(want, fmt.Sprintf("t.x%d/%s", i, reader))
		}
		slices.Sort(want)
		if !slices.Equal(live, want) || entries != len(want) {
			t.Fatalf("after a run: leases %v in %d log entries; want %v", live, entries, want)
		}
	})
	t.Run("left without a floor", func(t *testing.T) {
		// A lease without a floor of a collection never written (as
		// written before such reads were taken as no lease) is removed by
		// the next run: it holds nothing.
		st := memory.New()
		t.Cleanup(func() { st.Close() })
		e, clk, reader := openUnwritten(t, st, 0, -1)
		key := "t.old/" + reader
		stamp, err := e.Now(proto.LeaseCollection)
		if err != nil {
			t.Fatal(err)
		}
		rec := crdt.Record{ID: key, Fields: map[string]crdt.Field{}}
		for name, v := range map[string]any{LeaseFieldPos: []uint64{0}, LeaseFieldSeen: clk.ms, LeaseFieldEpoch: uint64(0)} {
			b, _ := crdt.EncodeValue(v)
			rec.Fields[name] = crdt.Field{Stamp: stamp, Value: b}
		}
		if err := e.applyOne(ctx, "lease", crdt.Change{Collection: proto.LeaseCollection, Record: rec}); err != nil {
			t.Fatal(err)
		}
		clk.ms++ // the run purges the deletes stamped before its now
		if _, err := e.Collect(ctx); err != nil {
			t.Fatal(err)
		}
		if live, entries := leaseIDs(t, st); len(live) != 0 || entries != 0 {
			t.Fatalf("after a run: leases %v in %d log entries; want none", live, entries)
		}
	})
	t.Run("written", func(t *testing.T) {
		st := memory.New()
		t.Cleanup(func() { st.Close() })
		e, clk, reader := openUnwritten(t, st, n, floor) // the subject's bound is taken
		stamp, err := e.Now("t.x0")
		if err != nil {
			t.Fatal(err)
		}
		v, _ := crdt.EncodeValue("a")
		if _, err := e.Apply(ctx, []crdt.Change{{Collection: "t.x0", Record: crdt.SetField("r", "f", v, stamp)}}); err != nil {
			t.Fatal(err)
		}
		// A read from the start without a floor, by another device: the
		// collection is written, so its lease is taken.
		dev2 := proto.ReplicaFor("mallory", "dev2")
		noteUnwritten(t, e, clk, dev2, 0, 1, -1)
		if _, err := st.Get(ctx, proto.LeaseCollection, "t.x0/"+dev2); err != nil {
			t.Fatalf("the lease of a written collection: %v", err)
		}
		if _, err := e.Collect(ctx); err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{"t.x0/" + dev2, "t.x0/" + reader} {
			if _, err := st.Get(ctx, proto.LeaseCollection, id); err != nil {
				t.Fatalf("after a run, lease %s of the written collection: %v", id, err)
			}
		}
	})
}

func horizonRecords(t *testing.T, e *Engine) int {
	t.Helper()
	n := 0
	if err := e.eachRecord(context.Background(), proto.HorizonCollection, func(crdt.Record) { n++ }); err != nil {
		t.Fatal(err)
	}
	return n
}
