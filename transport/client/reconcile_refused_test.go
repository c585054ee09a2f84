package client

import (
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// TestReconcileGiveBackRefusedIsTold: a reconciliation gives back a
// record the server acknowledged and no longer sends, and the server
// refuses the give-back for another reason than collected (out of the
// writer's scope now): the record stays local only, and the application
// is told, as after a heal (and as the browser client tells it).
func TestReconcileGiveBackRefusedIsTold(t *testing.T) {
	f := newFakeServer(t)
	ctx := t.Context()
	var mu sync.Mutex
	var told []error
	a, err := NewReplica(f.client(t, "a", nil), ReplicaConfig{Collections: []string{"todos"},
		OnError: func(err error) {
			mu.Lock()
			defer mu.Unlock()
			told = append(told, err)
		}})
	if err != nil {
		t.Fatal(err)
	}
	for id, list := range map[string]string{"x": "b", "y": "a"} {
		if err := a.Set("todos", id, "list", list); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// The server no longer sends x (it lost it), and x is out of the
	// writer's scope now.
	rw := func(_ proto.PullRequest, ans proto.PullResponse) proto.PullResponse {
		var recs []crdt.Record
		var seals [][]byte
		for i, rec := range ans.Records {
			if rec.ID == "x" {
				continue
			}
			recs = append(recs, rec)
			if i < len(ans.Seals) {
				seals = append(seals, ans.Seals[i])
			}
		}
		ans.Records, ans.Seals = recs, seals
		return ans
	}
	f.rewritePull.Store(&rw)
	f.writeScope.Store(mustScope(t, `list == "a"`))
	if err := a.Pull(ctx); err != nil {
		t.Fatal(err)
	}
	if got := ids(a, "todos"); !slices.Equal(got, []string{"x", "y"}) {
		t.Fatalf("replica holds %v, want x y (x refused out of scope stays local)", got)
	}
	if n := f.pushedOf("todos", "x"); n != 2 {
		t.Fatalf("x pushed %d times, want 2 (written, then given back)", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(told) != 1 || !errors.Is(told[0], ErrOutOfScope) {
		t.Fatalf("OnError told %v, want one error matching ErrOutOfScope (x stays local only)", told)
	}
}
