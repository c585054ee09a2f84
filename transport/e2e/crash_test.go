package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/bolt"
	"github.com/convergo/convergo/stores/redis"
	"github.com/convergo/convergo/stores/storetest"
	"github.com/convergo/convergo/transport"
	"github.com/convergo/convergo/transport/client"
	"github.com/convergo/convergo/transport/proto"
)

// TestCrash SIGKILLs the server while clients push, restarts it on the same
// data and checks that every change it acknowledged survived, then that the
// clients' unacknowledged outboxes arrive when they retry, and that pushing
// everything again changes nothing.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the convergo binary")
	}
	bin := buildConvergo(t)
	t.Run("embedded", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "convergo.db")
		runCrash(t, bin, "bolt:"+path, nil, func(t *testing.T) stores.Store {
			s, err := bolt.Open(context.Background(), path, bolt.Options{})
			if err != nil {
				t.Fatal(err)
			}
			return s
		})
	})
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		redisBin := storetest.Endpoint(t, "CONVERGO_REDIS_SERVER_BIN")
		dir, raddr := t.TempDir(), freeAddr(t)
		rp := startRedis(t, redisBin, raddr, dir)
		prefix := "crash-" + randomSuffix(t) + ":"
		store := "redis://" + raddr + "?prefix=" + prefix
		// On every other crash Redis dies with the server: what it
		// acknowledged must then be in its append-only file (appendfsync
		// always).
		runCrash(t, bin, store, func(t *testing.T) {
			rp.kill(t)
			rp = startRedis(t, redisBin, raddr, dir)
		}, func(t *testing.T) stores.Store {
			s, err := redis.Open(t.Context(), redis.Options{Addrs: []string{raddr}, KeyPrefix: prefix})
			if err != nil {
				t.Fatal(err)
			}
			return s
		})
	})
}

// crashClient is a replica that pushes continuously and records what the
// server acknowledged.
type crashClient struct {
	name string
	rep  *client.Replica
	rng  *rand.Rand

	mu      sync.Mutex
	writes  []crdt.Change // everything written, acknowledged or not
	acked   []crdt.Change
	applied int // acknowledgements as applied
	noops   int // acknowledgements as duplicate or superseded: applied before with the answer lost, or beaten by a later write
}

