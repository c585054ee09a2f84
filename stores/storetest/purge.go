package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// purger returns s as a stores.Purger, or skips the test.
func purger(t *testing.T, s stores.Store) stores.Purger {
	t.Helper()
	p, ok := s.(stores.Purger)
	if !ok {
		t.Skip("the store does not collect tombstones (stores.Purger)")
	}
	return p
}

// horizon returns the horizon of coll at read and wall, of its epoch now.
func horizon(t testing.TB, s stores.Store, coll string, read uint64, wall int64) stores.Horizon {
	t.Helper()
	return stores.Horizon{Epoch: meta(t, s, coll).Epoch, Read: []uint64{read}, Wall: wall}
}

// purgeAll purges coll under h, limit entries per call, until the store
// says it is done, and returns the totals. It checks each call's shape:
// at most limit entries scanned, Next moving forward and never past the
// horizon, More only while the scan stopped early.
func purgeAll(t testing.TB, p stores.Purger, coll string, h stores.Horizon, limit int) (total stores.PurgeResult, calls int) {
	t.Helper()
	var after []uint64
	for {
		calls++
		if calls > 10000 {
			t.Fatalf("purge of %s under %+v did not end after %d calls", coll, h, calls)
		}
		res, err := p.Purge(context.Background(), coll, h, stores.PurgeScan{After: after, Limit: limit})
		if err != nil {
			t.Fatalf("Purge(%s, %+v, after %v, limit %d): %v", coll, h, after, limit, err)
		}
		if res.Scanned > limit && (limit != 0 || res.Scanned > stores.MaxPage) {
			t.Fatalf("Purge(limit %d) scanned %d entries", limit, res.Scanned)
		}
		if len(res.Next) != len(h.Read) {
			t.Fatalf("Purge returned Next %v, want %d positions", res.Next, len(h.Read))
		}
		for i, n := range res.Next {
			if after != nil && n < after[i] {
				t.Fatalf("Purge after %v returned Next %v, which goes back", after, res.Next)
			}
			if n > h.Read[i] {
				t.Fatalf("Purge under read horizon %v returned Next %v, past it", h.Read, res.Next)
			}
		}
		if res.More && res.Scanned == 0 {
			t.Fatalf("Purge after %v scanned nothing but says More", after)
		}
		addPurge(&total, res)
		after = res.Next
		if !res.More {
			return total, calls
		}
	}
}

// addPurge adds one Purge call's counts to total and takes its Next.
func addPurge(total *stores.PurgeResult, res stores.PurgeResult) {
	total.Scanned += res.Scanned
	total.Records += res.Records
	total.Deletes += res.Deletes
	total.Fields += res.Fields
	total.Bytes += res.Bytes
	total.Next = res.Next
}

// purgeRun purges coll under h, limit entries per call, until the store
// says it is done, and returns the totals, like purgeAll but without
// checking each call and failing with an error, not the test, so that a
// goroutine beside the test's may run it. More than calls calls is an
// error.
func purgeRun(ctx context.Context, p stores.Purger, coll string, h stores.Horizon, limit, calls int) (total stores.PurgeResult, err error) {
	var after []uint64
	for range calls {
		res, err := p.Purge(ctx, coll, h, stores.PurgeScan{After: after, Limit: limit})
		if err != nil {
			return total, err
		}
		addPurge(&total, res)
		after = res.Next
		if !res.More {
			return total, nil
		}
	}
	return total, fmt.Errorf("the purge of %s did not end after %d calls", coll, calls)
}

// usageMatches checks that the store's usage of coll (when it keeps one)
// is what a full pull reads, and returns it.
func usageMatches(t testing.TB, s stores.Store, coll, step string) stores.Usage {
	t.Helper()
	u, ok := s.(stores.Usager)
	if !ok {
		return stores.Usage{}
	}
	got, err := u.Usage(context.Background(), coll)
	if err != nil {
		t.Fatalf("%s: Usage(%s): %v", step, coll, err)
	}
	var want stores.Usage
	for _, e := range pullAll(t, s, coll, 0, stores.MaxPage) {
		want.Records++
		want.Bytes += int64(len(crdt.AppendRecord(nil, e.Record)))
	}
	if got != want {
		t.Fatalf("%s: usage %+v, want %+v (from a pull)", step, got, want)
	}
	return got
}

