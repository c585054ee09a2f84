package transport

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/transport/proto"
)

// fakeClock is a wall clock tests move by hand.
type fakeClock struct{ ms atomic.Int64 }

func (c *fakeClock) now() time.Time              { return time.UnixMilli(c.ms.Load()) }
func (c *fakeClock) advance(d time.Duration)     { c.ms.Add(d.Milliseconds()) }
func (c *fakeClock) wall() int64                 { return c.ms.Load() }
func newFakeClock() *fakeClock                   { c := &fakeClock{}; c.ms.Store(time.Now().UnixMilli()); return c }
func (c *fakeClock) stamp(d time.Duration) int64 { return c.wall() + d.Milliseconds() }

// collectingEngine opens an engine on ts's store whose rules collect
// "notes" tombstones after an hour offline, on clock, with no grace (the
// tests publish and read horizons themselves).
func collectingEngine(t *testing.T, ts *testServer, clock *fakeClock, replica string) *engine.Engine {
	t.Helper()
	return collectingEngineOn(t, ts.store, clock, replica)
}

// collectingEngineOn is collectingEngine on store.
func collectingEngineOn(t *testing.T, store stores.Store, clock *fakeClock, replica string) *engine.Engine {
	t.Helper()
	rs, err := engine.ParseRules([]byte(`{"notes": {"maxOffline": "1h"}}`))
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engine.Open(engine.Config{Store: store, Replica: replica, PollInterval: -1, Rules: rs,
		Now: clock.now, CollectGrace: -1, CollectEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	return eng
}

func newCollectingServer(t *testing.T, clock *fakeClock) *testServer {
	ts := newTestServer(t, nil)
	eng := collectingEngine(t, ts, clock, "srv-1")
	ts.srv.eng, ts.eng = eng, eng
	return ts
}

// leasePull pulls as replica device of alice with a pending floor
// (negative: none) and returns the answer.
func (ts *testServer) leasePull(t *testing.T, tok, device string, cursor []byte, pending int64) proto.PullResponse {
	t.Helper()
	req := proto.PullRequest{Collection: "notes", Cursor: cursor, Replica: proto.ReplicaFor("alice", device)}
	if pending >= 0 {
		p := uint64(pending)
		req.Pending = &p
	}
	a := ts.post(t, proto.PathPull, tok, req)
	if a.status != http.StatusOK {
		t.Fatalf("pull: status %d, code %s", a.status, a.errorCode(t))
	}
	var resp proto.PullResponse
	if err := proto.Decode(a.body, &resp); err != nil {
		t.Fatal(err)
	}
	return resp
}

func set1(id string, wall int64) crdt.Change {
	v, _ := crdt.EncodeValue("x")
	return crdt.Change{Collection: "notes", Record: crdt.SetField(id, "title", v, crdt.Stamp{Wall: wall, Replica: ownReplica})}
}

func del1(id string, wall int64) crdt.Change {
	return crdt.Change{Collection: "notes", Record: crdt.DeleteRecord(id, crdt.Stamp{Wall: wall, Replica: ownReplica})}
}

func TestLeaseWrittenOnPull(t *testing.T) {
	clock := newFakeClock()
	ts := newCollectingServer(t, clock)
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	ts.push(t, tok, set1("r1", clock.wall()))
	first := ts.leasePull(t, tok, "d1", nil, -1)
	ts.leasePull(t, tok, "d1", first.Next, clock.wall())
	ent, err := ts.eng.GetRecord(context.Background(), proto.LeaseCollection, "notes/"+proto.ReplicaFor("alice", "d1"))
	if err != nil {
		t.Fatalf("no lease: %v", err)
	}
	var floor int64
	if f := ent.Record.Fields[engine.LeaseFieldFloor]; f.Value == nil || crdt.DecodeValue(f.Value, &floor) != nil || floor != clock.wall() {
		t.Fatalf("lease floor %d, want %d (a floor that appeared is written at once)", floor, clock.wall())
	}
	// A replica id alice does not own is forbidden.
	a := ts.post(t, proto.PathPull, tok, proto.PullRequest{Collection: "notes", Replica: proto.ReplicaFor("bob", "d1")})
	if a.status != http.StatusForbidden || a.errorCode(t) != proto.CodeForbidden {
		t.Fatalf("foreign replica: got %d %s, want 403 forbidden", a.status, a.errorCode(t))
	}
	// A pending floor no stamp can have is invalid, not ignored.
	late := uint64(proto.MaxWall) + 1
	a = ts.post(t, proto.PathPull, tok, proto.PullRequest{Collection: "notes", Replica: proto.ReplicaFor("alice", "d1"), Pending: &late})
	if a.status != http.StatusBadRequest || a.errorCode(t) != proto.CodeInvalid {
		t.Fatalf("pending floor past MaxWall: got %d %s, want 400 invalid", a.status, a.errorCode(t))
	}
}

// TestLiveRenewalFromTheStart: the renewal of a live subscription's lease
// (at every ping) whose cursor is still the start and that announces no
// pending floor reads nothing from the store: such a reader holds nothing
// and cannot be reset (engine.NoteLease), and it is the case of every
// subscription to a collection never written, for which no lease is
// cached. Once the collection is written and the subscription gets the
// first change, its cursor is off the start and its renewal takes the
// lease.
func TestLiveRenewalFromTheStart(t *testing.T) {
	clock := newFakeClock()
	ts := newTestServer(t, nil)
	cs := &countingStore{Store: ts.store}
	eng := collectingEngineOn(t, cs, clock, "srv-1")
	ts.srv.eng, ts.eng = eng, eng
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	replica := proto.ReplicaFor("alice", "phone")
	c, _ := ts.open(t, tok)
	c.send(proto.Sub{Collection: "notes", Replica: replica})
	if m, ok := c.recv().(proto.Changes); !ok || len(m.Records) != 0 {
		t.Fatalf("first page: %#v", m)
	}
	conn := ts.onlyConn(t)
	const renewals = 3
	before := cs.reads.Load()
	for range renewals {
		clock.advance(20 * time.Second)
		conn.refreshLeases()
	}
	if n := cs.reads.Load() - before; n != 0 {
		t.Errorf("%d store reads for %d renewals of a subscription from the start without a floor, want 0", n, renewals)
	}
	ts.push(t, tok, set1("r1", clock.wall()))
	if m, ok := c.recv().(proto.Changes); !ok || len(m.Records) != 1 {
		t.Fatalf("the first change: %#v", m)
	}
	clock.advance(20 * time.Second)
	conn.refreshLeases()
	if _, err := ts.eng.GetRecord(context.Background(), proto.LeaseCollection, "notes/"+replica); err != nil {
		t.Fatalf("no lease after a renewal past the first change: %v", err)
	}
}

// TestCollection: the job purges only what is below both horizons, a
// returning replica is reset lease_expired, a change stamped before the
// write horizon is refused collected, and a second instance agrees.
func TestCollection(t *testing.T) {
	clock := newFakeClock()
	ts := newCollectingServer(t, clock)
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	ctx := context.Background()

	ts.push(t, tok, set1("r1", clock.wall()), set1("r2", clock.wall()), set1("r3", clock.wall())) // seqs 1-3
	// The server has collected notes since now: its write horizon is
	// held for MaxOffline from its first horizon of them.
	if _, err := ts.eng.Collect(ctx); err != nil {
		t.Fatal(err)
	}
	// B reads up to 3 and goes away.
	b := ts.leasePull(t, tok, "b", nil, -1)
	clock.advance(4 * time.Minute)
	ts.leasePull(t, tok, "b", b.Next, -1)

	t1 := clock.stamp(0)
	ts.push(t, tok, del1("r1", t1)) // seq 4
	clock.advance(10 * time.Minute)
	t2 := clock.stamp(0)
	ts.push(t, tok, del1("r2", t2)) // seq 5
	clock.advance(10 * time.Minute)
	ts.push(t, tok, del1("r3", clock.wall())) // seq 6

	// A reads to 5 with an edit pending since between the two deletes.
	a := ts.leasePull(t, tok, "a", nil, -1)
	for a.More {
		a = ts.leasePull(t, tok, "a", a.Next, -1)
	}
	if len(a.Records) != 3 {
		t.Fatalf("A read %d records, want 3", len(a.Records))
	}
	floor := t1 + 5*time.Minute.Milliseconds()
	// B's lease expires; A's floor stays within the reach of a pending
	// floor (twice MaxOffline behind now), so the job honours it.
	clock.advance(90 * time.Minute)
	aCur, err := ts.eng.CursorAt(ctx, "notes", 5)
	if err != nil {
		t.Fatal(err)
	}
	ts.leasePull(t, tok, "a", aCur.Bytes(), floor)

	reports, err := ts.eng.Collect(ctx)
	if err != nil || len(reports) != 1 {
		t.Fatalf("collect: %v %+v", err, reports)
	}
	rep := reports[0]
	if got := rep.Horizon; len(got.Read) != 1 || got.Read[0] != 5 || got.Wall != floor {
		t.Fatalf("horizon %+v, want read [5] (A's cursor) and wall %d (A's floor)", got, floor)
	}
	if rep.Records != 1 {
		t.Fatalf("purged %d records, want 1 (r1: before both horizons; r2's delete is after the write horizon, r3's entry after the read one)", rep.Records)
	}
	for id, want := range map[string]bool{"r1": false, "r2": true, "r3": true} {
		_, err := ts.eng.GetRecord(ctx, "notes", id)
		if (err == nil) != want {
			t.Errorf("%s held: %v, want %v", id, err == nil, want)
		}
	}

	// B comes back with its cursor at 3: lease_expired.
	bCur, _ := ts.eng.CursorAt(ctx, "notes", 3)
	if r := ts.leasePull(t, tok, "b", bCur.Bytes(), -1); r.Reset == nil || r.Reset.Reason != proto.ResetLeaseExpired {
		t.Fatalf("B's pull: reset %+v, want lease_expired", r.Reset)
	}
	// A change stamped before the write horizon is refused collected; a
	// fresh one applies.
	if res := ts.push(t, tok, set1("r2", floor-1)); res[0].Code != proto.CodeCollected {
		t.Fatalf("old change: %+v, want collected", res[0])
	}
	if res := ts.push(t, tok, set1("r2", clock.wall())); res[0].Status != proto.StatusApplied {
		t.Fatalf("fresh change: %+v, want applied", res[0])
	}

	// A second instance on the store enforces the same horizon.
	eng2 := collectingEngine(t, ts, clock, "srv-2")
	srv2, err := New(Config{Engine: eng2, Authorizer: ts.jwt})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv2)
	t.Cleanup(func() { hs.Close(); _ = srv2.Shutdown(ctx) })
	ts2 := &testServer{Server: hs, srv: srv2, eng: eng2, store: ts.store, jwt: ts.jwt}
	if r := ts2.leasePull(t, tok, "b", bCur.Bytes(), -1); r.Reset == nil || r.Reset.Reason != proto.ResetLeaseExpired {
		t.Fatalf("B's pull on the second instance: reset %+v, want lease_expired", r.Reset)
	}
	if res := ts2.push(t, tok, set1("r3", floor-1)); res[0].Code != proto.CodeCollected {
		t.Fatalf("old change on the second instance: %+v, want collected", res[0])
	}

	// Both instances collect at once: they publish the same horizon, and
	// nothing under it survives.
	clock.advance(time.Minute)
	var wg sync.WaitGroup
	var got [2][]engine.CollectReport
	var errs [2]error
	for i, e := range []*engine.Engine{ts.eng, eng2} {
		wg.Add(1)
		go func() { defer wg.Done(); got[i], errs[i] = e.Collect(ctx) }()
	}
	wg.Wait()
	for i := range got {
		if errs[i] != nil || len(got[i]) != 1 {
			t.Fatalf("instance %d: %v %+v", i, errs[i], got[i])
		}
	}
	h1, _, _ := ts.eng.HorizonOf(ctx, "notes", true)
	h2, _, _ := eng2.HorizonOf(ctx, "notes", true)
	if h1.Wall != h2.Wall || h1.Read[0] != h2.Read[0] || h1.Wall != got[0][0].Horizon.Wall || h1.Read[0] != got[1][0].Horizon.Read[0] {
		t.Fatalf("instances disagree: %+v %+v, runs %+v %+v", h1, h2, got[0][0].Horizon, got[1][0].Horizon)
	}
}

// TestCollectionMetrics: what a run reclaims is counted in the server's
// metrics, by the amounts its report gives, and every run is counted.
func TestCollectionMetrics(t *testing.T) {
	clock := newFakeClock()
	ts := newCollectingServer(t, clock)
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	ctx := context.Background()

	const (
		records = "convergo_tombstones_collected_records_total"
		deletes = "convergo_tombstones_collected_deletes_total"
		fields  = "convergo_tombstones_collected_fields_total"
		bytes   = "convergo_tombstone_bytes_reclaimed_total"
		purged  = `convergo_horizon_runs_total{result="purged"}`
		skipped = `convergo_horizon_runs_total{result="skipped"}`
		failed  = `convergo_horizon_runs_total{result="failed"}`
		held    = "convergo_horizon_wall_held_total"
	)
	for _, name := range []string{records, deletes, fields, bytes, purged, skipped, failed, held} {
		if v := ts.metric(t, name); v != 0 {
			t.Fatalf("%s = %v before any run, want 0", name, v)
		}
	}

	// r1 and r2 deleted, r3 keeps title but loses body: no lease, so
	// after two hours everything is below both horizons.
	w := clock.wall()
	v, _ := crdt.EncodeValue("x")
	ts.push(t, tok, set1("r1", w), set1("r2", w), set1("r3", w),
		crdt.Change{Collection: "notes", Record: crdt.SetField("r3", "body", v, crdt.Stamp{Wall: w, Replica: ownReplica})})
	// The first horizon of notes holds W for MaxOffline: a run, counted
	// held, that reclaims nothing.
	if reports, err := ts.eng.Collect(ctx); err != nil || len(reports) != 1 || !reports[0].Held || reports[0].Records != 0 {
		t.Fatalf("first collect: %v %+v", err, reports)
	}
	clock.advance(time.Minute)
	w = clock.wall()
	ts.push(t, tok, del1("r1", w), del1("r2", w),
		crdt.Change{Collection: "notes", Record: crdt.UnsetField("r3", "body", crdt.Stamp{Wall: w, Replica: ownReplica})})
	clock.advance(2 * time.Hour)

	reports, err := ts.eng.Collect(ctx)
	if err != nil || len(reports) != 1 || reports[0].Skipped {
		t.Fatalf("collect: %v %+v", err, reports)
	}
	rep := reports[0]
	if rep.Records != 2 || rep.Deletes != 2 || rep.Fields < 1 || rep.Bytes <= 0 {
		t.Fatalf("report %+v, want 2 records, 2 deletes, the unset field and some bytes", rep.PurgeResult)
	}
	want := map[string]float64{
		records: 2,
		deletes: 2,
		fields:  float64(rep.Fields),
		bytes:   float64(rep.Bytes),
		purged:  2,
		skipped: 0,
		failed:  0,
		held:    1,
	}
	for name, v := range want {
		if got := ts.metric(t, name); got != v {
			t.Errorf("after the run %s = %v, want %v", name, got, v)
		}
	}

	// A second run finds nothing more: the amounts stay, the run counts.
	clock.advance(time.Minute)
	if reports, err := ts.eng.Collect(ctx); err != nil || len(reports) != 1 || reports[0].Records != 0 {
		t.Fatalf("second collect: %v %+v", err, reports)
	}
	want[purged] = 3
	for name, v := range want {
		if got := ts.metric(t, name); got != v {
			t.Errorf("after the second run %s = %v, want %v", name, got, v)
		}
	}
	// The counts are the engine's, as the engine reports them.
	if tot := ts.eng.CollectTotals(); tot.Records != 2 || tot.Purged != 3 || tot.Held != 1 || tot.Bytes != uint64(rep.Bytes) {
		t.Errorf("engine totals %+v", tot)
	}
}

// leaseRecords counts the records and log entries of the lease collection.
func (ts *testServer) leaseRecords(t *testing.T) (records, entries int) {
	t.Helper()
	var after uint64
	for {
		p, err := ts.store.Pull(context.Background(), proto.LeaseCollection, after, stores.PageLimit{Records: stores.MaxPage, Bytes: stores.DefaultPageBytes})
		if err != nil {
			t.Fatal(err)
		}
		for _, en := range p.Entries {
			entries++
			if en.Record.Exists() {
				records++
			}
		}
		if after = p.Next; !p.More {
			return records, entries
		}
	}
}

// TestLeasesBounded: a read-only principal that names a new device on
// every pull makes at most proto.DefaultMaxLeasesPerSubject lease records
// (every pull still answered), and none are left once they expired and a
// collection run passed, while another subject's lease stays.
func TestLeasesBounded(t *testing.T) {
	clock := newFakeClock()
	ts := newCollectingServer(t, clock)
	// Written: a read from the start of a collection never written takes
	// no lease without a pending floor (engine.NoteLease).
	if _, err := ts.eng.Apply(context.Background(), []crdt.Change{set1("r1", clock.wall())}); err != nil {
		t.Fatal(err)
	}
	reader := ts.token(t, "alice", []string{"notes"}, nil)
	const pulls = 350
	for i := range pulls {
		clock.ms.Add(1)
		ts.leasePull(t, reader, fmt.Sprintf("d%d", i), nil, -1)
	}
	if n, _ := ts.leaseRecords(t); n != proto.DefaultMaxLeasesPerSubject {
		t.Fatalf("%d lease records after %d pulls; want %d", n, pulls, proto.DefaultMaxLeasesPerSubject)
	}
	bob := ts.token(t, "bob", []string{"notes"}, nil)
	if a := ts.post(t, proto.PathPull, bob, proto.PullRequest{Collection: "notes", Replica: proto.ReplicaFor("bob", "phone")}); a.status != http.StatusOK {
		t.Fatalf("bob's pull: %d", a.status)
	}
	if _, err := ts.eng.Collect(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, entries := ts.leaseRecords(t); n != proto.DefaultMaxLeasesPerSubject+1 || entries != n {
		t.Fatalf("after a run: %d lease records in %d log entries; want alice's %d and bob's",
			n, entries, proto.DefaultMaxLeasesPerSubject)
	}
	if _, err := ts.eng.GetRecord(context.Background(), proto.LeaseCollection, "notes/"+proto.ReplicaFor("bob", "phone")); err != nil {
		t.Fatalf("bob's lease: %v", err)
	}
	clock.advance(time.Hour + time.Second)
	if _, err := ts.eng.Collect(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, entries := ts.leaseRecords(t); n != 0 || entries != 0 {
		t.Fatalf("after they expired: %d lease records in %d log entries", n, entries)
	}
}
