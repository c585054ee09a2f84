package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
)

// alteredStore is a store of K shards whose log reads show every record
// as alter makes it, in place, at its sequence number (nil: as stored):
// what a store that went back and gave a number to the same record again
// shows, or what a purge does to a record it keeps.
type alteredStore struct {
	*shardedStore
	mu    sync.Mutex
	alter func(crdt.Record) crdt.Record
}

func (s *alteredStore) setAlter(f func(crdt.Record) crdt.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.alter = f
}

func (s *alteredStore) page(p stores.Page, err error) (stores.Page, error) {
	s.mu.Lock()
	f := s.alter
	s.mu.Unlock()
	if err != nil || f == nil {
		return p, err
	}
	entries := make([]stores.Entry, len(p.Entries))
	for i, en := range p.Entries {
		entries[i] = stores.Entry{Seq: en.Seq, Record: f(en.Record.Clone())}
	}
	p.Entries = entries
	return p, nil
}

func (s *alteredStore) Pull(ctx context.Context, coll string, after uint64, limit stores.PageLimit) (stores.Page, error) {
	return s.page(s.shardedStore.Pull(ctx, coll, after, limit))
}

func (s *alteredStore) PullShard(ctx context.Context, coll string, shard int, after uint64, limit stores.PageLimit) (stores.Page, error) {
	return s.page(s.shardedStore.PullShard(ctx, coll, shard, after, limit))
}

// tombstoned writes records r0..r(n-1) of todos, each deleted once, then
// given field n, then its field x unset: the unset is the latest stamp of
// each, and the delete stamp the earliest.
func tombstoned(t *testing.T, e *Engine, n int) {
	t.Helper()
	ctx := context.Background()
	now := time.Now().UnixMilli() - 10_000
	for i := range n {
		id := fmt.Sprint("r", i)
		for j, rec := range []crdt.Record{
			crdt.DeleteRecord(id, crdt.Stamp{Wall: now, Replica: "c"}),
			crdt.SetField(id, "n", value(t, i), crdt.Stamp{Wall: now + 1, Replica: "c"}),
			crdt.UnsetField(id, "x", crdt.Stamp{Wall: now + 2, Replica: "c"}),
		} {
			res, err := e.Apply(ctx, []crdt.Change{{Collection: "todos", Record: rec}})
			if err != nil || res[0].Status != StatusApplied {
				t.Fatalf("change %d of %s: %v, %v", j, id, res, err)
			}
		}
	}
}

// TestStateMarkSeesTheRecordWrittenAgain: the entry at a reader's
// position is of the record the reader read there, but holds a later
// write of it: the store went back and gave the number to the same record
// again. The state mark tells: the reader is reset, and every
// collection starts a new epoch; for one log and for K shards, whose
// every position holds such a record.
func TestStateMarkSeesTheRecordWrittenAgain(t *testing.T) {
	for _, k := range []int{1, 3} {
		t.Run(fmt.Sprint("K=", k), func(t *testing.T) {
			st := &alteredStore{shardedStore: newSharded(k)}
			e := engineOn(t, st)
			write(t, e, "todos", 0, 9)
			write(t, e, "notes", 0, 2)
			notes := pullTo(t, e, "notes", nil)
			c := pullTo(t, e, "todos", nil)
			if cur, _ := ParseCursor(c); !cur.stateSlots || c[0] != cursorFormat+cursorStateSlots {
				t.Fatalf("cursor %v (format %d) holds no state marks", cur, c[0])
			}
			noReset(t, e, "todos", c)
			later := crdt.Stamp{Wall: time.Now().UnixMilli() + 1000, Replica: "c"}
			st.setAlter(func(r crdt.Record) crdt.Record {
				r.Merge(crdt.SetField(r.ID, "again", value(t, 1), later))
				return r
			})
			wantReset(t, e, "todos", c, ResetHistoryLost)
			st.setAlter(nil)
			wantReset(t, e, "notes", notes, ResetHistoryLost) // every collection
		})
	}
}

