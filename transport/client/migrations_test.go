package client_test

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt/migrate"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/transport/client"
	"github.com/convergo/convergo/transport/proto"
)

// TestRealServerSchemaVersions: a Replica of version 1 on a server whose
// notes are at version 2 writes and reads in its own shape; a change the
// migration cannot map is rejected untranslatable and rolled back; a
// Replica of a version ahead of the server keeps its outbox and fails
// its sync with ErrSchemaAhead.
func TestRealServerSchemaVersions(t *testing.T) {
	const v2 = `{"version": 2, "steps": [{"to": 2, "ops": [
		{"op": "rename", "from": "title", "to": "name"},
		{"op": "split", "from": "who", "to": ["first", "last"], "sep": " "}]}]}`
	rules, err := engine.ParseRules([]byte(`{"notes": {"migrations": ` + v2 + `}}`))
	if err != nil {
		t.Fatal(err)
	}
	eng, url, auth := realServer(t, rules...)
	token, err := auth.Issue("gina", []string{"notes"}, []string{"notes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	versioned := func(device, def string) *client.Replica {
		d, err := migrate.Parse([]byte(def))
		if err != nil {
			t.Fatal(err)
		}
		c, err := client.New(client.Config{URL: url, Token: token, Device: device,
			Backoff:    client.Backoff{Initial: time.Millisecond, Max: 5 * time.Millisecond, MaxAttempts: 2},
			Migrations: map[string]*migrate.Definition{"notes": d}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Hello(t.Context()); err != nil {
			t.Fatal(err)
		}
		r, err := client.NewReplica(c, client.ReplicaConfig{Collections: []string{"notes"}})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	old := versioned("old", `{"version": 1, "steps": []}`)
	if err := old.Set("notes", "ok", "title", "kept"); err != nil {
		t.Fatal(err)
	}
	if err := old.Set("notes", "bad", "who", 42); err != nil {
		t.Fatal(err)
	}
	if err := old.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	rej := old.Rejected()
	if len(rej) != 1 || rej[0].RecordID != "bad" || rej[0].Code != proto.CodeUntranslatable || !errors.Is(rej[0].Err(), client.ErrUntranslatable) {
		t.Fatalf("rejected %+v, want bad refused untranslatable", rej)
	}
	if got := held(old); !slices.Equal(got, []string{"ok"}) {
		t.Fatalf("held %v, want [ok]", got)
	}
	if rec, ok := old.Get("notes", "ok"); !ok || !bytes.Equal(rec.Fields["title"].Value, []byte("\x64kept")) {
		t.Fatalf("the version 1 replica holds %v", rec)
	}
	if got, err := eng.Get(t.Context(), "notes", "ok"); err != nil || got["name"] != "kept" {
		t.Fatalf("the server holds %v (%v), want name kept", got, err)
	}

	ahead := versioned("ahead", `{"version": 3, "steps": [{"to": 2, "ops": []}, {"to": 3, "ops": []}]}`)
	if err := ahead.Set("notes", "later", "title", "waits"); err != nil {
		t.Fatal(err)
	}
	if err := ahead.Sync(t.Context()); !errors.Is(err, client.ErrSchemaAhead) {
		t.Fatalf("sync ahead of the server: got %v, want ErrSchemaAhead", err)
	}
	if len(ahead.Pending()) != 1 || len(ahead.Rejected()) != 0 {
		t.Fatalf("ahead: outbox %d, rejected %d; want the change kept", len(ahead.Pending()), len(ahead.Rejected()))
	}
}
