package e2e

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/transport/client"
	"github.com/convergo/convergo/transport/proto"
)

var seedFlag = flag.Uint64("e2e.seed", 0, "seed of the convergence test; 0 picks one")

// simClient is one simulated application: a replica that writes at random,
// syncs now and then, and loses its network for a while.
type simClient struct {
	name string
	rep  *client.Replica
	net  *offlineTransport
	live bool
	rng  *rand.Rand

	liveCancel context.CancelFunc
	liveDone   chan error

	mu     sync.Mutex
	writes int
	acked  []crdt.Change
}

func TestConvergence(t *testing.T) {
	for _, sf := range storeFactories() {
		t.Run(sf.name, func(t *testing.T) {
			t.Parallel()
			runConvergence(t, sf.open(t))
		})
	}
}

func runConvergence(t *testing.T, store stores.Store) {
	seed := *seedFlag
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("seed %d (replay with -e2e.seed=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	ctx := t.Context()
	srv := startServer(t, store, nil)

	colls := []string{"e2e.todos", "e2e.notes"}
	ids := []string{"r0", "r1", "r2", "r3", "r4"}
	fields := []string{"title", "done", "tag", "n"}
	n := 5 + rng.IntN(16)
	const opsPerClient = 80

	clients := make([]*simClient, n)
	var nLive int
	for i := range clients {
		sc := &simClient{name: fmt.Sprintf("c%d", i), net: newOfflineTransport(), live: rng.IntN(2) == 0, rng: rand.New(rand.NewPCG(seed, uint64(i)))}
		if sc.live {
			nLive++
		}
		tok := srv.token(t, "user-"+sc.name, []string{"e2e.*"}, []string{"e2e.*"})
		// Most clocks are off by up to ten minutes, twice the drift bound:
		// the stamps are accepted only because Hello corrects the skew.
		skew := time.Duration(sc.rng.Int64N(int64(20*time.Minute))) - 10*time.Minute
		c, err := client.New(client.Config{
			URL: srv.URL, Token: tok, Replica: proto.ReplicaFor("user-"+sc.name, randomSuffix(t)),
			HTTPClient: &http.Client{Transport: sc.net},
			Logger:     testLogger(t),
			Backoff:    client.Backoff{Initial: 5 * time.Millisecond, Max: 200 * time.Millisecond, MaxAttempts: 4},
			Now:        func() time.Time { return time.Now().Add(skew) },
		})
		if err != nil {
			t.Fatal(err)
		}
		info, err := c.Hello(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// The measurement is off by at most half the round trip.
		if d := info.Offset + skew; d < -5*time.Second || d > 5*time.Second {
			t.Fatalf("%s: clock %s off, hello measured an offset of %s", sc.name, skew, info.Offset)
		}
		rep, err := client.NewReplica(c, client.ReplicaConfig{Collections: colls, OnResult: func(ch crdt.Change, r client.Result) {
			sc.mu.Lock()
			defer sc.mu.Unlock()
			if r.Acknowledged() {
				sc.acked = append(sc.acked, ch)
			} else {
				t.Errorf("%s: change %s/%s refused: %v", sc.name, ch.Collection, ch.Record.ID, r.Err)
			}
		}})
		if err != nil {
			t.Fatal(err)
		}
		sc.rep = rep
		clients[i] = sc
	}
	t.Logf("%d clients, %d live over WebSocket, %d pull-only", n, nLive, n-nLive)
	for _, sc := range clients {
		sc.startLive(t, ctx)
	}

	// The random phase: every client writes, syncs and drops off the
	// network at random, concurrently.
	var wg sync.WaitGroup
	for _, sc := range clients {
		wg.Go(func() {
			offlineFor := 0
			for range opsPerClient {
				if offlineFor > 0 {
					if offlineFor--; offlineFor == 0 {
						sc.goOnline(t, ctx)
					}
				}
				switch p := sc.rng.IntN(100); {
				case p < 55:
					sc.write(t, colls[sc.rng.IntN(len(colls))], ids[sc.rng.IntN(len(ids))], fields)
				case p < 80:
					// Errors are expected offline; the outbox keeps what failed.
					if sc.live {
						sc.rep.Flush(ctx)
					} else {
						sc.rep.Sync(ctx)
					}
				case p < 85 && offlineFor == 0:
					offlineFor = 5 + sc.rng.IntN(20)
					sc.goOffline(t)
				default:
					time.Sleep(time.Duration(sc.rng.IntN(2000)) * time.Microsecond)
				}
			}
			if offlineFor > 0 {
				sc.goOnline(t, ctx)
			}
		})
	}
	wg.Wait()

	// Quiet: everyone online pushes until every outbox is empty...
	deadline := time.Now().Add(30 * time.Second)
	for {
		pending := 0
		for _, sc := range clients {
			if err := sc.rep.Flush(ctx); err != nil {
				t.Logf("%s: flush: %v", sc.name, err)
			}
			pending += len(sc.rep.Pending())
		}
		if pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d changes still pending after 30s", pending)
		}
	}
	// ...then pull-only clients pull, and live clients wait for the stream
	// to reach every collection's head (they never pull over HTTP).
	heads := map[string]uint64{}
	for _, coll := range colls {
		h, err := store.Head(ctx, coll)
		if err != nil {
			t.Fatal(err)
		}
		heads[coll] = h
	}
	for _, sc := range clients {
		if !sc.live {
			if err := sc.rep.Pull(ctx); err != nil {
				t.Fatalf("%s: pull: %v", sc.name, err)
			}
			continue
		}
		for _, coll := range colls {
			for cursorSeq(t, sc.rep.Cursor(coll)) < heads[coll] {
				if time.Now().After(deadline) {
					t.Fatalf("%s (live): cursor of %s at %d, head %d", sc.name, coll, cursorSeq(t, sc.rep.Cursor(coll)), heads[coll])
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	for _, sc := range clients {
		sc.stopLive(t)
	}

	// Every client, the server's store and a reference merge of every
	// acknowledged change agree.
	writes, acked := 0, 0
	model := map[string]map[string]crdt.Record{}
	for _, sc := range clients {
		writes += sc.writes
		acked += len(sc.acked)
		if sc.writes != len(sc.acked) {
			t.Errorf("%s: %d writes, %d acknowledged", sc.name, sc.writes, len(sc.acked))
		}
		for _, ch := range sc.acked {
			m := model[ch.Collection]
			if m == nil {
				m = map[string]crdt.Record{}
				model[ch.Collection] = m
			}
			r := m[ch.Record.ID]
			r.Merge(ch.Record)
			m[ch.Record.ID] = r
		}
	}
	for _, coll := range colls {
		server := snapshot(t, ctx, store, coll)
		if d := diffRecords(server, model[coll]); d != "" {
			t.Errorf("%s: the store differs from the merge of every acknowledged change:\n%s", coll, d)
		}
		for _, sc := range clients {
			if d := diffRecords(sc.rep.Records(coll), server); d != "" {
				t.Errorf("%s: client %s (live %v) differs from the store:\n%s", coll, sc.name, sc.live, d)
			}
		}
		t.Logf("%s: %d records, head %d", coll, len(server), heads[coll])
	}
	t.Logf("%d writes, %d acknowledged", writes, acked)
}

func (sc *simClient) write(t *testing.T, coll, id string, fields []string) {
	var err error
	switch p := sc.rng.IntN(100); {
	case p < 70:
		var v any = sc.rng.IntN(10)
		if sc.rng.IntN(2) == 0 {
			v = fmt.Sprintf("%s-%d", sc.name, sc.rng.IntN(100))
		}
		err = sc.rep.Set(coll, id, fields[sc.rng.IntN(len(fields))], v)
	case p < 88:
		err = sc.rep.Unset(coll, id, fields[sc.rng.IntN(len(fields))])
	default:
		err = sc.rep.Delete(coll, id)
	}
	if err != nil {
		t.Errorf("%s: write: %v", sc.name, err)
		return
	}
	sc.mu.Lock()
	sc.writes++
	sc.mu.Unlock()
}

func (sc *simClient) startLive(t *testing.T, ctx context.Context) {
	if !sc.live {
		return
	}
	lctx, cancel := context.WithCancel(ctx)
	sc.liveCancel, sc.liveDone = cancel, make(chan error, 1)
	go func() { sc.liveDone <- sc.rep.Live(lctx) }()
}

func (sc *simClient) stopLive(t *testing.T) {
	if sc.liveCancel == nil {
		return
	}
	sc.liveCancel()
	if err := <-sc.liveDone; err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("%s: live ended with %v", sc.name, err)
	}
	sc.liveCancel = nil
}

// goOffline cuts the client's network: its live connection drops and every
// request fails until goOnline.
func (sc *simClient) goOffline(t *testing.T) {
	sc.net.off.Store(true)
	sc.stopLive(t)
	sc.net.next.(*http.Transport).CloseIdleConnections()
}

func (sc *simClient) goOnline(t *testing.T, ctx context.Context) {
	sc.net.off.Store(false)
	sc.startLive(t, ctx)
}