// TestStateMarkPurgeInPlace: a purge changes a record it keeps in place,
// at its sequence number (stores.PurgeRecord: its delete stamp cleared,
// its unset fields removed, the latest stamp it held among them). That
// is no proof the store went back: no reader is reset, for one log and
// for K shards.
func TestStateMarkPurgeInPlace(t *testing.T) {
	for _, k := range []int{1, 3} {
		t.Run(fmt.Sprint("K=", k), func(t *testing.T) {
			st := &alteredStore{shardedStore: newSharded(k)}
			e := engineOn(t, st)
			tombstoned(t, e, 9)
			c := pullTo(t, e, "todos", nil)
			purged := 0
			st.setAlter(func(r crdt.Record) crdt.Record {
				out, deletes, fields := stores.PurgeRecord(r, stores.Horizon{Wall: time.Now().UnixMilli() + 1000})
				if r.Deleted.IsZero() {
					return out // written after the purge
				}
				if deletes != 1 || fields != 1 || out.MaxStamp() == r.MaxStamp() {
					t.Errorf("purged %s: %d deletes, %d fields, latest stamp %v from %v; want the delete and x gone, and an earlier latest stamp", r.ID, deletes, fields, out.MaxStamp(), r.MaxStamp())
				}
				purged++
				return out
			})
			noReset(t, e, "todos", c)
			if purged == 0 {
				t.Fatal("the pull read no record the purge changed")
			}
			write(t, e, "todos", 100, 2)
			noReset(t, e, "todos", c)
		})
	}
}

// TestStateMarkCollected: the same, through a collection run on a memory
// store: the record at the reader's position loses its delete stamp and
// its unset field where it is, and the reader is not reset.
func TestStateMarkCollected(t *testing.T) {
	ctx := context.Background()
	st := memory.New()
	t.Cleanup(func() { st.Close() })
	e, clk := openCollecting(t, st)
	writeNotes(t, e, "n1", "n2")
	collectingSince(t, e)
	s, err := e.Now("notes")
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range []crdt.Record{
		crdt.DeleteRecord("n3", s),
		crdt.SetField("n3", "owner", value(t, "a"), crdt.Stamp{Wall: s.Wall + 1, Replica: s.Replica}),
		crdt.UnsetField("n3", "x", crdt.Stamp{Wall: s.Wall + 2, Replica: s.Replica}),
	} {
		if _, err := e.Apply(ctx, []crdt.Change{{Collection: "notes", Record: rec}}); err != nil {
			t.Fatal(err)
		}
	}
	_, cur, err := pullNotes(t, e, Cursor{}, 10, nil) // at n3
	if err != nil {
		t.Fatal(err)
	}
	noteLease(t, e, "reader", cur)
	before, err := st.Get(ctx, "notes", "n3")
	if err != nil {
		t.Fatal(err)
	}
	clk.ms += (2 * time.Hour).Milliseconds()
	noteLease(t, e, "reader", cur)
	collectOnce(t, e)
	after, err := st.Get(ctx, "notes", "n3")
	if err != nil {
		t.Fatal(err)
	}
	if after.Seq != before.Seq || after.Record.Equal(before.Record) || after.Record.MaxStamp() == before.Record.MaxStamp() {
		t.Fatalf("n3 after the purge: %v at %d, before: %v at %d; want it changed in place, its latest stamp gone", after.Record, after.Seq, before.Record, before.Seq)
	}
	if _, _, err := pullNotes(t, e, cur, 10, nil); err != nil {
		t.Fatalf("the reader at the purged record: %v", err)
	}
	writeNotes(t, e, "n4")
	if n, _, err := pullNotes(t, e, cur, 10, nil); err != nil || n != 1 {
		t.Fatalf("after a write: %d records, %v; want n4", n, err)
	}
}

