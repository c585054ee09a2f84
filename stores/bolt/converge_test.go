package bolt_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/bolt"
	"github.com/convergo/convergo/stores/storetest"
)

// TestConverge runs the engine convergence simulation on a bolt file.
func TestConverge(t *testing.T) {
	storetest.Converge(t, func(t testing.TB) stores.Store {
		s, err := bolt.Open(context.Background(), filepath.Join(t.TempDir(), "convergo.db"), bolt.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
