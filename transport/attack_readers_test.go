package transport

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/convergo/convergo/transport/proto"
)

// One subject keeps every reader of the pool busy: each of its sessions
// sends messages faster than its rate lets the server read them, so the
// reader that took a session waits for the rate and finds more buffered
// after each message. Another tenant's session, readable meanwhile, waits
// in the pool's queue: it must get an extra reader after writerStall
// (connPool), not only when a third connection happens to become readable.
func TestAttackReadersHeldByOneSubject(t *testing.T) {
	ts := newTestServer(t, nil)
	if ts.srv.noPoll {
		t.Skip("live connections are not polled here: each has a reader of its own")
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	ping, err := proto.EncodeMessage(proto.Ping{Nonce: 1})
	if err != nil {
		t.Fatal(err)
	}
	mallory := ts.token(t, "mallory", []string{"m"}, []string{"m"})
	for range ts.srv.readers.size {
		c, _ := ts.open(t, mallory)
		wg.Add(2)
		go func() { // reads its pongs, so that no reader waits for room in a queue
			defer wg.Done()
			for {
				if _, _, err := c.ws.Read(ctx); err != nil {
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if err := c.ws.Write(ctx, websocket.MessageBinary, ping); err != nil {
					return
				}
			}
		}()
	}
	// Mallory's burst is spent and every reader holds one of its sessions,
	// waiting for its rate: seen steadily for 200 ms, not assumed after a
	// while (on a loaded machine the burst may still be unspent, and then
	// alice would find an idle reader and the test would prove nothing).
	var heldSince time.Time
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if !readersHeld(ts.srv, "sub:mallory") {
			heldSince = time.Time{}
		} else if heldSince.IsZero() {
			heldSince = time.Now()
		} else if time.Since(heldSince) >= 200*time.Millisecond {
			break
		}
		if time.Now().After(end) {
			t.Fatal("mallory's sessions did not hold every reader, its rate spent, within 30s")
		}
	}
	alice := ts.token(t, "alice", []string{"a"}, []string{"a"})
	v, _, err := ts.dial(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	v.send(proto.Hello{Protocol: proto.Version, Replica: "alice1", Token: alice})
	start := time.Now()
	m, err := v.recvErr(3 * time.Second)
	if err != nil {
		t.Fatalf("alice's hello unanswered after %v while mallory's sessions hold the readers: %v", time.Since(start).Round(time.Millisecond), err)
	}
	if _, ok := m.(proto.Welcome); !ok {
		t.Fatalf("alice got %#v, want a welcome", m)
	}
}

// readersHeld reports whether every reader of s's pool is at work and none
// idle, while key's rate bucket holds less than a token: the readers wait
// for key's rate.
func readersHeld(s *Server, key string) bool {
	s.rate.mu.Lock()
	b := s.rate.buckets[key]
	spent := b != nil && b.tokens < 1
	s.rate.mu.Unlock()
	p := s.readers
	p.mu.Lock()
	defer p.mu.Unlock()
	return spent && p.workers >= p.size && len(p.idle) == 0
}
