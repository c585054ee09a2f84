package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/convergo/convergo/stores/bolt"
)

// TestStoreMarkRestored: the restore procedure's command starts a new
// epoch, history lost, of every collection of a bolt file, and keeps the
// identity.
func TestStoreMarkRestored(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "convergo.db")
	st, err := bolt.Open(context.Background(), path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	id, _ := st.Identity(ctx)
	before, _ := st.Meta(ctx, "todos")
	st.Close()

	var out, errOut bytes.Buffer
	if err := run(ctx, []string{"store", "mark-restored", "--store", "bolt:" + path}, &out, &errOut); err != nil {
		t.Fatalf("mark-restored: %v\n%s", err, errOut.String())
	}
	if !strings.Contains(out.String(), id) {
		t.Fatalf("output %q does not name the store %s", out.String(), id)
	}
	st, err = bolt.Open(context.Background(), path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	after, _ := st.Meta(ctx, "todos")
	if after.Epoch <= before.Epoch || before.Epoch >= after.Lost {
		t.Fatalf("Meta went from %+v to %+v; want a new epoch of lost history", before, after)
	}
	out.Reset()
	if err := run(ctx, []string{"store", "identity", "--store", "bolt:" + path}, &out, &errOut); err == nil {
		t.Fatal("identity on a file another store holds open: no error")
	}
	if err := run(ctx, []string{"store", "mark-restored", "--store", "memory:"}, &out, &errOut); err == nil {
		t.Fatal("mark-restored on memory: no error")
	}
}
