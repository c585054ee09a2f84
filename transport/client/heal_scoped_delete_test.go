package client_test

import (
	"fmt"
	"testing"

	"github.com/convergo/convergo/transport/client"
)

// TestHealKeepsScopedDeletes: a replica that reads a scope deletes a
// record of it after a backup was taken and pulls on, so the server's
// leave entry drops the record from it; the backup is restored. No
// replica holds the record's tombstone, yet the delete the server
// acknowledged must not be undone by the heal.
func TestHealKeepsScopedDeletes(t *testing.T) {
	s := newLossServer(t, true)
	home := s.replica("sam", true, client.ReplicaConfig{}, readsHome(t))
	for i := range 3 {
		set(t, home, fmt.Sprint("n", i), "list", "home")
	}
	syncAll(t, home)
	restore := s.backup(true)
	if err := home.Delete("notes", "n1"); err != nil {
		t.Fatal(err)
	}
	syncAll(t, home, home)
	if rec, ok := home.Get("notes", "n1"); ok && rec.Exists() {
		t.Fatalf("n1 is still shown after its delete was pulled: %v", rec)
	}
	want := union(home)
	s.restart(restore)
	syncAll(t, home, home)
	if rec, ok := s.served(t)["n1"]; ok && rec.Exists() {
		t.Errorf("n1, deleted and acknowledged before the loss, is back on the server: %v", rec)
	}
	if d := sameRecords(home.Records("notes"), want); d != "" {
		t.Errorf("sam after the heal:\n%s", d)
	}
}
