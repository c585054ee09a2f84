package engine

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/convergo/convergo/transport/proto"
)

// TestReadHorizonNeverGoesDown: within an epoch, a run publishes the
// larger of the read horizon its live leases give and the one published
// before. A reader that begins from the start after a purge holds a lease
// at 0; taken as it is, the next run would publish R at 0, and a reader
// whose cursor the purge passed (its mark older than the raise) would no
// longer be reset: it would read on past the entries the purge removed,
// and keep for ever the record whose delete was collected with them.
func TestReadHorizonNeverGoesDown(t *testing.T) {
	ctx := context.Background()
	e, clk := openCollectingMemory(t)
	writeNotes(t, e, "a", "x")
	collectingSince(t, e)
	// bob reads x, and holds no lease.
	_, bob, err := pullNotes(t, e, Cursor{}, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	writeNotes(t, e, "b")
	if err := e.Delete(ctx, "notes", "x"); err != nil {
		t.Fatal(err)
	}
	clk.ms += (2 * time.Hour).Milliseconds()
	raised := collectOnce(t, e)
	if _, err := e.GetRecord(ctx, "notes", "x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("x after the run: %v; want it collected (ErrNotFound)", err)
	}
	if _, _, err := pullNotes(t, e, bob, 10, nil); !isLeaseExpired(err) {
		t.Fatalf("bob, whose cursor the purge passed: %v; want lease_expired", err)
	}

	// carol begins from the start: her lease is at 0.
	noteLease(t, e, proto.ReplicaFor("carol", "dev"), Cursor{})
	clk.ms += time.Minute.Milliseconds()
	h := collectOnce(t, e)
	if h.Read[0] < raised.Read[0] {
		t.Errorf("read horizon %v after a lease at the start; want it at or past the %v published before", h.Read, raised.Read)
	}
	if _, _, err := pullNotes(t, e, bob, 10, nil); !isLeaseExpired(err) {
		t.Errorf("bob after the next run: %v; want lease_expired (he would read on without x's delete)", err)
	}
}
