package client_test

import (
	"sync/atomic"
	"testing"

	"github.com/convergo/convergo/transport"
	"github.com/convergo/convergo/transport/client"
	"github.com/convergo/convergo/transport/proto"
)

// TestHealDuringAReconciliation: a replica's first pull of a collection
// it pushed to reconciles it (docs/protocol.md, "A pull from the
// beginning reconciles too"), its outbox held until that reading ends.
// The reading is cut short after its first page, a write is queued, and
// the store then goes back in time: the next pull is reset
// history_lost. The heal and the reading from the beginning after it
// must end the reconciliation, so that the write held meanwhile reaches
// the server, rather than wait for a page of the history the store
// lost.
func TestHealDuringAReconciliation(t *testing.T) {
	s := newLossServer(t, false)
	s.limits = transport.Limits{MaxPullRecords: 2}
	s.restart(nil) // the limits hold from a start
	alice := s.replica("alice", true, client.ReplicaConfig{}, nil)
	setEach(t, alice, "a", "n", 0, 6)
	if err := alice.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	var pulls atomic.Int64
	refuse := func(path string, _ []byte) *proto.Error {
		if path == proto.PathPull && pulls.Add(1) > 1 {
			return proto.Errorf(proto.CodeUnavailable, "cut short by the test")
		}
		return nil
	}
	s.refuse.Store(&refuse)
	if err := alice.Pull(t.Context()); err == nil {
		t.Fatal("the pull cut short after its first page succeeded")
	}
	s.refuse.Store(nil)
	set(t, alice, "held", "n", "queued while the reconciliation holds the outbox")
	s.restart(nil) // the store goes back to empty
	want := union(alice)
	if !want["held"].Exists() {
		t.Fatal("alice lost her own write")
	}
	s.eventuallyConverged(t, want, map[string]*client.Replica{"alice": alice}, func() { syncAll(t, alice) })
}
