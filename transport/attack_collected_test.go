package transport

import (
	"context"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/transport/proto"
)

// Below the write horizon a pushed field is refused collected unless the
// record as held outweighs it with a value (engine.heldLive). Judged
// before the write scope, that answer would describe a record the pusher
// may not read: pushing fields stamped before the horizon to bob's record,
// mallory would learn which fields it holds (collected for a name it
// lacks, out_of_scope for one it has) and, by moving the stamp, when each
// was last written. Every change to a record outside her write scope is
// refused out_of_scope, whatever the record holds and however old the
// change's stamps.
func TestAttackCollectedOracle(t *testing.T) {
	clock := newFakeClock()
	ts := newTestServer(t, nil)
	ts.withRules(t, `{"notes": {"maxOffline": "1h", "scope": "owner == $sub"}}`, func(c *engine.Config) {
		c.Now, c.CollectGrace, c.CollectEvery = clock.now, -1, -1
	})
	eng := ts.eng
	ctx := context.Background()

	bob := ts.token(t, "bob", []string{"notes"}, []string{"notes"})
	mallory := ts.token(t, "mallory", []string{"notes"}, []string{"notes"})
	written := clock.wall()
	if res := ts.push(t, bob, set(t, "notes", bobsID, map[string]any{"owner": "bob", "diagnosis": bobsSecret})); res[0].Status != proto.StatusApplied {
		t.Fatalf("bob's push: %+v", res[0])
	}
	// The write horizon rises past bob's writes.
	if _, err := eng.Collect(ctx); err != nil {
		t.Fatal(err)
	}
	clock.advance(3 * time.Hour)
	if _, err := eng.Collect(ctx); err != nil {
		t.Fatal(err)
	}
	oldIn := func(id, field string, wall int64) crdt.Change {
		v, _ := crdt.EncodeValue("probe")
		return crdt.Change{Collection: "notes", Record: crdt.SetField(id, field, v, crdt.Stamp{Wall: wall, Replica: ownReplica})}
	}
	old := func(field string, wall int64) crdt.Change { return oldIn(bobsID, field, wall) }
	// Control: the horizon is up, so an old change to a record nobody
	// holds is refused collected.
	if res := ts.push(t, mallory, oldIn("nobodys", "owner", written-1)); res[0].Code != proto.CodeCollected {
		t.Fatalf("an old change to a record nobody holds: %+v, want collected", res[0])
	}
	// Fields bob's record holds and fields it lacks, stamped before and
	// after bob's writes: all below the horizon.
	probes := map[string]crdt.Change{
		"held field, older":   old("diagnosis", written-1),
		"held field, newer":   old("diagnosis", written+1),
		"missing field":       old("nosuchfield", written-1),
		"held owner, older":   old("owner", written-1),
		"missing owner field": old("title", written+1),
	}
	for name, c := range probes {
		res := ts.push(t, mallory, c)
		if res[0].Status != proto.StatusRefused || res[0].Code != proto.CodeOutOfScope {
			t.Errorf("%s: %+v, want refused %s (the answer must not depend on bob's record)", name, res[0], proto.CodeOutOfScope)
		}
	}
}

// Red restores the records it read when they were red, after the admin
// moved them to blue: one untouched since, one whose title changed too.
// Merged into the record the server holds now, the restore's answer would
// describe that record (superseded, and which fields lost: which ones
// changed since red lost sight of it). A record held outside the
// restorer's read scope is refused out_of_scope, whatever it holds.
func TestAttackRestoreMovedOut(t *testing.T) {
	ts := newTestServer(t, nil)
	admin := ts.token(t, "admin", []string{"docs"}, []string{"docs"})
	red := ts.issue(t, TokenSpec{Subject: "red", Read: []string{"docs"},
		Scopes: map[string]*scope.Pred{"docs": mustScope(t, `team == "red"`)}})
	ts.push(t, admin, set(t, "docs", "d1", map[string]any{"team": "red", "title": "one"}),
		set(t, "docs", "d2", map[string]any{"team": "red", "title": "two"}))
	var sealed []proto.SealedRecord
	a := ts.post(t, proto.PathPull, red, proto.PullRequest{Collection: "docs"})
	var resp proto.PullResponse
	if err := proto.Decode(a.body, &resp); err != nil || len(resp.Records) != 2 {
		t.Fatalf("red's pull: %d %+v %v", a.status, resp, err)
	}
	for i, r := range resp.Records {
		sealed = append(sealed, proto.SealedRecord{Record: r, Seal: resp.Seals[i]})
	}
	time.Sleep(2 * time.Millisecond)
	ts.push(t, admin, set(t, "docs", "d1", map[string]any{"team": "blue", "title": bobsSecret}),
		set(t, "docs", "d2", map[string]any{"team": "blue"}))
	a = ts.post(t, proto.PathRestore, red, proto.RestoreRequest{Collection: "docs", Records: sealed})
	var res proto.RestoreResponse
	if err := proto.Decode(a.body, &res); err != nil || len(res.Results) != 2 {
		t.Fatalf("restore: %d %v", a.status, err)
	}
	for i, r := range res.Results {
		if r.Status != proto.StatusRefused || r.Code != proto.CodeOutOfScope || len(r.Lost) > 0 {
			t.Errorf("restore of %s, now blue: %+v, want refused %s", sealed[i].Record.ID, r, proto.CodeOutOfScope)
		}
	}
	for _, id := range []string{"d1", "d2"} {
		got, err := ts.eng.GetRecord(context.Background(), "docs", id)
		if err != nil || string(got.Record.Fields["team"].Value) != string(mustValue(t, "blue")) {
			t.Errorf("%s after the restore: %+v %v", id, got, err)
		}
	}
}
