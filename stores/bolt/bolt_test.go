package bolt_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/bolt"
	"github.com/convergo/convergo/stores/storetest"
)

// newStore opens a store in a new file. Commits fsync, as in production.
func newStore(t testing.TB) stores.Store {
	s, err := bolt.Open(context.Background(), filepath.Join(t.TempDir(), "convergo.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) { storetest.Run(t, newStore) }

// TestConformanceReopen reopens the same file, as a restarted server does.
func TestConformanceReopen(t *testing.T) {
	storetest.RunReopen(t, newStore, func(t testing.TB, s stores.Store) stores.Store {
		path := s.(*bolt.Store).Path()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s, err := bolt.Open(context.Background(), path, bolt.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func BenchmarkStore(b *testing.B) { storetest.Bench(b, newStore) }

// BenchmarkNoSync shows what fsync costs; NoSync is unsafe outside tests.
func BenchmarkNoSync(b *testing.B) {
	storetest.Bench(b, func(t testing.TB) stores.Store {
		s, err := bolt.Open(context.Background(), filepath.Join(t.TempDir(), "convergo.db"), bolt.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func set(id, field string, v any, wall int64) crdt.Change {
	b, err := crdt.EncodeValue(v)
	if err != nil {
		panic(err)
	}
	return crdt.Change{Collection: "todos", Record: crdt.SetField(id, field, b, crdt.Stamp{Wall: wall, Replica: "t"})}
}

func mustApply(t *testing.T, s *bolt.Store, cs ...crdt.Change) []stores.Result {
	t.Helper()
	res, err := s.Apply(context.Background(), cs)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestReopen checks that records, the log and heads survive Close and that
// sequence numbers continue where they stopped.
func TestReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "convergo.db")
	s, err := bolt.Open(context.Background(), path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, s, set("a", "title", "one", 1), set("b", "title", "two", 2), set("a", "title", "three", 3))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = bolt.Open(context.Background(), path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if h, err := s.Head(ctx, "todos"); err != nil || h != 3 {
		t.Fatalf("Head after reopen = %d, %v; want 3", h, err)
	}
	p, err := s.Pull(ctx, "todos", 0, stores.PageLimit{Records: 10, Bytes: stores.DefaultPageBytes})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Entries) != 2 || p.Entries[0].Record.ID != "b" || p.Entries[1].Record.ID != "a" || p.Entries[1].Seq != 3 {
		t.Fatalf("log after reopen: %+v, want b at 2 and a at 3", p.Entries)
	}
	want, _ := crdt.EncodeValue("three")
	if got := p.Entries[1].Record.Fields["title"].Value; string(got) != string(want) {
		t.Fatalf("a.title = %x, want %x", got, want)
	}
	if res := mustApply(t, s, set("c", "title", "four", 4)); res[0].Seq != 4 {
		t.Fatalf("first change after reopen took seq %d, want 4", res[0].Seq)
	}
}

func TestOpenOptions(t *testing.T) {
	dir := t.TempDir()
	if _, err := bolt.Open(context.Background(), filepath.Join(dir, "x.db"), bolt.Options{Timeout: -time.Second}); !errors.Is(err, stores.ErrInvalid) {
		t.Fatalf("negative Timeout: got %v, want ErrInvalid", err)
	}
	path := filepath.Join(dir, "locked.db")
	s, err := bolt.Open(context.Background(), path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	start := time.Now()
	if _, err := bolt.Open(context.Background(), path, bolt.Options{Timeout: 100 * time.Millisecond}); err == nil {
		t.Fatal("second Open of a locked file succeeded")
	} else if !errors.Is(err, bolt.ErrLocked) {
		t.Fatalf("second Open of a locked file: %v, want ErrLocked", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("second Open waited %s with a timeout of 100ms", d)
	}
}

// TestForeignFiles checks that files this package did not write are
// refused.
func TestForeignFiles(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.db")
	if err := os.WriteFile(junk, []byte("this is not a bbolt file, not even close; "+string(make([]byte, 8192))), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := bolt.Open(context.Background(), junk, bolt.Options{Timeout: time.Second}); err == nil {
		s.Close()
		t.Fatal("Open of a junk file succeeded")
	}
	other := filepath.Join(dir, "other.db")
	db, err := bbolt.Open(other, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error { _, err := tx.CreateBucket([]byte("someone-else")); return err }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := bolt.Open(context.Background(), other, bolt.Options{}); !errors.Is(err, bolt.ErrCorrupt) {
		t.Fatalf("Open of another program's bbolt file: got %v, want ErrCorrupt", err)
	}
}

// TestCorrupt damages stored data behind the store's back and checks that
// every read reports ErrCorrupt instead of panicking or returning garbage.
func TestCorrupt(t *testing.T) {
	rec, _ := crdt.EncodeRecord(crdt.SetField("a", "f", []byte{0x01}, crdt.Stamp{Wall: 1, Replica: "t"}))
	seq := func(n uint64) []byte { return []byte{0, 0, 0, 0, 0, 0, 0, byte(n)} }
	for _, tc := range []struct {
		name         string
		bucket       string
		key, value   []byte
		get, pull    bool // which reads must fail
		head, update bool
	}{
		{"short entry", "r:todos", []byte("a"), []byte{0, 1}, true, true, false, true},
		{"zero seq", "r:todos", []byte("a"), append(seq(0), rec...), true, true, false, true},
		{"garbage record", "r:todos", []byte("a"), append(seq(1), 0xff, 0x00, 0x13), true, true, false, true},
		{"truncated record", "r:todos", []byte("a"), append(seq(1), rec[:len(rec)-1]...), true, true, false, true},
		{"record under another id", "r:todos", []byte("a"), append(seq(1), mustRecord(t, "b")...), true, true, false, true},
		{"value outside the value model", "r:todos", []byte("a"), append(seq(1), taggedValue(t)...), true, true, false, true},
		{"seq differs from log", "r:todos", []byte("a"), append(seq(7), rec...), false, true, false, false},
		{"log names a missing record", "l:todos", seq(9), []byte("ghost"), false, true, false, false},
		{"short log key", "l:todos", []byte{1}, []byte("a"), false, true, false, false},
		{"short head", "heads", []byte("todos"), []byte{1, 2}, false, false, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "convergo.db")
			s, err := bolt.Open(context.Background(), path, bolt.Options{})
			if err != nil {
				t.Fatal(err)
			}
			mustApply(t, s, crdt.Change{Collection: "todos", Record: crdt.SetField("a", "f", []byte{0x01}, crdt.Stamp{Wall: 1, Replica: "t"})})
			s.Close()

			db, err := bbolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Update(func(tx *bbolt.Tx) error {
				return tx.Bucket([]byte(tc.bucket)).Put(tc.key, tc.value)
			}); err != nil {
				t.Fatal(err)
			}
			db.Close()

			s, err = bolt.Open(context.Background(), path, bolt.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			check := func(what string, want bool, err error) {
				t.Helper()
				if want && !errors.Is(err, bolt.ErrCorrupt) {
					t.Fatalf("%s: got %v, want ErrCorrupt", what, err)
				}
				if !want && err != nil {
					t.Fatalf("%s: %v", what, err)
				}
			}
			_, err = s.Get(ctx, "todos", "a")
			check("Get", tc.get, err)
			_, err = s.Pull(ctx, "todos", 0, stores.PageLimit{Records: 10, Bytes: stores.DefaultPageBytes})
			check("Pull", tc.pull, err)
			_, err = s.Head(ctx, "todos")
			check("Head", tc.head, err)
			_, err = s.Apply(ctx, []crdt.Change{{Collection: "todos", Record: crdt.SetField("a", "f", []byte{0x02}, crdt.Stamp{Wall: 2, Replica: "t"})}})
			check("Apply", tc.update, err)
			// Other collections are unaffected.
			if _, err := s.Apply(ctx, []crdt.Change{{Collection: "notes", Record: crdt.SetField("a", "f", []byte{0x02}, crdt.Stamp{Wall: 2, Replica: "t"})}}); err != nil {
				t.Fatalf("Apply to another collection: %v", err)
			}
		})
	}
}

func mustRecord(t *testing.T, id string) []byte {
	b, err := crdt.EncodeRecord(crdt.SetField(id, "f", []byte{0x01}, crdt.Stamp{Wall: 1, Replica: "t"}))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// nonCanonical is a record whose value 1 is encoded in two bytes.
// taggedValue is a record whose value is tagged, which no encoding of the
// value model is. (A value merely not in deterministic encoding is read
// back normalized: decoding is liberal in values, see crdt.NormalizeValue.)
func taggedValue(t *testing.T) []byte {
	b := mustRecord(t, "a")
	// The record ends with the field's value 0x01; tag it: 0xc1 0x01.
	return append(b[:len(b)-1], 0xc1, 0x01)
}

// BenchmarkNoGroupCommit measures Apply with one transaction per call;
// compare its ApplyParallel10 with BenchmarkStore's.
func BenchmarkNoGroupCommit(b *testing.B) {
	storetest.Bench(b, func(t testing.TB) stores.Store {
		s, err := bolt.Open(context.Background(), filepath.Join(t.TempDir(), "convergo.db"), bolt.Options{})
		if err != nil {
			t.Fatal(err)
		}
		bolt.DisableGroupCommit(s)
		return s
	})
}

// TestRefusedBatchAmongOthers applies good batches concurrently with ones
// refused as too large: group commit must keep the refusal to its own batch.
func TestRefusedBatchAmongOthers(t *testing.T) {
	s := newStore(t).(*bolt.Store)
	defer s.Close()
	ctx := context.Background()
	big := make([]byte, crdt.MaxValueBytes-5)
	huge, err := crdt.EncodeValue(big)
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, s,
		crdt.Change{Collection: "todos", Record: crdt.SetField("big", "a", huge, crdt.Stamp{Wall: 1, Replica: "t"})},
		crdt.Change{Collection: "todos", Record: crdt.SetField("big", "b", huge, crdt.Stamp{Wall: 1, Replica: "t"})},
	)
	const writers = 8
	errs := make(chan error, writers)
	for w := range writers {
		go func() {
			for i := range 20 {
				var cs []crdt.Change
				if w == 0 {
					// A third large field breaks crdt.MaxRecordBytes.
					cs = []crdt.Change{{Collection: "todos", Record: crdt.SetField("big", fmt.Sprint("c", i), huge, crdt.Stamp{Wall: 2, Replica: "t"})}}
				} else {
					cs = []crdt.Change{set(fmt.Sprintf("w%d-%d", w, i), "title", i, 1)}
				}
				_, err := s.Apply(ctx, cs)
				switch {
				case w == 0 && !errors.Is(err, stores.ErrTooLarge):
					errs <- fmt.Errorf("oversized batch: got %v, want ErrTooLarge", err)
					return
				case w != 0 && err != nil:
					errs <- fmt.Errorf("writer %d: %v", w, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range writers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	h, err := s.Head(ctx, "todos")
	if err != nil {
		t.Fatal(err)
	}
	if want := uint64(2 + (writers-1)*20); h != want {
		t.Fatalf("Head = %d, want %d: the good batches each took one seq", h, want)
	}
	e, err := s.Get(ctx, "todos", "big")
	if err != nil || len(e.Record.Fields) != 2 {
		t.Fatalf("big record: %d fields, %v; want the 2 it had", len(e.Record.Fields), err)
	}
}
