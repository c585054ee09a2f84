package bolt_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/convergo/convergo/stores/bolt"
)

// Open takes a context: a done one fails at once, and a deadline bounds the
// wait for a file another store holds.
func TestOpenContext(t *testing.T) {
	path := filepath.Join(t.TempDir(), "convergo.db")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := bolt.Open(ctx, path, bolt.Options{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	s, err := bolt.Open(context.Background(), path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := bolt.Open(ctx, path, bolt.Options{Timeout: time.Minute}); err == nil {
		t.Fatal("opened a file another store holds")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Open waited %v past its context's deadline of 200ms", d)
	}
}
