package bolt_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	bbolt "go.etcd.io/bbolt"

	"github.com/convergo/convergo/stores/bolt"
)

// TestNewerFormat opens a file whose format mark names a later format of
// this store, as a newer Convergo would leave it (an operator rolling a
// server back after an upgrade): Open refuses it, saying that a newer
// Convergo wrote it and which format this build reads, not that the file
// is corrupt, which would send the operator to restore a backup of a
// healthy file. A mark that is not this store's format at all is still
// corrupt.
func TestNewerFormat(t *testing.T) {
	for _, tc := range []struct {
		mark   string
		newer  bool
		saying string
	}{
		{"convergo-bolt-2", true, "newer"},
		{"convergo-bolt-17", true, "newer"},
		{"convergo-bolt-0", false, "file format"},
		{"convergo-bolt-x", false, "file format"},
		{"something-else", false, "file format"},
	} {
		t.Run(tc.mark, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "convergo.db")
			s, err := bolt.Open(context.Background(), path, bolt.Options{})
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			db, err := bbolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Update(func(tx *bbolt.Tx) error {
				return tx.Bucket([]byte("meta")).Put([]byte("format"), []byte(tc.mark))
			}); err != nil {
				t.Fatal(err)
			}
			db.Close()
			s, err = bolt.Open(context.Background(), path, bolt.Options{})
			if err == nil {
				s.Close()
				t.Fatalf("Open of a file marked %q succeeded", tc.mark)
			}
			if got := errors.Is(err, bolt.ErrCorrupt); got == tc.newer {
				t.Errorf("Open of a file marked %q: got %v (ErrCorrupt: %v), want ErrCorrupt %v", tc.mark, err, got, !tc.newer)
			}
			if !strings.Contains(err.Error(), tc.saying) || !strings.Contains(err.Error(), tc.mark) {
				t.Errorf("Open of a file marked %q: got %q, want it to say %q and name the mark", tc.mark, err, tc.saying)
			}
		})
	}
}
