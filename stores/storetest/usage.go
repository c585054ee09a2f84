package storetest

import (
	"context"
	"fmt"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// testUsage checks stores.Usage on stores that keep it: after new records,
// updates that grow and shrink them, deletes and no-ops, it equals the
// collection's record count and the sum of its records' encoded sizes, as
// a full pull reads them.
func testUsage(t *testing.T, f Factory) {
	s := open(t, f)
	u, ok := s.(stores.Usager)
	if !ok {
		t.Skip("the store keeps no usage (stores.Usager)")
	}
	ctx := context.Background()
	check := func(step string) {
		t.Helper()
		got, err := u.Usage(ctx, "usage")
		if err != nil {
			t.Fatal(err)
		}
		var want stores.Usage
		page, err := s.Pull(ctx, "usage", 0, stores.PageLimit{Records: stores.MaxPage, Bytes: 1 << 30})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page.Entries {
			want.Records++
			want.Bytes += int64(len(crdt.AppendRecord(nil, e.Record)))
		}
		if got != want {
			t.Fatalf("%s: usage %+v, want %+v (from a pull)", step, got, want)
		}
	}
	if got, err := u.Usage(ctx, "usage"); err != nil || got != (stores.Usage{}) {
		t.Fatalf("usage of a collection never written: %+v, %v", got, err)
	}
	for i := range 10 {
		apply(t, s, chg("usage", crdt.SetField(fmt.Sprint("r", i), "f", val(t, i), st(1, "w"))))
	}
	check("after new records")
	apply(t, s, chg("usage", crdt.SetField("r1", "g", val(t, "a longer value than before"), st(2, "w"))))
	apply(t, s, chg("usage", crdt.UnsetField("r2", "f", st(3, "w"))))
	check("after updates")
	apply(t, s, chg("usage", crdt.DeleteRecord("r3", st(4, "w"))))
	apply(t, s, chg("usage", crdt.SetField("r4", "f", val(t, 4), st(1, "w")))) // a duplicate
	check("after a delete and a duplicate")
	if got, err := u.Usage(ctx, "other"); err != nil || got != (stores.Usage{}) {
		t.Fatalf("usage of another collection: %+v, %v", got, err)
	}
}
