package redis

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// TestCaptureStampsNothingWhileTheSinkSaysNotNow: a sink that answers
// "not now" (the engine's, while its clock is off its store's) is asked
// before the capture stamps anything: a write the app makes meanwhile
// stays in its hash, unstamped, and is stamped by the clock of the pass
// the sink takes it in, not by the clock of the passes it refused.
func TestCaptureStampsNothingWhileTheSinkSaysNotNow(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		ctx := testContext(t)
		prefix := uniquePrefix()
		cleanupPrefix(t, tg, prefix)
		o := captureOpts(prefix, randomName("convergo-caphold-"))
		o.Addrs, o.Cluster = tg.addrs, tg.cluster
		o.CaptureInterval = 100 * time.Millisecond
		s, err := Open(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		const off, right = int64(1_000_000_000_000), int64(1_800_000_000_000)
		var wall atomic.Int64
		wall.Store(off)
		s.capture.now = func() time.Time { return time.UnixMilli(wall.Load()) }
		sink := newHoldingSink()
		t.Cleanup(s.Capture(sink.sink()))
		app := plainClient(t, tg)
		if err := app.HSet(ctx, prefix+"app:todo:1", "title", "milk").Err(); err != nil {
			t.Fatal(err)
		}
		eventually(t, "two passes refused", func() (bool, string) { return sink.refused.Load() >= 2, "" })
		wall.Store(right)
		sink.held.Store(false)
		eventually(t, "the captured write", func() (bool, string) {
			return len(sink.changes()) > 0, ""
		})
		if w := sink.changes()[0].Record.Fields["title"].Stamp.Wall; w != right {
			t.Fatalf("captured stamp wall %d, want %d: stamped by a pass the sink refused", w, right)
		}
	})
}

// TestMirrorStampsNothingWhileTheSinkSaysNotNow: a mirror pass runs the
// capture script before it writes a record back into its hash, so it too
// asks the sink first: while the sink answers "not now" it writes and
// stamps nothing, and the app's write to that hash stays there, unstamped,
// to be stamped by the clock of the pass the sink takes it in. Once the
// sink takes changes again the mirror is retried and the hash holds both
// the app's write and the mirrored record.
func TestMirrorStampsNothingWhileTheSinkSaysNotNow(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		ctx := testContext(t)
		prefix := uniquePrefix()
		cleanupPrefix(t, tg, prefix)
		o := captureOpts(prefix, randomName("convergo-mirhold-"))
		o.Addrs, o.Cluster = tg.addrs, tg.cluster
		o.CaptureInterval = 100 * time.Millisecond
		s, err := Open(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		const off, right = int64(1_000_000_000_000), int64(1_800_000_000_000)
		var wall atomic.Int64
		wall.Store(off)
		s.capture.now = func() time.Time { return time.UnixMilli(wall.Load()) }

		// A record for the mirror to write back, and the app's own write
		// to its hash, both there before the machinery starts: the
		// mirror's first pass (at start, from 0) meets them.
		rec := crdt.SetField("1", "title", mustValue(t, "bread"), crdt.Stamp{Wall: 1_700_000_000_000, Replica: "a"})
		if _, err := s.Apply(ctx, []crdt.Change{{Collection: "todos", Record: rec}}); err != nil {
			t.Fatal(err)
		}
		app := plainClient(t, tg)
		key := prefix + "app:todo:1"
		if err := app.HSet(ctx, key, "note", "milk").Err(); err != nil {
			t.Fatal(err)
		}

		sink := newHoldingSink()
		t.Cleanup(s.Capture(sink.sink()))

		eventually(t, "passes refused", func() (bool, string) { return sink.refused.Load() >= 3, "" })
		time.Sleep(5 * o.CaptureInterval) // mirror passes at start and at every interval
		if h := hashView(t, app, key); h["title"] != "" || h["note"] != "milk" {
			t.Errorf("hash %v while the sink says not now, want the app's write alone: the mirror wrote", h)
		}
		if n := s.stats.mirrored.Load(); n != 0 {
			t.Errorf("%d records mirrored while the sink says not now, want 0", n)
		}

		wall.Store(right)
		sink.held.Store(false)
		eventually(t, "the captured write", func() (bool, string) {
			return len(sink.changes()) > 0, ""
		})
		w := sink.changes()[0].Record.Fields["note"].Stamp.Wall
		if w != right {
			t.Fatalf("captured stamp wall %d, want %d: stamped by a mirror pass while the sink said not now", w, right)
		}
		eventually(t, "the mirror retried", func() (bool, string) {
			h := hashView(t, app, key)
			return h["title"] == "bread" && h["note"] == "milk", fmt.Sprint(h)
		})
	})
}

// holdingSink is a capture sink that says "not now" (counting each time
// it says so) while held, then takes every change it is given.
type holdingSink struct {
	held    atomic.Bool
	refused atomic.Int32
	mu      sync.Mutex
	got     []crdt.Change
}

func newHoldingSink() *holdingSink {
	h := &holdingSink{}
	h.held.Store(true)
	return h
}

func (h *holdingSink) ready(context.Context) error {
	if h.held.Load() {
		h.refused.Add(1)
		return errors.New("not now")
	}
	return nil
}

func (h *holdingSink) sink() stores.CaptureSink {
	return stores.CaptureSink{Ready: h.ready, Apply: func(ctx context.Context, changes []crdt.Change) ([]stores.CaptureResult, error) {
		if err := h.ready(ctx); err != nil {
			return nil, err
		}
		h.mu.Lock()
		h.got = append(h.got, changes...)
		h.mu.Unlock()
		return make([]stores.CaptureResult, len(changes)), nil
	}}
}

// changes returns a copy of the changes taken so far.
func (h *holdingSink) changes() []crdt.Change {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]crdt.Change(nil), h.got...)
}
