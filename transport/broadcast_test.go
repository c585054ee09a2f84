package transport

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/transport/proto"
)

// countingStore counts Pull calls, each taking a few milliseconds as over
// a network, and all its reads (Pull, Get, Head, Meta, Identity).
type countingStore struct {
	stores.Store
	pulls atomic.Int64
	reads atomic.Int64
}

func (s *countingStore) Pull(ctx context.Context, coll string, after uint64, limit stores.PageLimit) (stores.Page, error) {
	s.pulls.Add(1)
	s.reads.Add(1)
	time.Sleep(5 * time.Millisecond)
	return s.Store.Pull(ctx, coll, after, limit)
}

func (s *countingStore) Get(ctx context.Context, coll, id string) (stores.Entry, error) {
	s.reads.Add(1)
	return s.Store.Get(ctx, coll, id)
}

func (s *countingStore) Head(ctx context.Context, coll string) (uint64, error) {
	s.reads.Add(1)
	return s.Store.Head(ctx, coll)
}

func (s *countingStore) Meta(ctx context.Context, coll string) (stores.Meta, error) {
	s.reads.Add(1)
	return s.Store.Meta(ctx, coll)
}

func (s *countingStore) Identity(ctx context.Context) (string, error) {
	s.reads.Add(1)
	return s.Store.Identity(ctx)
}

