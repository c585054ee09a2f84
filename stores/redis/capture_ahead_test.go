package redis

import (
	"fmt"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
)

// TestCaptureAfterStampAhead: a client's stamps may run up to the drift
// bound ahead of the server's clock. A plain write to a hash made after
// such a client write of the same field is stamped after what the record
// holds, so it wins; before, it was stamped after the shadow's stamps and
// the capturing server's clock alone, and lost to the client's earlier
// write, silently. Without the mirror (here) the shadow never holds the
// client's stamp; with it, it did only once the mirror had written the
// client's field into the hash.
func TestCaptureAfterStampAhead(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		ctx := testContext(t)
		prefix := uniquePrefix()
		cleanupPrefix(t, tg, prefix)
		o := captureOpts(prefix, randomName("convergo-capahead-"))
		o.Addrs, o.Cluster = tg.addrs, tg.cluster
		o.Capture[0].Mirror = false
		s, err := Open(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		e, err := engine.Open(engine.Config{Store: s, Replica: "srv", PollInterval: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close(); s.Close() })
		app := plainClient(t, tg)
		key := prefix + "app:todo:a"
		shadow, _ := s.shadowKey(key)

		ahead := crdt.Stamp{Wall: time.Now().Add(4 * time.Minute).UnixMilli(), Replica: "client"}
		enc, _ := crdt.EncodeValue("client")
		if _, err := s.Apply(ctx, []crdt.Change{{Collection: "todos", Record: crdt.SetField("a", "title", enc, ahead)}}); err != nil {
			t.Fatal(err)
		}
		if err := app.HSet(ctx, key, "title", "foreign").Err(); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the plain write to be captured and acknowledged", func() (bool, string) {
			sh := hashView(t, app, shadow)
			return sh["=a"] != "", fmt.Sprint(sh)
		})
		got, _ := s.Get(ctx, "todos", "a")
		f := got.Record.Fields["title"]
		if r := recordView(t, s, "a"); r["title"] != "foreign" {
			t.Fatalf("title %q stamped %v: the plain write made after the client's (stamped %v, ahead of the server) lost to it", r["title"], f.Stamp, ahead)
		}
		if f.Stamp.Compare(ahead) <= 0 || f.Stamp.Replica != CaptureReplica {
			t.Fatalf("captured title stamped %v; want replica %s and a stamp after the client's %v", f.Stamp, CaptureReplica, ahead)
		}
	})
}
