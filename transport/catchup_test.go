package transport

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/transport/proto"
)

// holdStore holds every read of coll from a position below below (once
// set) until release is closed: the reads of subscribers catching up,
// not those of caught-up ones. It counts the held reads in flight, and
// the most there ever were at once.
type holdStore struct {
	stores.Store
	coll    string
	below   atomic.Uint64 // 0: hold nothing
	release chan struct{}
	entered chan uint64 // each held read's position, as it starts

	mu       sync.Mutex
	inFlight int
	most     int
}

func (s *holdStore) Pull(ctx context.Context, coll string, after uint64, limit stores.PageLimit) (stores.Page, error) {
	if coll != s.coll || after >= s.below.Load() {
		return s.Store.Pull(ctx, coll, after, limit)
	}
	s.mu.Lock()
	s.inFlight++
	s.most = max(s.most, s.inFlight)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inFlight--
		s.mu.Unlock()
	}()
	select {
	case s.entered <- after:
	default:
	}
	select {
	case <-s.release:
	case <-ctx.Done():
		return stores.Page{}, ctx.Err()
	}
	return s.Store.Pull(ctx, coll, after, limit)
}

func (s *holdStore) held() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inFlight
}

// recvIDs reads changes messages of c until it has n records, and returns
// their ids in the order received.
func recvIDs(c *liveClient, n int, timeout time.Duration) ([]string, error) {
	var ids []string
	for len(ids) < n {
		m, err := c.recvErr(timeout)
		if err != nil {
			return ids, err
		}
		ch, ok := m.(proto.Changes)
		if !ok {
			return ids, fmt.Errorf("got %#v", m)
		}
		for _, r := range ch.Records {
			ids = append(ids, r.ID)
		}
	}
	return ids, nil
}

// Subscribers catching up from far behind (here, many sessions of one
// client, each from its own early cursor, whose reads the store holds)
// do not hold back the changes of the caught-up subscribers of the same
// broadcast group: those get each new change while the catch-up reads are
// still held, including when the catch-up reads fill every place the
// group has for them. The catch-up reads in flight stay bounded, and once
// they finish each catching-up subscriber gets every change from its
// cursor on, in order, with no gap.
func TestLiveCatchUpDoesNotHoldBroadcast(t *testing.T) {
	const caughtUp, catchingUp, early = 3, 8, 10
	ts := newTestServer(t, func(c *Config) { c.Demo = true; c.Limits.MaxConnsPerAddr = 100; c.Limits.Rate = -1 })
	hs := &holdStore{Store: ts.store, coll: DemoCollection, release: make(chan struct{}), entered: make(chan uint64, 64)}
	eng := ts.serveOver(t, hs)
	ts.eng = eng
	released := false
	defer func() {
		if !released {
			close(hs.release)
		}
	}()

	live := make([]*liveClient, caughtUp)
	for i := range live {
		live[i], _ = ts.open(t, "")
		live[i].send(proto.Sub{Collection: DemoCollection})
		if m, ok := live[i].recv().(proto.Changes); !ok || len(m.Records) != 0 {
			t.Fatalf("first page: %#v", m)
		}
	}
	var want []string
	for i := range early {
		id := fmt.Sprint("r", i)
		want = append(want, id)
		ts.push(t, "", change(t, DemoCollection, id, "n", i))
	}
	for i, c := range live {
		if ids, err := recvIDs(c, early, 20*time.Second); err != nil || strings.Join(ids, ",") != strings.Join(want, ",") {
			t.Fatalf("caught-up subscriber %d: %v (%v)", i, ids, err)
		}
	}

	// Every read from before the head holds from now on. A read from a
	// cursor reads from the entry before it (the engine checks it): the
	// caught-up subscribers' reads start at early-1.
	hs.below.Store(early - 1)
	behind := make([]*liveClient, catchingUp)
	for i := range behind {
		behind[i], _ = ts.open(t, "")
		behind[i].send(proto.Sub{Collection: DemoCollection, Cursor: ts.cur(t, DemoCollection, uint64(i))})
	}
	select {
	case <-hs.entered:
	case <-time.After(20 * time.Second):
		t.Fatal("no catch-up read began")
	}

	// delivered pushes a change and checks that every caught-up subscriber
	// gets it, and only it, while the catch-up reads are held.
	delivered := func(id string, n int) {
		t.Helper()
		want = append(want, id)
		ts.push(t, "", change(t, DemoCollection, id, "n", n))
		var wg sync.WaitGroup
		var mu sync.Mutex
		var missing []string
		for i, c := range live {
			wg.Go(func() {
				ids, err := recvIDs(c, 1, 20*time.Second)
				if err != nil || len(ids) != 1 || ids[0] != id {
					mu.Lock()
					missing = append(missing, fmt.Sprintf("%d: %v (%v)", i, ids, err))
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if len(missing) > 0 {
			t.Fatalf("%s, pushed while %d catch-up reads were held, did not reach the caught-up subscribers: %s",
				id, hs.held(), strings.Join(missing, "; "))
		}
	}
	delivered("live1", 100)
	// Every place for catch-up reads taken, and held.
	waitFor(t, "catch-up reads filling their places", func() bool { return hs.held() == catchUpParallel })
	delivered("live2", 101)

	released = true
	close(hs.release)
	for i, c := range behind {
		ids, err := recvIDs(c, len(want)-i, 20*time.Second)
		if err != nil || strings.Join(ids, ",") != strings.Join(want[i:], ",") {
			t.Fatalf("subscriber %d catching up from %d: got %v (%v), want %v", i, i, ids, err, want[i:])
		}
	}
	hs.mu.Lock()
	most := hs.most
	hs.mu.Unlock()
	if most > catchUpParallel {
		t.Fatalf("%d catch-up reads in flight at once in one group, want at most %d", most, catchUpParallel)
	}
}
