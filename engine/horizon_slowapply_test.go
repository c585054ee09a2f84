package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport/proto"
)

// stallAfterApply is a memory store whose first Apply of more than one
// change, once armed, returns late: committed, then held until released
// (a slow store call, a paused process).
type stallAfterApply struct {
	*memory.Store
	mu      sync.Mutex
	armed   bool
	stalled chan struct{}
	release chan struct{}
}

func (s *stallAfterApply) Apply(ctx context.Context, changes []crdt.Change) ([]stores.Result, error) {
	res, err := s.Store.Apply(ctx, changes)
	s.mu.Lock()
	armed := s.armed && len(changes) > 1
	if armed {
		s.armed = false
	}
	s.mu.Unlock()
	if armed {
		close(s.stalled)
		<-s.release
	}
	return res, err
}

// TestSlowApplyAfterHorizonMoved: an Apply judges its changes against
// the write horizons it read when it began. One whose store calls take
// long (many batches, a slow store) must not apply a later batch under
// those once another instance may have published a higher write
// horizon, waited its grace and collected under it: a change stamped
// before a collected delete would bring its record back. The horizons
// are read again before such a batch; a change they now refuse fails the
// call (ErrHorizonMoved, retried by the client), and the retry refuses
// it collected.
func TestSlowApplyAfterHorizonMoved(t *testing.T) {
	ctx := context.Background()
	const hour = int64(time.Hour / time.Millisecond)
	st := &stallAfterApply{Store: memory.New(), stalled: make(chan struct{}), release: make(chan struct{})}
	t.Cleanup(func() { st.Close() })
	t0 := int64(1_700_000_000_000)
	clk := &fakeClock{ms: t0}
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
	a, b := open("srv-a"), open("srv-b")
	writeNotes(t, a, "n")
	collectOnce(t, a) // the chain begins: W held at 0 for MaxOffline

	clk.ms = t0 + 1600*hour/1000
	writeNotes(t, a, "gone")
	clk.ms = t0 + 1700*hour/1000
	del, err := a.Now("notes")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Apply(ctx, []crdt.Change{{Collection: "notes", Record: crdt.DeleteRecord("gone", del)}}); err != nil {
		t.Fatal(err)
	}

	// B applies a push of more than one batch; its last change is an edit
	// of "gone" stamped before the delete, after the published W (0).
	clk.ms = t0 + 3*hour
	writer := proto.ReplicaFor("alice", "dev")
	v, _ := crdt.EncodeValue("v")
	var push []crdt.Change
	for i := range stores.MaxBatch {
		s := crdt.Stamp{Wall: clk.ms, Replica: writer}
		push = append(push, crdt.Change{Collection: "notes", Record: crdt.SetField(fmt.Sprintf("x%d", i), "owner", v, s)})
	}
	old := crdt.Stamp{Wall: t0 + 1650*hour/1000, Replica: writer}
	push = append(push, crdt.Change{Collection: "notes", Record: crdt.SetField("gone", "owner", v, old)})
	st.mu.Lock()
	st.armed = true
	st.mu.Unlock()
	type result struct {
		res []Result
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := b.Apply(ctx, push)
		done <- result{res, err}
	}()
	<-st.stalled

	// Meanwhile A publishes W = now − MaxOffline, past the delete, waits
	// its grace and collects the delete.
	hA := collectOnce(t, a)
	if hA.Wall <= old.Wall {
		t.Fatalf("A's write horizon %d is not past the edit's stamp %d", hA.Wall, old.Wall)
	}
	if _, err := a.GetRecord(ctx, "notes", "gone"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the deleted record after A's run: %v; want it collected", err)
	}

	close(st.release)
	r := <-done
	if !errors.Is(r.err, ErrHorizonMoved) {
		t.Errorf("B's Apply = %v; want ErrHorizonMoved", r.err)
	}
	if got, err := a.GetRecord(ctx, "notes", "gone"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the collected record after B's Apply: %v, %v; want it still gone", got, err)
	}
	// The client retries the push: the first batch is already held, the
	// edit is refused collected.
	res, err := b.Apply(ctx, push)
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Status != proto.StatusDuplicate || !errors.Is(res[len(res)-1].Err, ErrCollected) {
		t.Fatalf("the retry: first %v, last %v %v; want duplicate, then ErrCollected", res[0].Status, res[len(res)-1].Status, res[len(res)-1].Err)
	}
}