// testPurge checks what Purge drops and what it keeps: deleted records
// below both horizons go, with their log entries; delete stamps and unset
// fields before the write horizon go from records that keep live fields;
// everything else (live fields, records after the read horizon,
// tombstones at or after the write horizon) stays byte for byte, at its
// sequence number. It also checks the totals, idempotence, resumption at
// every limit, usage and that the store works on after a purge.
func testPurge(t *testing.T, f Factory) {
	s := open(t, f)
	p := purger(t, s)
	ctx := context.Background()
	const coll, wall = "purge", 100
	v1, v2 := val(t, "one"), val(t, "two")
	set := func(id, field string, at int64, v []byte) crdt.Change {
		return chg(coll, crdt.SetField(id, field, v, st(at, "w")))
	}
	unset := func(id, field string, at int64) crdt.Change {
		return chg(coll, crdt.UnsetField(id, field, st(at, "w")))
	}
	del := func(id string, at int64) crdt.Change { return chg(coll, crdt.DeleteRecord(id, st(at, "w"))) }

	apply(t, s,
		set("gone", "f", 10, v1), del("gone", 20), // deleted: removed
		set("revived", "f", 10, v1), del("revived", 20), set("revived", "g", 30, v2), // delete cleared, g kept
		set("unsets", "f", 10, v1), unset("unsets", "f", 40), set("unsets", "h", 50, v2), // unset f removed
		set("unset-only", "f", 10, v1), unset("unset-only", "f", 40), // removed
		del("late-delete", 150),                           // a tombstone after the write horizon: kept
		set("at-wall", "f", 10, v1), del("at-wall", wall), // a delete at the wall: kept
		set("live", "f", 10, v1),                                                    // live: kept
		unset("mixed", "x", 60), unset("mixed", "y", 120), set("mixed", "z", 5, v2), // x removed; y, z kept
		set("moved", "f", 10, v1), del("moved", 20), // moves past the read horizon below: kept
	)
	read := head(t, s, coll)
	// After the read horizon: a deleted record, and the record "moved",
	// deleted below it and written since.
	apply(t, s, del("after-read", 20), set("moved", "g", 30, v2))
	if got := get(t, s, coll, "moved").Seq; got <= read {
		t.Fatalf("record moved has seq %d, not after the read horizon %d", got, read)
	}
	before := map[string]stores.Entry{}
	for _, e := range pullAll(t, s, coll, 0, stores.MaxPage) {
		before[e.Record.ID] = e
	}
	headBefore := head(t, s, coll)
	u0 := usageMatches(t, s, coll, "before the purge")

	h := horizon(t, s, coll, read, wall)
	ep := h.Epoch
	for _, bad := range []struct {
		name string
		h    stores.Horizon
		scan stores.PurgeScan
	}{
		{"no read horizon", stores.Horizon{Epoch: ep, Wall: wall}, stores.PurgeScan{}},
		{"two positions", stores.Horizon{Epoch: ep, Read: []uint64{read, read}, Wall: wall}, stores.PurgeScan{}},
		{"after of two positions", h, stores.PurgeScan{After: []uint64{0, 0}}},
		{"negative limit", h, stores.PurgeScan{Limit: -1}},
		{"limit over MaxPage", h, stores.PurgeScan{Limit: stores.MaxPage + 1}},
	} {
		_, err := p.Purge(ctx, coll, bad.h, bad.scan)
		wantErr(t, "Purge with "+bad.name, err, stores.ErrInvalid)
	}
	_, err := p.Purge(ctx, "bad collection!", h, stores.PurgeScan{})
	wantErr(t, "Purge of an invalid collection", err, stores.ErrInvalid)
	// Horizons that allow nothing drop nothing.
	for _, none := range []stores.Horizon{{Epoch: ep, Read: []uint64{0}, Wall: wall}, {Epoch: ep, Read: []uint64{read}, Wall: 0}, {Epoch: ep, Read: []uint64{read}, Wall: 10}} {
		if got, _ := purgeAll(t, p, coll, none, 5); got.Records+got.Deletes+got.Fields != 0 || got.Bytes != 0 {
			t.Fatalf("Purge under %+v dropped %+v, want nothing", none, got)
		}
	}
	// A collection never written: nothing to do.
	if got, err := p.Purge(ctx, "never-written", horizon(t, s, "never-written", read, wall), stores.PurgeScan{}); err != nil || got.More || got.Records != 0 {
		t.Fatalf("Purge of a collection never written: %+v, %v", got, err)
	}

	total, calls := purgeAll(t, p, coll, h, 3)
	if calls < 3 {
		t.Fatalf("Purge with limit 3 over 8 entries took %d calls, want at least 3", calls)
	}
	if total.Scanned != 8 {
		t.Fatalf("Purge scanned %d entries, want the 8 at or before the read horizon", total.Scanned)
	}
	want := stores.PurgeResult{Scanned: 8, Records: 2, Deletes: 2, Fields: 3}
	if got := (stores.PurgeResult{Scanned: total.Scanned, Records: total.Records, Deletes: total.Deletes, Fields: total.Fields}); !equalCounts(got, want) {
		t.Fatalf("Purge totals %+v, want %+v", got, want)
	}

	// What is left, at the same sequence numbers.
	expect := map[string]crdt.Record{}
	for id, e := range before {
		expect[id] = e.Record
	}
	delete(expect, "gone")
	delete(expect, "unset-only")
	expect["revived"] = rec("revived", crdt.Stamp{}, map[string]crdt.Field{"g": {Stamp: st(30, "w"), Value: v2}})
	expect["unsets"] = rec("unsets", crdt.Stamp{}, map[string]crdt.Field{"h": {Stamp: st(50, "w"), Value: v2}})
	expect["mixed"] = rec("mixed", crdt.Stamp{}, map[string]crdt.Field{"y": {Stamp: st(120, "w")}, "z": {Stamp: st(5, "w"), Value: v2}})
	checkLeft := func(step string) {
		t.Helper()
		after := pullAll(t, s, coll, 0, stores.MaxPage)
		if len(after) != len(expect) {
			ids := []string{}
			for _, e := range after {
				ids = append(ids, e.Record.ID)
			}
			t.Fatalf("%s: the log holds %d records %v, want %d", step, len(after), ids, len(expect))
		}
		for _, e := range after {
			w, ok := expect[e.Record.ID]
			if !ok {
				t.Fatalf("%s: the log still holds %s", step, fmtRecord(e.Record))
			}
			wantRecord(t, step+": record "+e.Record.ID, e.Record, w)
			if !bytes.Equal(crdt.AppendRecord(nil, e.Record), crdt.AppendRecord(nil, w)) {
				t.Fatalf("%s: record %s encodes differently from what was kept", step, e.Record.ID)
			}
			if e.Seq != before[e.Record.ID].Seq {
				t.Fatalf("%s: record %s moved from seq %d to %d", step, e.Record.ID, before[e.Record.ID].Seq, e.Seq)
			}
			if g := get(t, s, coll, e.Record.ID); g.Seq != e.Seq || !g.Record.Equal(w) {
				t.Fatalf("%s: Get(%s) = seq %d %s, want seq %d %s", step, e.Record.ID, g.Seq, fmtRecord(g.Record), e.Seq, fmtRecord(w))
			}
		}
		for _, id := range []string{"gone", "unset-only"} {
			if _, err := s.Get(ctx, coll, id); !errors.Is(err, stores.ErrNotFound) {
				t.Fatalf("%s: Get(%s) of a purged record: %v, want ErrNotFound", step, id, err)
			}
		}
		if got := head(t, s, coll); got != headBefore {
			t.Fatalf("%s: head %d, want %d (a purge takes no sequence number)", step, got, headBefore)
		}
	}
	checkLeft("after the purge")
	if _, ok := s.(stores.Usager); ok {
		u1 := usageMatches(t, s, coll, "after the purge")
		if u0.Records-u1.Records != int64(total.Records) || u0.Bytes-u1.Bytes != total.Bytes {
			t.Fatalf("usage went from %+v to %+v, but Purge reported %d records and %d bytes", u0, u1, total.Records, total.Bytes)
		}
	}

	// Idempotent: again, from the start, with any limit.
	for _, limit := range []int{1, 0} {
		again, _ := purgeAll(t, p, coll, h, limit)
		if again.Records+again.Deletes+again.Fields != 0 || again.Bytes != 0 {
			t.Fatalf("a second purge (limit %d) dropped %+v", limit, again)
		}
	}
	checkLeft("after a second purge")
	usageMatches(t, s, coll, "after a second purge")

	// The store works on: a purged record is written again as a new one
	// and the log moves on.
	res := apply(t, s, set("gone", "f", 200, v2))
	if !res[0].Changed || res[0].Seq != headBefore+1 {
		t.Fatalf("a write to a purged record: %+v, want Changed at seq %d", res[0], headBefore+1)
	}
	wantRecord(t, "a purged record written again", get(t, s, coll, "gone").Record,
		rec("gone", crdt.Stamp{}, map[string]crdt.Field{"f": {Stamp: st(200, "w"), Value: v2}}))
	if page := pull(t, s, coll, headBefore, 10); len(page.Entries) != 1 || page.Entries[0].Record.ID != "gone" {
		t.Fatalf("pull after the head: %d entries, want the record written again", len(page.Entries))
	}
	usageMatches(t, s, coll, "after a write to a purged record")
}

