package bolt

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestCloseReportsTheNote: Close returns the error of closing the note
// beside the file, and still closes the file. The only close error a test
// can provoke on a local file system is that of a file already closed, so
// the note is closed under the store.
func TestCloseReportsTheNote(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "convergo.db")
	s, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s.seen == nil {
		t.Fatal("no note open")
	}
	if err := s.seen.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Close with the note's file closed under it: %v, want an error wrapping %v", err, os.ErrClosed)
	}
	again, err := Open(ctx, path, Options{Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("open after Close: %v (the file still locked?)", err)
	}
	if err := again.Close(); err != nil {
		t.Fatalf("Close of a store whose note closes: %v", err)
	}
}
