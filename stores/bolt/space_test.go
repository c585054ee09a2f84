package bolt

import (
	"context"
	"path/filepath"
	"testing"

	bbolt "go.etcd.io/bbolt"

	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/storetest"
)

// BenchmarkSpace: storetest.BenchSpace on bolt (NoSync), whose live bytes
// are the pages in use: the file's size as a transaction sees it less the
// free and pending pages of bbolt's freelist (CONVERGO_SPACE_BENCH=1).
func BenchmarkSpace(b *testing.B) {
	storetest.BenchSpace(b, func(t testing.TB) stores.Store {
		s, err := Open(context.Background(), filepath.Join(b.TempDir(), "space.db"), Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}, func(t testing.TB, s stores.Store) int64 {
		db := s.(*Store).db
		var size int64
		if err := db.View(func(tx *bbolt.Tx) error { size = tx.Size(); return nil }); err != nil {
			t.Fatal(err)
		}
		st := db.Stats()
		return size - int64(st.FreePageN+st.PendingPageN)*int64(db.Info().PageSize)
	}, 1_000_000, 100_000)
}
