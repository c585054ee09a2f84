package client_test

import (
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/convergo/convergo/transport/client"
	"github.com/convergo/convergo/transport/proto"
)

// heldAnswerRT holds back the answer of the first push after it is armed:
// the server has applied the push, and the client reads its answer only
// once released (an answer slow to arrive).
type heldAnswerRT struct {
	armed    atomic.Bool
	answered chan struct{} // closed when the held push was answered
	release  chan struct{}
}

func (h *heldAnswerRT) RoundTrip(req *http.Request) (*http.Response, error) {
	hold := req.URL.Path == proto.PathPush && h.armed.CompareAndSwap(true, false)
	resp, err := http.DefaultTransport.RoundTrip(req)
	if hold {
		close(h.answered)
		<-h.release
	}
	return resp, err
}

// TestHealAckAfterTheLoss: a push is applied by a store that then goes
// back in time, and its answer reaches the replica only after a pull was
// reset history_lost and healed the collection (a heal gives back what
// the replica held: the pushed write was still pending then). The
// acknowledgement is of a store that lost the write since: it must still
// reach the server.
func TestHealAckAfterTheLoss(t *testing.T) {
	s := newLossServer(t, false)
	rt := &heldAnswerRT{answered: make(chan struct{}), release: make(chan struct{})}
	alice := s.replica("alice", true, client.ReplicaConfig{}, func(c *client.Config) {
		c.HTTPClient = &http.Client{Transport: rt}
	})
	setEach(t, alice, "a", "n", 0, 3)
	syncAll(t, alice)

	set(t, alice, "late", "n", "acknowledged by the lost store")
	rt.armed.Store(true)
	flushed := make(chan error, 1)
	go func() { flushed <- alice.Flush(t.Context()) }()
	<-rt.answered
	s.restart(nil) // the store goes back to empty
	// The pull is reset history_lost and heals; the write is in flight.
	if err := alice.Pull(t.Context()); err != nil {
		t.Fatal(err)
	}
	close(rt.release)
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	want := union(alice)
	if !want["late"].Exists() {
		t.Fatal("alice lost her own write")
	}
	s.eventuallyConverged(t, want, map[string]*client.Replica{"alice": alice}, func() { syncAll(t, alice) })
}

// TestHealAckAfterTheStoreWentBackAgain: as TestHealAckAfterTheLoss, for
// a loss the heal check finds (the store goes back again between a heal
// and the reading after it, which resets nothing). A push applied by the
// store that then went back again, answered only after the replica
// healed it again, was acknowledged by a store that lost it: it must
// still reach the server.
func TestHealAckAfterTheStoreWentBackAgain(t *testing.T) {
	s := newLossServer(t, false)
	var pulls atomic.Int64
	var blockPull atomic.Bool
	pullWaits, pullGo := make(chan struct{}), make(chan struct{})
	held := &heldAnswerRT{answered: make(chan struct{}), release: make(chan struct{})}
	alice := s.replica("alice", true, client.ReplicaConfig{}, func(c *client.Config) {
		c.HTTPClient = &http.Client{Transport: hookRT{before: func(req *http.Request) {
			// The pull from the beginning after the heal (the second pull
			// of the Pull below) waits until released.
			if req.URL.Path == proto.PathPull && blockPull.Load() && pulls.Add(1) == 2 {
				close(pullWaits)
				<-pullGo
			}
		}, next: held}}
	})
	setEach(t, alice, "a", "n", 0, 3)
	syncAll(t, alice)

	s.restart(nil) // the first loss
	blockPull.Store(true)
	pulled := make(chan error, 1)
	go func() { pulled <- alice.Pull(t.Context()) }() // reset, heal, then the pull from the beginning waits
	<-pullWaits
	set(t, alice, "late", "n", "acknowledged by the store that went back again")
	held.armed.Store(true)
	flushed := make(chan error, 1)
	go func() { flushed <- alice.Flush(t.Context()) }()
	<-held.answered
	s.restart(nil) // the second loss, before the reading after the heal
	close(pullGo)
	// The reading misses what the heal gave back: the replica heals again
	// (the write still in flight) and reads again.
	if err := <-pulled; err != nil {
		t.Fatal(err)
	}
	close(held.release)
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	want := union(alice)
	if !want["late"].Exists() {
		t.Fatal("alice lost her own write")
	}
	s.eventuallyConverged(t, want, map[string]*client.Replica{"alice": alice}, func() { syncAll(t, alice) })
}
