package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores"
)

// TestShardsTwoInstances has eight writers on two instances push to one
// collection of four shards while a reader follows it through the engine
// with small pages: at the end the reader holds every record as stored
// (no change skipped at any cursor), no page held a record twice, and the
// reader's cursor has four positions.
func TestShardsTwoInstances(t *testing.T) {
	db, _, _ := testClients(t)
	table := plainTable(t, db)
	inst := []*Store{openShards(t, db, nil, table, 4), openShards(t, db, nil, table, 4)}
	engs := make([]*engine.Engine, 2)
	for i, s := range inst {
		e, err := engine.Open(engine.Config{Store: s, Replica: fmt.Sprintf("srv%d", i), PollInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		engs[i] = e
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range 6 {
				var cs []crdt.Change
				for c := range 3 {
					id := fmt.Sprintf("r%d", (w*7+b*3+c)%40)
					cs = append(cs, crdt.Change{Collection: "todos", Record: crdt.SetField(id, fmt.Sprintf("w%d", w), val(t, b), stamp(time.Now().UnixMilli(), fmt.Sprintf("c%d", w)))})
				}
				res, err := engs[w%2].Apply(ctx, cs)
				if err != nil {
					errs <- err
					return
				}
				for _, r := range res {
					if r.Err != nil {
						errs <- r.Err
						return
					}
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	seen := map[string]crdt.Record{}
	cur := engine.Cursor{}
	pull := func() engine.Page {
		p, err := engs[1].Pull(ctx, "todos", cur, engine.PageLimit{Records: 7})
		if err != nil {
			t.Fatalf("Pull(%v): %v", cur, err)
		}
		ids := map[string]bool{}
		for _, e := range p.Entries {
			if ids[e.Record.ID] {
				t.Fatalf("page holds %s twice", e.Record.ID)
			}
			ids[e.Record.ID] = true
			seen[e.Record.ID] = e.Record
		}
		cur = p.Next
		return p
	}
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
			pull()
		}
	}
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	for p := pull(); p.More; p = pull() {
	}
	if cur.Shards() != 4 {
		t.Fatalf("cursor %v has %d positions, want 4", cur, cur.Shards())
	}
	for i := range 40 {
		id := fmt.Sprintf("r%d", i)
		got, err := inst[0].Get(ctx, "todos", id)
		if errors.Is(err, stores.ErrNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if r, ok := seen[id]; !ok || !r.Equal(got.Record) {
			t.Fatalf("reader has %v of %s, the table %v: a change was skipped", r, id, got.Record)
		}
	}
	committed, cancelled := inst[0].TxStats()
	c2, x2 := inst[1].TxStats()
	t.Logf("transactions committed %d, cancelled %d", committed+c2, cancelled+x2)
}

// TestShardsEstablished checks how instances configured differently agree
// on a collection's shard count: the first write sets it; a collection
// that has a log of one shard keeps it; a writer that routed by another
// count fails once and then follows the table.
func TestShardsEstablished(t *testing.T) {
	db, _, _ := testClients(t)
	table := plainTable(t, db)
	one, four := openShards(t, db, nil, table, 1), openShards(t, db, nil, table, 4)
	ctx := context.Background()
	put := func(s *Store, coll, id string) error {
		_, err := s.Apply(ctx, []crdt.Change{{Collection: coll, Record: crdt.SetField(id, "f", val(t, id), stamp(1, "c"))}})
		return err
	}
	shards := func(coll string) int {
		m, err := one.Meta(ctx, coll)
		if err != nil {
			t.Fatal(err)
		}
		return stores.ShardsOf(m)
	}
	// A log of one shard first: it stays one.
	if err := put(one, "legacy", "a"); err != nil {
		t.Fatal(err)
	}
	if err := put(four, "legacy", "b"); err != nil {
		t.Fatal(err)
	}
	if k := shards("legacy"); k != 1 {
		t.Fatalf("legacy: %d shards, want 1", k)
	}
	if h, err := four.Head(ctx, "legacy"); err != nil || h != 2 {
		t.Fatalf("legacy: Head = %d, %v; want 2", h, err)
	}
	// The instance configured for 4 first; the other has looked at the
	// collection before (its cache says one log) and writes after.
	if _, err := one.Head(ctx, "fresh"); err != nil {
		t.Fatal(err)
	}
	if err := put(four, "fresh", "a"); err != nil {
		t.Fatal(err)
	}
	err := put(one, "fresh", "b")
	if err != nil && !errors.Is(err, stores.ErrUnavailable) {
		t.Fatalf("stale writer: %v, want nil or ErrUnavailable", err)
	}
	if err != nil {
		if err := put(one, "fresh", "b"); err != nil {
			t.Fatalf("retry: %v", err)
		}
	}
	if k := shards("fresh"); k != 4 {
		t.Fatalf("fresh: %d shards, want 4", k)
	}
	heads, err := one.ShardHeads(ctx, "fresh")
	if err != nil || len(heads) != 4 {
		t.Fatalf("ShardHeads = %v, %v; want 4 heads", heads, err)
	}
	var sum uint64
	for _, h := range heads {
		sum += h
	}
	if sum != 2 {
		t.Fatalf("heads %v hold %d changes, want 2", heads, sum)
	}
	if _, err := one.Pull(ctx, "fresh", 0, stores.PageLimit{Records: 10, Bytes: 1 << 20}); !errors.Is(err, stores.ErrInvalid) {
		t.Fatalf("Pull of a sharded collection: %v, want ErrInvalid", err)
	}
}