// TestStateMarkMigrated: the mark is of the record as stored, never as a
// migration resolves it for a reader: a cursor made by an instance
// without the migration is not reset by one with it, nor the other way
// round, and neither is reset by the other's record at the position.
func TestStateMarkMigrated(t *testing.T) {
	ctx := context.Background()
	st := memory.New()
	t.Cleanup(func() { st.Close() })
	rules, err := ParseRules([]byte(`{"todos": {"migrations": {"version": 2, "steps": [{"to": 2, "ops": [{"op": "rename", "from": "n", "to": "m"}]}]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	migrating, err := Open(Config{Store: st, Replica: "srv2", PollInterval: -1, Rules: rules})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { migrating.Close() })
	plain := engineOn(t, st)
	write(t, plain, "todos", 0, 5) // field n, which the migration renames

	p, err := migrating.Pull(ctx, "todos", Cursor{}, PageLimit{})
	if err != nil {
		t.Fatal(err)
	}
	if v := p.Entries[len(p.Entries)-1].Record.Values(); v["m"] == nil || v["n"] != nil {
		t.Fatalf("the migrating instance reads %v, want field m", v)
	}
	fromMigrating := p.Next.Bytes()
	fromPlain := pullTo(t, plain, "todos", nil)
	noReset(t, plain, "todos", fromMigrating)
	noReset(t, migrating, "todos", fromPlain)
	write(t, plain, "todos", 10, 2)
	noReset(t, plain, "todos", fromMigrating)
	noReset(t, migrating, "todos", fromPlain)
}

// TestStateMarkFromIDMarks: a cursor made before state marks (format 3:
// id marks) is checked as such, resets no reader of the one history, and
// its next cursor holds state marks, which then see the record at the
// position written again.
func TestStateMarkFromIDMarks(t *testing.T) {
	for _, k := range []int{1, 3} {
		t.Run(fmt.Sprint("K=", k), func(t *testing.T) {
			ctx := context.Background()
			st := &alteredStore{shardedStore: newSharded(k)}
			e := engineOn(t, st)
			write(t, e, "todos", 0, 9)
			var cur Cursor
			var last []string // the record at each shard's position
			for {
				p, err := e.Pull(ctx, "todos", cur, PageLimit{})
				if err != nil {
					t.Fatal(err)
				}
				for _, en := range p.Entries {
					last = append(last, en.Record.ID)
				}
				cur = p.Next
				if !p.More {
					break
				}
			}
			// The cursor as this engine wrote it before state marks: the
			// id mark of the record at each position.
			key := e.slotKeyFor(cur.store)
			ids := make([]uint32, k)
			for _, id := range last {
				ids[stores.ShardOf(id, k)] = slotMark(key, "todos", id)
			}
			old := cur
			old.slots, old.stateSlots = packSlots(ids, nil), false
			b := old.Bytes()
			if b[0] != cursorFormat+cursorSlots {
				t.Fatalf("format %d, want %d", b[0], cursorFormat+cursorSlots)
			}
			next := pullTo(t, e, "todos", b)
			if c, _ := ParseCursor(next); !c.stateSlots {
				t.Fatalf("the cursor after one of id marks is %v, want state marks", c)
			}
			for s, m := range ids {
				if c, _ := ParseCursor(next); m != 0 {
					first, second := c.slotMarks()
					if first[s]&stateFlag == 0 || second[s] != m {
						t.Errorf("shard %d: marks %x %x, want a state mark and the id mark %x", s, first[s], second[s], m)
					}
				}
			}
			later := crdt.Stamp{Wall: time.Now().UnixMilli() + 1000, Replica: "c"}
			st.setAlter(func(r crdt.Record) crdt.Record {
				r.Merge(crdt.SetField(r.ID, "again", value(t, 1), later))
				return r
			})
			// An id mark cannot see it (what state marks are for)...
			p, err := e.Pull(ctx, "todos", old, PageLimit{})
			if err != nil {
				t.Fatalf("the cursor of id marks: %v", err)
			}
			_ = p
			// ...the state marks of the next cursor do.
			cur, err = ParseCursor(next)
			if err != nil {
				t.Fatal(err)
			}
			_, err = e.Pull(ctx, "todos", cur, PageLimit{})
			var re *ResetError
			if !errors.As(err, &re) || re.Reason != ResetHistoryLost {
				t.Fatalf("the cursor of state marks: %v, want a reset, history lost", err)
			}
		})
	}
}

// TestStateMarkCaptured: a captured foreign write to the record at a
// reader's position goes through the engine's door like any client write
// and moves the record on; delivered again (capture is at least once), it
// changes nothing. The reader is not reset, and reads the capture.
func TestStateMarkCaptured(t *testing.T) {
	ctx := context.Background()
	st := &capturing{Store: memory.New()}
	t.Cleanup(func() { st.Close() })
	e := engineOn(t, st)
	if st.sink.Apply == nil {
		t.Fatal("the engine registered no capture sink")
	}
	write(t, e, "todos", 0, 4)
	c := pullTo(t, e, "todos", nil) // at r3
	captured := []crdt.Change{{Collection: "todos", Record: crdt.SetField("r3", "done", value(t, true),
		crdt.Stamp{Wall: time.Now().UnixMilli(), Replica: "cap-0001"})}}
	for i := range 2 {
		if _, err := st.sink.Apply(ctx, captured); err != nil {
			t.Fatal(err)
		}
		cur, err := ParseCursor(c)
		if err != nil {
			t.Fatal(err)
		}
		p, err := e.Pull(ctx, "todos", cur, PageLimit{})
		if err != nil {
			t.Fatalf("the reader at the captured record: %v", err)
		}
		if want := 1 - i; len(p.Entries) != want || want == 1 && p.Entries[0].Record.Values()["done"] == nil {
			t.Fatalf("delivery %d: read %v, want %d entries: r3 with the captured field, once", i, p.Entries, want)
		}
		c = p.Next.Bytes()
	}
	write(t, e, "todos", 10, 1)
	noReset(t, e, "todos", c)
}
