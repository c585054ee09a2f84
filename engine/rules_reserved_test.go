package engine

import (
	"context"
	"errors"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport/proto"
)

// TestRulesSkipReservedCollections: a rule whose pattern matches every
// collection ("*", a schema every record of the app must meet) is the
// app's, and holds none of the server's own collections (proto.Reserved)
// to it, as quotas and horizons do not: the engine's own writes there
// (the collections a quota counts, leases, the deny list) are no app
// records. Held to the schema, the count of a collection under a quota's
// MaxCollections was refused, so every push that added data to a new
// collection failed whole, for every tenant; and no one could be denied.
func TestRulesSkipReservedCollections(t *testing.T) {
	ctx := context.Background()
	st := memory.New()
	defer st.Close()
	schema := &Schema{Fields: map[string]FieldRule{"f": {Type: "int", Required: true}}, Closed: true}
	e, err := Open(Config{Store: st, Replica: "srv", PollInterval: -1,
		Quotas: []Quota{{Pattern: "t.*", MaxCollections: 3}},
		Rules: []Rule{
			{Pattern: "*", Schema: schema},
			{Pattern: "*", Validate: func(_ context.Context, _ string, r crdt.Record) error {
				if _, ok := r.Fields["f"]; !ok {
					return errors.New("no f")
				}
				return nil
			}},
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	for _, coll := range []string{proto.DenyCollection, proto.LeaseCollection, proto.CountedPrefix + "x"} {
		if rs := e.RulesFor(coll); len(rs) != 0 {
			t.Errorf("RulesFor(%s) = %d rules, want none: the collection is the server's own", coll, len(rs))
		}
	}
	res, err := e.Apply(ctx, []crdt.Change{{Collection: "t.a", Record: crdt.SetField("r", "f", value(t, 1), crdt.Stamp{Wall: 1, Replica: "c1"})}})
	if err != nil {
		t.Fatalf("a change the rules admit, to a collection a quota counts: %v", err)
	}
	if res[0].Status != StatusApplied {
		t.Fatalf("a change the rules admit: %+v", res[0])
	}
	// An entry of the deny list, which has no field f.
	res, err = e.Apply(ctx, []crdt.Change{{Collection: proto.DenyCollection, Record: crdt.SetField("sub:eve", "by", value(t, "ops"), crdt.Stamp{Wall: 1, Replica: "srv"})}})
	if err != nil || res[0].Status != StatusApplied {
		t.Fatalf("an entry of the deny list: %+v, %v", res, err)
	}
	// The rules still hold the app's collections.
	res, err = e.Apply(ctx, []crdt.Change{{Collection: "t.a", Record: crdt.SetField("r2", "g", value(t, 1), crdt.Stamp{Wall: 2, Replica: "c1"})}})
	if err != nil || res[0].Status != StatusRefused || !errors.Is(res[0].Err, ErrSchema) {
		t.Fatalf("a change without f: %+v, %v; want refused ErrSchema", res, err)
	}
}
