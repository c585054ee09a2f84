package client

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// TestHealCheckEndsOnlyWithItsReading: a pull is reset history_lost and
// heals while the replica runs Live, then reads from the beginning; between
// its first page and its second, the live subscription (at a cursor in the
// middle of the log) delivers another writer's record in a page that says
// there is no more. That page is not of the reading from the beginning: it
// must not end the heal's check. Ended early, the check misses what the
// reading had not delivered yet: the records the server acknowledged are
// healed again for nothing, and those it refused collected are dropped
// though it serves them.
func TestHealCheckEndsOnlyWithItsReading(t *testing.T) {
	for _, collected := range []bool{false, true} {
		t.Run(fmt.Sprintf("refused collected %v", collected), func(t *testing.T) {
			f := newFakeServer(t)
			ctx := t.Context()
			var leaves atomic.Int64
			alice, err := NewReplica(f.client(t, "alice", nil), ReplicaConfig{Collections: []string{"notes"},
				OnLeave: func(string, string) { leaves.Add(1) }})
			if err != nil {
				t.Fatal(err)
			}
			bob := newReplica(t, f, "bob", nil, "notes")
			write := func(r *Replica, id string) {
				t.Helper()
				if err := r.Set("notes", id, "n", id); err != nil {
					t.Fatal(err)
				}
				if err := r.Flush(ctx); err != nil {
					t.Fatal(err)
				}
			}
			holds := func(id string) func() bool {
				return func() bool { _, ok := alice.Records("notes")[id]; return ok }
			}
			own := []string{"a0", "a1", "a2", "a3", "a4"}
			for _, id := range own {
				if err := alice.Set("notes", id, "n", id); err != nil {
					t.Fatal(err)
				}
			}
			if err := alice.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			liveCtx, stop := context.WithCancel(ctx)
			liveDone := make(chan struct{})
			go func() {
				defer close(liveDone)
				alice.Live(liveCtx)
			}()
			t.Cleanup(func() { stop(); <-liveDone })
			// The subscription streams from the middle of the log.
			write(bob, "x0")
			eventually(t, "alice holds x0, delivered live", holds("x0"))
			if collected {
				// Every give-back of alice's writes is refused collected.
				f.horizon.Store(time.Now().UnixMilli() + 1)
				time.Sleep(5 * time.Millisecond)
				// A change of a2 waits in the outbox: were a2 dropped, it
				// would be listed rejected collected.
				if err := alice.Set("notes", "a2", "m", "pending"); err != nil {
					t.Fatal(err)
				}
			}
			aliceID := alice.c.Replica()
			var phase atomic.Int32
			asked, release := make(chan struct{}), make(chan struct{})
			rw := func(req proto.PullRequest, ans proto.PullResponse) proto.PullResponse {
				if req.Replica != aliceID {
					return ans
				}
				switch {
				case phase.Load() == 0 && len(req.Cursor) > 0:
					phase.Store(1)
					return proto.PullResponse{Records: []crdt.Record{}, Next: []byte{}, Reset: &proto.ResetInfo{Reason: proto.ResetHistoryLost, Message: "lost"}}
				case phase.Load() == 1 && len(req.Cursor) == 0:
					// The reading from the beginning after the heal: one
					// record on its first page.
					phase.Store(2)
					req.Limit = 1
					a, err := f.pullAnswer(context.Background(), req)
					if err != nil {
						t.Error(err)
					}
					return a
				case phase.Load() == 2:
					// Its second page waits for the live page.
					phase.Store(3)
					close(asked)
					<-release
				}
				return ans
			}
			f.rewritePull.Store(&rw)
			pushesBefore := f.pushedOf("notes", "a1")
			pulled := make(chan error, 1)
			go func() { pulled <- alice.Pull(ctx) }()
			select {
			case <-asked:
			case err := <-pulled:
				t.Fatalf("pull ended (%v) before the second page of its reading from the beginning", err)
			case <-time.After(10 * time.Second):
				t.Fatal("no second page of the reading from the beginning")
			}
			write(bob, "b0")
			eventually(t, "alice holds b0, delivered live", holds("b0"))
			close(release)
			if err := <-pulled; err != nil {
				t.Fatalf("pull: %v", err)
			}
			// A page delivered live after b0's: Live is done with b0's.
			write(bob, "b1")
			eventually(t, "alice holds b1, delivered live", holds("b1"))
			if n := f.pushedOf("notes", "a1") - pushesBefore; n != 1 {
				t.Errorf("a1 given back %d times, want once (no heal again)", n)
			}
			want := slices.Concat(own, []string{"b0", "b1", "x0"})
			if got := ids(alice, "notes"); !slices.Equal(got, want) {
				t.Errorf("alice holds %v, want %v", got, want)
			}
			if n := leaves.Load(); n != 0 {
				t.Errorf("%d records left alice (dropped as collected), want none", n)
			}
			if rj := alice.Rejected(); len(rj) != 0 {
				t.Errorf("rejected %+v, want none", rj)
			}
		})
	}
}
