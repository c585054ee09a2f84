package storetest

import (
	"context"
	"errors"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/transport/proto"
)

// testDeleteAsRead checks what the engine's collection run relies on to
// remove expired and evicted leases (docs/design.md, "Tombstone
// horizons"), in the reserved lease collection itself: a delete made by
// stores.DeleteAsRead hides exactly the record as read, a write that
// renewed the record meanwhile survives it, and a purge under a write
// horizon past the delete removes the record whole, with its log entry,
// keeping usage exact.
func testDeleteAsRead(t *testing.T, f Factory) {
	s := open(t, f)
	p := purger(t, s)
	ctx := context.Background()
	coll := proto.LeaseCollection
	lease := func(id string, at int64) crdt.Change {
		r := crdt.SetField(id, "seen", val(t, at), st(at, "srv"))
		r.Fields["pos"] = crdt.Field{Stamp: st(at, "srv"), Value: val(t, []uint64{uint64(at)})}
		r.Fields["floor"] = crdt.Field{Stamp: st(at, "srv")} // unset: none pending
		return chg(coll, r)
	}
	apply(t, s, lease("notes/expired", 10), lease("notes/renewed", 11), lease("notes/live", 12))
	asRead := map[string]crdt.Record{}
	for _, e := range pullAll(t, s, coll, 0, stores.MaxPage) {
		asRead[e.Record.ID] = e.Record
	}
	if _, ok := stores.DeleteAsRead(coll, crdt.Record{ID: "notes/none", Deleted: st(5, "srv")}); ok {
		t.Fatal("DeleteAsRead of a record without fields: ok")
	}
	var dels []crdt.Change
	for _, id := range []string{"notes/expired", "notes/renewed"} {
		c, ok := stores.DeleteAsRead(coll, asRead[id])
		if !ok {
			t.Fatalf("DeleteAsRead(%s): not ok", id)
		}
		dels = append(dels, c)
	}
	// Renewed between the read and the delete.
	apply(t, s, lease("notes/renewed", 50))
	for i, r := range apply(t, s, dels...) {
		if !r.Changed {
			t.Fatalf("delete %s changed nothing", dels[i].Record.ID)
		}
	}
	if r := get(t, s, coll, "notes/expired").Record; r.Exists() || len(r.Fields) != 0 {
		t.Fatalf("deleted as read, the record still holds %v", r.Fields)
	}
	renewed := get(t, s, coll, "notes/renewed").Record
	if want := lease("notes/renewed", 50).Record; !renewed.Exists() || renewed.Fields["seen"].Stamp != want.Fields["seen"].Stamp || len(renewed.Fields) != 3 {
		t.Fatalf("the renewal did not survive the delete as read: %+v", renewed)
	}
	usageMatches(t, s, coll, "after the deletes")

	h := horizon(t, s, coll, head(t, s, coll), 100)
	res, _ := purgeAll(t, p, coll, h, 0)
	if res.Records != 1 {
		t.Fatalf("purge removed %d records; want 1 (the one deleted as read)", res.Records)
	}
	if _, err := s.Get(ctx, coll, "notes/expired"); !errors.Is(err, stores.ErrNotFound) {
		t.Fatalf("Get of the purged lease: %v; want ErrNotFound", err)
	}
	var ids []string
	for _, e := range pullAll(t, s, coll, 0, stores.MaxPage) {
		ids = append(ids, e.Record.ID)
		if !e.Record.Exists() || e.Record.Fields["pos"].Value == nil || e.Record.Fields["seen"].Value == nil {
			t.Fatalf("lease %s lost a live field: %+v", e.Record.ID, e.Record)
		}
	}
	if len(ids) != 2 {
		t.Fatalf("the lease log holds %v; want the renewed and the live lease", ids)
	}
	usageMatches(t, s, coll, "after the purge")
}
