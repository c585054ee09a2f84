package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
)

// shardedStore is a store whose every collection has K log shards, each
// shard a memory store: enough of stores.Sharder to test the engine's
// merge of shard pages.
type shardedStore struct {
	stores.Store // shard 0: identity, epochs
	logs         []*memory.Store
	mu           sync.Mutex
	k            int // reported by Meta; tests change it to fake a reshard
}

var _ stores.Sharder = (*shardedStore)(nil)

func newSharded(k int) *shardedStore {
	s := &shardedStore{k: k}
	for range k {
		s.logs = append(s.logs, memory.New())
	}
	s.Store = s.logs[0]
	return s
}

func (s *shardedStore) Apply(ctx context.Context, changes []crdt.Change) ([]stores.Result, error) {
	res := make([]stores.Result, len(changes))
	for i, c := range changes { // one at a time keeps each shard's order
		r, err := s.logs[stores.ShardOf(c.Record.ID, len(s.logs))].Apply(ctx, []crdt.Change{c})
		if err != nil {
			return nil, err
		}
		res[i] = r[0]
	}
	return res, nil
}

func (s *shardedStore) Get(ctx context.Context, coll, id string) (stores.Entry, error) {
	return s.logs[stores.ShardOf(id, len(s.logs))].Get(ctx, coll, id)
}

func (s *shardedStore) Pull(ctx context.Context, coll string, after uint64, limit stores.PageLimit) (stores.Page, error) {
	if len(s.logs) == 1 {
		return s.logs[0].Pull(ctx, coll, after, limit)
	}
	return stores.Page{}, fmt.Errorf("%w: sharded", stores.ErrInvalid)
}

func (s *shardedStore) PullShard(ctx context.Context, coll string, shard int, after uint64, limit stores.PageLimit) (stores.Page, error) {
	return s.logs[shard].Pull(ctx, coll, after, limit)
}

func (s *shardedStore) ShardHeads(ctx context.Context, coll string) ([]uint64, error) {
	heads := make([]uint64, len(s.logs))
	for i, l := range s.logs {
		h, err := l.Head(ctx, coll)
		if err != nil {
			return nil, err
		}
		heads[i] = h
	}
	return heads, nil
}

func (s *shardedStore) Head(ctx context.Context, coll string) (uint64, error) {
	heads, err := s.ShardHeads(ctx, coll)
	var sum uint64
	for _, h := range heads {
		sum += h
	}
	return sum, err
}

func (s *shardedStore) Meta(ctx context.Context, coll string) (stores.Meta, error) {
	m, err := s.Store.Meta(ctx, coll)
	s.mu.Lock()
	m.Shards = s.k
	s.mu.Unlock()
	return m, err
}

func (s *shardedStore) Watch(fn func(stores.Notification)) func() {
	var stops []func()
	for i, l := range s.logs {
		stops = append(stops, l.Watch(func(n stores.Notification) {
			if !n.Resync && len(s.logs) > 1 {
				n.Shard, n.Shards = i, len(s.logs)
			}
			fn(n)
		}))
	}
	return func() {
		for _, stop := range stops {
			stop()
		}
	}
}

func TestCursorShards(t *testing.T) {
	tag := storeTag("id")
	for _, pos := range [][]uint64{{7}, {0, 3}, {1, 0, 0, 9}, {1 << 40, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 1<<64 - 1}} {
		c := cursorOf(tag, 3, pos)
		got, err := ParseCursor(c.Bytes())
		if err != nil {
			t.Fatalf("ParseCursor(%v): %v", c, err)
		}
		if got != c || got.Shards() != len(pos) || fmt.Sprint(got.Positions()) != fmt.Sprint(pos) {
			t.Fatalf("round trip of %v gave %v", c, got)
		}
	}
	if b := cursorOf(tag, 3, make([]uint64, 4)).Bytes(); len(b) != 0 {
		t.Fatalf("the start of 4 shards encodes as %x, want empty", b)
	}
	c := cursorOf(tag, 3, []uint64{1, 2})
	if c.Seq() != 3 || c.Shards() != 2 {
		t.Fatalf("%v: Seq %d, Shards %d; want 3, 2", c, c.Seq(), c.Shards())
	}
	// K outside 1..MaxShards, and positions missing or extra, are invalid.
	good := cursorOf(tag, 3, []uint64{1, 2}).Bytes()
	for name, b := range map[string][]byte{
		"K 0":      append(append([]byte{}, good[:10]...), 0),
		"K 17":     append(append([]byte{}, good[:10]...), 17, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1),
		"short":    good[:len(good)-1],
		"trailing": append(append([]byte{}, good...), 0),
	} {
		if _, err := ParseCursor(b); !errors.Is(err, crdt.ErrInvalid) {
			t.Errorf("%s: ParseCursor(%x) = %v, want ErrInvalid", name, b, err)
		}
	}
}

