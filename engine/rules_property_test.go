package engine

import (
	"context"
	"errors"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/stores/memory"
)

// TestPropRulesJudgeAsOneByOne: the rules judge a call's changes of one
// record in order, each on the record the earlier ones leave, and a
// change refused (by the rules, or by the store: too large) leaves
// nothing (docs/protocol.md, section 12). So one call of many changes
// answers and leaves what the same changes leave applied one call each,
// in order.
func TestPropRulesJudgeAsOneByOne(t *testing.T) {
	text := func(s string) []byte { b, _ := crdt.EncodeValue(s); return b }
	big := text(strings.Repeat("x", 120<<10))
	rules := []Rule{{Pattern: "notes", Validate: func(_ context.Context, _ string, r crdt.Record) error {
		v := r.Values()
		if _, ok := v["body"]; ok && v["locked"] != nil {
			return errors.New("a locked note has no body")
		}
		return nil
	}}}
	ws := mustScope(t, "eq", "owner", "alice")
	rapid.Check(t, func(rt *rapid.T) {
		var changes []crdt.Change
		n := rapid.IntRange(1, 12).Draw(rt, "changes")
		for i := range n {
			id := rapid.SampledFrom([]string{"r", "s"}).Draw(rt, "id")
			st := crdt.Stamp{Wall: 999_000 + int64(rapid.IntRange(1, 20).Draw(rt, "wall")), Logical: uint32(i), Replica: "c1"}
			rec := crdt.Record{ID: id, Fields: map[string]crdt.Field{}}
			for _, f := range []string{"owner", "locked", "body"} {
				switch rapid.IntRange(0, 3).Draw(rt, f) {
				case 0:
					rec.Fields[f] = crdt.Field{Stamp: st} // unset
				case 1:
					v := text("yes")
					if f == "owner" {
						v = text(rapid.SampledFrom([]string{"alice", "bob"}).Draw(rt, "owner"))
					}
					rec.Fields[f] = crdt.Field{Stamp: st, Value: v}
				}
			}
			if rapid.IntRange(0, 2).Draw(rt, "grow") == 0 {
				// Past the size limit, with what the record holds or alone:
				// the store refuses it.
				for _, f := range []string{"pad1", "pad2", "pad3"} {
					rec.Fields[f] = crdt.Field{Stamp: st, Value: big}
				}
			}
			if rapid.IntRange(0, 8).Draw(rt, "delete") == 0 {
				rec.Deleted = st
			}
			changes = append(changes, crdt.Change{Collection: "notes", Record: rec})
		}
		var opts []ApplyOption
		if rapid.Bool().Draw(rt, "write scope") {
			opts = append(opts, WithWriteScope(func(string) (*scope.Pred, error) { return ws, nil }))
		}
		open := func() *Engine {
			e, err := Open(Config{Store: memory.New(), Replica: "srv", PollInterval: -1, Now: (&fakeClock{ms: 1_000_000}).now, Rules: rules})
			if err != nil {
				rt.Fatal(err)
			}
			return e
		}
		ctx := context.Background()
		whole, each := open(), open()
		defer whole.Close()
		defer each.Close()
		got, err := whole.Apply(ctx, changes, opts...)
		if err != nil {
			rt.Fatal(err)
		}
		for i, c := range changes {
			want, err := each.Apply(ctx, []crdt.Change{c}, opts...)
			if err != nil {
				rt.Fatal(err)
			}
			if got[i].Status != want[0].Status || (got[i].Err == nil) != (want[0].Err == nil) ||
				(got[i].Err != nil && got[i].Err.Error() != want[0].Err.Error()) {
				rt.Fatalf("change %d: in one call %v (%v), alone %v (%v)", i, got[i].Status, got[i].Err, want[0].Status, want[0].Err)
			}
		}
		for _, id := range []string{"r", "s"} {
			a, errA := whole.GetRecord(ctx, "notes", id)
			b, errB := each.GetRecord(ctx, "notes", id)
			if (errA == nil) != (errB == nil) {
				rt.Fatalf("%s: %v, %v", id, errA, errB)
			}
			ea, _ := crdt.EncodeRecord(a.Record)
			eb, _ := crdt.EncodeRecord(b.Record)
			if string(ea) != string(eb) {
				rt.Fatalf("%s: one call leaves %v, one call each %v", id, a.Record, b.Record)
			}
		}
	})
}
