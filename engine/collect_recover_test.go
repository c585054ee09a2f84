package engine

import (
	"context"
	"errors"
	"testing"

	"github.com/convergo/convergo/internal/bug"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport/proto"
)

// panicLeases is a memory store whose reading of the lease log panics: a
// bug met on what clients' reads wrote there.
type panicLeases struct{ *memory.Store }

func (p panicLeases) Pull(ctx context.Context, collection string, after uint64, limit stores.PageLimit) (stores.Page, error) {
	if collection == proto.LeaseCollection {
		panic("a bug reading the leases")
	}
	return p.Store.Pull(ctx, collection, after, limit)
}

// TestCollectBugFailsOneRun: a bug met during a collection run fails that
// run (an error, counted in CollectTotals.Failed), as a store error does;
// the collection loop logs it and runs again at its interval. Before, the
// panic ended the process.
func TestCollectBugFailsOneRun(t *testing.T) {
	st := panicLeases{memory.New()}
	e, err := Open(Config{Store: st, Replica: "srv", PollInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(); st.Close() })
	if _, err := e.Collect(context.Background()); !errors.Is(err, bug.ErrPanic) {
		t.Fatalf("collect: %v; want a panic's error", err)
	}
	if got := e.CollectTotals().Failed; got != 1 {
		t.Fatalf("failed runs: %d, want 1", got)
	}
}
