package engine

import (
	"context"
	"errors"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/stores/memory"
)

// At its quota, a collection takes a change that alters nothing (a retry)
// and refuses one that adds data: the store's record decides. A record
// outside the writer's scope must not decide anything, or the answer
// tells the writer which fields that record has and how new they are
// (docs/protocol.md, section 12: never a value, a field name or an id).
// Every change to it is refused out_of_scope, as below the quota.
func TestQuotaTellsNothingOutsideWriteScope(t *testing.T) {
	ctx := context.Background()
	e, err := Open(Config{Store: memory.New(), Replica: "srv", PollInterval: -1, Now: (&fakeClock{ms: 1_000_000}).now,
		Quotas: []Quota{{Pattern: "notes", MaxRecords: 2}}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	text := func(s string) []byte {
		b, err := crdt.EncodeValue(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	at := func(ms int64, replica string) crdt.Stamp { return crdt.Stamp{Wall: 999_000 + ms, Replica: replica} }
	bobs := crdt.Record{ID: "bobs", Fields: map[string]crdt.Field{
		"owner":  {Stamp: at(5, "b1"), Value: text("bob")},
		"secret": {Stamp: at(5, "b1"), Value: text("hunter2")},
	}}
	filler := crdt.Record{ID: "other", Fields: map[string]crdt.Field{"owner": {Stamp: at(5, "b1"), Value: text("bob")}}}
	if _, err := e.Apply(ctx, []crdt.Change{{Collection: "notes", Record: bobs}, {Collection: "notes", Record: filler}}); err != nil {
		t.Fatal(err)
	}
	mallory := WithWriteScope(func(string) (*scope.Pred, error) { return mustScope(t, "eq", "owner", "mallory"), nil })
	for _, field := range []string{"secret", "nosuch"} { // a field bob's record has, one it has not
		probe := crdt.Record{ID: "bobs", Fields: map[string]crdt.Field{field: {Stamp: at(1, "m1"), Value: text("guess")}}}
		res, err := e.Apply(ctx, []crdt.Change{{Collection: "notes", Record: probe}}, mallory)
		if err != nil {
			t.Fatal(err)
		}
		if !errors.Is(res[0].Err, ErrOutOfScope) {
			t.Errorf("a change of %q in bob's record at the quota: %+v, want out of scope", field, res[0])
		}
	}
	// Her own records are held to the quota as before.
	mine := crdt.Record{ID: "mine", Fields: map[string]crdt.Field{"owner": {Stamp: at(6, "m1"), Value: text("mallory")}}}
	res, err := e.Apply(ctx, []crdt.Change{{Collection: "notes", Record: mine}}, mallory)
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(res[0].Err, ErrQuotaExceeded) {
		t.Errorf("her own record at the quota: %+v, want quota exceeded", res[0])
	}
}