func equalCounts(a, b stores.PurgeResult) bool {
	return a.Scanned == b.Scanned && a.Records == b.Records && a.Deletes == b.Deletes && a.Fields == b.Fields
}

// testPurgeResume checks that a purge resumed from any Next finishes the
// job as one call would, and that the resume point bounds the scan.
func testPurgeResume(t *testing.T, f Factory) {
	s := open(t, f)
	p := purger(t, s)
	ctx := context.Background()
	const coll, n = "resume", 40
	var changes []crdt.Change
	for i := range n {
		id := fmt.Sprintf("r%02d", i)
		changes = append(changes, chg(coll, crdt.SetField(id, "f", val(t, i), st(10, "w"))), chg(coll, crdt.DeleteRecord(id, st(20, "w"))))
	}
	apply(t, s, changes...)
	read := head(t, s, coll)
	h := horizon(t, s, coll, read, 100)
	// One call of 7 entries, then a call resumed from its Next: together
	// 14 records, the first 14 of the log.
	first, err := p.Purge(ctx, coll, h, stores.PurgeScan{Limit: 7})
	if err != nil {
		t.Fatal(err)
	}
	if first.Scanned != 7 || first.Records != 7 || !first.More {
		t.Fatalf("first call: %+v, want 7 scanned, 7 removed, More", first)
	}
	left := pullAll(t, s, coll, 0, stores.MaxPage)
	if len(left) != n-7 {
		t.Fatalf("after the first call %d records are left, want %d", len(left), n-7)
	}
	if left[0].Seq <= first.Next[0] {
		t.Fatalf("a record at seq %d is left before Next %d", left[0].Seq, first.Next[0])
	}
	second, err := p.Purge(ctx, coll, h, stores.PurgeScan{After: first.Next, Limit: 7})
	if err != nil {
		t.Fatal(err)
	}
	if second.Records != 7 || second.Next[0] <= first.Next[0] {
		t.Fatalf("resumed call: %+v after %v, want 7 more removed", second, first.Next)
	}
	rest, _ := purgeAll(t, p, coll, h, stores.MaxPage)
	if rest.Records != n-14 {
		t.Fatalf("the rest: %d records removed, want %d", rest.Records, n-14)
	}
	if left := pullAll(t, s, coll, 0, stores.MaxPage); len(left) != 0 {
		t.Fatalf("after the whole purge %d records are left, want none", len(left))
	}
	if u := usageMatches(t, s, coll, "after the whole purge"); u != (stores.Usage{}) {
		t.Fatalf("usage of a purged collection: %+v, want zero", u)
	}
	if got := head(t, s, coll); got != read {
		t.Fatalf("head %d after the purge, want %d", got, read)
	}
	// A horizon past the head is the head.
	if got, _ := purgeAll(t, p, coll, horizon(t, s, coll, math.MaxUint64>>12, 100), 10); got.Records != 0 {
		t.Fatalf("a purge of an empty log removed %d records", got.Records)
	}
}

