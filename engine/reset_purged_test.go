package engine

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport/proto"
)

// TestPurgedNotMetWithoutTheRule: an instance whose rules give the
// collection no MaxOffline (a rollout that removes it, or one that has
// not reached it yet) serves a reader whose record at its position a
// purge removed, under a horizon another instance published. That is no
// proof the store went back: the published horizon says a purge may have
// removed it, whatever the serving instance's rules now say.
func TestPurgedNotMetWithoutTheRule(t *testing.T) {
	ctx := context.Background()
	st := memory.New()
	col, clk := openCollecting(t, st)
	writeNotes(t, col, "n1", "n2")
	// Past the store's first horizon, which holds W: the run below
	// purges n3.
	collectingSince(t, col)
	writeNotes(t, col, "n3")
	if err := col.Delete(ctx, "notes", "n3"); err != nil {
		t.Fatal(err) // n3's tombstone is the head, at 4
	}
	_, cur, err := pullNotes(t, col, Cursor{}, 10, nil) // at 4: n3
	if err != nil {
		t.Fatal(err)
	}
	clk.ms += (2 * time.Hour).Milliseconds()
	collectOnce(t, col) // n3 is purged whole, with its entry at 4
	if _, err := col.GetRecord(ctx, "notes", "n3"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("n3 after the run: %v; want it purged (ErrNotFound)", err)
	}
	writeNotes(t, col, "n4")

	plain := engineOn(t, st) // no MaxOffline for notes
	_, err = plain.Pull(ctx, "notes", cur, PageLimit{})
	var re *ResetError
	if errors.As(err, &re) {
		t.Fatalf("the reader whose record a purge removed was reset: %v", re)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Pull(ctx, "notes", cur, PageLimit{}); err != nil {
		t.Fatalf("after: %v", err)
	}
}

// TestLeaseLogPurgedMidScan: one instance reads the lease log page by
// page (scanLeases) while another's collection run removes the expired
// leases and purges the lease log to its heads, which it does under no
// published horizon. The lease the reader read at its position is then
// neither there nor after it: that is no proof the store went back.
func TestLeaseLogPurgedMidScan(t *testing.T) {
	ctx := context.Background()
	st := memory.New()
	a, clk := openCollecting(t, st)
	b := openInstance(t, st, clk, "srv2", 0)
	writeNotes(t, a, "a", "b")
	for i := range 3 {
		noteLease(t, a, proto.ReplicaFor(fmt.Sprintf("reader%d", i), "dev"), Cursor{})
	}
	p, err := a.Pull(ctx, proto.LeaseCollection, Cursor{}, PageLimit{Records: 1})
	if err != nil || !p.More {
		t.Fatalf("first page of the lease log: %v, more %v", err, p.More)
	}
	cur, err := ParseCursor(p.Next.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	clk.ms += time.Hour.Milliseconds() + 1 // every lease expired
	collectOnce(t, b)                      // removed, and the lease log purged
	noteLease(t, b, proto.ReplicaFor("fresh", "dev"), Cursor{})
	for more := true; more; {
		p, err := a.Pull(ctx, proto.LeaseCollection, cur, PageLimit{Records: 1})
		var re *ResetError
		if errors.As(err, &re) {
			t.Fatalf("the lease log's reader was reset: %v", re)
		}
		if err != nil {
			t.Fatal(err)
		}
		cur, more = p.Next, p.More
	}
}
