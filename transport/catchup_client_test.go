package transport

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/transport/proto"
)

// heldPullsStore holds the Pulls of the collections named with prefix
// while held is set, and counts those in flight and the most at once.
type heldPullsStore struct {
	stores.Store
	prefix   string
	held     atomic.Bool
	inFlight atomic.Int64
	most     atomic.Int64
}

func (s *heldPullsStore) Pull(ctx context.Context, coll string, after uint64, limit stores.PageLimit) (stores.Page, error) {
	if strings.HasPrefix(coll, s.prefix) {
		n := s.inFlight.Add(1)
		defer s.inFlight.Add(-1)
		for m := s.most.Load(); n > m && !s.most.CompareAndSwap(m, n); m = s.most.Load() {
		}
		for deadline := time.Now().Add(10 * time.Second); s.held.Load() && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	}
	return s.Store.Pull(ctx, coll, after, limit)
}

// One client's live subscriptions catching up read the store at most
// catchUpsPerClient at a time, however many sessions and subscriptions
// it holds: the subject's sessions each subscribe to a collection of
// their own from the beginning, and the store is slow. Each still gets
// its first page once the store answers, though half of the others end
// their subscriptions meanwhile.
func TestLiveCatchUpReadsPerClient(t *testing.T) {
	const sessions = 8 * catchUpsPerClient
	var runs atomic.Int64 // of the groups' goroutines
	ts := newTestServer(t, func(c *Config) {
		c.Limits.Rate = -1
		c.afterRounds = func(*group) { runs.Add(1) }
	})
	hs := &heldPullsStore{Store: ts.store, prefix: "x"}
	ts.serveOver(t, hs)
	tok := ts.token(t, "mallory", []string{"*"}, []string{"*"})
	for i := range sessions {
		ts.push(t, tok, change(t, fmt.Sprintf("x%d", i), "r", "f", i))
	}
	hs.held.Store(true)
	clients := make([]*liveClient, sessions)
	for i := range clients {
		clients[i], _ = ts.open(t, tok)
		clients[i].send(proto.Sub{Collection: fmt.Sprintf("x%d", i)})
	}
	waitFor(t, "reads in the store", func() bool { return hs.inFlight.Load() >= catchUpsPerClient })
	time.Sleep(200 * time.Millisecond) // more would come meanwhile
	if got := hs.most.Load(); got > catchUpsPerClient {
		t.Errorf("%d reads of one client in the store at once, want at most %d", got, catchUpsPerClient)
	}
	// Another client's subscription is read meanwhile.
	alice := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	ac, _ := ts.open(t, alice)
	ac.send(proto.Sub{Collection: "notes"})
	if m, ok := ac.recv().(proto.Changes); !ok {
		t.Fatalf("alice's first page: %#v", m)
	}
	// Half the sessions end their subscriptions, waiting or reading: a
	// read of the client's their groups are granted goes on to another.
	for i, c := range clients {
		if i%2 == 1 {
			c.send(proto.Unsub{Collection: fmt.Sprintf("x%d", i)})
		}
	}
	time.Sleep(50 * time.Millisecond)
	before := runs.Load()
	hs.held.Store(false)
	for i, c := range clients {
		if i%2 == 1 {
			continue
		}
		m, ok := c.recv().(proto.Changes)
		if !ok || len(m.Records) != 1 {
			t.Fatalf("session %d: first page %#v, want its record", i, m)
		}
	}
	// A read that ends wakes the one group whose turn is next, not every
	// group waiting: the runs of the groups' goroutines grow with the
	// groups, not with their square.
	time.Sleep(100 * time.Millisecond)
	if got := runs.Load() - before; got > 2*sessions {
		t.Errorf("%d runs of the groups' goroutines for %d groups catching up, want at most %d", got, sessions, 2*sessions)
	}
	t.Logf("%d runs", runs.Load()-before)
}
