package transport

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// TestLiveBroadcastWhileAnotherPageParked: a page the broadcast reads for
// several subscribers at one cursor (no connection's read turn is taken
// for it) reaches a connection whose parking place holds a page of its
// other subscription. The page is not handed to that connection
// (offerBusy): its subscriber waits to be woken, and is read for again
// from where it stood. Its page must not be skipped: once the client
// reads, it gets the record, after every page of its other subscription.
func TestLiveBroadcastWhileAnotherPageParked(t *testing.T) {
	ts := newTestServer(t, func(c *Config) {
		c.Limits.MaxPullRecords = 1
		c.Limits.SendQueue = 1
		c.Limits.SlowConsumer = time.Hour // the parked page waits: no resync here
		c.Limits.MaxBodyBytes = 64 << 20
		c.Limits.Rate = -1
	})
	colls := []string{"notes", "todos"}
	tok := ts.token(t, "alice", colls, colls)
	slow, _ := ts.open(t, tok)
	for _, coll := range colls {
		slow.send(proto.Sub{Collection: coll})
	}
	peer, _ := ts.open(t, ts.token(t, "bob", colls, colls))
	peer.send(proto.Sub{Collection: "notes"})
	for _, c := range []*liveClient{slow, slow, peer} {
		if m, ok := c.recv().(proto.Changes); !ok || len(m.Records) != 0 {
			t.Fatalf("the first page of an empty collection: %#v", m)
		}
	}

	// slow reads nothing more: 16 MB of todos fill the loopback socket's
	// buffers and its queue, and a page of them is parked.
	value := strings.Repeat("x", 100<<10)
	const todos = 160
	for batch := range todos / 40 {
		var cs []crdt.Change
		for i := range 40 {
			cs = append(cs, change(t, "todos", fmt.Sprintf("t%03d", batch*40+i), "f", value))
		}
		ts.push(t, tok, cs...)
	}
	conn := ts.connOf(t, "todos")
	for until := time.Now().Add(30 * time.Second); !conn.hasParked(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(until) {
			t.Fatal("no page of a client not reading 16 MB was parked within 30 s")
		}
	}

	// A note, read for both subscribers of notes at one cursor: peer gets
	// it, slow's connection is busy.
	ts.push(t, tok, change(t, "notes", "n1", "f", "v"))
	if m, ok := peer.recv().(proto.Changes); !ok || len(m.Records) != 1 || m.Records[0].ID != "n1" {
		t.Fatalf("peer's page of notes: %#v", m)
	}
	if !ts.memberBlocked(conn, "notes") {
		t.Fatal("the test did not exercise what it is about: slow's subscription of notes was not refused the parking place")
	}

	got := map[string]int{}
	for got["notes"] < 1 || got["todos"] < todos {
		m, err := slow.recvErr(10 * time.Second)
		if err != nil {
			t.Fatalf("after %d notes and %d todos: %v; want n1 and %d todos", got["notes"], got["todos"], err, todos)
		}
		ch, ok := m.(proto.Changes)
		if !ok {
			t.Fatalf("got %#v", m)
		}
		got[ch.Collection] += len(ch.Records)
	}
	if got["notes"] != 1 || got["todos"] != todos {
		t.Fatalf("got %v; want 1 note and %d todos", got, todos)
	}
}

// connOf returns the live connection subscribed to coll (the test's
// only one).
func (ts *testServer) connOf(t *testing.T, coll string) *liveConn {
	t.Helper()
	ts.srv.mu.Lock()
	defer ts.srv.mu.Unlock()
	for c := range ts.srv.live {
		c.mu.Lock()
		_, ok := c.subs[coll]
		c.mu.Unlock()
		if ok {
			return c
		}
	}
	t.Fatalf("no connection subscribed to %s", coll)
	return nil
}

// hasParked reports whether c holds a parked page.
func (c *liveConn) hasParked() bool {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	return c.parked != nil
}

// memberBlocked reports whether c's subscription of coll waits to be
// woken, refused the parking place.
func (ts *testServer) memberBlocked(c *liveConn, coll string) bool {
	c.mu.Lock()
	m := c.subs[coll]
	c.mu.Unlock()
	if m == nil {
		return false
	}
	ts.srv.hub.mu.Lock()
	defer ts.srv.hub.mu.Unlock()
	for _, g := range ts.srv.hub.groups {
		g.mu.Lock()
		_, in := g.members[m]
		blocked := in && m.blocked
		g.mu.Unlock()
		if blocked {
			return true
		}
	}
	return false
}
