package engine

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport/proto"
)

// stallAfterApply is a memory store whose first Apply of more than one
// change, once armed, returns late: committed, then held up.
type stallAfterApply struct {
	*memory.Store
	*gate
}

func (s *stallAfterApply) Apply(ctx context.Context, changes []crdt.Change) ([]stores.Result, error) {
	res, err := s.Store.Apply(ctx, changes)
	s.hold(len(changes) > 1)
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
	st := &stallAfterApply{Store: memory.New(), gate: newGate()}
	t.Cleanup(func() { st.Close() })
	a, b, clk, t0, _ := twoCollectors(t, st)

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
	st.arm()
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