// Many subscribers of one collection all get every change, however their
// reads are shared.
func TestLiveFanOut(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Demo = true; c.Limits.MaxConnsPerAddr = 100; c.Limits.Rate = -1 })
	cs := &countingStore{Store: ts.store}
	ts.serveOver(t, cs)

	const subscribers, changes = 30, 20
	clients := make([]*liveClient, subscribers)
	for i := range clients {
		clients[i], _ = ts.open(t, "")
		clients[i].send(proto.Sub{Collection: DemoCollection})
		if m, ok := clients[i].recv().(proto.Changes); !ok || len(m.Records) != 0 {
			t.Fatalf("first page: %#v", m)
		}
	}
	// One change at a time, each delivered to every subscriber before the
	// next: every change wakes all of them together.
	before := cs.pulls.Load()
	for i := 0; i < changes; i++ {
		v, _ := crdt.EncodeValue(i)
		id := fmt.Sprint("r", i)
		ts.push(t, "", crdt.Change{Collection: DemoCollection, Record: crdt.SetField(id, "n", v, crdt.Stamp{Wall: time.Now().UnixMilli(), Replica: ownReplica})})
		var wg sync.WaitGroup
		var missing []string
		var mu sync.Mutex
		for j, c := range clients {
			wg.Go(func() {
				m, err := c.recvErr(20 * time.Second)
				if ch, ok := m.(proto.Changes); err != nil || !ok || len(ch.Records) != 1 || ch.Records[0].ID != id {
					mu.Lock()
					missing = append(missing, fmt.Sprintf("%d (%v %v)", j, m, err))
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if len(missing) > 0 {
			t.Fatalf("change %d: subscribers %s did not get it", i, strings.Join(missing, ", "))
		}
	}
	pulls := cs.pulls.Load() - before
	t.Logf("%d subscribers, %d changes: %d store reads", subscribers, changes, pulls)
	// Without sharing that is one read per subscriber and change. Woken
	// together, they share; a loaded machine may spread some wake-ups
	// beyond a read's few milliseconds, hence the slack.
	if pulls > subscribers*changes/2 {
		t.Fatalf("%d store reads for %d subscribers and %d changes: reads are not shared", pulls, subscribers, changes)
	}
}

// Caught-up subscribers share one store read per change, however many
// they are and however their wake-ups spread: the broadcast group reads
// the collection's new changes once and queues the same bytes on every
// connection.
func TestLiveOneReadPerChange(t *testing.T) {
	const subscribers, changes = 100, 10
	ts := newTestServer(t, func(c *Config) { c.Demo = true; c.Limits.MaxConnsPerAddr = 2 * subscribers; c.Limits.Rate = -1 })
	cs := &countingStore{Store: ts.store}
	ts.serveOver(t, cs)

	clients := make([]*liveClient, subscribers)
	for i := range clients {
		clients[i], _ = ts.open(t, "")
		clients[i].send(proto.Sub{Collection: DemoCollection})
		if m, ok := clients[i].recv().(proto.Changes); !ok || len(m.Records) != 0 {
			t.Fatalf("first page: %#v", m)
		}
	}
	for i := range changes {
		before := cs.pulls.Load()
		v, _ := crdt.EncodeValue(i)
		id := fmt.Sprint("r", i)
		ts.push(t, "", crdt.Change{Collection: DemoCollection, Record: crdt.SetField(id, "n", v, crdt.Stamp{Wall: time.Now().UnixMilli(), Replica: ownReplica})})
		var wg sync.WaitGroup
		var mu sync.Mutex
		var missing []string
		for j, c := range clients {
			wg.Go(func() {
				m, err := c.recvErr(20 * time.Second)
				if ch, ok := m.(proto.Changes); err != nil || !ok || len(ch.Records) != 1 || ch.Records[0].ID != id {
					mu.Lock()
					missing = append(missing, fmt.Sprintf("%d (%v %v)", j, m, err))
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if len(missing) > 0 {
			t.Fatalf("change %d: subscribers %s did not get it", i, strings.Join(missing, ", "))
		}
		if got := cs.pulls.Load() - before; got != 1 {
			t.Errorf("change %d: %d store reads for %d caught-up subscribers, want 1", i, got, subscribers)
		}
	}
}

// groupsIdle reports whether every broadcast group of ts has no goroutine,
// nor catch-up reads in flight.
func (ts *testServer) groupsIdle() bool {
	h := ts.srv.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, g := range h.groups {
		g.mu.Lock()
		running := g.running || g.catching > 0
		g.mu.Unlock()
		if running {
			return false
		}
	}
	return true
}

// Subscriptions alone in their groups get every change pushed after their
// groups went idle (no goroutine), and every change pushed while their
// groups' goroutines are deciding to exit: no wake-up is lost.
func TestLiveIdleGroupsWake(t *testing.T) {
	const subscribers, rounds = 16, 8
	// Once armed, a change for the first subscriber lands when its group's
	// goroutine has done its rounds and is about to decide whether to exit.
	var armed atomic.Bool
	late := make(chan error, 1)
	c0 := mustScope(t, `owner == "c0"`).Key()
	ts := newTestServer(t, func(c *Config) {
		c.Demo = true
		c.Limits.MaxConnsPerAddr = 2 * subscribers
		c.Limits.Rate = -1
		c.afterRounds = func(g *group) {
			if g.key.scope == c0 && armed.CompareAndSwap(true, false) {
				late <- g.h.s.eng.Update(context.Background(), DemoCollection, "c0-late", engine.Doc{"owner": "c0"})
			}
		}
	})
	clients := make([]*liveClient, subscribers)
	scopes := make([]*scope.Pred, subscribers)
	for i := range clients {
		clients[i], _ = ts.open(t, "")
		scopes[i] = mustScope(t, fmt.Sprintf(`owner == "c%d"`, i))
		clients[i].send(proto.Sub{Collection: DemoCollection, Scope: scopes[i].Encode()})
		if m, ok := clients[i].recv().(proto.Changes); !ok || len(m.Records) != 0 {
			t.Fatalf("first page: %#v", m)
		}
	}
	for r := range rounds {
		if r%2 == 0 {
			// Every group idle: the push must start their goroutines.
			deadline := time.Now().Add(10 * time.Second)
			for !ts.groupsIdle() {
				if time.Now().After(deadline) {
					t.Fatal("broadcast groups still run a goroutine while idle")
				}
				time.Sleep(time.Millisecond)
			}
		} // else at once: the goroutines of the last round may be exiting
		changes := make([]crdt.Change, subscribers)
		for i := range changes {
			changes[i] = set(t, DemoCollection, fmt.Sprintf("c%d-%d", i, r), map[string]any{"owner": fmt.Sprintf("c%d", i)})
		}
		last := r == rounds-1
		armed.Store(last)
		ts.push(t, "", changes...)
		if last {
			if err := <-late; err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		var missing []string
		for i, c := range clients {
			wg.Go(func() {
				want := map[string]bool{fmt.Sprintf("c%d-%d", i, r): true}
				if last && i == 0 {
					want["c0-late"] = true
				}
				for len(want) > 0 {
					m, err := c.recvErr(20 * time.Second)
					ch, ok := m.(proto.Changes)
					if err != nil || !ok {
						mu.Lock()
						missing = append(missing, fmt.Sprintf("%v (%v %v)", want, m, err))
						mu.Unlock()
						return
					}
					for _, rec := range ch.Records {
						if !scopes[i].Match(rec) || !want[rec.ID] {
							mu.Lock()
							missing = append(missing, fmt.Sprintf("%v: got %s", want, rec.ID))
							mu.Unlock()
							return
						}
						delete(want, rec.ID)
					}
				}
			})
		}
		wg.Wait()
		if len(missing) > 0 {
			t.Fatalf("round %d: %s", r, strings.Join(missing, ", "))
		}
	}
}
