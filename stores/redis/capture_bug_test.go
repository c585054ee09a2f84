package redis

import (
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores/storetest"
)

// TestCaptureLoopsSurviveABug: a bug (a panic) met by the capture's
// goroutines (delivering captured hashes, mirroring records into them) on
// what clients and the app wrote fails that pass, logged at error level,
// and the pass is made again: the goroutine goes on, and nothing is
// dropped. Before, the panic ended the process.
func TestCaptureLoopsSurviveABug(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		ctx := testContext(t)
		prefix := uniquePrefix()
		cleanupPrefix(t, tg, prefix)
		var logs storetest.LogBuffer
		o := captureOpts(prefix, randomName("convergo-capbug-"))
		o.Addrs, o.Cluster = tg.addrs, tg.cluster
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		s, err := Open(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		// Before the capture's goroutines start (engine.Open registers
		// the sink): each of the first two passes that reads the clock
		// meets a bug.
		var bugs atomic.Int32
		s.capture.now = func() time.Time {
			if bugs.Add(1) <= 2 {
				panic("a bug in a capture pass")
			}
			return time.Now()
		}
		e, err := engine.Open(engine.Config{Store: s, Replica: "srv", PollInterval: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close(); s.Close() })
		app := plainClient(t, tg)
		key := func(id string) string { return prefix + "app:todo:" + id }

		if err := app.HSet(ctx, key("1"), "title", "milk").Err(); err != nil {
			t.Fatal(err)
		}
		if err := e.Put(ctx, "todos", "2", engine.Doc{"title": "bread"}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the captured hash", func() (bool, string) {
			r := recordView(t, s, "1")
			return r["title"] == "milk", fmt.Sprint(r)
		})
		eventually(t, "the mirrored record", func() (bool, string) {
			r, h := recordView(t, s, "2"), hashView(t, app, key("2"))
			return maps.Equal(r, h), fmt.Sprintf("record %v, hash %v", r, h)
		})
		if bugs.Load() < 2 {
			t.Fatalf("%d passes met the bug, want 2", bugs.Load())
		}
		if l := logs.String(); strings.Count(l, "level=ERROR") < 2 || !strings.Contains(l, "a bug in a capture pass") {
			t.Fatalf("logs %q; want each bug at error level", l)
		}
	})
}
