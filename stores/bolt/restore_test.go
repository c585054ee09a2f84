package bolt

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/storetest"
)

// TestBumps runs the kit's bump checks; a restore puts back the file's
// store-wide epoch and the collection's epochs as they were when saved
// (nil: missing), the part of a copy of the file put back that they read.
func TestBumps(t *testing.T) {
	storetest.RunBumps(t, func(t testing.TB, now func() time.Time) stores.Store {
		s, err := Open(context.Background(), filepath.Join(t.TempDir(), "convergo.db"), Options{Now: now})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}, func(t testing.TB, st stores.Store, coll string) func() {
		s := st.(*Store)
		var epoch, epochs []byte
		err := s.view(func(tx *bbolt.Tx) error {
			epoch = bytes.Clone(tx.Bucket(metaBucket).Get(epochKey))
			if b := tx.Bucket(epochsBucket); b != nil {
				epochs = bytes.Clone(b.Get([]byte(coll)))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return func() {
			err := s.update(func(tx *bbolt.Tx) error {
				put := func(b *bbolt.Bucket, k, v []byte) error {
					if v == nil {
						return b.Delete(k)
					}
					return b.Put(k, v)
				}
				if err := put(tx.Bucket(metaBucket), epochKey, epoch); err != nil {
					return err
				}
				b, err := tx.CreateBucketIfNotExists(epochsBucket)
				if err != nil {
					return err
				}
				return put(b, []byte(coll), epochs)
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	})
}

// TestEpochsOfACopyPutBack: a copy of the file taken before bumps is put
// back and bumped again later, the way `convergo store mark-restored` and
// the engine's proofs bump. No epoch of the new history may be one the
// lost history had: a cursor of it would pass for a cursor of the new one.
func TestEpochsOfACopyPutBack(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "convergo.db")
	at := time.Unix(1_764_892_800, 0)
	open := func() *Store {
		t.Helper()
		s, err := Open(ctx, path, Options{Now: func() time.Time { return at }})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	meta := func(s *Store, c string) stores.Meta {
		t.Helper()
		m, err := s.Meta(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	s := open()
	meta(s, "a")
	s.Close()
	backup, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		bump func(*Store) error
	}{
		{"BumpEpochs", func(s *Store) error { return s.BumpEpochs(ctx) }},
		{"BumpEpochsFrom", func(s *Store) error {
			_, err := s.BumpEpochsFrom(ctx, stores.StoreEpochOf(meta(s, "a")))
			return err
		}},
		{"BumpEpoch history lost", func(s *Store) error { return s.BumpEpoch(ctx, "a", stores.HistoryLost) }},
		{"BumpEpoch rebuilt", func(s *Store) error { return s.BumpEpoch(ctx, "a", stores.Rebuilt) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var lost stores.Meta
			for i := range 2 {
				if err := os.WriteFile(path, backup, 0o600); err != nil {
					t.Fatal(err)
				}
				s := open()
				if err := tt.bump(s); err != nil {
					t.Fatal(err)
				}
				m := meta(s, "a")
				s.Close()
				at = at.Add(time.Minute)
				if i == 0 {
					lost = m
					continue
				}
				if m.Epoch <= lost.Epoch {
					t.Errorf("the copy put back and bumped again has epoch %#x, want above the lost history's %#x", m.Epoch, lost.Epoch)
				}
			}
		})
	}
}
