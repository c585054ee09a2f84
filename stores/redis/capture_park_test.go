package redis

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// fencingSink fails, as a whole, every batch holding a change of
// collection fenced while on is set (as the engine does for a collection
// whose writers are fenced out), and takes every other batch.
type fencingSink struct {
	fenced string
	on     atomic.Bool
	failed atomic.Int32
	mu     sync.Mutex
	got    []crdt.Change
}

func (f *fencingSink) sink() stores.CaptureSink {
	return stores.CaptureSink{Apply: func(_ context.Context, changes []crdt.Change) ([]stores.CaptureResult, error) {
		for _, c := range changes {
			if c.Collection == f.fenced && f.on.Load() {
				f.failed.Add(1)
				return nil, fmt.Errorf("%w: collection %s is fenced", stores.ErrUnavailable, f.fenced)
			}
		}
		f.mu.Lock()
		f.got = append(f.got, changes...)
		f.mu.Unlock()
		return make([]stores.CaptureResult, len(changes)), nil
	}}
}

// took reports whether the sink took a change of coll/id.
func (f *fencingSink) took(coll, id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.got {
		if c.Collection == coll && c.Record.ID == id {
			return true
		}
	}
	return false
}

// TestCaptureParksFailingCollection: a collection whose captured changes
// the sink fails must not stop capture for the other collections. Before,
// a failed delivery queued all its keys again together, so every later
// batch held the failing collection's key and failed whole: a plain hash
// of another collection written meanwhile was never captured. The failing
// collection's keys are parked (shown in Stats at once, warned about once
// its first try fails too) and
// captured once the sink takes them again.
func TestCaptureParksFailingCollection(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		ctx := testContext(t)
		prefix := uniquePrefix()
		cleanupPrefix(t, tg, prefix)
		o := captureOpts(prefix, randomName("convergo-cappark-"))
		o.Capture = append(o.Capture, CaptureRule{Collection: "locked", KeyPattern: prefix + "app:locked:*"})
		o.Addrs, o.Cluster = tg.addrs, tg.cluster
		o.CaptureInterval = 200 * time.Millisecond
		logs := &syncBuffer{}
		o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		s, err := Open(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		f := &fencingSink{fenced: "locked"}
		f.on.Store(true)
		t.Cleanup(s.Capture(f.sink()))
		app := plainClient(t, tg)

		if err := app.HSet(ctx, prefix+"app:locked:1", "title", "held").Err(); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the sink to fail the fenced collection", func() (bool, string) { return f.failed.Load() >= 1, "" })
		if err := app.HSet(ctx, prefix+"app:todo:2", "title", "other").Err(); err != nil {
			t.Fatal(err)
		}
		eventually(t, "todos/2 to be captured while collection locked fails", func() (bool, string) {
			return f.took("todos", "2"), fmt.Sprintf("stats %+v", s.Stats())
		})
		eventually(t, "locked to show parked", func() (bool, string) {
			st := s.Stats()
			return st.CaptureParked == 1, fmt.Sprintf("stats %+v", st)
		})
		parked := s.ParkedCaptures()
		if len(parked) != 1 || parked[0].Collection != "locked" || parked[0].Key != prefix+"app:locked:1" || !strings.Contains(parked[0].Reason, "fenced") {
			t.Fatalf("ParkedCaptures %+v, want %sapp:locked:1 with the sink's error", parked, prefix)
		}

		// Parked at info, a warning once its first try fails too, and
		// debug on the later tries.
		eventually(t, "two tries of the parked collection", func() (bool, string) {
			return strings.Contains(logs.String(), "parked collection still fails"), ""
		})
		if n := strings.Count(logs.String(), "level=INFO msg=\"capture: a collection's changes fail"); n != 1 {
			t.Fatalf("%d logs of the collection parked, want 1 at info (on entering the parked state):\n%s", n, logs)
		}
		if n := strings.Count(logs.String(), "level=WARN msg=\"capture: a parked collection's changes still fail after a retry"); n != 1 {
			t.Fatalf("%d warnings of the collection still parked, want 1 (on its first failed try, not per try):\n%s", n, logs)
		}

		f.on.Store(false)
		eventually(t, "locked/1 to be captured once the sink takes it", func() (bool, string) {
			return f.took("locked", "1"), fmt.Sprintf("stats %+v", s.Stats())
		})
		eventually(t, "nothing parked", func() (bool, string) {
			st := s.Stats()
			return st.CaptureParked == 0 && len(s.ParkedCaptures()) == 0, fmt.Sprintf("stats %+v", st)
		})
		if !strings.Contains(logs.String(), "level=INFO msg=\"capture: a parked collection's changes were taken") {
			t.Fatalf("no log of the collection leaving the parked state:\n%s", logs)
		}
	})
}

// syncBuffer is a bytes.Buffer safe for concurrent use, for logs.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestCaptureFindsARefusalAlone: a sink that refuses a whole delivery
// for good (ErrTooLarge) because of one change is offered its changes one
// at a time: that change is refused (counted, not parked, not retried
// forever), and the others of the delivery are captured.
func TestCaptureFindsARefusalAlone(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		ctx := testContext(t)
		prefix := uniquePrefix()
		cleanupPrefix(t, tg, prefix)
		o := captureOpts(prefix, randomName("convergo-caprefuse-"))
		o.Addrs, o.Cluster = tg.addrs, tg.cluster
		s, err := Open(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		var mu sync.Mutex
		var got []string
		var held atomic.Bool
		held.Store(true)
		t.Cleanup(s.Capture(stores.CaptureSink{
			Ready: func(context.Context) error {
				if held.Load() {
					return fmt.Errorf("not now")
				}
				return nil
			},
			Apply: func(_ context.Context, changes []crdt.Change) ([]stores.CaptureResult, error) {
				for _, c := range changes {
					if c.Record.ID == "big" {
						return nil, fmt.Errorf("%w: record big", stores.ErrTooLarge)
					}
				}
				mu.Lock()
				defer mu.Unlock()
				for _, c := range changes {
					got = append(got, c.Record.ID)
				}
				return make([]stores.CaptureResult, len(changes)), nil
			},
		}))
		app := plainClient(t, tg)
		// Written while the sink holds back, so that one delivery holds both.
		for _, id := range []string{"big", "small"} {
			if err := app.HSet(ctx, prefix+"app:todo:"+id, "title", id).Err(); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, "both keys queued", func() (bool, string) { return s.capture.queued() == 2, "" })
		held.Store(false)
		eventually(t, "small captured and big refused", func() (bool, string) {
			mu.Lock()
			defer mu.Unlock()
			st := s.Stats()
			return len(got) == 1 && got[0] == "small" && st.CaptureRefused == 1 && st.CaptureParked == 0, fmt.Sprintf("took %v, stats %+v", got, st)
		})
	})
}
