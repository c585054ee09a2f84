package engine

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport/proto"
)

// A reader may name any collection its rights match, written or not, and
// each such read with a replica is a lease (bounded per subject and
// collection only). A collection run publishes no horizon for a
// collection never written: it has nothing to collect, and a horizon
// record, once written, is never removed, so one subject naming new
// collections at its rate would grow the horizon log, and every later
// run's work, without bound for every tenant of the store. A collection
// written later gets its horizon at the next run.
func TestNoHorizonOfUnwrittenCollections(t *testing.T) {
	const n = 200
	st := memory.New()
	t.Cleanup(func() { st.Close() })
	e, _ := openUnwritten(t, st, n)
	reps, err := e.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if horizons := horizonRecords(t, e); len(reps) != 0 || horizons != 0 {
		t.Fatalf("a run after reads of %d collections never written: %d reports, %d horizon records, want none", n, len(reps), horizons)
	}
	st0, err := e.Now("t.x0")
	if err != nil {
		t.Fatal(err)
	}
	v, _ := crdt.EncodeValue("a")
	if _, err := e.Apply(context.Background(), []crdt.Change{{Collection: "t.x0", Record: crdt.SetField("r", "f", v, st0)}}); err != nil {
		t.Fatal(err)
	}
	reps, err = e.Collect(context.Background())
	if err != nil || len(reps) != 1 || reps[0].Collection != "t.x0" || horizonRecords(t, e) != 1 {
		t.Fatalf("a run once t.x0 was written: %v, %v; want its horizon alone", reps, err)
	}
}

// openUnwritten opens an engine collecting "t.*" and notes a lease of one
// reader on each of n collections of it that nobody wrote.
func openUnwritten(t *testing.T, st stores.Store, n int) (*Engine, string) {
	t.Helper()
	clk := &fakeClock{ms: 1_700_000_000_000}
	e, err := Open(Config{Store: st, Replica: "srv", Now: clk.now, PollInterval: -1,
		Rules:        []Rule{{Pattern: "t.*", MaxOffline: time.Hour}},
		CollectGrace: -1, CollectEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	reader := proto.ReplicaFor("mallory", "dev")
	for i := range n {
		if err := e.NoteLease(context.Background(), fmt.Sprintf("t.x%d", i), Lease{Replica: reader, Pending: -1}); err != nil {
			t.Fatal(err)
		}
	}
	return e, reader
}

func horizonRecords(t *testing.T, e *Engine) int {
	t.Helper()
	n := 0
	if err := e.eachRecord(context.Background(), proto.HorizonCollection, func(crdt.Record) { n++ }); err != nil {
		t.Fatal(err)
	}
	return n
}
