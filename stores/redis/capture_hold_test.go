package redis

import (
	"context"
	"errors"
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
		var held atomic.Bool
		held.Store(true)
		var refused atomic.Int32
		var mu sync.Mutex
		var got []crdt.Change
		notNow := func(context.Context) error {
			if held.Load() {
				refused.Add(1)
				return errors.New("not now")
			}
			return nil
		}
		stop := s.Capture(stores.CaptureSink{Ready: notNow, Apply: func(ctx context.Context, changes []crdt.Change) ([]stores.CaptureResult, error) {
			if err := notNow(ctx); err != nil {
				return nil, err
			}
			mu.Lock()
			got = append(got, changes...)
			mu.Unlock()
			return make([]stores.CaptureResult, len(changes)), nil
		}})
		t.Cleanup(stop)
		app := plainClient(t, tg)
		if err := app.HSet(ctx, prefix+"app:todo:1", "title", "milk").Err(); err != nil {
			t.Fatal(err)
		}
		eventually(t, "two passes refused", func() (bool, string) { return refused.Load() >= 2, "" })
		wall.Store(right)
		held.Store(false)
		eventually(t, "the captured write", func() (bool, string) {
			mu.Lock()
			defer mu.Unlock()
			return len(got) > 0, ""
		})
		mu.Lock()
		defer mu.Unlock()
		if w := got[0].Record.Fields["title"].Stamp.Wall; w != right {
			t.Fatalf("captured stamp wall %d, want %d: stamped by a pass the sink refused", w, right)
		}
	})
}
