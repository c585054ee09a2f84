package redis

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// Integrity against programs that write into the store's own keys
// (R1-R3): a damaged key is reported as stores.ErrCorrupt,
// nothing is written before the merge script knows it can finish, the
// next write or Repair heals it, and a head set back is noticed.

func put(t *testing.T, s *Store, coll, id string, wall int64) stores.Result {
	t.Helper()
	res, err := s.Apply(testContext(t), []crdt.Change{{Collection: coll, Record: crdt.SetField(id, "f", mustValue(t, wall), crdt.Stamp{Wall: wall, Replica: "w"})}})
	if err != nil {
		t.Fatalf("apply %s/%s: %v", coll, id, err)
	}
	return res[0]
}

func pullAll(t *testing.T, s *Store, coll string) ([]stores.Entry, error) {
	t.Helper()
	var out []stores.Entry
	var after uint64
	for {
		p, err := s.Pull(testContext(t), coll, after, page10)
		if err != nil {
			return out, err
		}
		out = append(out, p.Entries...)
		after = p.Next
		if !p.More {
			return out, nil
		}
	}
}

// R1: a key of the wrong type fails the merge script before its first
// write, as ErrCorrupt, and leaves the record, the log and the head as
// they were; Repair rebuilds the collection and starts a new epoch.
func TestWrongTypeFailsBeforeWrite(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		for _, key := range []string{"log", "r", "seq"} {
			t.Run(key, func(t *testing.T) {
				ctx := testContext(t)
				s := openStore(t, tg, Options{})
				const coll = "wt"
				put(t, s, coll, "r1", 1)
				k := map[string]string{"log": s.logKey(coll), "r": s.recKey(coll), "seq": s.seqKey(coll)}[key]
				saved, err := s.client.Dump(ctx, k).Result()
				if err != nil {
					t.Fatal(err)
				}
				if err := s.client.Del(ctx, k).Err(); err != nil {
					t.Fatal(err)
				}
				if key == "seq" {
					err = s.client.RPush(ctx, k, "x").Err()
				} else {
					err = s.client.Set(ctx, k, "overwritten", 0).Err()
				}
				if err != nil {
					t.Fatal(err)
				}
				_, err = s.Apply(ctx, []crdt.Change{{Collection: coll, Record: crdt.SetField("r2", "f", mustValue(t, "x"), crdt.Stamp{Wall: 2, Replica: "w"})}})
				if !errors.Is(err, stores.ErrCorrupt) || errors.Is(err, stores.ErrUnavailable) {
					t.Fatalf("apply with %s overwritten: got %v, want ErrCorrupt", key, err)
				}
				if !strings.Contains(err.Error(), k) {
					t.Errorf("the error %q does not name the key %s", err, k)
				}
				// Nothing was written: restore the key and find the
				// collection as before.
				if err := s.client.Del(ctx, k).Err(); err != nil {
					t.Fatal(err)
				}
				if err := s.client.Restore(ctx, k, 0, saved).Err(); err != nil {
					t.Fatal(err)
				}
				if _, err := s.Get(ctx, coll, "r2"); !errors.Is(err, stores.ErrNotFound) {
					t.Fatalf("r2 after a refused apply: got %v, want ErrNotFound", err)
				}
				if h, err := s.Head(ctx, coll); err != nil || h != 1 {
					t.Fatalf("head after a refused apply: got %d, %v; want 1", h, err)
				}
				if got := s.Stats().Corrupt; got == 0 {
					t.Error("no corruption counted")
				}
				if r := put(t, s, coll, "r2", 2); r.Seq != 2 {
					t.Fatalf("r2 after restoring the key: seq %d, want 2", r.Seq)
				}
			})
		}
	})
}

// R1 again, through Repair: the log overwritten by a string is rebuilt
// from the records, every record keeps its state, the head never goes back
// and the collection starts a new epoch (rebuilt).
func TestRepairRebuildsLog(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		ctx := testContext(t)
		s := openStore(t, tg, Options{})
		const coll = "rep"
		for i := range 5 {
			put(t, s, coll, fmt.Sprintf("r%d", i), int64(i+1))
		}
		before, err := s.Meta(ctx, coll)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.client.Set(ctx, s.logKey(coll), "overwritten", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Pull(ctx, coll, 0, page10); !errors.Is(err, stores.ErrCorrupt) {
			t.Fatalf("pull with the log overwritten: got %v, want ErrCorrupt", err)
		}
		rep, err := s.Repair(ctx, coll)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Records != 5 || rep.Lost != 0 || rep.Head <= 5 {
			t.Fatalf("repair: got %+v, want 5 records, none lost, head past 5", rep)
		}
		after, err := s.Meta(ctx, coll)
		if err != nil {
			t.Fatal(err)
		}
		if after.Epoch <= before.Epoch || after.Lost != before.Lost {
			t.Fatalf("meta after repair: got %+v, before %+v; want a new epoch, rebuilt", after, before)
		}
		entries, err := pullAll(t, s, coll)
		if err != nil || len(entries) != 5 {
			t.Fatalf("pull after repair: got %d entries, %v; want 5", len(entries), err)
		}
		if h, _ := s.Head(ctx, coll); h != rep.Head {
			t.Fatalf("head after repair: got %d, want %d", h, rep.Head)
		}
		if r := put(t, s, coll, "r9", 9); r.Seq != rep.Head+1 {
			t.Fatalf("a write after repair: seq %d, want %d", r.Seq, rep.Head+1)
		}
	})
}