// TestPullShards checks the merge of shard pages while writers go on:
// at every cursor each shard's position only passes entries the reader
// got (no gap), no page holds a record twice (no duplicate), and once
// writing stops the reader holds every record as stored.
func TestPullShards(t *testing.T) {
	for _, k := range []int{1, 2, 4, 16} {
		t.Run(fmt.Sprintf("K=%d", k), func(t *testing.T) {
			st := newSharded(k)
			e := engineOn(t, st)
			ctx := context.Background()
			rng := rand.New(rand.NewPCG(uint64(k), 1))
			seen := map[string]crdt.Record{}
			cur := Cursor{}
			pull := func(limit PageLimit) Page {
				p, err := e.Pull(ctx, "c", cur, limit)
				if err != nil {
					t.Fatalf("Pull(%v): %v", cur, err)
				}
				if k > 1 && !p.Next.IsStart() && p.Next.Shards() != k {
					t.Fatalf("Next %v has %d positions, want %d", p.Next, p.Next.Shards(), k)
				}
				if len(p.Entries) == 0 && p.More {
					t.Fatalf("an empty page says More")
				}
				ids := map[string]bool{}
				old, next := cur.Positions(), p.Next.Positions()
				for _, en := range p.Entries {
					if ids[en.Record.ID] {
						t.Fatalf("page holds %s twice", en.Record.ID)
					}
					ids[en.Record.ID] = true
					seen[en.Record.ID] = en.Record
					if s := stores.ShardOf(en.Record.ID, k); k > 1 && (cur.IsStart() || en.Seq > old[s]) && en.Seq > next[s] {
						t.Fatalf("entry %s at %d beyond its shard's next position %d", en.Record.ID, en.Seq, next[s])
					}
				}
				if limit.Records > 0 && len(p.Entries) > limit.Records {
					t.Fatalf("page of %d records, limit %d", len(p.Entries), limit.Records)
				}
				cur = p.Next
				return p
			}
			for round := range 60 {
				n := rng.IntN(12)
				cs := make([]crdt.Change, n)
				for i := range cs {
					id := fmt.Sprintf("r%d", rng.IntN(80))
					cs[i] = crdt.Change{Collection: "c", Record: crdt.SetField(id, "v", value(t, round*100+i), crdt.Stamp{Wall: time.Now().UnixMilli(), Logical: uint32(round*100 + i), Replica: "w"})}
				}
				if _, err := e.Apply(ctx, cs); err != nil {
					t.Fatal(err)
				}
				pull(PageLimit{Records: 1 + rng.IntN(9)})
			}
			for p := pull(PageLimit{Records: 5}); p.More; p = pull(PageLimit{Records: 5}) {
			}
			for i := range 80 {
				id := fmt.Sprintf("r%d", i)
				got, err := st.Get(ctx, "c", id)
				if errors.Is(err, stores.ErrNotFound) {
					if _, ok := seen[id]; ok {
						t.Fatalf("reader has %s, the store has not", id)
					}
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				if r, ok := seen[id]; !ok || !r.Equal(got.Record) {
					t.Fatalf("reader has %v of %s, the store %v: a change was skipped", r, id, got.Record)
				}
			}
			if p := pull(PageLimit{}); len(p.Entries) != 0 || p.More {
				t.Fatalf("at the end a pull gave %d entries", len(p.Entries))
			}
		})
	}
}

// TestPullShardsBytes checks that a merged page keeps the byte bound:
// only its first record may pass it.
func TestPullShardsBytes(t *testing.T) {
	st := newSharded(4)
	e := engineOn(t, st)
	ctx := context.Background()
	big := bytes.Repeat([]byte("x"), 3000)
	for i := range 20 {
		write1 := crdt.Change{Collection: "b", Record: crdt.SetField(fmt.Sprintf("b%d", i), "v", value(t, string(big)), crdt.Stamp{Wall: 1, Replica: "w"})}
		if _, err := e.Apply(ctx, []crdt.Change{write1}); err != nil {
			t.Fatal(err)
		}
	}
	cur, got := Cursor{}, 0
	for {
		p, err := e.Pull(ctx, "b", cur, PageLimit{Bytes: 7000})
		if err != nil {
			t.Fatal(err)
		}
		size := 0
		for _, en := range p.Entries {
			size += len(crdt.AppendRecord(nil, en.Record))
		}
		if len(p.Entries) > 1 && size > 7000 {
			t.Fatalf("page of %d records and %d bytes, bound 7000", len(p.Entries), size)
		}
		got += len(p.Entries)
		cur = p.Next
		if !p.More {
			break
		}
	}
	if got != 20 {
		t.Fatalf("read %d records, want 20", got)
	}
}

// TestPullShardsReset checks that a cursor of another shard count resets
// (rebuilt), and one past a shard's head resets with history lost and
// starts a new epoch.
func TestPullShardsReset(t *testing.T) {
	st := newSharded(4)
	e := engineOn(t, st)
	ctx := context.Background()
	write(t, e, "c", 0, 10)
	p, err := e.Pull(ctx, "c", Cursor{}, PageLimit{})
	if err != nil {
		t.Fatal(err)
	}
	past := p.Next.Positions()
	past[1] += 5
	ahead, err := e.CursorAtShards(ctx, "c", past)
	if err != nil {
		t.Fatal(err)
	}
	var re *ResetError
	if _, err := e.Pull(ctx, "c", ahead, PageLimit{}); !errors.As(err, &re) || re.Reason != ResetHistoryLost {
		t.Fatalf("cursor past a shard's head: %v, want a reset (history lost)", err)
	}
	// The server made that cursor: proof that the store went back, so the
	// collection is in a new epoch, history lost, and so is a cursor below
	// the heads.
	if _, err := e.Pull(ctx, "c", p.Next, PageLimit{}); !errors.As(err, &re) || re.Reason != ResetHistoryLost {
		t.Fatalf("cursor below the heads after a cursor past one: %v, want a reset (history lost)", err)
	}
	if p, err = e.Pull(ctx, "c", Cursor{}, PageLimit{}); err != nil {
		t.Fatal(err)
	}
	one, err := e.CursorAtShards(ctx, "c", []uint64{3})
	if err == nil {
		t.Fatalf("CursorAtShards with 1 position for 4 shards = %v, want an error", one)
	}
	st.mu.Lock()
	st.k = 2 // the store now says 2 shards in the same epoch
	st.mu.Unlock()
	e.hist.forget()
	if _, err := e.Pull(ctx, "c", p.Next, PageLimit{}); !errors.As(err, &re) || re.Reason != ResetRebuilt {
		t.Fatalf("cursor of 4 shards on a log of 2: %v, want a reset (rebuilt)", err)
	}
}

// TestShardedSubscription checks that subscribers of a sharded collection
// are woken by a change in any shard, whatever heads other shards have.
func TestShardedSubscription(t *testing.T) {
	st := newSharded(4)
	e := engineOn(t, st)
	sub, err := e.Subscribe("c")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var last uint64
	for i := range 12 {
		write(t, e, "c", i, 1)
		select {
		case h := <-sub.C():
			if h <= last {
				t.Fatalf("subscriber got %d after %d", h, last)
			}
			last = h
		case <-time.After(2 * time.Second):
			t.Fatalf("write %d woke no subscriber", i)
		}
	}
	if h, err := e.Head(context.Background(), "c"); err != nil || h != last {
		t.Fatalf("Head = %d, %v; subscriber at %d", h, err, last)
	}
}
