package transport

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// ownedV2 scopes todos to their owner, whose field version 2 renamed:
// version 1 writes owner, the scope reads ownerId.
const ownedV2 = `{"todos": {"scope": "ownerId == $sub",
	"migrations": {"version": 2, "steps": [{"to": 2, "ops": [{"op": "rename", "from": "owner", "to": "ownerId"}]}]}}}`

// bobsID and bobsSecret are what mallory must never read or change.
const (
	bobsID     = "bob-private-record"
	bobsSecret = "bob-secret-value"
)

// Mallory, who may write todos under the scope ownerId == $sub, tries
// every way of changing or creating a record outside it: over HTTP and
// over a live session, in either schema version, with an edit, a delete,
// an unset, a delete that re-creates the record as hers, a field of the
// old shape stamped newer than the scoped one, and a create outside. Each
// is refused out_of_scope, its message names nothing of bob's record, and
// bob's record is as he wrote it.
func TestAttackWriteOutsideScope(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.withRules(t, ownedV2)
	bob := ts.token(t, "bob", []string{"todos"}, []string{"todos"})
	mallory := ts.token(t, "mallory", []string{"todos"}, []string{"todos"})
	if res := ts.push(t, bob, set(t, "todos", bobsID, map[string]any{"ownerId": "bob", "title": bobsSecret})); res[0].Status != proto.StatusApplied {
		t.Fatalf("bob's push: %+v", res[0])
	}
	before, err := ts.eng.GetRecord(context.Background(), "todos", bobsID)
	if err != nil {
		t.Fatal(err)
	}
	owner := func(v uint64) string { // the owner field in version v
		if v == 1 {
			return "owner"
		}
		return "ownerId"
	}
	attacks := func(v uint64) map[string]crdt.Change {
		now := time.Now().UnixMilli()
		del := crdt.DeleteRecord(bobsID, crdt.Stamp{Wall: now, Logical: 1, Replica: ownReplica})
		recreate := crdt.DeleteRecord(bobsID, crdt.Stamp{Wall: now, Logical: 1, Replica: ownReplica})
		recreate.Fields = map[string]crdt.Field{
			owner(v): {Stamp: crdt.Stamp{Wall: now, Logical: 2, Replica: ownReplica}, Value: mustValue(t, "mallory")},
			"title":  {Stamp: crdt.Stamp{Wall: now, Logical: 2, Replica: ownReplica}, Value: mustValue(t, "taken")},
		}
		out := map[string]crdt.Change{
			"edit":              set(t, "todos", bobsID, map[string]any{"title": "edited"}),
			"delete":            {Collection: "todos", Record: del},
			"unset":             {Collection: "todos", Record: crdt.UnsetField(bobsID, "title", crdt.Stamp{Wall: now, Logical: 3, Replica: ownReplica})},
			"delete and create": {Collection: "todos", Record: recreate},
			"take over":         set(t, "todos", bobsID, map[string]any{owner(v): "mallory"}),
			"create outside":    set(t, "todos", "mallory-gift", map[string]any{owner(v): "bob", "title": "gift"}),
		}
		if v == 2 {
			// The old shape's field, newer than the scoped one: resolving
			// makes it the owner.
			out["old shape"] = set(t, "todos", bobsID, map[string]any{"owner": "mallory"})
		}
		return out
	}
	check := func(how, name string, r proto.PushResult) {
		t.Helper()
		if r.Status != proto.StatusRefused || r.Code != proto.CodeOutOfScope {
			t.Errorf("%s %s: %+v, want refused %s", how, name, r, proto.CodeOutOfScope)
		}
		if strings.Contains(r.Message, bobsSecret) || strings.Contains(r.Message, "title") {
			t.Errorf("%s %s: the message tells of bob's record: %q", how, name, r.Message)
		}
	}
	for _, v := range []uint64{1, 2} {
		for name, c := range attacks(v) {
			a := ts.post(t, proto.PathPush, mallory, proto.PushRequest{Replica: "c1", Changes: []crdt.Change{c},
				Versions: map[string]uint64{"todos": v}})
			var res proto.PushResponse
			if err := proto.Decode(a.body, &res); err != nil || a.status != http.StatusOK || len(res.Results) != 1 {
				t.Fatalf("HTTP push v%d %s: %d %v", v, name, a.status, err)
			}
			check("HTTP v"+string(rune('0'+v)), name, res.Results[0])
		}
		c, s := ts.openPusher(t, mallory)
		for name, ch := range attacks(v) {
			c.send(proto.PushLive{Changes: ts.bind(t, mallory, []crdt.Change{ch}), Session: s,
				Versions: map[string]uint64{"todos": v}})
			p := recvPushed(t, c)
			if len(p.Results) != 1 {
				t.Fatalf("live push v%d %s: %+v", v, name, p)
			}
			check("live v"+string(rune('0'+v)), name, p.Results[0])
		}
	}
	after, err := ts.eng.GetRecord(context.Background(), "todos", bobsID)
	if err != nil || !after.Record.Equal(before.Record) {
		t.Errorf("bob's record changed: %+v, was %+v (%v)", after.Record, before.Record, err)
	}
	if gift, err := ts.eng.Get(context.Background(), "todos", "mallory-gift"); err == nil && gift != nil {
		t.Errorf("mallory created a record outside her scope: %+v", gift)
	}
}

