package engine

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/internal/bug"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
)

// capturing is a memory store that captures: it keeps the sink the
// engine registers, which the test calls as a store's capture goroutine
// would.
type capturing struct {
	*memory.Store
	sink stores.CaptureSink
}

func (c *capturing) Capture(sink stores.CaptureSink) func() {
	c.sink = sink
	return func() {}
}

// syncBuffer is a log destination safe for the engine's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestCapturedBugRefusesOneChange: a captured foreign write that meets a
// bug (here a validation function that panics on its shape) is refused,
// that one change alone, and reported at error level; the rest of its
// batch is applied, and the store's capture goroutine, which called the
// sink, goes on. Before, the panic ended the process.
func TestCapturedBugRefusesOneChange(t *testing.T) {
	st := &capturing{Store: memory.New()}
	var logs syncBuffer
	e, err := Open(Config{Store: st, Replica: "srv", PollInterval: -1,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Rules: []Rule{{Pattern: "todos", Validate: func(_ context.Context, _ string, r crdt.Record) error {
			if _, ok := r.Fields["title"]; !ok {
				panic("a validation function that expects a title")
			}
			return nil
		}}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(); st.Close() })
	if st.sink.Apply == nil {
		t.Fatal("the engine registered no capture sink")
	}
	stamp := crdt.Stamp{Wall: 1000, Replica: "cap-test"}
	changes := []crdt.Change{
		{Collection: "todos", Record: crdt.SetField("a", "title", value(t, "one"), stamp)},
		{Collection: "todos", Record: crdt.SetField("b", "done", value(t, true), stamp)},
		{Collection: "todos", Record: crdt.SetField("c", "title", value(t, "three"), stamp)},
	}
	res, err := st.sink.Apply(context.Background(), changes)
	if err != nil {
		t.Fatalf("sink: %v; want per-change results", err)
	}
	if len(res) != 3 || res[0].Err != nil || res[2].Err != nil || !errors.Is(res[1].Err, bug.ErrPanic) {
		t.Fatalf("results %+v; want the second refused with a panic, the others applied", res)
	}
	for _, id := range []string{"a", "c"} {
		if doc, err := e.Get(context.Background(), "todos", id); err != nil || doc["title"] == nil {
			t.Fatalf("record %s: %v %v; want it applied", id, doc, err)
		}
	}
	if l := logs.String(); !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "record=b") {
		t.Fatalf("logs %q; want the refused change at error level", l)
	}
}
