package redis

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores"
)

// recorder collects the notifications of one Watch.
type recorder struct {
	mu      sync.Mutex
	resyncs int
	heads   map[string]uint64
	changed chan struct{} // signalled after every notification
}

func newRecorder() *recorder {
	return &recorder{heads: map[string]uint64{}, changed: make(chan struct{}, 1)}
}

func (r *recorder) notify(n stores.Notification) {
	r.mu.Lock()
	if n.Resync {
		r.resyncs++
	} else if n.Seq > r.heads[n.Collection] {
		r.heads[n.Collection] = n.Seq
	}
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// waitFor waits until cond holds for the recorder's state.
func (r *recorder) waitFor(t testing.TB, what string, cond func(resyncs int, heads map[string]uint64) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		ok := cond(r.resyncs, r.heads)
		resyncs, heads := r.resyncs, fmt.Sprint(r.heads)
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.changed:
		case <-deadline:
			t.Fatalf("timed out waiting for %s: %d resyncs, heads %s", what, resyncs, heads)
		}
	}
}

func randomName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// TestWatchAcrossInstances opens two stores on one Redis, as two server
// instances would, and checks that a write through one notifies a watcher
// of the other with the collection's new head, and that a no-op write
// notifies no one.
func TestWatchAcrossInstances(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		ctx := testContext(t)
		prefix := uniquePrefix()
		a := openStore(t, tg, Options{KeyPrefix: prefix})
		b := openStore(t, tg, Options{KeyPrefix: prefix})
		other := openStore(t, tg, Options{}) // another deployment on the same server

		rec, otherRec := newRecorder(), newRecorder()
		defer b.Watch(rec.notify)()
		defer other.Watch(otherRec.notify)()
		// The first subscription is reported as a Resync; after it, every
		// publication reaches the watcher.
		rec.waitFor(t, "b's first subscription", func(n int, _ map[string]uint64) bool { return n >= 1 })
		otherRec.waitFor(t, "other's first subscription", func(n int, _ map[string]uint64) bool { return n >= 1 })

		change := crdt.Change{Collection: "todos", Record: crdt.SetField("t1", "title", mustValue(t, "milk"), crdt.Stamp{Wall: 10, Replica: "c1"})}
		res, err := a.Apply(ctx, []crdt.Change{change})
		if err != nil || !res[0].Changed || res[0].Seq != 1 {
			t.Fatalf("apply through a: got %+v, %v; want changed at seq 1", res, err)
		}
		rec.waitFor(t, "todos at 1 on b", func(_ int, h map[string]uint64) bool { return h["todos"] == 1 })

		res, err = a.Apply(ctx, []crdt.Change{
			{Collection: "todos", Record: crdt.SetField("t2", "title", mustValue(t, "eggs"), crdt.Stamp{Wall: 11, Replica: "c1"})},
			{Collection: "notes", Record: crdt.SetField("n1", "body", mustValue(t, "hi"), crdt.Stamp{Wall: 11, Replica: "c1"})},
		})
		if err != nil {
			t.Fatalf("apply two collections through a: %v", err)
		}
		rec.waitFor(t, "todos at 2 and notes at 1 on b", func(_ int, h map[string]uint64) bool { return h["todos"] == 2 && h["notes"] == 1 })

		// A no-op publishes nothing: apply it, then a real change to a
		// third collection, whose notification arrives after any the no-op
		// would have sent.
		if res, err := a.Apply(ctx, []crdt.Change{change}); err != nil || res[0].Changed {
			t.Fatalf("replay through a: got %+v, %v; want unchanged", res, err)
		}
		if _, err := a.Apply(ctx, []crdt.Change{{Collection: "marker", Record: crdt.DeleteRecord("m", crdt.Stamp{Wall: 12, Replica: "c1"})}}); err != nil {
			t.Fatalf("apply marker: %v", err)
		}
		rec.waitFor(t, "marker on b", func(_ int, h map[string]uint64) bool { return h["marker"] == 1 })
		rec.mu.Lock()
		if got := rec.heads["todos"]; got != 2 {
			t.Errorf("todos head on b after a no-op: got %d, want 2", got)
		}
		rec.mu.Unlock()

		// The other deployment's prefix has its own channel.
		otherRec.mu.Lock()
		defer otherRec.mu.Unlock()
		if len(otherRec.heads) != 0 {
			t.Errorf("a store with another key prefix was notified: %v", otherRec.heads)
		}
	})
}