// R2: a damaged record, a record the log lists but the hash lacks, and an
// unreadable head. Each is ErrCorrupt (never ErrUnavailable) naming the
// record; a pull returns what comes before the damage; the next write to
// the record repairs it.
func TestDamagedEntries(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		for _, tc := range []struct {
			name   string
			damage func(s *Store, coll string) error
		}{
			{"garbage record", func(s *Store, coll string) error {
				return s.client.HSet(testContext(t), s.recKey(coll), "r1", "garbage").Err()
			}},
			{"record deleted", func(s *Store, coll string) error {
				return s.client.HDel(testContext(t), s.recKey(coll), "r1").Err()
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				ctx := testContext(t)
				s := openStore(t, tg, Options{})
				const coll = "dmg"
				put(t, s, coll, "r0", 1)
				put(t, s, coll, "r1", 2)
				put(t, s, coll, "r2", 3)
				if err := tc.damage(s, coll); err != nil {
					t.Fatal(err)
				}
				p, err := s.Pull(ctx, coll, 0, page10)
				if err != nil || len(p.Entries) != 1 || p.Entries[0].Record.ID != "r0" || !p.More {
					t.Fatalf("pull from 0: got %+v, %v; want r0 alone, more", p, err)
				}
				_, err = s.Pull(ctx, coll, p.Next, page10)
				if !errors.Is(err, stores.ErrCorrupt) || errors.Is(err, stores.ErrUnavailable) || !strings.Contains(err.Error(), `"r1"`) {
					t.Fatalf("pull at the damaged record: got %v, want ErrCorrupt naming r1", err)
				}
				if tc.name == "garbage record" {
					if _, err := s.Get(ctx, coll, "r1"); !errors.Is(err, stores.ErrCorrupt) {
						t.Fatalf("get of a damaged record: got %v, want ErrCorrupt", err)
					}
				}
				if s.Stats().Corrupt == 0 {
					t.Error("no corruption counted")
				}
				// The next write repairs it.
				if r := put(t, s, coll, "r1", 10); !r.Changed || r.Seq != 4 {
					t.Fatalf("write to the damaged record: got %+v, want changed at seq 4", r)
				}
				entries, err := pullAll(t, s, coll)
				if err != nil || len(entries) != 3 {
					t.Fatalf("pull after the repairing write: got %d entries, %v", len(entries), err)
				}
			})
		}
		t.Run("unreadable head", func(t *testing.T) {
			ctx := testContext(t)
			s := openStore(t, tg, Options{})
			const coll = "dmg"
			put(t, s, coll, "r0", 1)
			put(t, s, coll, "r1", 2)
			if err := s.client.Set(ctx, s.seqKey(coll), "abc", 0).Err(); err != nil {
				t.Fatal(err)
			}
			if h, err := s.Head(ctx, coll); err != nil || h != 2 {
				t.Fatalf("head when unreadable: got %d, %v; want 2 from the log", h, err)
			}
			if r := put(t, s, coll, "r2", 3); r.Seq != 3 {
				t.Fatalf("write with the head unreadable: seq %d, want 3", r.Seq)
			}
			if s.Stats().Corrupt == 0 {
				t.Error("no corruption counted")
			}
		})
	})
}

// R3: a head set back by hand is noticed: new records never take seqs
// that clients passed, Head never goes back, and the collection starts a
// new epoch.
func TestHeadSetBack(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		ctx := testContext(t)
		s := openStore(t, tg, Options{})
		const coll = "back"
		for i := range 5 {
			put(t, s, coll, fmt.Sprintf("r%d", i), int64(i+1))
		}
		before, err := s.Meta(ctx, coll)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.client.Set(ctx, s.seqKey(coll), "1", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if r := put(t, s, coll, "r9", 9); r.Seq != 6 {
			t.Fatalf("write after the head was set back: seq %d, want 6", r.Seq)
		}
		if err := s.client.Set(ctx, s.seqKey(coll), "2", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if h, err := s.Head(ctx, coll); err != nil || h != 6 {
			t.Fatalf("head after it was set back: got %d, %v; want 6", h, err)
		}
		after, err := s.Meta(ctx, coll)
		if err != nil {
			t.Fatal(err)
		}
		if after.Epoch <= before.Epoch {
			t.Fatalf("epoch after the head was set back: got %+v, before %+v; want a new one", after, before)
		}
		if s.Stats().HeadRepairs < 2 {
			t.Errorf("head repairs counted: %d, want 2", s.Stats().HeadRepairs)
		}
		entries, err := pullAll(t, s, coll)
		if err != nil || len(entries) != 6 {
			t.Fatalf("pull: %d entries, %v; want 6", len(entries), err)
		}
	})
}

var _ = goredis.Nil