// testPurgeConcurrent runs Purge while writers change the records it
// purges: a change committed during the purge is never lost, whether it
// lands before or after the purge of its record, and usage stays exact.
// Three rounds, each on a collection of its own: a store that loses a
// write only when it lands inside its window between reading and
// writing a record shows it in most rounds, not all.
func testPurgeConcurrent(t *testing.T, f Factory) {
	s := open(t, f)
	p := purger(t, s)
	for round := range 3 {
		purgeAmongWriters(t, s, p, fmt.Sprint("concurrent-purge-", round))
	}
}

func purgeAmongWriters(t *testing.T, s stores.Store, p stores.Purger, coll string) {
	t.Helper()
	ctx := context.Background()
	const n, writers = 120, 4
	var changes []crdt.Change
	for i := range n {
		id := fmt.Sprintf("c%03d", i)
		changes = append(changes, chg(coll, crdt.SetField(id, "f", val(t, i), st(10, "w"))), chg(coll, crdt.DeleteRecord(id, st(20, "w"))))
	}
	for i := 0; i < len(changes); i += stores.MaxBatch {
		apply(t, s, changes[i:min(i+stores.MaxBatch, len(changes))]...)
	}
	h := horizon(t, s, coll, head(t, s, coll), 100)
	// Writer w writes field g (stamped 30, before the wall: the engine
	// would refuse it, but the store must not lose it) to every record i
	// with i % (writers+1) == w, and field n to a new record.
	var wg sync.WaitGroup
	errs := make(chan error, writers+1)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// In a shuffled order, so that writes land all over the log
			// while the purge walks it, some inside its current batch.
			var mine []int
			for i := w; i < n; i += writers + 1 {
				mine = append(mine, i)
			}
			rand.New(rand.NewPCG(uint64(w), 1)).Shuffle(len(mine), func(a, b int) { mine[a], mine[b] = mine[b], mine[a] })
			for _, i := range mine {
				id := fmt.Sprintf("c%03d", i)
				time.Sleep(200 * time.Microsecond) // spread the writes over the purge
				if _, err := s.Apply(ctx, []crdt.Change{
					chg(coll, crdt.SetField(id, "g", val(t, i), st(30, fmt.Sprint("w", w)))),
					chg(coll, crdt.SetField(fmt.Sprintf("new%d-%03d", w, i), "n", val(t, i), st(300, "w"))),
				}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Add(1)
	var total stores.PurgeResult
	go func() {
		defer wg.Done()
		var err error
		if total, err = purgeRun(ctx, p, coll, h, 7, 10000); err != nil {
			errs <- err
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	all := map[string]crdt.Record{}
	for _, e := range pullAll(t, s, coll, 0, stores.MaxPage) {
		all[e.Record.ID] = e.Record
	}
	written := 0
	for i := range n {
		id := fmt.Sprintf("c%03d", i)
		r, ok := all[id]
		if i%(writers+1) == writers {
			if ok {
				t.Fatalf("record %s, deleted below both horizons and not written since, is still there: %s", id, fmtRecord(r))
			}
			continue
		}
		written++
		if !ok {
			t.Fatalf("record %s lost the change written during the purge", id)
		}
		if g, ok := r.Fields["g"]; !ok || g.Value == nil || g.Stamp.Wall != 30 || !r.Exists() {
			t.Fatalf("record %s lost field g written during the purge: %s", id, fmtRecord(r))
		}
		if r.Fields["f"].Value != nil {
			t.Fatalf("record %s shows a deleted field: %s", id, fmtRecord(r))
		}
	}
	if len(all) != written*2 {
		t.Fatalf("the log holds %d records, want %d written ones and %d new ones", len(all), written, written)
	}
	// A record written before the purge reached it moved past the horizon
	// and was kept; one written after was removed first and written again
	// as new. Every record nobody wrote was removed.
	if total.Records < n-written || total.Records > n {
		t.Fatalf("the purge removed %d records, want %d to %d", total.Records, n-written, n)
	}
	usageMatches(t, s, coll, "after a purge among writers")
}

// testPurgeLarge purges records near the size limits: deleted once and
// written since with two of the largest values, so the purge keeps them
// and writes them back whole (a few megabytes in all, more than one
// backend call or transaction holds).
func testPurgeLarge(t *testing.T, f Factory) {
	s := open(t, f)
	p := purger(t, s)
	const coll, n = "purge-large", 12
	big := blob(t, crdt.MaxValueBytes, 'v')
	want := map[string]crdt.Record{}
	for i := range n {
		id := fmt.Sprintf("big%02d", i)
		apply(t, s,
			chg(coll, crdt.SetField(id, "old", val(t, i), st(10, "w"))),
			chg(coll, crdt.DeleteRecord(id, st(20, "w"))),
			chg(coll, crdt.SetField(id, "a", big, st(30, "w"))),
			chg(coll, crdt.SetField(id, "b", big, st(30, "w"))),
		)
		want[id] = rec(id, crdt.Stamp{}, map[string]crdt.Field{"a": {Stamp: st(30, "w"), Value: big}, "b": {Stamp: st(30, "w"), Value: big}})
	}
	h := horizon(t, s, coll, head(t, s, coll), 100)
	total, _ := purgeAll(t, p, coll, h, 0)
	if total.Deletes != n || total.Records != 0 {
		t.Fatalf("purge of large records: %+v, want %d delete stamps cleared and no record removed", total, n)
	}
	left := pullAll(t, s, coll, 0, stores.MaxPage)
	if len(left) != n {
		t.Fatalf("%d records left, want %d", len(left), n)
	}
	for _, e := range left {
		wantRecord(t, "large record "+e.Record.ID, e.Record, want[e.Record.ID])
	}
	usageMatches(t, s, coll, "after the purge of large records")
}

// testPurgeReopen checks that what a purge dropped stays dropped, and
// usage stays exact, once the store is opened again.
func testPurgeReopen(t *testing.T, f Factory, reopen Reopen) {
	s := f(t)
	p, ok := s.(stores.Purger)
	if !ok {
		_ = s.Close()
		t.Skip("the store does not collect tombstones (stores.Purger)")
	}
	const coll = "purge-reopen"
	apply(t, s,
		chg(coll, crdt.SetField("gone", "f", val(t, 1), st(10, "w"))), chg(coll, crdt.DeleteRecord("gone", st(20, "w"))),
		chg(coll, crdt.SetField("kept", "f", val(t, 2), st(10, "w"))), chg(coll, crdt.UnsetField("kept", "u", st(15, "w"))),
	)
	h := horizon(t, s, coll, head(t, s, coll), 100)
	if total, _ := purgeAll(t, p, coll, h, 0); total.Records != 1 || total.Fields != 1 {
		t.Fatalf("purge: %+v, want 1 record and 1 field dropped", total)
	}
	want := pullAll(t, s, coll, 0, stores.MaxPage)
	s = reopen(t, s)
	t.Cleanup(func() { _ = s.Close() })
	got := pullAll(t, s, coll, 0, stores.MaxPage)
	if len(got) != 1 || len(want) != 1 || got[0].Seq != want[0].Seq {
		t.Fatalf("after reopening the log holds %d records, want the 1 kept at seq %d", len(got), want[0].Seq)
	}
	wantRecord(t, "after reopening", got[0].Record, want[0].Record)
	if _, err := s.Get(context.Background(), coll, "gone"); !errors.Is(err, stores.ErrNotFound) {
		t.Fatalf("after reopening, Get(gone) of a purged record: %v, want ErrNotFound", err)
	}
	usageMatches(t, s, coll, "after reopening")
}

// testPurgeTwice runs two purges of the same horizon at once, as two
// server instances might: every tombstone is dropped once, reported by
// the purge that dropped it, and usage stays exact.
func testPurgeTwice(t *testing.T, f Factory) {
	s := open(t, f)
	p := purger(t, s)
	ctx := context.Background()
	const coll, n = "purge-twice", 60
	var changes []crdt.Change
	for i := range n {
		id := fmt.Sprintf("t%02d", i)
		changes = append(changes, chg(coll, crdt.SetField(id, "f", val(t, i), st(10, "w"))), chg(coll, crdt.DeleteRecord(id, st(20, "w"))))
		if i%2 == 0 { // revived: kept, with its delete stamp cleared
			changes = append(changes, chg(coll, crdt.SetField(id, "g", val(t, i), st(30, "w"))))
		}
	}
	apply(t, s, changes...)
	h := horizon(t, s, coll, head(t, s, coll), 100)
	var mu sync.Mutex
	var total stores.PurgeResult
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := purgeRun(ctx, p, coll, h, 5, 1000)
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			total.Records += res.Records
			total.Deletes += res.Deletes
			total.Bytes += res.Bytes
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if total.Records != n/2 || total.Deletes != n {
		t.Fatalf("two purges at once reported %d records removed and %d delete stamps cleared, want %d and %d (each once)", total.Records, total.Deletes, n/2, n)
	}
	left := pullAll(t, s, coll, 0, stores.MaxPage)
	if len(left) != n/2 {
		t.Fatalf("%d records left, want %d", len(left), n/2)
	}
	for _, e := range left {
		if !e.Record.Deleted.IsZero() || len(e.Record.Fields) != 1 {
			t.Fatalf("record left as %s, want its field g alone", fmtRecord(e.Record))
		}
	}
	usageMatches(t, s, coll, "after two purges at once")
}
