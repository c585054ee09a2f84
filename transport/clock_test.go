package transport

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// One tenant's stamps cannot jam or reorder another tenant's writes: a
// forged counter near 2^32 is refused at admission and, even where a
// stamp with a large allowed counter is accepted, the server clock of
// another collection does not move.
func TestForgedCounterDoesNotJamOtherTenants(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Demo = true })
	alice := ts.token(t, "alice", []string{"a.*"}, []string{"a.*"})
	bob := ts.token(t, "bob", []string{"b.*"}, []string{"b.*"})
	ahead := time.Now().Add(time.Minute).UnixMilli()
	forged := crdt.Change{Collection: "a.notes", Record: crdt.SetField("r1", "x", mustValue(t, 1),
		crdt.Stamp{Wall: ahead, Logical: math.MaxUint32 - 1, Replica: "c1"})}
	if res := ts.push(t, alice, forged); res[0].Status != proto.StatusRefused || res[0].Code != proto.CodeInvalid {
		t.Fatalf("forged counter: %+v, want refused invalid", res[0])
	}
	// The largest counter an honest clock issues is accepted...
	high := forged
	high.Record = crdt.SetField("r1", "x", mustValue(t, 1), crdt.Stamp{Wall: ahead, Logical: crdt.MaxIssuedLogical, Replica: "c1"})
	if res := ts.push(t, alice, high); res[0].Status != proto.StatusApplied {
		t.Fatalf("counter at MaxIssuedLogical: %+v", res[0])
	}
	// ...and jams nobody: every other tenant, and alice herself, still write.
	for i := 0; i < 3; i++ {
		if res := ts.push(t, bob, change(t, "b.notes", "r1", "x", i)); res[0].Status != proto.StatusApplied {
			t.Fatalf("bob's push %d after alice's: %+v", i, res[0])
		}
		if res := ts.push(t, "", change(t, DemoCollection, "r1", "x", i)); res[0].Status != proto.StatusApplied {
			t.Fatalf("anonymous push %d after alice's: %+v", i, res[0])
		}
	}
	// The server's own writes to another collection keep wall time: alice's
	// stamp a minute ahead moved only her collection's clock.
	if err := ts.eng.Update(context.Background(), "b.notes", "r2", map[string]any{"x": 1}); err != nil {
		t.Fatal(err)
	}
	ent, err := ts.eng.GetRecord(context.Background(), "b.notes", "r2")
	if err != nil {
		t.Fatal(err)
	}
	if w := ent.Record.Fields["x"].Stamp.Wall; w >= ahead {
		t.Fatalf("server stamp in b.notes at %d, pulled ahead by a.notes' %d", w, ahead)
	}
}
