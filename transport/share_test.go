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
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/transport/proto"
)

// A subscriber takes a page from a read in flight only when the page
// includes the head that woke it; else it reads again.
func TestPageGroupSharesOnlyCoveringReads(t *testing.T) {
	g := newPageGroup()
	key := pageKey{"c", engine.CursorAt(0)}
	ctx := context.Background()
	var reads atomic.Int32
	release := make(chan struct{})
	started := make(chan struct{})
	slow := func() (wirePage, []byte, error) { // a read that saw up to seq 5
		reads.Add(1)
		close(started)
		<-release
		return wirePage{Next: engine.CursorAt(5)}, []byte("up to 5"), nil
	}
	own := func(tag string, next uint64) func() (wirePage, []byte, error) {
		return func() (wirePage, []byte, error) {
			reads.Add(1)
			return wirePage{Next: engine.CursorAt(next)}, []byte(tag), nil
		}
	}
	go g.do(ctx, key, 5, slow)
	<-started

	type result struct {
		data []byte
		err  error
	}
	covered, uncovered := make(chan result), make(chan result)
	go func() { _, b, err := g.do(ctx, key, 4, own("unexpected", 9)); covered <- result{b, err} }()
	go func() { _, b, err := g.do(ctx, key, 7, own("own read", 9)); uncovered <- result{b, err} }()
	for joined := false; !joined; time.Sleep(time.Millisecond) {
		g.mu.Lock()
		joined = g.flights[key].joiners == 2
		g.mu.Unlock()
	}
	close(release)
	if r := <-covered; string(r.data) != "up to 5" || r.err != nil {
		t.Fatalf("woken by head 4: got %q, %v; want the shared page", r.data, r.err)
	}
	if r := <-uncovered; string(r.data) != "own read" || r.err != nil {
		t.Fatalf("woken by head 7: got %q, %v; want a read of its own", r.data, r.err)
	}
	if n := reads.Load(); n != 2 {
		t.Fatalf("%d reads, want 2", n)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.flights) != 0 {
		t.Fatalf("%d flights kept after the reads", len(g.flights))
	}
}

func TestCovers(t *testing.T) {
	for _, tc := range []struct {
		page wirePage
		head uint64
		want bool
	}{
		{wirePage{Next: engine.CursorAt(5)}, 5, true},
		{wirePage{Next: engine.CursorAt(5)}, 4, true},
		{wirePage{Next: engine.CursorAt(5)}, 6, false},
		{wirePage{Next: engine.CursorAt(5), More: true}, 60, true}, // the next page follows
		{wirePage{Next: engine.CursorAt(0)}, 0, true},
	} {
		if got := covers(tc.page, tc.head); got != tc.want {
			t.Errorf("covers(%+v, %d) = %v, want %v", tc.page, tc.head, got, tc.want)
		}
	}
}

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
