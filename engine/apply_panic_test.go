package engine

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/internal/bug"
	"github.com/convergo/convergo/stores/memory"
)

// TestApplyAfterABugInAdmission: a bug (a panic) met while Apply admits
// its changes is recovered by the server's goroutine (bug.Recovered) and
// fails that call; the engine must serve the next one. Admission runs
// under the engine's lock, which the panic left held: every later Apply,
// over HTTP, live or captured, then waited for ever.
func TestApplyAfterABugInAdmission(t *testing.T) {
	var boom atomic.Bool
	clk := &fakeClock{ms: 1_700_000_000_000}
	now := func() time.Time {
		if boom.CompareAndSwap(true, false) {
			panic("a bug in the clock")
		}
		return clk.now()
	}
	st := memory.New()
	t.Cleanup(func() { st.Close() })
	e, err := Open(Config{Store: st, Replica: "srv", Now: now, PollInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	v, _ := crdt.EncodeValue("a")
	change := func(id string) []crdt.Change {
		return []crdt.Change{{Collection: "notes", Record: crdt.SetField(id, "f", v, crdt.Stamp{Wall: clk.ms, Replica: "r_dev"})}}
	}
	boom.Store(true)
	err = bug.Recovered(func() error { _, err := e.Apply(context.Background(), change("a")); return err })
	if !errors.Is(err, bug.ErrPanic) {
		t.Fatalf("the Apply that met the bug: %v; want it recovered", err)
	}
	done := make(chan error, 1)
	go func() {
		res, err := e.Apply(context.Background(), change("b"))
		if err == nil {
			err = res[0].Err
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the Apply after: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the Apply after the bug did not return: the engine's lock is still held")
	}
}
