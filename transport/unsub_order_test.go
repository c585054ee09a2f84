package transport

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/transport/proto"
)

// pullFailStore fails the Pulls of one collection while fail is set, as
// a backend that stopped answering for it: a live read of it ends its
// subscriptions with resync.
type pullFailStore struct {
	stores.Store
	coll string
	fail atomic.Bool
}

func (s *pullFailStore) Pull(ctx context.Context, coll string, after uint64, limit stores.PageLimit) (stores.Page, error) {
	if coll == s.coll && s.fail.Load() {
		return stores.Page{}, stores.ErrUnavailable
	}
	return s.Store.Pull(ctx, coll, after, limit)
}

// collectionOf returns the collection a frame of a subscription names, or
// "" for a frame of none.
func collectionOf(m proto.Message) string {
	switch m := m.(type) {
	case proto.Changes:
		return m.Collection
	case proto.Resync:
		return m.Collection
	case proto.Reset:
		return m.Collection
	case proto.ErrorMessage:
		return m.Collection
	}
	return ""
}

// The rule the browser client relies on (docs/protocol.md, section 9): the
// server writes no frame of a subscription once it has read its unsub, so
// the pong of a ping sent right behind the unsub follows every frame of
// it. Here the subscription has ended from the server's side (a read of
// it failed: resync owed) while the connection's writer is busy, and the
// client's unsub and ping come before the writer writes the resync: the
// resync must not follow the pong. Nor may a page of a change pushed once
// the pong is read.
func TestLiveUnsubNothingAfterPong(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Limits.Rate = -1 })
	fs := &pullFailStore{Store: ts.store, coll: "a"}
	ts.serveOver(t, fs)
	tok := ts.token(t, "alice", []string{"a", "b"}, []string{"a", "b"})
	cl, _ := ts.open(t, tok)
	cl.send(proto.Sub{Collection: "a"})
	if m, ok := cl.recv().(proto.Changes); !ok || m.Collection != "a" {
		t.Fatalf("first page of a: %#v", m)
	}
	c := ts.onlyConn(t)

	// The writer is held in a write (as by a slow client) with pong 1.
	c.wmu.Lock()
	locked := true
	defer func() {
		if locked {
			c.wmu.Unlock()
		}
	}()
	cl.send(proto.Ping{Nonce: 1})
	waitFor(t, "the writer taking pong 1", func() bool {
		c.qmu.Lock()
		defer c.qmu.Unlock()
		return c.writing && len(c.frames) == 0
	})
	// a's next read fails: its subscription ends, a resync owed.
	fs.fail.Store(true)
	ts.push(t, tok, change(t, "a", "r1", "f", 1))
	waitFor(t, "the resync of a owed", func() bool {
		c.qmu.Lock()
		defer c.qmu.Unlock()
		return c.owed
	})
	fs.fail.Store(false)
	// The client, not knowing, ends its subscription of a and pings.
	cl.send(proto.Unsub{Collection: "a"})
	cl.send(proto.Ping{Nonce: 2})
	waitFor(t, "pong 2 queued", func() bool {
		c.qmu.Lock()
		defer c.qmu.Unlock()
		return len(c.frames) == 1
	})
	locked = false
	c.wmu.Unlock()

	pongs := 0
	for pongs < 2 {
		m := cl.recv()
		if p, ok := m.(proto.Pong); ok {
			pongs++
			if p.Nonce != uint64(pongs) {
				t.Fatalf("pong %d, want %d", p.Nonce, pongs)
			}
		}
	}
	// What the server writes from now on: nothing of a, though a changes.
	ts.push(t, tok, change(t, "a", "r2", "f", 2))
	cl.send(proto.Ping{Nonce: 3})
	for {
		m := cl.recv()
		if coll := collectionOf(m); coll == "a" {
			t.Fatalf("after the pong of the ping behind unsub a: %T %#v", m, m)
		}
		if p, ok := m.(proto.Pong); ok && p.Nonce == 3 {
			break
		}
	}
	if _, err := cl.recvErr(200 * time.Millisecond); err == nil {
		t.Fatal("a frame after pong 3")
	}
}

// The same rule for pages: a read of the subscription in flight when its
// unsub is read hands its page to no one, and a change pushed later is
// not sent; the pong of the ping behind the unsub is the last word of it.
func TestLiveUnsubNoPageAfterPong(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Limits.Rate = -1 })
	gs := &gatedStore{Store: ts.store, coll: "a"}
	ts.serveOver(t, gs)
	tok := ts.token(t, "alice", []string{"a"}, []string{"a"})
	cl, _ := ts.open(t, tok)
	cl.send(proto.Sub{Collection: "a"})
	if m, ok := cl.recv().(proto.Changes); !ok || m.Collection != "a" {
		t.Fatalf("first page of a: %#v", m)
	}
	// The read after r1 waits in the store while the unsub and ping come.
	var opened atomic.Bool
	open := opened.Load
	gs.open.Store(&open)
	before := gs.pulls.Load()
	ts.push(t, tok, change(t, "a", "r1", "f", 1))
	waitFor(t, "the read after r1 in the store", func() bool { return gs.pulls.Load() > before })
	cl.send(proto.Unsub{Collection: "a"})
	cl.send(proto.Ping{Nonce: 1})
	for {
		if p, ok := cl.recv().(proto.Pong); ok && p.Nonce == 1 {
			break
		}
	}
	opened.Store(true)
	ts.push(t, tok, change(t, "a", "r2", "f", 2))
	time.Sleep(100 * time.Millisecond) // the group's reads end
	cl.send(proto.Ping{Nonce: 2})
	for {
		m := cl.recv()
		if collectionOf(m) == "a" {
			t.Fatalf("after the pong of the ping behind unsub a: %T %#v", m, m)
		}
		if p, ok := m.(proto.Pong); ok && p.Nonce == 2 {
			break
		}
	}
}
