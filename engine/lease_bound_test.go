package engine

import (
	"context"
	"fmt"
	"slices"
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

