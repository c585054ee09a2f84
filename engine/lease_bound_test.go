package engine

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport/proto"
)

// leaseIDs returns the ids of the lease records st holds and the number
// of entries of the lease log, tombstones included.
func leaseIDs(t *testing.T, st stores.Store) (live []string, entries int) {
	t.Helper()
	var after uint64
	for {
		p, err := st.Pull(context.Background(), proto.LeaseCollection, after, stores.PageLimit{Records: stores.MaxPage, Bytes: stores.DefaultPageBytes})
		if err != nil {
			t.Fatal(err)
		}
		for _, en := range p.Entries {
			entries++
			if en.Record.Exists() {
				live = append(live, en.Record.ID)
			}
		}
		if after = p.Next; !p.More {
			break
		}
	}
	slices.Sort(live)
	return live, entries
}

func noteLease(t *testing.T, e *Engine, replica string, cur Cursor) {
	t.Helper()
	if err := e.NoteLease(context.Background(), "notes", Lease{Replica: replica, Cursor: cur, Pending: -1}); err != nil {
		t.Fatal(err)
	}
}

// TestCollectRemovesExpiredLeases: a collection run removes the lease
// records that expired, whole (no tombstone stays in the lease log), and
// keeps the live ones; the horizon it publishes is the one the live
// leases alone give.
func TestCollectRemovesExpiredLeases(t *testing.T) {
	st := memory.New()
	t.Cleanup(func() { st.Close() })
	e, clk := openCollecting(t, st)
	writeNotes(t, e, "a", "b")
	for i := range 50 {
		noteLease(t, e, proto.ReplicaFor(fmt.Sprintf("reader%d", i), "dev"), Cursor{})
	}
	clk.ms += time.Hour.Milliseconds() + 1 // every lease so far expired
	writeNotes(t, e, "c")
	_, cur, err := pullNotes(t, e, Cursor{}, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	fresh := proto.ReplicaFor("fresh", "dev")
	noteLease(t, e, fresh, cur)

	h := collectOnce(t, e)
	live, entries := leaseIDs(t, st)
	if want := []string{"notes/" + fresh}; !slices.Equal(live, want) || entries != 1 {
		t.Fatalf("after a run: leases %v in %d log entries; want %v in 1", live, entries, want)
	}
	if head, _ := st.Head(context.Background(), "notes"); !slices.Equal(h.Read, []uint64{head}) {
		t.Fatalf("read horizon %v; want the live lease's position %d", h.Read, head)
	}
	// A second run finds nothing more to remove and publishes the same R.
	if h2 := collectOnce(t, e); !slices.Equal(h2.Read, h.Read) || h2.Wall < h.Wall {
		t.Fatalf("second run: %v/%d after %v/%d", h2.Read, h2.Wall, h.Read, h.Wall)
	}
	if live2, entries2 := leaseIDs(t, st); !slices.Equal(live2, live) || entries2 != 1 {
		t.Fatalf("second run: leases %v in %d entries", live2, entries2)
	}
}

// openInstance opens another engine on st, on clk, with rules like
// openCollecting's and bound max (0: the default).
func openInstance(t *testing.T, st stores.Store, clk *fakeClock, replica string, max int) *Engine {
	t.Helper()
	e, err := Open(Config{Store: st, Replica: replica, Now: clk.now, PollInterval: -1,
		Rules:        []Rule{{Pattern: "notes", MaxOffline: time.Hour}},
		CollectGrace: -1, CollectEvery: -1, MaxLeasesPerSubject: max})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// TestCollectBoundsLeasesPerSubject: a subject that holds more live
// leases on a collection than the bound (written through two instances)
// keeps only its most recently seen ones after a run; the others no
// longer hold the horizon back. Another subject's lease is untouched.
func TestCollectBoundsLeasesPerSubject(t *testing.T) {
	const bound = proto.DefaultMaxLeasesPerSubject
	st := memory.New()
	t.Cleanup(func() { st.Close() })
	e, clk := openCollecting(t, st)
	e2 := openInstance(t, st, clk, "srv2", 0)
	writeNotes(t, e, "a", "b")
	// The oldest lease of the greedy subject sits at the start of the log.
	noteLease(t, e, proto.ReplicaFor("greedy", "dev0"), Cursor{})
	other := proto.ReplicaFor("other", "dev")
	noteLease(t, e, other, Cursor{})
	_, cur, err := pullNotes(t, e, Cursor{}, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= bound+10; i++ {
		clk.ms++
		via := e
		if i >= bound {
			via = e2 // e has written as many new leases of greedy as the bound
		}
		noteLease(t, via, proto.ReplicaFor("greedy", fmt.Sprintf("dev%d", i)), cur)
	}
	if live, _ := leaseIDs(t, st); len(live) != bound+12 {
		t.Fatalf("%d leases before the run; want %d", len(live), bound+12)
	}

	h := collectOnce(t, e)
	live, _ := leaseIDs(t, st)
	var greedy []string
	for _, id := range live {
		if strings.Contains(id, proto.ReplicaPrefix("greedy")) {
			greedy = append(greedy, id)
		}
	}
	var want []string
	for i := 11; i <= bound+10; i++ {
		want = append(want, "notes/"+proto.ReplicaFor("greedy", fmt.Sprintf("dev%d", i)))
	}
	slices.Sort(want)
	if !slices.Equal(greedy, want) {
		t.Fatalf("the subject keeps %d leases %v; want its %d newest %v", len(greedy), greedy, bound, want)
	}
	if !slices.Contains(live, "notes/"+other) {
		t.Fatalf("another subject's lease is gone: %v", live)
	}
	// The other subject's lease at the start still holds R at 0.
	if !slices.Equal(h.Read, []uint64{0}) {
		t.Fatalf("read horizon %v; want [0] (held by the other subject)", h.Read)
	}

	// With the other subject's lease expired, the evicted lease at the
	// start holds nothing back either.
	clk.ms += time.Hour.Milliseconds() - int64(bound)
	for i := 11; i <= bound+10; i++ {
		e.hz.leases = nil // write again: this instance's cache would skip it
		noteLease(t, e, proto.ReplicaFor("greedy", fmt.Sprintf("dev%d", i)), cur)
	}
	head, _ := st.Head(context.Background(), "notes")
	if h := collectOnce(t, e); !slices.Equal(h.Read, []uint64{head}) {
		t.Fatalf("read horizon %v; want the head %d", h.Read, head)
	}
}

// TestNoteLeaseBound: one instance writes at most the bound of new
// leases per subject and collection in a window of the job's interval;
// the leases it wrote are still renewed, other subjects are not counted
// against it, and the next window admits new ones again.
func TestNoteLeaseBound(t *testing.T) {
	const bound = 3
	st := memory.New()
	t.Cleanup(func() { st.Close() })
	clk := &fakeClock{ms: 1_700_000_000_000}
	e := openInstance(t, st, clk, "srv", bound)
	writeNotes(t, e, "a") // a read from the start of a collection never written takes no lease
	for i := range bound + 2 {
		noteLease(t, e, proto.ReplicaFor("s", fmt.Sprintf("d%d", i)), Cursor{})
	}
	noteLease(t, e, proto.ReplicaFor("t", "d"), Cursor{})
	live, _ := leaseIDs(t, st)
	want := []string{"notes/" + proto.ReplicaFor("t", "d")}
	for i := range bound {
		want = append(want, "notes/"+proto.ReplicaFor("s", fmt.Sprintf("d%d", i)))
	}
	slices.Sort(want)
	if !slices.Equal(live, want) {
		t.Fatalf("leases %v; want %v", live, want)
	}
	// A written lease is renewed in the same window.
	clk.ms += (time.Hour / leaseRefreshDivisor).Milliseconds()
	renewed := proto.ReplicaFor("s", "d0")
	noteLease(t, e, renewed, Cursor{})
	ent, err := st.Get(context.Background(), proto.LeaseCollection, "notes/"+renewed)
	var seen int64
	if err != nil || !decodeInt(ent.Record, LeaseFieldSeen, &seen) || seen != clk.ms {
		t.Fatalf("lease %s: seen %d, %v; want renewed at %d", renewed, seen, err, clk.ms)
	}
	// The next window admits new leases.
	clk.ms += DefaultCollectEvery.Milliseconds()
	late := proto.ReplicaFor("s", "late")
	noteLease(t, e, late, Cursor{})
	if _, err := st.Get(context.Background(), proto.LeaseCollection, "notes/"+late); err != nil {
		t.Fatalf("a new lease in the next window: %v", err)
	}
}

// TestCollectBoundConfigured: Config.MaxLeasesPerSubject sets the bound.
func TestCollectBoundConfigured(t *testing.T) {
	st := memory.New()
	t.Cleanup(func() { st.Close() })
	clk := &fakeClock{ms: 1_700_000_000_000}
	e := openInstance(t, st, clk, "srv", 2)
	e2 := openInstance(t, st, clk, "srv2", 2)
	writeNotes(t, e, "a") // a run publishes no horizon for a collection never written
	for i, via := range []*Engine{e, e, e2, e2} {
		clk.ms++
		noteLease(t, via, proto.ReplicaFor("s", fmt.Sprintf("d%d", i)), Cursor{})
	}
	collectOnce(t, e)
	live, entries := leaseIDs(t, st)
	want := []string{"notes/" + proto.ReplicaFor("s", "d2"), "notes/" + proto.ReplicaFor("s", "d3")}
	slices.Sort(want)
	if !slices.Equal(live, want) || entries != 2 {
		t.Fatalf("leases %v in %d entries; want %v in 2", live, entries, want)
	}
	if _, err := Open(Config{Store: st, MaxLeasesPerSubject: -1}); err == nil {
		t.Fatal("Open with a negative MaxLeasesPerSubject: no error")
	}
}

// TestLeaseRemovedByARunIsTakenAsNew: a lease this instance wrote and its
// collection run removed (beyond the bound) is a new lease when its
// reader comes back: written only while the subject has taken fewer new
// leases than the bound in the window, as a reader that never held one.
// Otherwise every reader the instance ever took a lease of would be
// written again at its next renewal, however many, and the subject would
// hold far more leases between runs than the bound allows.
func TestLeaseRemovedByARunIsTakenAsNew(t *testing.T) {
	const bound = 3
	st := memory.New()
	t.Cleanup(func() { st.Close() })
	clk := &fakeClock{ms: 1_700_000_000_000}
	e := openInstance(t, st, clk, "srv", bound)
	writeNotes(t, e, "a")
	_, cur, err := pullNotes(t, e, Cursor{}, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	dev := func(i int) string { return proto.ReplicaFor("s", fmt.Sprintf("d%d", i)) }
	for i := range bound {
		noteLease(t, e, dev(i), cur)
	}
	// The next window takes as many new ones, more recently seen.
	clk.ms += DefaultCollectEvery.Milliseconds()
	for i := bound; i < 2*bound; i++ {
		noteLease(t, e, dev(i), cur)
	}
	collectOnce(t, e)
	var want []string
	for i := bound; i < 2*bound; i++ {
		want = append(want, "notes/"+dev(i))
	}
	slices.Sort(want)
	if live, _ := leaseIDs(t, st); !slices.Equal(live, want) {
		t.Fatalf("after the run, leases %v; want %v", live, want)
	}
	// Past a renewal's interval, within the same window: the readers the
	// run removed come back, and the window has taken the bound already.
	clk.ms += (time.Hour / leaseRefreshDivisor).Milliseconds()
	for i := range bound {
		noteLease(t, e, dev(i), cur)
	}
	if live, _ := leaseIDs(t, st); !slices.Equal(live, want) {
		t.Fatalf("%d leases %v after the removed readers came back in a window that took %d new ones; want %v", len(live), live, bound, want)
	}
}

// TestLeaseRemovedByAnotherInstanceIsTakenAsNew: a lease one instance
// wrote and another instance's run removed is a new lease on the first
// instance too, once its own run has read the leases: its reader coming
// back in a window that took the bound of new leases gets none.
func TestLeaseRemovedByAnotherInstanceIsTakenAsNew(t *testing.T) {
	const bound = 3
	st := memory.New()
	t.Cleanup(func() { st.Close() })
	clk := &fakeClock{ms: 1_700_000_000_000}
	e := openInstance(t, st, clk, "srv", bound)
	e2 := openInstance(t, st, clk, "srv2", bound)
	writeNotes(t, e, "a")
	_, cur, err := pullNotes(t, e, Cursor{}, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	dev := func(i int) string { return proto.ReplicaFor("s", fmt.Sprintf("d%d", i)) }
	for i := range bound {
		noteLease(t, e2, dev(i), cur)
	}
	var want []string
	for i := bound; i < 2*bound; i++ {
		clk.ms++
		noteLease(t, e, dev(i), cur)
		want = append(want, "notes/"+dev(i))
	}
	slices.Sort(want)
	collectOnce(t, e)
	collectOnce(t, e2)
	if live, _ := leaseIDs(t, st); !slices.Equal(live, want) {
		t.Fatalf("after the runs, leases %v; want %v", live, want)
	}
	clk.ms += (time.Hour / leaseRefreshDivisor).Milliseconds()
	for i := range bound {
		noteLease(t, e2, dev(i), cur)
	}
	if live, _ := leaseIDs(t, st); !slices.Equal(live, want) {
		t.Fatalf("%d leases %v after the removed readers came back to the instance that took %d new ones in the window; want %v", len(live), live, bound, want)
	}
}