func mustValue(t testing.TB, v any) []byte {
	t.Helper()
	b, err := crdt.EncodeValue(v)
	if err != nil {
		t.Fatalf("encode %v: %v", v, err)
	}
	return b
}

// killSubscribers kills the pub/sub connections named name on every node of
// tg (CLIENT LIST TYPE pubsub, then CLIENT KILL ID) and returns how many it
// killed. Other connections, other tests' included, are left alone.
func killSubscribers(ctx context.Context, t testing.TB, tg target, name string) int {
	t.Helper()
	client := goredis.NewUniversalClient(&goredis.UniversalOptions{Addrs: tg.addrs, IsClusterMode: tg.cluster})
	defer client.Close()
	var killed atomic.Int64
	kill := func(ctx context.Context, node *goredis.Client) error {
		list, err := node.Do(ctx, "CLIENT", "LIST", "TYPE", "pubsub").Text()
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(strings.NewReader(list))
		for sc.Scan() {
			var id, cname string
			for _, kv := range strings.Fields(sc.Text()) {
				k, v, _ := strings.Cut(kv, "=")
				switch k {
				case "id":
					id = v
				case "name":
					cname = v
				}
			}
			if cname != name {
				continue
			}
			if err := node.Do(ctx, "CLIENT", "KILL", "ID", id).Err(); err != nil {
				return fmt.Errorf("client kill id %s: %w", id, err)
			}
			killed.Add(1)
		}
		return sc.Err()
	}
	var err error
	switch c := client.(type) {
	case *goredis.ClusterClient:
		err = c.ForEachMaster(ctx, kill)
	case *goredis.Client:
		err = kill(ctx, c)
	}
	if err != nil {
		t.Fatalf("kill subscribers named %s: %v", name, err)
	}
	return int(killed.Load())
}

