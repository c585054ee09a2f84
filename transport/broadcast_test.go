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
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/transport/proto"
)

// countingStore counts Pull calls, each taking a few milliseconds as over
// a network.
type countingStore struct {
	stores.Store
	pulls atomic.Int64
}

func (s *countingStore) Pull(ctx context.Context, coll string, after uint64, limit stores.PageLimit) (stores.Page, error) {
	s.pulls.Add(1)
	time.Sleep(5 * time.Millisecond)
	return s.Store.Pull(ctx, coll, after, limit)
}

// Many subscribers of one collection all get every change, however their
// reads are shared.
func TestLiveFanOut(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Demo = true; c.Limits.MaxConnsPerAddr = 100; c.Limits.Rate = -1 })
	cs := &countingStore{Store: ts.store}
	eng, err := engineOn(cs)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	ts.srv.eng = eng

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
	eng, err := engineOn(cs)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	ts.srv.eng = eng

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
