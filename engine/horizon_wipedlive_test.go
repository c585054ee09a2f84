package engine_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
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
	open := func(replica string) *engine.Engine {
		st, err := redis.Open(ctx, redis.Options{Addrs: []string{rs.Addr()}, KeyPrefix: "wiped:",
			DialTimeout: 500 * time.Millisecond, ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		e, err := engine.Open(engine.Config{Store: st, Replica: replica, Now: func() time.Time { return time.UnixMilli(ms) },
			PollInterval: -1, Rules: []engine.Rule{{Pattern: "notes", MaxOffline: time.Hour}},
			CollectGrace: -1, CollectEvery: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		return e
	}
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