// TestResyncAfterClientKill cuts the subscriber connection of a server
// instance with CLIENT KILL, again and again, while another instance keeps
// writing, and checks that a consumer on the first instance's engine (a
// subscription and a pull loop, with the engine's polling disabled, so
// notifications and Resyncs are all it has) ends up with every change, and
// that every kill was answered by a Resync.
func TestResyncAfterClientKill(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		ctx := testContext(t)
		prefix := uniquePrefix()
		subName := randomName("convergo-test-sub-")
		writer := openStore(t, tg, Options{KeyPrefix: prefix})
		reader := openStore(t, tg, Options{KeyPrefix: prefix, ClientName: subName})

		rec := newRecorder()
		defer reader.Watch(rec.notify)()
		eng, err := engine.Open(engine.Config{Store: reader, Replica: "srv-reader", PollInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		defer eng.Close()
		rec.waitFor(t, "the first subscription", func(n int, _ map[string]uint64) bool { return n >= 1 })

		const coll = "items"
		sub, err := eng.Subscribe(coll)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()

		// The consumer: pull from its cursor first, then on every head the
		// subscription delivers.
		type state struct {
			mu      sync.Mutex
			cursor  engine.Cursor
			records map[string]stores.Entry
		}
		got := &state{records: map[string]stores.Entry{}}
		progress := make(chan uint64, 1)
		consumerErr := make(chan error, 1)
		go func() {
			pull := func() error {
				for {
					got.mu.Lock()
					cursor := got.cursor
					got.mu.Unlock()
					page, err := eng.Pull(ctx, coll, cursor, engine.PageLimit{Records: 50})
					if err != nil {
						return err
					}
					got.mu.Lock()
					for _, e := range page.Entries {
						got.records[e.Record.ID] = stores.Entry{Seq: e.Seq, Record: e.Record}
					}
					got.cursor = page.Next
					got.mu.Unlock()
					select {
					case <-progress:
					default:
					}
					progress <- page.Next.Seq()
					if !page.More {
						return nil
					}
				}
			}
			if err := pull(); err != nil {
				consumerErr <- err
				return
			}
			for range sub.C() {
				if err := pull(); err != nil {
					consumerErr <- err
					return
				}
			}
		}()

		// The writer: 40 batches of changes to 30 records, with a kill of
		// the reader's subscriber before every tenth batch.
		const batches, records, kills = 40, 30, 4
		killed := 0
		wall := int64(1000)
		for i := range batches {
			if i%(batches/kills) == batches/kills-1 {
				n := killSubscribers(ctx, t, tg, subName)
				if n == 0 {
					t.Fatalf("kill %d: found no pub/sub connection named %s", killed+1, subName)
				}
				killed++
				// The write right after the kill is published while the
				// subscriber is (most likely) away; only a Resync brings
				// the consumer to it.
			}
			var batch []crdt.Change
			for j := range 5 {
				wall++
				id := fmt.Sprintf("r%d", (i*7+j*3)%records)
				r := crdt.SetField(id, "n", mustValue(t, int64(i*5+j)), crdt.Stamp{Wall: wall, Replica: "writer"})
				if j == 4 && i%3 == 0 {
					r = crdt.DeleteRecord(id, crdt.Stamp{Wall: wall, Replica: "writer"})
				}
				batch = append(batch, crdt.Change{Collection: coll, Record: r})
			}
			if _, err := writer.Apply(ctx, batch); err != nil {
				t.Fatalf("batch %d: %v", i, err)
			}
			time.Sleep(5 * time.Millisecond)
		}
		head, err := writer.Head(ctx, coll)
		if err != nil {
			t.Fatal(err)
		}

		deadline := time.After(15 * time.Second)
	wait:
		for {
			select {
			case c := <-progress:
				if c >= head {
					break wait
				}
			case err := <-consumerErr:
				t.Fatalf("consumer: %v", err)
			case <-deadline:
				got.mu.Lock()
				defer got.mu.Unlock()
				t.Fatalf("consumer stuck at cursor %d, head is %d", got.cursor.Seq(), head)
			}
		}
		// Every kill was followed by a resubscription, reported as a Resync.
		rec.waitFor(t, "a Resync after every kill", func(n int, _ map[string]uint64) bool { return n >= 1+killed })

		// The consumer holds every record in its final state.
		want := map[string]stores.Entry{}
		for cursor := uint64(0); ; {
			page, err := writer.Pull(ctx, coll, cursor, stores.PageLimit{Records: stores.MaxPage, Bytes: stores.DefaultPageBytes})
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range page.Entries {
				want[e.Record.ID] = e
			}
			cursor = page.Next
			if !page.More {
				break
			}
		}
		got.mu.Lock()
		defer got.mu.Unlock()
		if len(got.records) != len(want) {
			t.Fatalf("consumer holds %d records, the store %d", len(got.records), len(want))
		}
		for id, w := range want {
			g := got.records[id]
			if g.Seq != w.Seq || !g.Record.Equal(w.Record) {
				t.Errorf("record %s: consumer has seq %d %+v, store seq %d %+v", id, g.Seq, g.Record, w.Seq, w.Record)
			}
		}
		rec.mu.Lock()
		t.Logf("%d kills, %d resyncs, %d records caught up to head %d", killed, rec.resyncs, len(want), head)
		rec.mu.Unlock()
	})
}

// blackhole is a TCP proxy to Redis that can stop forwarding on the
// connections it holds without closing them: what a crashed host or a
// dropped NAT entry looks like to a client. Connections made after a
// freeze are forwarded.
type blackhole struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	conns  []*proxied
}

type proxied struct {
	frozen atomic.Bool
	a, b   net.Conn
}

func startBlackhole(t testing.TB, target string) *blackhole {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &blackhole{l: l, target: target}
	go func() {
		for {
			a, err := l.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", target)
			if err != nil {
				a.Close()
				continue
			}
			p := &proxied{a: a, b: b}
			h.mu.Lock()
			h.conns = append(h.conns, p)
			h.mu.Unlock()
			go p.pipe(a, b)
			go p.pipe(b, a)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, p := range h.conns {
			p.a.Close()
			p.b.Close()
		}
	})
	return h
}

