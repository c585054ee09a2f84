package transport

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/transport/proto"
)

// A lease is a record of the server's own whose id is the collection, a
// slash and the reader's replica id; a collection run reads it back as
// the collection before the last slash and the replica after it, and
// counts it against that replica's subject. A reader naming as its
// replica (pull or sub key 5) its own prefix and a device part with a
// slash (mallory's "…_x/…_dev", no replica id) got a lease written: one
// on no collection it read, which the run counts as a lease of whichever
// subject the id after the slash names (alice's), on a collection
// "t.notes/…_x" never written, so that mallory's made-up leases evict
// alice's (a subject's leases on collections never written are held to
// proto.MaxUnwrittenLeasesPerSubject). Such an id is not one the
// principal owns: forbidden, over pull and sub, and no lease is written.
func TestLeaseOfNoReplicaID(t *testing.T) {
	clock := newFakeClock()
	ts := newTestServer(t, nil)
	ts.withRules(t, `{"t.*": {"maxOffline": "1h"}}`, func(c *engine.Config) {
		c.Now, c.CollectGrace, c.CollectEvery = clock.now, -1, -1
	})
	alice := ts.token(t, "alice", []string{"t.*"}, []string{"t.*"})
	mallory := ts.token(t, "mallory", []string{"t.*"}, []string{"t.*"})
	ts.push(t, alice, ts.bind(t, alice, []crdt.Change{change(t, "t.notes", "r1", "title", "x")})...)
	bad := proto.ReplicaFor("mallory", "x/"+proto.ReplicaFor("alice", "dev"))
	a := ts.post(t, proto.PathPull, mallory, proto.PullRequest{Collection: "t.notes", Replica: bad})
	if a.status != http.StatusForbidden {
		t.Errorf("pull with replica %q: %d, want 403 forbidden", bad, a.status)
	} else if code := a.errorCode(t); code != proto.CodeForbidden {
		t.Errorf("pull with replica %q: %s, want forbidden", bad, code)
	}
	c, _ := ts.open(t, mallory)
	c.send(proto.Sub{Collection: "t.notes", Replica: bad})
	if m, err := c.recvErr(5 * time.Second); err != nil {
		t.Fatal(err)
	} else if e, ok := m.(proto.ErrorMessage); !ok || e.Code != proto.CodeForbidden {
		t.Errorf("sub with replica %q: %T %+v, want error forbidden", bad, m, m)
	}
	if _, err := ts.eng.GetRecord(context.Background(), proto.LeaseCollection, "t.notes/"+bad); !errors.Is(err, stores.ErrNotFound) {
		t.Errorf("the lease of %q: %v, want none written", bad, err)
	}
}
