package transport

import (
	"context"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
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
	rs, err := engine.ParseRules([]byte(`{"notes": {"maxOffline": "1h", "scope": "owner == $sub"}}`))
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engine.Open(engine.Config{Store: ts.store, Replica: "srv-1", PollInterval: -1, Rules: rs,
		Now: clock.now, CollectGrace: -1, CollectEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	ts.srv.eng, ts.eng = eng, eng
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
