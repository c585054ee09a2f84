package engine_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport/proto"
)

// capturingClockStore is a memory store with a clock of its own (read
// from the real clock) that captures: the test calls the engine's sink as
// a store's capture goroutine would.
type capturingClockStore struct {
	*memory.Store
	sink stores.CaptureSink
}

func (s *capturingClockStore) StoreTime(context.Context) (time.Time, time.Duration, error) {
	return time.Now(), time.Millisecond, nil
}

func (s *capturingClockStore) Capture(sink stores.CaptureSink) func() {
	s.sink = sink
	return func() {}
}

// openOff opens an engine whose clock is a year ahead of its store's.
func openOff(t *testing.T) (*engine.Engine, *capturingClockStore, *skewedClock) {
	t.Helper()
	clock := &skewedClock{}
	clock.set(365 * 24 * time.Hour)
	st := &capturingClockStore{Store: memory.New()}
	e, err := engine.Open(engine.Config{Store: st, Now: clock.config(), PollInterval: -1, ClockCheckEvery: time.Hour,
		Rules: []engine.Rule{{Pattern: "notes", MaxOffline: time.Hour}}, CollectEvery: -1, CollectGrace: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	if err := e.ClockHealth(); !errors.Is(err, engine.ErrClockSkew) {
		t.Fatalf("a year ahead, after Open: ClockHealth %v, want ErrClockSkew", err)
	}
	return e, st, clock
}

// backInTime sets the clock right and has the engine check it.
func backInTime(t *testing.T, e *engine.Engine, clock *skewedClock) {
	t.Helper()
	clock.set(0)
	if _, err := e.CheckClock(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// While its clock is off, the engine writes no lease: a lease whose
// "seen" is a year ahead would hold the read horizons for a year, one far
// behind would let another instance release a reader's horizon early.
// Pulls are served while the clock is off (they stamp nothing), so their
// leases, and the live pings' renewals, go through NoteLease.
func TestNoteLeaseRefusedWhileClockOff(t *testing.T) {
	e, st, clock := openOff(t)
	ctx := context.Background()
	l := engine.Lease{Replica: "abcdefghijklmnop_d", Cursor: engine.FreshStart(), Pending: 5}
	if err := e.NoteLease(ctx, "notes", l); !errors.Is(err, engine.ErrClockSkew) {
		t.Fatalf("NoteLease while the clock is off: %v, want ErrClockSkew", err)
	}
	if _, err := st.Get(ctx, proto.LeaseCollection, "notes/"+l.Replica); !errors.Is(err, stores.ErrNotFound) {
		t.Fatalf("lease record while the clock is off: %v, want none", err)
	}
	backInTime(t, e, clock)
	if err := e.NoteLease(ctx, "notes", l); err != nil {
		t.Fatalf("NoteLease in time: %v", err)
	}
	if _, err := st.Get(ctx, proto.LeaseCollection, "notes/"+l.Replica); err != nil {
		t.Fatalf("lease record in time: %v", err)
	}
}

// While its clock is off, the engine's own writes (Put, Update, Unset,
// Delete) are refused with ErrClockSkew: they would be stamped with the
// off clock, a year ahead winning every later write for a year.
func TestEngineWritesRefusedWhileClockOff(t *testing.T) {
	e, st, clock := openOff(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		write func() error
	}{
		{"put", func() error { return e.Put(ctx, "notes", "n1", engine.Doc{"t": "x"}) }},
		{"update", func() error { return e.Update(ctx, "notes", "n1", engine.Doc{"t": "x"}) }},
		{"unset", func() error { return e.Unset(ctx, "notes", "n1", "t") }},
		{"delete", func() error { return e.Delete(ctx, "notes", "n1") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.write(); !errors.Is(err, engine.ErrClockSkew) {
				t.Fatalf("%s while the clock is off: %v, want ErrClockSkew", tc.name, err)
			}
			if _, err := st.Get(ctx, "notes", "n1"); !errors.Is(err, stores.ErrNotFound) {
				t.Fatalf("record after a refused %s: %v, want none", tc.name, err)
			}
		})
	}
	backInTime(t, e, clock)
	if err := e.Put(ctx, "notes", "n1", engine.Doc{"t": "x"}); err != nil {
		t.Fatalf("put in time: %v", err)
	}
}

// While its clock is off, the engine's capture sink answers "not now"
// (an error, which the store retries later; the change stays in the
// source) rather than admitting captured changes against the off clock.
func TestCaptureHeldWhileClockOff(t *testing.T) {
	e, st, clock := openOff(t)
	ctx := context.Background()
	if st.sink.Apply == nil || st.sink.Ready == nil {
		t.Fatal("the engine registered no capture sink")
	}
	// A stamp in the real present: a year behind the off clock, so
	// admitted by it, and within drift of the right one.
	c := crdt.Change{Collection: "notes", Record: crdt.Record{ID: "c1", Fields: map[string]crdt.Field{
		"t": {Stamp: crdt.Stamp{Wall: time.Now().UnixMilli(), Replica: "cap-test"}, Value: []byte{0x61, 0x78}}}}}
	if err := st.sink.CheckReady(ctx); !errors.Is(err, engine.ErrClockSkew) {
		t.Fatalf("capture sink asked whether it takes changes while the clock is off: %v, want ErrClockSkew", err)
	}
	if _, err := st.sink.Apply(ctx, []crdt.Change{c}); !errors.Is(err, engine.ErrClockSkew) {
		t.Fatalf("capture sink while the clock is off: %v, want an error wrapping ErrClockSkew", err)
	}
	if _, err := st.Get(ctx, "notes", "c1"); !errors.Is(err, stores.ErrNotFound) {
		t.Fatalf("captured record while the clock is off: %v, want none", err)
	}
	backInTime(t, e, clock)
	if err := st.sink.CheckReady(ctx); err != nil {
		t.Fatalf("capture sink asked whether it takes changes in time: %v", err)
	}
	res, err := st.sink.Apply(ctx, []crdt.Change{c})
	if err != nil || res[0].Err != nil {
		t.Fatalf("capture sink in time: %v %v", err, res)
	}
	if _, err := st.Get(ctx, "notes", "c1"); err != nil {
		t.Fatalf("captured record in time: %v", err)
	}
}
