package redis

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores/redis/redistest"
)

// nameWhere returns the first of base0, base1, ... whose hash slot
// satisfies ok.
func nameWhere(base string, ok func(slot int) bool) string {
	for i := 0; ; i++ {
		if n := base + strconv.Itoa(i); ok(keySlot(n)) {
			return n
		}
	}
}

// TestCaptureAfterTheCollectionsMasterLostWrites: on a cluster, an app's
// hash and its shadow live in the key's slot, the captured record in the
// collection's. When the collection's master restarts and loses the
// captured change (no persistence, or the last second of everysec), the
// store starts a new epoch, history lost; the app's hash still holds the
// write, and capture must offer it again, or the hash and the collection
// differ for good, silently.
func TestCaptureAfterTheCollectionsMasterLostWrites(t *testing.T) {
	coll := nameWhere("todos", func(slot int) bool { return slot != keySlot("convergo") && slot != keySlot("app") })
	one, two := privateCluster(t, keySlot(coll))
	s, e, app := openCapturingCluster(t, one, two, CaptureRule{Collection: coll, KeyPattern: "{app}:todo:*"})

	ctx := testContext(t)
	got := func(id string) (string, bool) {
		entry, err := s.Get(ctx, coll, id)
		if err != nil {
			return err.Error(), false
		}
		f, ok := entry.Record.Fields["title"]
		if !ok || f.Value == nil {
			return fmt.Sprintf("%+v", entry.Record), false
		}
		return mirrorValue(f.Value), true
	}
	if err := app.HSet(ctx, "{app}:todo:1", "title", "written before the loss").Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the app's write captured", func() (bool, string) {
		v, ok := got("1")
		return ok && v == "written before the loss", v
	})
	meta, err := s.Meta(ctx, coll)
	if err != nil {
		t.Fatal(err)
	}

	// The collection's master crashes and comes back empty; a client's
	// write to another record is the first write to it again.
	two.Kill()
	two.Start()
	awaitClusterOK(t, one, two)
	if _, err := e.Apply(ctx, []crdt.Change{{Collection: coll, Record: crdt.SetField("2", "title", mustValue(t, "a client's"), crdt.Stamp{Wall: time.Now().UnixMilli(), Replica: "w"})}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new epoch of the restart", func() (bool, string) {
		m, err := s.Meta(ctx, coll)
		if err != nil {
			return false, err.Error()
		}
		return m != meta, fmt.Sprintf("%+v", m)
	})
	// The app's hash still holds its write: the collection gets it back.
	if h := hashView(t, app, "{app}:todo:1"); h["title"] != "written before the loss" {
		t.Fatalf("app hash %v", h)
	}
	eventually(t, "the app's write captured again", func() (bool, string) {
		v, ok := got("1")
		return ok && v == "written before the loss", v
	})
}

// TestMirrorAfterTheAppsMasterLostWrites: on a cluster, a mirrored
// record's hash lives in the key's slot. When that master restarts and
// comes back without the mirrored write, the collection still holds it:
// the mirror must write it again, or the app reads the old hash for good
// while every client reads the record, silently.
func TestMirrorAfterTheAppsMasterLostWrites(t *testing.T) {
	coll := nameWhere("todos", func(slot int) bool { return slot != keySlot("app") })
	one, two := privateCluster(t, keySlot("app"))
	_, e, app := openCapturingCluster(t, one, two, CaptureRule{Collection: coll, KeyPattern: "{app}:todo:*", Mirror: true})

	ctx := testContext(t)
	if _, err := e.Apply(ctx, []crdt.Change{{Collection: coll, Record: crdt.SetField("1", "title", mustValue(t, "a client's"), crdt.Stamp{Wall: time.Now().UnixMilli(), Replica: "w"})}}); err != nil {
		t.Fatal(err)
	}
	mirrored := func() (bool, string) {
		h, err := app.HGetAll(ctx, "{app}:todo:1").Result()
		if err != nil {
			return false, err.Error()
		}
		return h["title"] == "a client's", fmt.Sprint(h)
	}
	eventually(t, "the client's write mirrored", mirrored)

	// The app's master crashes and comes back empty.
	two.Kill()
	two.Start()
	awaitClusterOK(t, one, two)
	eventually(t, "the client's write mirrored again", mirrored)
}

// openCapturingCluster opens a store on the private cluster of one and
// two capturing by rule, with short intervals and timeouts, an engine on
// it, and an app's client of the cluster.
func openCapturingCluster(t *testing.T, one, two *redistest.Server, rule CaptureRule) (*Store, *engine.Engine, *goredis.ClusterClient) {
	t.Helper()
	addrs := []string{one.Addr(), two.Addr()}
	s, err := Open(testContext(t), Options{
		Addrs: addrs, Cluster: true, KeyPrefix: "cl:",
		Capture:         []CaptureRule{rule},
		CaptureInterval: 300 * time.Millisecond,
		DialTimeout:     500 * time.Millisecond, ReadTimeout: time.Second, WriteTimeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.Open(engine.Config{Store: s, Replica: "srv", PollInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(); s.Close() })
	app := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { app.Close() })
	return s, e, app
}
