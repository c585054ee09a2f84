package engine

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport/proto"
)

// hour is an hour in ms, the MaxOffline of twoCollectors' engines.
const hour = int64(time.Hour / time.Millisecond)

// gate holds up one store call, once armed: the call signals stalled and
// waits for release (a reply held up in the network, a paused process).
type gate struct {
	mu      sync.Mutex
	armed   bool
	stalled chan struct{}
	release chan struct{}
}

func newGate() *gate { return &gate{stalled: make(chan struct{}), release: make(chan struct{})} }

func (g *gate) arm() {
	g.mu.Lock()
	g.armed = true
	g.mu.Unlock()
}

// hold holds up the calling store call if the gate is armed and this
// call is the one it waits for (match); it disarms the gate.
func (g *gate) hold(match bool) {
	g.mu.Lock()
	take := g.armed && match
	if take {
		g.armed = false
	}
	g.mu.Unlock()
	if take {
		close(g.stalled)
		<-g.release
	}
}

// twoCollectors opens two engines on st, "srv-a" and "srv-b", collecting
// "notes" (MaxOffline an hour) with a grace of 300 ms, on one fake clock
// at t0; a writes a note and runs a collection, which begins the chain of
// horizons (W held at 0 for an hour). Then a writes record "gone" at
// t0+1.6h and deletes it at t0+1.7h; del is the delete's stamp.
func twoCollectors(t *testing.T, st stores.Store) (a, b *Engine, clk *fakeClock, t0 int64, del crdt.Stamp) {
	t.Helper()
	t0 = 1_700_000_000_000
	clk = &fakeClock{ms: t0}
	open := func(replica string) *Engine {
		e, err := Open(Config{Store: st, Replica: replica, Now: clk.now, PollInterval: -1,
			Rules:        []Rule{{Pattern: "notes", MaxOffline: time.Hour}},
			CollectGrace: 300 * time.Millisecond, CollectEvery: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		return e
	}
	a, b = open("srv-a"), open("srv-b")
	writeNotes(t, a, "n")
	collectOnce(t, a)

	clk.ms = t0 + 1600*hour/1000
	writeNotes(t, a, "gone")
	clk.ms = t0 + 1700*hour/1000
	del, err := a.Now("notes")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Apply(context.Background(), []crdt.Change{{Collection: "notes", Record: crdt.DeleteRecord("gone", del)}}); err != nil {
		t.Fatal(err)
	}
	return a, b, clk, t0, del
}

// stallHorizonRead is a memory store whose read of a published horizon,
// once armed, is answered late: the record as it was when read.
type stallHorizonRead struct {
	*memory.Store
	*gate
}

func (s *stallHorizonRead) Get(ctx context.Context, collection, id string) (stores.Entry, error) {
	ent, err := s.Store.Get(ctx, collection, id)
	s.hold(collection == proto.HorizonCollection)
	return ent, err
}

// TestStaleHorizonNotPublished: a collection run whose read of the
// published horizon reaches it late must not publish what it computed
// from it. Run B reads the horizon, and its answer is held up; meanwhile
// run A, on another instance, publishes a higher write horizon, waits
// its grace and collects a delete under it. B's publication, computed
// from the old horizon and from a lease whose pending floor has gone
// since, would lower the write horizon under what A collected: an edit
// stamped before the collected delete would be taken, and the deleted
// record would come back. B publishes nothing instead (its run skips the
// collection and the next one starts afresh), so the write horizon
// never goes below one a purge used.
func TestStaleHorizonNotPublished(t *testing.T) {
	ctx := context.Background()
	st := &stallHorizonRead{Store: memory.New(), gate: newGate()}
	t.Cleanup(func() { st.Close() })
	a, b, clk, t0, del := twoCollectors(t, st)
	_, head, err := pullNotes(t, a, Cursor{}, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A reader at the head with a change pending since t0+1.5h holds W
	// there.
	reader := proto.ReplicaFor("alice", "dev")
	floor := t0 + 1500*hour/1000
	clk.ms = t0 + 2900*hour/1000
	if err := b.NoteLease(ctx, "notes", Lease{Replica: reader, Cursor: head, Pending: floor}); err != nil {
		t.Fatal(err)
	}

	// B's run reads the leases (the floor holds) and the horizon, whose
	// answer is held up.
	clk.ms = t0 + 3*hour
	st.arm()
	type result struct {
		reps []CollectReport
		err  error
	}
	bDone := make(chan result, 1)
	go func() {
		reps, err := b.Collect(ctx)
		bDone <- result{reps, err}
	}()
	<-st.stalled

	// Meanwhile the reader pushed its change (no floor any more), and A's
	// run publishes W = now − MaxOffline, past the delete, and collects it.
	if err := a.NoteLease(ctx, "notes", Lease{Replica: reader, Cursor: head, Pending: -1}); err != nil {
		t.Fatal(err)
	}
	hA := collectOnce(t, a)
	if hA.Wall <= del.Wall {
		t.Fatalf("A's write horizon %d is not past the delete at %d", hA.Wall, del.Wall)
	}
	if _, err := a.GetRecord(ctx, "notes", "gone"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the deleted record after A's run: %v; want it collected (ErrNotFound)", err)
	}

	// B's answer arrives, a grace after A published.
	clk.ms++
	close(st.release)
	if r := <-bDone; r.err != nil || len(r.reps) != 1 || !r.reps[0].Skipped || r.reps[0].Horizon.ID != 0 {
		t.Errorf("B's run = %+v, %v; want the collection skipped, nothing published", r.reps, r.err)
	}
	if tot := b.CollectTotals(); tot.Skipped != 1 || tot.Purged != 0 {
		t.Errorf("B's totals = %+v; want one skipped, none purged", tot)
	}

	h, ok, err := a.HorizonOf(ctx, "notes", true)
	if err != nil || !ok {
		t.Fatalf("HorizonOf = %v, %v", ok, err)
	}
	if h.Wall < hA.Wall {
		t.Fatalf("the published write horizon went down from %d (collected under) to %d", hA.Wall, h.Wall)
	}
	// An edit stamped before the collected delete, after the floor B saw.
	v, _ := crdt.EncodeValue("back")
	old := crdt.Stamp{Wall: t0 + 1650*hour/1000, Replica: reader}
	res, err := a.Apply(ctx, []crdt.Change{{Collection: "notes", Record: crdt.SetField("gone", "owner", v, old)}})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(res[0].Err, ErrCollected) {
		t.Fatalf("an edit stamped before the collected delete: %v; want ErrCollected", res[0].Err)
	}
	if _, err := a.GetRecord(ctx, "notes", "gone"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the collected record: %v; want it still gone", err)
	}
}