// runCrash crashes `convergo serve --store store` while clients push.
// alsoCrash, when set, kills and restarts the store's own process on every
// other crash; openStore opens the store directly once the server is gone.
func runCrash(t *testing.T, bin, store string, alsoCrash func(*testing.T), openStore func(*testing.T) stores.Store) {
	seed := *seedFlag
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("seed %d (replay with -e2e.seed=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0xc2a5))
	const coll = "crash.items"
	addr := freeAddr(t)
	url := "http://" + addr
	jwt, err := transport.NewJWT(secret, nil)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(sub string) string {
		tok, err := jwt.Issue(sub, []string{"crash.*"}, []string{"crash.*"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	srv := startConvergo(t, bin, addr, store)

	clients := make([]*crashClient, 4)
	for i := range clients {
		cc := &crashClient{name: fmt.Sprintf("w%d", i), rng: rand.New(rand.NewPCG(seed, uint64(i)))}
		c, err := client.New(client.Config{
			URL: url, Token: issue(cc.name), Replica: proto.ReplicaFor(cc.name, randomSuffix(t)),
			HTTPClient: &http.Client{Timeout: 5 * time.Second},
			Backoff:    client.Backoff{Initial: 5 * time.Millisecond, Max: 50 * time.Millisecond, MaxAttempts: 2},
		})
		if err != nil {
			t.Fatal(err)
		}
		cc.rep, err = client.NewReplica(c, client.ReplicaConfig{OnResult: func(ch crdt.Change, r client.Result) {
			cc.mu.Lock()
			defer cc.mu.Unlock()
			switch r.Status {
			case client.StatusApplied:
				cc.applied++
			case client.StatusDuplicate, client.StatusSuperseded:
				cc.noops++
			default:
				t.Errorf("%s: change %s refused: %v", cc.name, ch.Record.ID, r.Err)
				return
			}
			cc.acked = append(cc.acked, ch)
		}})
		if err != nil {
			t.Fatal(err)
		}
		clients[i] = cc
	}
	reader := newClient(t, url, issue("reader"), "reader", nil)

	cycles := envInt("CONVERGO_E2E_CRASHES", 3)
	for cycle := range cycles {
		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		for _, cc := range clients {
			wg.Go(func() { cc.pushLoop(t, ctx, coll) })
		}
		killAfter := time.Duration(150+rng.IntN(750)) * time.Millisecond
		time.Sleep(killAfter)
		srv.kill(t)
		what := "server"
		if alsoCrash != nil && cycle%2 == 1 {
			alsoCrash(t)
			what = "server and its store"
		}
		// Let the clients meet the dead server for a moment, then stop them.
		time.Sleep(50 * time.Millisecond)
		cancel()
		wg.Wait()

		var acked []crdt.Change
		pending := 0
		for _, cc := range clients {
			cc.mu.Lock()
			acked = append(acked, cc.acked...)
			cc.mu.Unlock()
			pending += len(cc.rep.Pending())
		}
		srv = startConvergo(t, bin, addr, store)
		state := pullAll(t, reader, coll)
		lost := 0
		for _, ch := range acked {
			if _, changed := crdt.Merge(state[ch.Record.ID], ch.Record); changed {
				lost++
				if lost <= 5 {
					t.Errorf("cycle %d: acknowledged change lost: %s %s", cycle, ch.Record.ID, formatRecord(ch.Record))
				}
			}
		}
		if lost > 0 {
			t.Fatalf("cycle %d: %d of %d acknowledged changes lost in the crash", cycle, lost, len(acked))
		}
		t.Logf("cycle %d: %s killed after %s; all %d acknowledged changes survived; %d unacknowledged in outboxes", cycle, what, killAfter, len(acked), pending)
	}

	// The clients retry their outboxes against the restarted server.
	noopsBefore := 0
	for _, cc := range clients {
		noopsBefore += cc.noops
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, cc := range clients {
		for len(cc.rep.Pending()) > 0 {
			if err := cc.rep.Flush(t.Context()); err != nil && time.Now().After(deadline) {
				t.Fatalf("%s: outbox never drained: %v", cc.name, err)
			}
		}
	}
	var written, acked []crdt.Change
	noops := 0
	for _, cc := range clients {
		written = append(written, cc.writes...)
		acked = append(acked, cc.acked...)
		noops += cc.noops
		if len(cc.writes) != len(cc.acked) {
			t.Errorf("%s: %d writes, %d acknowledged", cc.name, len(cc.writes), len(cc.acked))
		}
	}
	// A retried change is a no-op when the server applied it before a crash
	// but its answer was lost, or when a later write already superseded it.
	t.Logf("%d writes in all; %d retried changes were no-ops", len(written), noops-noopsBefore)

	// Everything written is in the store, exactly as a merge of it all.
	model := map[string]crdt.Record{}
	for _, ch := range written {
		r := model[ch.Record.ID]
		r.Merge(ch.Record)
		model[ch.Record.ID] = r
	}
	state := pullAll(t, reader, coll)
	if d := diffRecords(state, model); d != "" {
		t.Fatalf("the store differs from the merge of every write:\n%s", d)
	}

	// Applying everything twice changes nothing: each writer pushes what
	// it had acknowledged again (only its own stamps: replica binding), and
	// each change comes back duplicate, or superseded when later writes beat
	// some of its fields.
	head := endCursor(t, reader, coll)
	for _, cc := range clients {
		res, err := cc.rep.Client().Push(t.Context(), cc.acked)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res {
			if r.Status != client.StatusDuplicate && r.Status != client.StatusSuperseded {
				t.Fatalf("%s pushing change %d again: got %s (%v), want duplicate or superseded", cc.name, i, r.Status, r.Err)
			}
		}
	}
	if h := endCursor(t, reader, coll); !bytes.Equal(h, head) {
		t.Fatalf("pushing again moved the log from cursor %x to %x", head, h)
	}
	if d := diffRecords(pullAll(t, reader, coll), state); d != "" {
		t.Fatalf("pushing again changed the state:\n%s", d)
	}

	// Read the store itself, with no server in between, after a last crash.
	srv.kill(t)
	st := openStore(t)
	defer st.Close()
	if d := diffRecords(snapshot(t, t.Context(), st, coll), model); d != "" {
		t.Fatalf("the store, opened directly, differs from the merge of every write:\n%s", d)
	}
}

// pushLoop writes and flushes until ctx ends.
func (cc *crashClient) pushLoop(t *testing.T, ctx context.Context, coll string) {
	for ctx.Err() == nil {
		for range 1 + cc.rng.IntN(8) {
			id := fmt.Sprint("r", cc.rng.IntN(30))
			field := fmt.Sprint("f", cc.rng.IntN(4))
			var err error
			switch p := cc.rng.IntN(100); {
			case p < 80:
				err = cc.rep.Set(coll, id, field, cc.rng.IntN(1000))
			case p < 93:
				err = cc.rep.Unset(coll, id, field)
			default:
				err = cc.rep.Delete(coll, id)
			}
			if err != nil {
				t.Errorf("%s: write: %v", cc.name, err)
				return
			}
		}
		// Record what was written: the outbox's tail holds the new changes.
		pending := cc.rep.Pending()
		cc.mu.Lock()
		cc.noteWrites(pending)
		cc.mu.Unlock()
		cc.rep.Flush(ctx) // fails while the server is down; the outbox keeps the rest
	}
}

// noteWrites adds the changes of pending not seen before to writes. Stamps
// are unique per client, so the newest stamp seen marks what is new.
func (cc *crashClient) noteWrites(pending []crdt.Change) {
	var last crdt.Stamp
	if n := len(cc.writes); n > 0 {
		last = cc.writes[n-1].Record.MaxStamp()
	}
	for _, ch := range pending {
		if ch.Record.MaxStamp().Compare(last) > 0 {
			cc.writes = append(cc.writes, ch)
		}
	}
}

func pullAll(t *testing.T, c *client.Client, coll string) map[string]crdt.Record {
	t.Helper()
	out := map[string]crdt.Record{}
	var cursor []byte
	for {
		p, err := c.Pull(t.Context(), coll, cursor, 0)
		if err != nil {
			t.Fatalf("pull %s: %v", coll, err)
		}
		for _, r := range p.Records {
			out[r.ID] = r
		}
		cursor = p.Next
		if !p.More {
			return out
		}
	}
}

// endCursor pulls coll to its end and returns the cursor there.
func endCursor(t *testing.T, c *client.Client, coll string) []byte {
	t.Helper()
	var cursor []byte
	for {
		p, err := c.Pull(t.Context(), coll, cursor, 0)
		if err != nil {
			t.Fatal(err)
		}
		cursor = p.Next
		if !p.More {
			return cursor
		}
	}
}
