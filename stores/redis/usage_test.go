package redis

import (
	"context"
	"errors"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// Usage beyond the conformance check: a collection written before usage
// existed, a damaged usage hash, a damaged record that a write replaces,
// and Repair. Each must end with usage equal to what a full pull holds.

// pulledUsage is the usage of coll as a full pull reads it.
func pulledUsage(t *testing.T, s *Store, coll string) stores.Usage {
	t.Helper()
	es, err := pullAll(t, s, coll)
	if err != nil {
		t.Fatalf("pull %s: %v", coll, err)
	}
	var u stores.Usage
	for _, e := range es {
		u.Records++
		u.Bytes += int64(len(crdt.AppendRecord(nil, e.Record)))
	}
	return u
}

func checkUsage(t *testing.T, s *Store, coll, step string) {
	t.Helper()
	got, err := s.Usage(testContext(t), coll)
	if err != nil {
		t.Fatalf("%s: usage: %v", step, err)
	}
	if want := pulledUsage(t, s, coll); got != want {
		t.Fatalf("%s: got usage %+v, want %+v (from a pull)", step, got, want)
	}
}

// written opens a store on tg and writes ids to coll, each at 1.
func written(t *testing.T, tg target, coll string, ids ...string) (context.Context, *Store) {
	t.Helper()
	s := openStore(t, tg, Options{})
	for _, id := range ids {
		put(t, s, coll, id, 1)
	}
	return testContext(t), s
}

func TestUsageHeals(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		t.Run("written before usage", func(t *testing.T) {
			const coll = "old"
			ctx, s := written(t, tg, coll, "r1", "r2")
			if err := s.client.Del(ctx, s.usageKey(coll)).Err(); err != nil {
				t.Fatal(err)
			}
			put(t, s, coll, "r3", 1) // kept no usage: there was none
			put(t, s, coll, "r1", 2)
			if n, err := s.client.Exists(ctx, s.usageKey(coll)).Result(); err != nil || n != 0 {
				t.Fatalf("a write to a collection without usage started one: %d, %v", n, err)
			}
			checkUsage(t, s, coll, "counted")
			put(t, s, coll, "r4", 1)
			put(t, s, coll, "r2", 3)
			checkUsage(t, s, coll, "kept after the count")
		})
		t.Run("unsound usage hash", func(t *testing.T) {
			const coll = "du"
			ctx, s := written(t, tg, coll, "r1")
			if err := s.client.HSet(ctx, s.usageKey(coll), "b", "lots").Err(); err != nil {
				t.Fatal(err)
			}
			put(t, s, coll, "r2", 1) // leaves it; no failure
			checkUsage(t, s, coll, "counted again")
			put(t, s, coll, "r1", 2)
			checkUsage(t, s, coll, "kept after the count")
		})
		t.Run("usage key of another type", func(t *testing.T) {
			const coll = "ut"
			ctx, s := written(t, tg, coll, "r1")
			if err := s.client.Set(ctx, s.usageKey(coll), "x", 0).Err(); err != nil {
				t.Fatal(err)
			}
			_, err := s.Apply(ctx, []crdt.Change{{Collection: coll, Record: crdt.SetField("r2", "f", mustValue(t, 1), crdt.Stamp{Wall: 1, Replica: "w"})}})
			if !errors.Is(err, stores.ErrCorrupt) {
				t.Fatalf("apply with the usage key a string: got %v, want ErrCorrupt", err)
			}
			if _, err := s.Usage(ctx, coll); !errors.Is(err, stores.ErrCorrupt) {
				t.Fatalf("usage with the usage key a string: got %v, want ErrCorrupt", err)
			}
			if _, err := s.Repair(ctx, coll); err != nil {
				t.Fatal(err)
			}
			put(t, s, coll, "r2", 1)
			checkUsage(t, s, coll, "after repair and a write")
		})
		t.Run("damaged record replaced", func(t *testing.T) {
			const coll = "dr"
			ctx, s := written(t, tg, coll, "r1", "r2")
			if err := s.client.HSet(ctx, s.recKey(coll), "r1", "garbage").Err(); err != nil {
				t.Fatal(err)
			}
			put(t, s, coll, "r1", 2) // replaces it: its size in usage is unknown
			checkUsage(t, s, coll, "after the replacing write")
		})
		t.Run("repair", func(t *testing.T) {
			const coll = "rp"
			ctx, s := written(t, tg, coll, "r1", "r2", "r3")
			if err := s.client.HSet(ctx, s.recKey(coll), "r2", "garbage").Err(); err != nil {
				t.Fatal(err)
			}
			// An unreadable record counts at its stored length until
			// something replaces or drops it.
			if err := s.client.Del(ctx, s.usageKey(coll)).Err(); err != nil {
				t.Fatal(err)
			}
			u, err := s.Usage(ctx, coll)
			if err != nil {
				t.Fatal(err)
			}
			if u.Records != 3 {
				t.Fatalf("usage with an unreadable record: got %+v, want 3 records", u)
			}
			rep, err := s.Repair(ctx, coll)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Lost != 1 {
				t.Fatalf("repair: got %+v, want 1 lost", rep)
			}
			checkUsage(t, s, coll, "after repair")
			put(t, s, coll, "r4", 1)
			checkUsage(t, s, coll, "after repair and a write")
		})
	})
}
