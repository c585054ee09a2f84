package engine_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/redis"
	"github.com/convergo/convergo/stores/redis/redistest"
	"github.com/convergo/convergo/transport/proto"
)

// TestWriteHorizonOfAStoreWipedUnderRunningServers: a Redis without
// persistence restarts under two running servers (or is flushed): the
// store comes back empty, with a new identity and no published horizon.
// Server b had read the collection's horizon just before. A reader is
// reset history_lost by server a and gives x back through b (no sticky
// sessions): x, written more than MaxOffline ago, must be taken, since
// the store holds no horizon now. Refused collected (by the horizon b
// remembered of the store that is gone), x is dropped by every replica
// that gives it back, and lost everywhere.
func TestWriteHorizonOfAStoreWipedUnderRunningServers(t *testing.T) {
	ctx := context.Background()
	rs := redistest.Start(t, "--save", "", "--appendonly", "no")
	ms := int64(1_700_000_000_000)
	open := wipedEngines(t, rs, &ms, time.Hour)
	a, b := open("srv-a"), open("srv-b")

	alice := proto.ReplicaFor("alice", "laptop")
	write := func(e *engine.Engine, id string, wall int64) crdt.Change {
		t.Helper()
		v, _ := crdt.EncodeValue("mine")
		c := crdt.Change{Collection: "notes", Record: crdt.SetField(id, "owner", v, crdt.Stamp{Wall: wall, Replica: alice})}
		if res, err := e.Apply(ctx, []crdt.Change{c}); err != nil || res[0].Err != nil {
			t.Fatalf("%s written: %+v, %v", id, res, err)
		}
		return c
	}
	x := write(a, "x", ms)
	page, err := a.Pull(ctx, "notes", engine.Cursor{}, engine.PageLimit{Records: 10})
	if err != nil {
		t.Fatal(err)
	}
	// alice stays online past MaxOffline: W passes x's stamp.
	var w int64
	for range 3 {
		ms += 30 * time.Minute.Milliseconds()
		if err := a.NoteLease(ctx, "notes", engine.Lease{Replica: alice, Cursor: page.Next, Pending: -1}); err != nil {
			t.Fatal(err)
		}
		reps, err := a.Collect(ctx)
		if err != nil || len(reps) != 1 {
			t.Fatalf("Collect = %v, %v", reps, err)
		}
		w = reps[0].Horizon.Wall
	}
	if w <= ms-2*time.Hour.Milliseconds() {
		t.Fatalf("W %d is not past x's stamp", w)
	}
	write(b, "y", ms) // b reads the horizon

	rs.Kill()
	rs.Start() // empty

	// The reader comes back to a: reset, history lost.
	var reset *engine.ResetError
	for i := 0; ; i++ {
		_, err := a.Pull(ctx, "notes", page.Next, engine.PageLimit{Records: 10})
		if errors.As(err, &reset) {
			break
		}
		if i == 50 {
			t.Fatalf("the pull after the wipe: %v, want a reset", err)
		}
	}
	if reset.Reason != engine.ResetHistoryLost {
		t.Fatalf("reset %v, want history_lost", reset.Reason)
	}
	// It gives x back through b.
	var res []engine.Result
	for i := 0; ; i++ {
		if res, err = b.Apply(ctx, []crdt.Change{x}); err == nil {
			break
		}
		if i == 50 {
			t.Fatal(err)
		}
	}
	if res[0].Err != nil {
		t.Fatalf("x given back after the store was wiped: %v; want it taken (the store holds no horizon)", res[0].Err)
	}
}

