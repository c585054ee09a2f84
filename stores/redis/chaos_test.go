package redis

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// TestChaosTwoStores: two stores (two server instances) on one private
// Redis push concurrently to the same records, in batches that share
// round trips, while the stores' connections are killed, the script cache
// is flushed and the server stalls past the stores' read timeout (so
// go-redis sends again pipelines whose scripts ran). Every acknowledged
// change must be in its record, no two changes may be given one seq and
// none a seq past its record's, the log must list each record once, in
// order, and a consumer that pulls on the other store's notifications
// must end with every record as stored.
func TestChaosTwoStores(t *testing.T) {
	srv := startServerFsync(t, "always")
	ctx := testContext(t)
	open := func() *Store {
		s, err := Open(ctx, Options{Addrs: []string{srv.Addr()}, KeyPrefix: "chaos:", ReadTimeout: 150 * time.Millisecond, WriteTimeout: 150 * time.Millisecond, MaxRetries: 2, WrittenCacheBytes: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := open(), open()
	admin := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	defer admin.Close()

	// The consumer: pulls from its cursor on every notification of b.
	const coll = "c"
	var cmu sync.Mutex
	seen := map[string]stores.Entry{}
	var cursor uint64
	kick := make(chan struct{}, 1)
	stop := b.Watch(func(stores.Notification) {
		select {
		case kick <- struct{}{}:
		default:
		}
	})
	defer stop()
	consumerDone := make(chan struct{})
	quit := make(chan struct{})
	go func() {
		defer close(consumerDone)
		for {
			select {
			case <-quit:
				return
			case <-kick:
			}
			for {
				cmu.Lock()
				c := cursor
				cmu.Unlock()
				p, err := b.Pull(ctx, coll, c, stores.PageLimit{Records: 7, Bytes: 1 << 20})
				if err != nil {
					break
				}
				cmu.Lock()
				for _, e := range p.Entries {
					seen[e.Record.ID] = e
				}
				cursor = p.Next
				cmu.Unlock()
				if !p.More {
					break
				}
			}
		}
	}()

	type acked struct {
		changes []crdt.Change
		results []stores.Result
	}
	var amu sync.Mutex
	var oks []acked
	var failures atomic.Int64
	var wall atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(3 * time.Second)
	for w := range 12 {
		s := a
		if w%2 == 1 {
			s = b
		}
		wg.Go(func() {
			rep := fmt.Sprintf("w%d", w)
			for time.Now().Before(deadline) {
				n := 1 + rand.IntN(4)
				changes := make([]crdt.Change, n)
				for i := range changes {
					id := fmt.Sprintf("r%d", rand.IntN(6))
					st := crdt.Stamp{Wall: wall.Add(1) / 3, Replica: rep}
					changes[i] = crdt.Change{Collection: coll, Record: crdt.SetField(id, fmt.Sprintf("f%d", rand.IntN(5)), []byte{byte(rand.IntN(256))}, st)}
				}
				cctx, cancel := context.WithTimeout(ctx, time.Duration(200+rand.IntN(800))*time.Millisecond)
				res, err := s.Apply(cctx, changes)
				cancel()
				if err != nil {
					failures.Add(1)
					continue
				}
				amu.Lock()
				oks = append(oks, acked{changes, res})
				amu.Unlock()
			}
		})
	}
	wg.Go(func() {
		for time.Now().Before(deadline) {
			time.Sleep(time.Duration(20+rand.IntN(60)) * time.Millisecond)
			switch rand.IntN(3) {
			case 0:
				admin.ClientKillByFilter(ctx, "TYPE", "normal")
			case 1:
				admin.ScriptFlush(ctx)
			case 2:
				admin.Do(ctx, "DEBUG", "SLEEP", "0.2")
			}
		}
	})
	wg.Wait()
	t.Logf("%d acknowledged, %d failed", len(oks), failures.Load())

	// One last write through a, with no chaos: the consumer must reach it.
	var last []stores.Result
	var err error
	for range 50 {
		last, err = a.Apply(ctx, []crdt.Change{{Collection: coll, Record: crdt.SetField("last", "f", []byte{1}, crdt.Stamp{Wall: wall.Add(1), Replica: "z"})}})
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	head, err := a.Head(ctx, coll)
	if err != nil {
		t.Fatal(err)
	}
	if last[0].Seq != head {
		t.Errorf("last write at %d, head %d", last[0].Seq, head)
	}
	for end := time.Now().Add(10 * time.Second); ; {
		cmu.Lock()
		c := cursor
		cmu.Unlock()
		if c >= head {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("consumer stuck at %d, head %d", c, head)
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(quit)
	<-consumerDone

	page, err := a.Pull(ctx, coll, 0, stores.PageLimit{Records: stores.MaxPage, Bytes: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]stores.Entry{}
	var prev uint64
	for _, e := range page.Entries {
		if e.Seq <= prev {
			t.Errorf("log out of order at %s: %d after %d", e.Record.ID, e.Seq, prev)
		}
		prev = e.Seq
		if _, ok := stored[e.Record.ID]; ok {
			t.Errorf("log lists %s twice", e.Record.ID)
		}
		stored[e.Record.ID] = e
	}
	for id, e := range stored {
		got, ok := seen[id]
		if !ok || got.Seq != e.Seq || !got.Record.Equal(e.Record) {
			t.Errorf("consumer has %s at %d (%v), store at %d", id, got.Seq, ok, e.Seq)
		}
	}
	bySeq := map[uint64]string{}
	for _, k := range oks {
		for i, c := range k.changes {
			e, ok := stored[c.Record.ID]
			if !ok {
				t.Errorf("acknowledged change to %s not stored", c.Record.ID)
				continue
			}
			r := e.Record.Clone()
			if r.Merge(c.Record) {
				t.Errorf("acknowledged change %+v (result %+v) not in stored record %+v", c.Record, k.results[i], e.Record)
			}
			res := k.results[i]
			if res.Changed {
				if other, ok := bySeq[res.Seq]; ok {
					t.Errorf("seq %d given to a change of %s and one of %s", res.Seq, other, c.Record.ID)
				}
				bySeq[res.Seq] = c.Record.ID
				if res.Seq > e.Seq {
					t.Errorf("change to %s at seq %d, past its record's %d", c.Record.ID, res.Seq, e.Seq)
				}
			}
		}
	}
}
