package transport

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
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

// One client's caught-up subscriptions read the store at most
// liveReadsPerClient at a time after a write, however many broadcast
// groups they make: the subject's two sessions are caught up on the same
// many collections, one push writes to each, and the store is slow.
// Another client is served meanwhile, and each of the subject's sessions
// gets every change once the store answers.
func TestLiveCaughtUpReadsPerClient(t *testing.T) {
	const colls = 8 * liveReadsPerClient
	ts := newTestServer(t, func(c *Config) { c.Limits.Rate = -1 })
	hs := &heldPullsStore{Store: ts.store, prefix: "y"}
	ts.serveOver(t, hs)
	tok := ts.token(t, "mallory", []string{"*"}, []string{"*"})
	sessions := make([]*liveClient, 2)
	for i := range sessions {
		sessions[i], _ = ts.open(t, tok)
		for j := range colls {
			sessions[i].send(proto.Sub{Collection: fmt.Sprintf("y%d", j)})
			if m, ok := sessions[i].recv().(proto.Changes); !ok || len(m.Records) != 0 {
				t.Fatalf("session %d: first page of y%d: %#v", i, j, m)
			}
		}
	}
	hs.held.Store(true)
	changes := make([]crdt.Change, colls)
	for j := range changes {
		changes[j] = change(t, fmt.Sprintf("y%d", j), "r", "f", j)
	}
	ts.push(t, tok, changes...)
	waitFor(t, "reads in the store", func() bool { return hs.inFlight.Load() >= liveReadsPerClient })
	time.Sleep(200 * time.Millisecond) // more would come meanwhile
	if got := hs.most.Load(); got > liveReadsPerClient {
		t.Errorf("%d reads of one client's caught-up groups in the store at once, want at most %d", got, liveReadsPerClient)
	}
	// Another client's subscription is read meanwhile.
	alice := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	ac, _ := ts.open(t, alice)
	ac.send(proto.Sub{Collection: "notes"})
	if m, ok := ac.recv().(proto.Changes); !ok {
		t.Fatalf("alice's first page: %#v", m)
	}
	hs.held.Store(false)
	for i, c := range sessions {
		got := map[string]bool{}
		for len(got) < colls {
			m, ok := c.recv().(proto.Changes)
			if !ok || len(m.Records) != 1 || got[m.Collection] {
				t.Fatalf("session %d: %#v after %d collections' changes", i, m, len(got))
			}
			got[m.Collection] = true
		}
	}
}

// A client's turns for caught-up reads go to the pulls that hold a shared
// page before those that would begin a read, each in the order they came,
// and a pull whose wait ends as a turn is given to it passes the turn on:
// once every turn is given back the client holds none and none waits.
func TestLiveTurnsHandOver(t *testing.T) {
	r := &liveTurns{n: map[string]int{}, waiting: map[string]*turnQueue{}}
	ctx := context.Background()
	held := make([]*liveTurn, liveReadsPerClient)
	for i := range held {
		held[i] = &liveTurn{r: r, client: "c"}
		if err := held[i].take(ctx, false); err != nil {
			t.Fatal(err)
		}
	}
	var order []string
	var mu sync.Mutex
	var wg sync.WaitGroup
	waits := 0
	wait := func(name string, page bool) *liveTurn {
		waits++
		lt := &liveTurn{r: r, client: "c"}
		wg.Go(func() {
			if err := lt.take(ctx, page); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, name)
			mu.Unlock()
		})
		for queued := false; !queued; time.Sleep(time.Millisecond) {
			r.mu.Lock()
			q := r.waiting["c"]
			queued = q != nil && len(q.held)+len(q.begin) == waits
			r.mu.Unlock()
		}
		return lt
	}
	begin := wait("begin", false)
	page := wait("page", true)
	given := func(n int) {
		for got := 0; got < n; time.Sleep(time.Millisecond) {
			mu.Lock()
			got = len(order)
			mu.Unlock()
		}
	}
	held[0].give()
	given(1)
	held[1].give()
	wg.Wait()
	if want := []string{"page", "begin"}; !slices.Equal(order, want) {
		t.Errorf("turns given in order %v, want %v", order, want)
	}
	held[0], held[1] = begin, page
	// Waits that end as turns are given back.
	for i := range 200 {
		c, cancel := context.WithTimeout(ctx, time.Duration(i%5)*100*time.Microsecond)
		lt := &liveTurn{r: r, client: "c"}
		done := make(chan error, 1)
		go func() { done <- lt.take(c, i%2 == 0) }()
		time.Sleep(time.Duration(i%7) * 50 * time.Microsecond)
		held[2].give()
		if err := <-done; err == nil {
			held[2] = lt
		} else if err := held[2].take(ctx, false); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	for _, lt := range held {
		lt.give()
	}
	if len(r.n) != 0 || len(r.waiting) != 0 {
		t.Errorf("after every turn given back: counts %v, waiting %v", r.n, r.waiting)
	}
}
