package client_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt/migrate"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/transport/client"
)

// TestHealBackupOfARecordWrittenBeforeAMigration: a writer wrote a note's
// title long ago (before the write horizon) and its body after the
// store's last backup, then went away. The store is put back from the
// backup as the server restarts with a migration that renames title to
// name. A reader of version 1, which holds the note whole, gives it back
// (a restore at version 1, translated up): the title it carries is held
// by the store under its old name, so the body the store lost is taken
// back with it rather than the record refused collected, and lost for
// good with its writer gone.
func TestHealBackupOfARecordWrittenBeforeAMigration(t *testing.T) {
	ctx := t.Context()
	var now atomic.Int64
	now.Store(time.Now().UnixMilli())
	rules := func(migrations string) []engine.Rule {
		rs, err := engine.ParseRules([]byte(`{"notes": {"maxOffline": "1h"` + migrations + `}}`))
		if err != nil {
			t.Fatal(err)
		}
		return rs
	}
	s := newLossServer(t, true)
	s.rules, s.now = rules(""), func() time.Time { return time.UnixMilli(now.Load()) }
	s.restart(nil)
	collect := func() engine.CollectReport {
		s.mu.Lock()
		eng := s.cur.eng
		s.mu.Unlock()
		reps, err := eng.Collect(ctx)
		if err != nil || len(reps) != 1 {
			t.Fatalf("Collect = %v, %v; want one report", reps, err)
		}
		return reps[0]
	}
	v1, err := migrate.Parse([]byte(`{"version": 1, "steps": []}`))
	if err != nil {
		t.Fatal(err)
	}
	writer := s.replica("writer", true, client.ReplicaConfig{}, nil)
	reader := s.replica("reader", false, client.ReplicaConfig{}, func(c *client.Config) {
		c.Migrations = map[string]*migrate.Definition{"notes": v1}
	})
	set(t, writer, "n", "title", "T")
	syncAll(t, writer, reader)
	collect()
	now.Add((2 * time.Hour).Milliseconds())
	syncAll(t, reader)
	title := writer.Records("notes")["n"].Fields["title"].Stamp
	if rep := collect(); rep.Horizon.Wall <= title.Wall {
		t.Fatalf("write horizon %d; want it past the title, stamped at %d", rep.Horizon.Wall, title.Wall)
	}
	restore := s.backup(true)
	if _, err := writer.Client().Hello(ctx); err != nil {
		t.Fatal(err)
	}
	set(t, writer, "n", "body", "B")
	syncAll(t, writer, reader)
	writer.Close()

	s.rules = rules(`, "migrations": {"version": 2, "steps": [{"to": 2, "ops": [{"op": "rename", "from": "title", "to": "name"}]}]}`)
	s.restart(restore)
	syncAll(t, reader, reader)
	n, ok := s.served(t)["n"]
	if !ok {
		t.Fatal("the server lost the note")
	}
	for _, f := range []string{"name", "body"} {
		if _, ok := n.Values()[f]; !ok {
			t.Errorf("the server's note has no %s: %v", f, n)
		}
	}
}
