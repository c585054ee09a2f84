package redis

import (
	"fmt"
	"testing"
	"time"

	"github.com/convergo/convergo/engine"
)

// TestCaptureCountsAnUnmappableKeyOnce: a key that maps to no valid change
// (not a hash; a record id that is invalid) is counted as an unmappable
// write (stores.CaptureCounts.Unmappable counts writes) and logged once,
// not again at every reconciliation pass that meets it unchanged: a key
// left there for a day would count 2,880 writes at the default interval.
// A write to it that a keyspace notification reports is a new write,
// counted again.
func TestCaptureCountsAnUnmappableKeyOnce(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		ctx := testContext(t)
		prefix := uniquePrefix()
		cleanupPrefix(t, tg, prefix)
		app := plainClient(t, tg)
		o := captureOpts(prefix, randomName("convergo-cap-"))
		o.Addrs, o.Cluster = tg.addrs, tg.cluster
		o.CaptureInterval = time.Hour // the passes below are made by the test
		notHash, badID := prefix+"app:todo:s", prefix+"app:todo:bad\x01id"
		// Written before the store opens: no notification tells of them,
		// the passes alone meet them.
		if err := app.Set(ctx, notHash, "a string", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if err := app.HSet(ctx, badID, "v", "x").Err(); err != nil {
			t.Fatal(err)
		}
		s, err := Open(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		e, err := engine.Open(engine.Config{Store: s, Replica: "srv"}) // the sink
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close(); s.Close() })
		skipped := func() uint64 { return s.Stats().CaptureSkipped }
		eventually(t, "both keys met by the pass at the start", func() (bool, string) { return skipped() >= 2, fmt.Sprint(skipped()) })
		for range 2 { // two more passes meet them
			if _, err := s.capture.captureKeys(ctx, []string{notHash, badID}, nil); err != nil {
				t.Fatal(err)
			}
		}
		if got := skipped(); got != 2 {
			t.Fatalf("CaptureSkipped %d after passes met the same two unmappable keys unchanged; want 2 (one write each)", got)
		}
		s.capture.written(notHash) // what a keyspace notification of a write to it does
		if _, err := s.capture.captureKeys(ctx, []string{notHash, badID}, nil); err != nil {
			t.Fatal(err)
		}
		if got := skipped(); got != 3 {
			t.Fatalf("CaptureSkipped %d after %s was written again; want 3", got, notHash)
		}
	})
}