// TestReadHorizonOfAStoreWipedUnderRunningServers: as
// TestWriteHorizonOfAStoreWipedUnderRunningServers, but for the read
// horizon: a reader pulls the store made anew from the start through
// server c, then goes on through server b, which had read the
// collection's horizon just before the wipe. Its cursor is of the new
// history, whose positions the old read horizon says nothing of.
func TestReadHorizonOfAStoreWipedUnderRunningServers(t *testing.T) {
	ctx := context.Background()
	rs := redistest.Start(t, "--save", "", "--appendonly", "no")
	ms := int64(1_700_000_000_000)
	open := wipedEngines(t, rs, &ms, time.Hour)
	a, b := open("srv-a"), open("srv-b")
	alice := proto.ReplicaFor("alice", "laptop")
	write := func(e *engine.Engine, id string) {
		t.Helper()
		v, _ := crdt.EncodeValue("mine")
		c := crdt.Change{Collection: "notes", Record: crdt.SetField(id, "owner", v, crdt.Stamp{Wall: ms, Replica: alice})}
		var res []engine.Result
		var err error
		for i := 0; ; i++ {
			if res, err = e.Apply(ctx, []crdt.Change{c}); err == nil || i == 50 {
				break
			}
		}
		if err != nil || res[0].Err != nil {
			t.Fatalf("%s written: %+v, %v", id, res, err)
		}
	}
	for _, id := range []string{"r1", "r2", "r3", "r4", "r5"} {
		write(a, id)
	}
	ms += time.Minute.Milliseconds()
	reps, err := a.Collect(ctx) // R at the head, 5: no lease
	if err != nil || len(reps) != 1 {
		t.Fatalf("Collect = %v, %v", reps, err)
	}
	t.Logf("horizon %+v", reps[0].Horizon)
	if _, _, err := b.HorizonOf(ctx, "notes", true); err != nil { // b reads the horizon
		t.Fatal(err)
	}

	rs.Kill()
	rs.Start() // empty

	// In the store made anew a writer writes two records, and a reader
	// reads them from the start through c, a server started since.
	c := open("srv-c")
	write(c, "n1")
	write(c, "n2")
	page, err := c.Pull(ctx, "notes", engine.Cursor{}, engine.PageLimit{Records: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Entries) != 2 {
		t.Fatalf("%d records read in the store made anew, want 2", len(page.Entries))
	}
	// It goes on through b.
	if _, err := b.Pull(ctx, "notes", page.Next, engine.PageLimit{Records: 10}); err != nil {
		t.Errorf("the pull through b of a cursor of the store made anew: %v; want none", err)
	}
}

// TestMarkOfAStoreWipedUnderRunningServers: a reader's reading from the
// start is marked with the id of the horizon published as of that pull,
// and the read horizons published after the mark do not reset it. A
// Redis restarted empty under running servers holds no horizon, and its
// publications are numbered from 1 again. A reader that reads the store
// made anew from the start through server b, which had read the old
// store's horizon (its third publication) just before the wipe and has
// learnt the store's new identity since, must not carry that id: the new store's first two publications would pass its
// cursor without resetting it, and a delete collected under them would
// never reach it, the deleted record kept for ever.
func TestMarkOfAStoreWipedUnderRunningServers(t *testing.T) {
	ctx := context.Background()
	rs := redistest.Start(t, "--save", "", "--appendonly", "no")
	ms := int64(1_700_000_000_000)
	maxOff := time.Hour
	open := wipedEngines(t, rs, &ms, maxOff)
	alice := proto.ReplicaFor("alice", "laptop")
	apply := func(e *engine.Engine, rec crdt.Record) {
		t.Helper()
		var res []engine.Result
		var err error
		for i := 0; ; i++ {
			if res, err = e.Apply(ctx, []crdt.Change{{Collection: "notes", Record: rec}}); err == nil || i == 50 {
				break
			}
		}
		if err != nil || res[0].Err != nil {
			t.Fatalf("%s written: %+v, %v", rec.ID, res, err)
		}
	}
	write := func(e *engine.Engine, id string) {
		t.Helper()
		v, _ := crdt.EncodeValue("mine")
		apply(e, crdt.SetField(id, "owner", v, crdt.Stamp{Wall: ms, Replica: alice}))
	}
	collect := func(e *engine.Engine) engine.Horizon {
		t.Helper()
		reps, err := e.Collect(ctx)
		if err != nil || len(reps) != 1 {
			t.Fatalf("Collect = %v, %v", reps, err)
		}
		return reps[0].Horizon
	}
	a, b := open("srv-a"), open("srv-b")
	write(a, "r1")
	for range 3 {
		ms += time.Minute.Milliseconds()
		collect(a)
	}
	// b serves a reader, and reads the horizon.
	if _, err := b.Pull(ctx, "notes", engine.Cursor{}, engine.PageLimit{Records: 10}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.HorizonOf(ctx, "notes", true); err != nil {
		t.Fatal(err)
	}

	rs.Kill()
	rs.Start() // empty

	c := open("srv-c") // a server started since
	write(c, "n1")
	write(c, "n2")
	// A reader of the store made anew goes on through b: b learns the
	// store's new identity.
	first, err := c.Pull(ctx, "notes", engine.Cursor{}, engine.PageLimit{Records: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Pull(ctx, "notes", first.Next, engine.PageLimit{Records: 10}); err != nil {
		t.Fatal(err)
	}
	// Another reads it from the start through b.
	page, err := b.Pull(ctx, "notes", engine.Cursor{}, engine.PageLimit{Records: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Entries) != 2 {
		t.Fatalf("%d records read in the store made anew, want 2", len(page.Entries))
	}
	// The reader is away. n1 is deleted, n3 written, and two runs
	// MaxOffline apart collect n1's tombstone.
	ms += time.Minute.Milliseconds()
	apply(c, crdt.DeleteRecord("n1", crdt.Stamp{Wall: ms, Replica: alice}))
	write(c, "n3")
	collect(c)
	ms += maxOff.Milliseconds() + time.Minute.Milliseconds()
	if h := collect(c); h.ID>>24 >= 3 {
		t.Fatalf("the store made anew published its horizon %d, want its second", h.ID>>24)
	}
	if ent, err := c.GetRecord(ctx, "notes", "n1"); !errors.Is(err, stores.ErrNotFound) {
		t.Fatalf("n1's tombstone was not collected: %v, %v", ent, err)
	}
	// The reader comes back: it cannot read n1's delete, so it must be
	// reset lease_expired and reconcile.
	var reset *engine.ResetError
	if _, err := c.Pull(ctx, "notes", page.Next, engine.PageLimit{Records: 10}); !errors.As(err, &reset) || reset.Reason != engine.ResetLeaseExpired {
		t.Errorf("the reader back after n1's tombstone was collected: %v; want a reset lease_expired", err)
	}
}

// wipedEngines returns how these tests open an engine on Redis rs (key
// prefix "wiped:", short timeouts: the tests restart it under them),
// collecting "notes" with maxOff and no grace, at the wall time *ms (not
// checked against Redis's clock).
func wipedEngines(t *testing.T, rs *redistest.Server, ms *int64, maxOff time.Duration) func(replica string) *engine.Engine {
	return func(replica string) *engine.Engine {
		t.Helper()
		st, err := redis.Open(context.Background(), redis.Options{Addrs: []string{rs.Addr()}, KeyPrefix: "wiped:",
			DialTimeout: 500 * time.Millisecond, ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		e, err := engine.Open(engine.Config{Store: st, Replica: replica, Now: func() time.Time { return time.UnixMilli(*ms) },
			PollInterval: -1, Rules: []engine.Rule{{Pattern: "notes", MaxOffline: maxOff}},
			CollectGrace: -1, CollectEvery: -1,
			ClockCheckEvery: -1}) // a model clock, years off Redis's
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		return e
	}
}