// Mallory reads todos in either version, by pull and live sub, with and
// without a scope of her own that asks for everything: no page or frame
// carries bob's record id or any of its values.
func TestAttackReadOutsideScope(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.withRules(t, ownedV2)
	bob := ts.token(t, "bob", []string{"todos"}, []string{"todos"})
	mallory := ts.token(t, "mallory", []string{"todos"}, []string{"todos"})
	ts.push(t, mallory, set(t, "todos", "mallorys", map[string]any{"ownerId": "mallory", "title": "hers"}))
	// Bob's record was hers once: moved out, it is a leave for her.
	ts.push(t, bob, set(t, "todos", bobsID, map[string]any{"ownerId": "bob", "title": bobsSecret}))
	all := mustScope(t, `ownerId == "bob"`).Encode()
	leaks := func(b []byte) bool {
		return bytes.Contains(b, []byte(bobsID)) || bytes.Contains(b, []byte(bobsSecret))
	}
	for _, v := range []uint64{1, 2} {
		for _, own := range [][]byte{nil, all} {
			var cursor []byte
			for pages := 0; ; pages++ {
				a := ts.post(t, proto.PathPull, mallory, proto.PullRequest{Collection: "todos", Cursor: cursor, Scope: own, Version: v})
				if a.status != http.StatusOK {
					t.Fatalf("pull: %d %s", a.status, a.errorCode(t))
				}
				if leaks(a.body) {
					t.Fatalf("pull v%d (own scope %x) carries bob's record", v, own)
				}
				var p proto.PullResponse
				if err := proto.Decode(a.body, &p); err != nil {
					t.Fatal(err)
				}
				if cursor = p.Next; !p.More || pages > 5 {
					break
				}
			}
			c, _ := ts.open(t, mallory)
			c.send(proto.Sub{Collection: "todos", Scope: own, Version: v})
			m := c.recv()
			if ch, ok := m.(proto.Changes); ok {
				for _, r := range ch.Records {
					if r.ID == bobsID {
						t.Fatalf("live v%d: bob's record", v)
					}
				}
			}
			// A change of bob's while she is subscribed.
			ts.push(t, bob, set(t, "todos", bobsID, map[string]any{"title": bobsSecret + "!"}))
			for {
				m, err := c.recvErr(2 * time.Second)
				if err != nil {
					break
				}
				ch, ok := m.(proto.Changes)
				if !ok {
					continue
				}
				for _, r := range ch.Records {
					if r.ID == bobsID || strings.Contains(string(crdt.AppendRecord(nil, r)), bobsSecret) {
						t.Fatalf("live v%d: bob's record in a frame", v)
					}
				}
				if len(ch.Leaves) > 0 {
					break // told that something left, and nothing more
				}
			}
		}
	}
}

// A push names a schema version per collection (key 3), also of
// collections it has no change of: one the principal may not write tells
// it nothing, neither by schema_ahead nor by the current version in the
// message. The push is answered as without that key.
func TestAttackSchemaVersionOfAnotherTenant(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.withRules(t, `{"tenantb.notes": {"migrations": {"version": 3, "steps": [
		{"to": 2, "ops": [{"op": "rename", "from": "a", "to": "b"}]},
		{"to": 3, "ops": [{"op": "rename", "from": "b", "to": "c"}]}]}}}`)
	mallory := ts.token(t, "mallory", []string{"tenanta.notes"}, []string{"tenanta.notes"})
	for _, v := range []uint64{2, 3, 4, 99} {
		a := ts.post(t, proto.PathPush, mallory, proto.PushRequest{Replica: "c1",
			Changes:  []crdt.Change{change(t, "tenanta.notes", "n1", "title", "mine")},
			Versions: map[string]uint64{"tenantb.notes": v}})
		if a.status != http.StatusOK {
			t.Errorf("a push naming version %d of another tenant's collection: %d %s, want it answered as without", v, a.status, a.errorCode(t))
			continue
		}
		var res proto.PushResponse
		if err := proto.Decode(a.body, &res); err != nil || len(res.Results) != 1 || res.Results[0].Status == proto.StatusRefused {
			t.Errorf("version %d: %+v %v", v, res, err)
		}
	}
}
