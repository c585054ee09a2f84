package transport

import (
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// A store that is lost and replaced resets every reader, and readers give
// back what it lost: their own writes by push, anyone's records as the
// server sealed them by restore, a reader without write access too. A
// record that is not exactly as the server sealed it is refused.
func TestResetAndRestoreAfterTheStoreIsLost(t *testing.T) {
	key := []byte("a seal key of 32 bytes, for tests")
	old := newTestServer(t, func(c *Config) { c.SealKey = key })
	alice := old.token(t, "alice", []string{"notes"}, []string{"notes"})
	old.push(t, alice, change(t, "notes", "r1", "title", "milk"), change(t, "notes", "r2", "title", "eggs"))
	a := old.post(t, proto.PathPull, alice, proto.PullRequest{Collection: "notes"})
	var page proto.PullResponse
	if err := proto.Decode(a.body, &page); err != nil || len(page.Records) != 2 || len(page.Seals) != 2 {
		t.Fatalf("pull: %d records, %d seals (%v)", len(page.Records), len(page.Seals), err)
	}

	// The same servers' key on a new, empty store: the old cursor is of
	// another history.
	fresh := newTestServer(t, func(c *Config) { c.SealKey = key })
	reader := fresh.token(t, "reader", []string{"notes"}, nil)
	a = fresh.post(t, proto.PathPull, reader, proto.PullRequest{Collection: "notes", Cursor: page.Next})
	var reset proto.PullResponse
	if err := proto.Decode(a.body, &reset); err != nil || reset.Reset == nil || reset.Reset.Reason != proto.ResetHistoryLost || len(reset.Records) != 0 || len(reset.Next) != 0 {
		t.Fatalf("pull with the old cursor: %+v (%v)", reset, err)
	}

	// A reader gives back the records as they were sealed; one altered
	// record and one of another collection are refused.
	sealed := []proto.SealedRecord{{Record: page.Records[0], Seal: page.Seals[0]}, {Record: page.Records[1], Seal: page.Seals[1]}}
	altered := page.Records[1].Clone()
	f := altered.Fields["title"]
	f.Value = mustValue(t, "caviar")
	altered.Fields["title"] = f
	sealed = append(sealed, proto.SealedRecord{Record: altered, Seal: page.Seals[1]})
	a = fresh.post(t, proto.PathRestore, reader, proto.RestoreRequest{Collection: "notes", Records: sealed})
	var res proto.RestoreResponse
	if err := proto.Decode(a.body, &res); err != nil || len(res.Results) != 3 {
		t.Fatalf("restore: %d %x (%v)", a.status, a.body, err)
	}
	if res.Results[0].Status != proto.StatusApplied || res.Results[1].Status != proto.StatusApplied ||
		res.Results[2].Status != proto.StatusRefused || res.Results[2].Code != proto.CodeBadSeal {
		t.Fatalf("restore results: %+v", res.Results)
	}
	// Restoring again is idempotent.
	a = fresh.post(t, proto.PathRestore, reader, proto.RestoreRequest{Collection: "notes", Records: sealed[:2]})
	if err := proto.Decode(a.body, &res); err != nil || res.Results[0].Status != proto.StatusDuplicate {
		t.Fatalf("restore again: %+v (%v)", res.Results, err)
	}
	got := fresh.pull(t, reader, "notes", 0)
	if len(got.Records) != 2 || !got.Records[0].Equal(page.Records[0]) && !got.Records[0].Equal(page.Records[1]) {
		t.Fatalf("the new store holds %+v", got.Records)
	}
	// A seal is bound to its collection, and restoring needs read access.
	other := fresh.token(t, "other", []string{"*"}, nil)
	a = fresh.post(t, proto.PathRestore, other, proto.RestoreRequest{Collection: "elsewhere", Records: sealed[:1]})
	if err := proto.Decode(a.body, &res); err != nil || res.Results[0].Code != proto.CodeBadSeal {
		t.Fatalf("a seal moved to another collection: %+v (%v)", res.Results, err)
	}
	nobody := fresh.token(t, "nobody", []string{"x"}, nil)
	if a := fresh.post(t, proto.PathRestore, nobody, proto.RestoreRequest{Collection: "notes", Records: sealed[:1]}); a.status != 403 {
		t.Fatalf("restore without read access: %d", a.status)
	}
	_ = crdt.Record{}
}

// A subscription whose cursor is of another history ends with a reset
// message, not a resync: the client pulls from the beginning.
func TestLiveReset(t *testing.T) {
	old := newTestServer(t, func(c *Config) { c.Demo = true })
	old.push(t, "", change(t, DemoCollection, "r1", "x", 1))
	page := old.pull(t, "", DemoCollection, 0)
	fresh := newTestServer(t, func(c *Config) { c.Demo = true })
	c, _ := fresh.open(t, "")
	c.send(proto.Sub{Collection: DemoCollection, Cursor: page.Next})
	m, ok := c.recv().(proto.Reset)
	if !ok || m.Collection != DemoCollection || m.Reason != proto.ResetHistoryLost {
		t.Fatalf("got %+v, want a reset", m)
	}
	// Subscribing again from the beginning works.
	c.send(proto.Sub{Collection: DemoCollection})
	if ch, ok := c.recv().(proto.Changes); !ok || len(ch.Records) != 0 || ch.More {
		t.Fatalf("after the reset: %+v", ch)
	}
}

// A record the server holds may carry a logical counter above the one a
// push may (docs/protocol.md, section 3: up to 2^32-1, written before
// pushes were bounded). Its seal proves the server held it, so after the
// store is lost it is given back like any other, not refused invalid.
func TestRestoreHeldLogicalCounter(t *testing.T) {
	key := []byte("a seal key of 32 bytes, for tests")
	old := newTestServer(t, func(c *Config) { c.SealKey = key })
	alice := old.token(t, "alice", []string{"notes"}, []string{"notes"})
	held := crdt.SetField("r1", "title", mustValue(t, "kept"),
		crdt.Stamp{Wall: time.Now().Add(-time.Hour).UnixMilli(), Logical: crdt.MaxIssuedLogical + 10, Replica: "c1"})
	if _, err := old.store.Apply(t.Context(), []crdt.Change{{Collection: "notes", Record: held}}); err != nil {
		t.Fatal(err)
	}
	page := old.pull(t, alice, "notes", 0)
	if len(page.Records) != 1 || len(page.Seals) != 1 {
		t.Fatalf("pull: %d records, %d seals", len(page.Records), len(page.Seals))
	}
	fresh := newTestServer(t, func(c *Config) { c.SealKey = key })
	a := fresh.post(t, proto.PathRestore, fresh.token(t, "reader", []string{"notes"}, nil),
		proto.RestoreRequest{Collection: "notes", Records: []proto.SealedRecord{{Record: page.Records[0], Seal: page.Seals[0]}}})
	var res proto.RestoreResponse
	if err := proto.Decode(a.body, &res); err != nil || len(res.Results) != 1 {
		t.Fatalf("restore: %d %v", a.status, err)
	}
	if res.Results[0].Status != proto.StatusApplied {
		t.Fatalf("restore of a held record: %+v", res.Results[0])
	}
	// A push of the same stamp is still refused.
	if r := fresh.push(t, alice, crdt.Change{Collection: "notes", Record: crdt.SetField("r2", "title", mustValue(t, "x"),
		crdt.Stamp{Wall: time.Now().UnixMilli(), Logical: crdt.MaxIssuedLogical + 1, Replica: ownReplica})}); r[0].Code != proto.CodeInvalid {
		t.Fatalf("push of a logical counter above %d: %+v", crdt.MaxIssuedLogical, r[0])
	}
}

// The welcome is the first message of a session (docs/protocol.md,
// section 9): a reset owed to a sub the client sent right behind its
// hello, without waiting for the welcome, follows the welcome. A reset is
// owed outside the queue, and must still not overtake what the queue
// held before it.
func TestLiveResetAfterWelcome(t *testing.T) {
	old := newTestServer(t, func(c *Config) { c.Demo = true })
	old.push(t, "", change(t, DemoCollection, "r1", "x", 1))
	page := old.pull(t, "", DemoCollection, 0)
	fresh := newTestServer(t, func(c *Config) { c.Demo = true })
	for i := range 100 {
		c, _, err := fresh.dial(t, nil)
		if err != nil {
			t.Fatal(err)
		}
		c.send(proto.Hello{Protocol: proto.Version, Replica: "c1"})
		c.send(proto.Sub{Collection: DemoCollection, Cursor: page.Next})
		if m := c.recv(); m.MessageType() != proto.TypeWelcome {
			t.Fatalf("session %d: first message %s %+v, want welcome", i, m.MessageType(), m)
		}
		if m, ok := c.recv().(proto.Reset); !ok || m.Reason != proto.ResetHistoryLost {
			t.Fatalf("session %d: got %+v after the welcome, want a reset", i, m)
		}
		c.ws.CloseNow()
	}
}

// A restore's record list (key 2) is required, as a push's change list
// is: a body without it, or with null there, is malformed, not a restore
// of no records. Only an empty list is that (the clients' probe before a
// record refused whole is settled, section 8).
func TestRestoreWithoutItsRecordList(t *testing.T) {
	ts := newTestServer(t, nil)
	reader := ts.token(t, "reader", []string{"notes"}, nil)
	for _, tc := range []struct {
		name string
		body map[int]any
		code string // "" when the answer is {1: []}
	}{
		{"without key 2", map[int]any{1: "notes"}, proto.CodeMalformed},
		{"key 2 null", map[int]any{1: "notes", 2: nil}, proto.CodeMalformed},
		{"no records", map[int]any{1: "notes", 2: []any{}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := ts.post(t, proto.PathRestore, reader, tc.body)
			if tc.code != "" {
				if a.status != 400 || a.errorCode(t) != tc.code {
					t.Fatalf("status %d %x, want 400 %s", a.status, a.body, tc.code)
				}
				return
			}
			var res proto.RestoreResponse
			if err := proto.Decode(a.body, &res); a.status != 200 || err != nil || res.Results == nil || len(res.Results) != 0 {
				t.Fatalf("status %d %x (%v), want 200 {1: []}", a.status, a.body, err)
			}
		})
	}
}
