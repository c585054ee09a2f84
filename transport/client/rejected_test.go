package client

import (
	"fmt"
	"strings"
	"testing"

	"github.com/convergo/convergo/crdt"
)

// TestReplicaRejectedIsBounded: past MaxRejected entries, the oldest are
// dropped first and counted.
func TestReplicaRejectedIsBounded(t *testing.T) {
	f := newFakeServer(t)
	rf := refusingServer(t, f)
	rf.set(func(crdt.Change) bool { return true }, nil)
	r := newReplica(t, f, "a", nil, "c")
	const n = MaxRejected + 5
	for i := range n {
		if err := r.Set("c", fmt.Sprint("r", i), "f", i); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	rej := r.Rejected()
	if len(rej) != MaxRejected || rej[0].RecordID != "r5" || rej[len(rej)-1].RecordID != fmt.Sprint("r", n-1) {
		t.Fatalf("got %d entries, %s to %s; want %d, r5 to r%d", len(rej), rej[0].RecordID, rej[len(rej)-1].RecordID, MaxRejected, n-1)
	}
	if got := r.RejectedDropped(); got != 5 {
		t.Fatalf("dropped: got %d, want 5", got)
	}
}

// TestRejectedStoreBytes: the store also stays within MaxRejectedBytes,
// dropping the oldest first; an entry larger than the bound alone is kept
// alone.
func TestRejectedStoreBytes(t *testing.T) {
	var s rejectedStore
	big := strings.Repeat("x", crdt.MaxValueBytes-16)
	v, err := crdt.EncodeValue(big)
	if err != nil {
		t.Fatal(err)
	}
	const n = 40
	for i := range n {
		rec := crdt.SetField(fmt.Sprint("r", i), "f", v, crdt.Stamp{Wall: int64(i + 1), Replica: "a"})
		j := s.add(Rejection{Collection: "c", RecordID: rec.ID, Change: crdt.Change{Collection: "c", Record: rec}, Code: "too_large"})
		if j.ID != uint64(i+1) {
			t.Fatalf("entry %d got id %d", i, j.ID)
		}
	}
	if s.bytes > MaxRejectedBytes {
		t.Fatalf("store holds %d bytes, bound %d", s.bytes, MaxRejectedBytes)
	}
	kept := len(s.entries)
	if kept == n || kept == 0 || uint64(n-kept) != s.dropped || s.entries[kept-1].RecordID != fmt.Sprint("r", n-1) {
		t.Fatalf("kept %d of %d (dropped %d), newest %s", kept, n, s.dropped, s.entries[kept-1].RecordID)
	}
	total := 0
	for _, j := range s.entries {
		total += rejectionSize(j)
	}
	if total != s.bytes {
		t.Fatalf("byte count %d, entries hold %d", s.bytes, total)
	}
	if _, ok := s.remove(s.entries[0].ID); !ok || len(s.entries) != kept-1 {
		t.Fatal("remove failed")
	}

	var one rejectedStore
	huge := Rejection{Message: strings.Repeat("m", MaxRejectedBytes+1)}
	one.add(Rejection{Message: "small"})
	one.add(huge)
	if len(one.entries) != 1 || one.entries[0].ID != 2 || one.dropped != 1 {
		t.Fatalf("an oversized entry: got %d entries (dropped %d), want it alone", len(one.entries), one.dropped)
	}
}