func (p *proxied) pipe(from, to net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if err != nil {
			to.Close()
			return
		}
		if p.frozen.Load() {
			continue // dropped, as by a dead path
		}
		if _, err := to.Write(buf[:n]); err != nil {
			from.Close()
			return
		}
	}
}

func (h *blackhole) addr() string { return h.l.Addr().String() }

// freeze stops forwarding on every connection open now.
func (h *blackhole) freeze() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range h.conns {
		p.frozen.Store(true)
	}
}

// TestHeartbeatReplacesSilentSubscription freezes the subscriber's
// connection (through a proxy that stops forwarding without closing it)
// while another instance writes: the heartbeat finds the silent connection,
// the subscriber subscribes again and reports a Resync, and later changes
// are notified again. The control, with the heartbeat off, shows that
// nothing else notices in that time.
func TestHeartbeatReplacesSilentSubscription(t *testing.T) {
	tg := singleTarget(t)
	for _, tc := range []struct {
		name      string
		heartbeat time.Duration
	}{
		{"heartbeat", 200 * time.Millisecond},
		{"no heartbeat", -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			prefix := uniquePrefix()
			proxy := startBlackhole(t, tg.addrs[0])
			writer := openStore(t, tg, Options{KeyPrefix: prefix})
			reader := openStore(t, target{name: "proxied", addrs: []string{proxy.addr()}}, Options{
				KeyPrefix: prefix, Heartbeat: tc.heartbeat, ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond,
			})
			rec := newRecorder()
			defer reader.Watch(rec.notify)()
			rec.waitFor(t, "the first subscription", func(n int, _ map[string]uint64) bool { return n >= 1 })

			put := func(wall int64) {
				t.Helper()
				if _, err := writer.Apply(ctx, []crdt.Change{{Collection: "c", Record: crdt.SetField("r", "f", mustValue(t, wall), crdt.Stamp{Wall: wall, Replica: "w"})}}); err != nil {
					t.Fatal(err)
				}
			}
			put(1)
			rec.waitFor(t, "the first change", func(_ int, h map[string]uint64) bool { return h["c"] == 1 })

			proxy.freeze()
			put(2) // lost with the frozen connection
			if tc.heartbeat < 0 {
				time.Sleep(2 * time.Second)
				rec.mu.Lock()
				defer rec.mu.Unlock()
				if rec.resyncs != 1 || rec.heads["c"] != 1 {
					t.Fatalf("without heartbeat: got %d resyncs and head %d; want the frozen connection unnoticed (1, 1)", rec.resyncs, rec.heads["c"])
				}
				return
			}
			rec.waitFor(t, "a Resync after the connection fell silent", func(n int, _ map[string]uint64) bool { return n >= 2 })
			put(3)
			rec.waitFor(t, "a change after the new subscription", func(_ int, h map[string]uint64) bool { return h["c"] == 3 })
		})
	}
}

// TestTwoServerInstances runs two engines, as two server processes would,
// each on its own store on the same Redis: a write through either wakes the
// other's subscribers, and both read the merged record.
func TestTwoServerInstances(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		ctx := testContext(t)
		prefix := uniquePrefix()
		var engines [2]*engine.Engine
		for i := range engines {
			e, err := engine.Open(engine.Config{Store: openStore(t, tg, Options{KeyPrefix: prefix}), Replica: fmt.Sprintf("srv%d", i), PollInterval: -1})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { e.Close() })
			engines[i] = e
		}
		sub, err := engines[1].Subscribe("todos")
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		if err := engines[0].Put(ctx, "todos", "t1", engine.Doc{"title": "milk"}); err != nil {
			t.Fatal(err)
		}
		select {
		case head := <-sub.C():
			if head != 1 {
				t.Fatalf("instance 1 was told of head %d, want 1", head)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("instance 1 was not notified of a write through instance 0")
		}
		if err := engines[1].Update(ctx, "todos", "t1", engine.Doc{"done": true}); err != nil {
			t.Fatal(err)
		}
		for i, e := range engines {
			doc, err := e.Get(ctx, "todos", "t1")
			if err != nil || doc["title"] != "milk" || doc["done"] != true {
				t.Fatalf("instance %d reads %v, %v; want title milk and done", i, doc, err)
			}
		}
	})
}
