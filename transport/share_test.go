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
)

// A subscriber joins a read started after its mark and never one started
// before it, which could predate the change that woke it.
func TestPageGroupJoinsOnlyLaterReads(t *testing.T) {
	g := newPageGroup()
	key := pageKey{"c", 0}
	ctx := context.Background()

	before := g.mark()
	release := make(chan struct{})
	started := make(chan struct{})
	var reads atomic.Int32
	read := func(tag string) func() (wirePage, []byte, error) {
		return func() (wirePage, []byte, error) {
			reads.Add(1)
			if tag == "first" {
				close(started)
				<-release
			}
			return wirePage{}, []byte(tag), nil
		}
	}
	firstDone := make(chan []byte)
	go func() {
		_, b, _ := g.do(ctx, key, before, read("first"))
		firstDone <- b
	}()
	<-started

	// Marked before the read started: it may join.
	joined := make(chan []byte)
	go func() {
		_, b, _ := g.do(ctx, key, before, read("unexpected"))
		joined <- b
	}()
	for waiting := false; !waiting; time.Sleep(time.Millisecond) {
		g.mu.Lock()
		waiting = g.flights[key].joiners == 1
		g.mu.Unlock()
	}
	// Marked after the read started: it must read again.
	after := g.mark()
	_, b, _ := g.do(ctx, key, after, read("second"))
	if string(b) != "second" {
		t.Fatalf("a subscriber woken after the read started got %q", b)
	}
	close(release)
	if b := <-firstDone; string(b) != "first" {
		t.Fatalf("first: %q", b)
	}
	if b := <-joined; string(b) != "first" {
		t.Fatalf("joiner: %q", b)
	}
	if n := reads.Load(); n != 2 {
		t.Fatalf("%d reads, want 2", n)
	}
	// Nothing is kept once the reads are over.
	if _, b, _ := g.do(ctx, key, g.mark(), read("third")); string(b) != "third" {
		t.Fatalf("after the flights: %q", b)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.flights) != 0 {
		t.Fatalf("%d flights kept", len(g.flights))
	}
}

// countingStore counts Pull calls.
type countingStore struct {
	stores.Store
	pulls atomic.Int64
}

func (s *countingStore) Pull(ctx context.Context, coll string, after uint64, limit int) (stores.Page, error) {
	s.pulls.Add(1)
	return s.Store.Pull(ctx, coll, after, limit)
}

// Many subscribers of one collection all get every change, however their
// reads are shared.
func TestLiveFanOut(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Demo = true; c.Limits.MaxConnsPerAddr = 100; c.Limits.Rate = -1 })
	cs := &countingStore{Store: ts.eng.Store()}
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
		clients[i].send(Sub{Collection: DemoCollection})
		if m, ok := clients[i].recv().(Changes); !ok || len(m.Entries) != 0 {
			t.Fatalf("first page: %#v", m)
		}
	}
	before := cs.pulls.Load()
	var wg sync.WaitGroup
	got := make([]map[string]bool, subscribers)
	for i, c := range clients {
		got[i] = map[string]bool{}
		wg.Go(func() {
			for len(got[i]) < changes {
				m, err := c.recvErr(20 * time.Second)
				if err != nil {
					t.Errorf("subscriber %d after %d: %v", i, len(got[i]), err)
					return
				}
				for _, e := range m.(Changes).Entries {
					got[i][e.Record.ID] = true
				}
			}
		})
	}
	for i := 0; i < changes; i++ {
		v, _ := crdt.EncodeValue(i)
		ts.push(t, "", crdt.Change{Collection: DemoCollection, Record: crdt.SetField(fmt.Sprint("r", i), "n", v, crdt.Stamp{Wall: time.Now().UnixMilli(), Replica: "w"})})
	}
	wg.Wait()
	pulls := cs.pulls.Load() - before
	t.Logf("%d subscribers, %d changes: %d store reads for %d wake-ups at most", subscribers, changes, pulls, subscribers*changes)
	var missing []string
	for i := range got {
		if len(got[i]) != changes {
			missing = append(missing, fmt.Sprint(i))
		}
	}
	if len(missing) > 0 {
		t.Fatalf("subscribers %s missed changes", strings.Join(missing, ","))
	}
}
