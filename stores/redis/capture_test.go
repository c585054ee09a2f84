package redis

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores"
)

// Capture of plain hashes: a go-redis writer that knows nothing of
// Convergo writes app:todo:<id> hashes while an engine edits the same
// records; the store captures, mirrors, and both sides end equal.

func captureOpts(prefix, name string) Options {
	return Options{
		KeyPrefix: prefix, ClientName: name,
		Capture:         []CaptureRule{{Collection: "todos", KeyPattern: prefix + "app:todo:*", Mirror: true}},
		CaptureInterval: 500 * time.Millisecond,
	}
}

func openCapture(t *testing.T, tg target, prefix, name string) (*Store, *engine.Engine) {
	t.Helper()
	o := captureOpts(prefix, name)
	o.Addrs, o.Cluster = tg.addrs, tg.cluster
	s, err := Open(testContext(t), o)
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.Open(engine.Config{Store: s, Replica: "srv", PollInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(); s.Close() })
	return s, e
}

func plainClient(t *testing.T, tg target) goredis.UniversalClient {
	c := goredis.NewUniversalClient(&goredis.UniversalOptions{Addrs: tg.addrs, IsClusterMode: tg.cluster})
	t.Cleanup(func() { c.Close() })
	return c
}

// view is a record as the app sees it: its live fields as text.
func recordView(t *testing.T, s *Store, id string) map[string]string {
	t.Helper()
	entry, err := s.Get(context.Background(), "todos", id)
	if errors.Is(err, stores.ErrNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for name, f := range entry.Record.Fields {
		if f.Value != nil && f.Stamp.Compare(entry.Record.Deleted) > 0 {
			out[name] = mirrorValue(f.Value)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %s", what, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func hashView(t *testing.T, c goredis.UniversalClient, key string) map[string]string {
	h, err := c.HGetAll(context.Background(), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(h) == 0 {
		return nil
	}
	return h
}

func TestCaptureAndMirror(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		ctx := testContext(t)
		prefix := uniquePrefix()
		cleanupPrefix(t, tg, prefix)
		s, e := openCapture(t, tg, prefix, randomName("convergo-cap-"))
		app := plainClient(t, tg)
		key := func(id string) string { return prefix + "app:todo:" + id }
		same := func(id string) func() (bool, string) {
			return func() (bool, string) {
				r, h := recordView(t, s, id), hashView(t, app, key(id))
				return maps.Equal(r, h), fmt.Sprintf("record %v, hash %v", r, h)
			}
		}

		// Plain writes become changes.
		if err := app.HSet(ctx, key("1"), "title", "milk", "done", "no").Err(); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the captured hash", func() (bool, string) {
			r := recordView(t, s, "1")
			return r["title"] == "milk" && r["done"] == "no", fmt.Sprint(r)
		})
		before, _ := s.Get(ctx, "todos", "1")
		if st := before.Record.Fields["title"].Stamp; st.Replica != CaptureReplica {
			t.Fatalf("captured stamp %+v, want replica %s", st, CaptureReplica)
		}
		// Only changed fields become writes.
		if err := app.HSet(ctx, key("1"), "title", "eggs").Err(); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the changed field", func() (bool, string) {
			r := recordView(t, s, "1")
			return r["title"] == "eggs", fmt.Sprint(r)
		})
		after, _ := s.Get(ctx, "todos", "1")
		if after.Record.Fields["done"].Stamp != before.Record.Fields["done"].Stamp {
			t.Fatalf("an unchanged field was written again: %+v, was %+v", after.Record.Fields["done"], before.Record.Fields["done"])
		}
		// A field removed is unset.
		if err := app.HDel(ctx, key("1"), "done").Err(); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the removed field", same("1"))

		// The mirror: engine writes reach the hashes, and are not captured
		// again.
		if err := e.Put(ctx, "todos", "2", engine.Doc{"title": "bread", "n": 3}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the mirrored record", same("2"))
		if err := e.Update(ctx, "todos", "1", engine.Doc{"done": true}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the mirrored update", same("1"))
		head, _ := s.Head(ctx, "todos")
		time.Sleep(time.Second) // a reconciliation pass or two
		if h, _ := s.Head(ctx, "todos"); h != head {
			t.Fatalf("the mirror's writes were captured again: head %d, was %d", h, head)
		}

		// Deletes both ways.
		if err := app.Del(ctx, key("1")).Err(); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the deleted key", same("1"))
		if err := e.Delete(ctx, "todos", "2"); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the deleted record", same("2"))
		// A key written again after its delete comes back with its new
		// fields only.
		if err := app.HSet(ctx, key("1"), "title", "again").Err(); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the re-created key", func() (bool, string) {
			r := recordView(t, s, "1")
			return maps.Equal(r, map[string]string{"title": "again"}), fmt.Sprint(r)
		})
	})
}

// Concurrent plain writes and engine writes on the same records: at the
// end every hash equals its record; nothing is lost or resurrected (a
// record's final fields are exactly what the hash holds, deleted keys stay
// deleted).
func TestCaptureConcurrent(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		ctx := testContext(t)
		prefix := uniquePrefix()
		cleanupPrefix(t, tg, prefix)
		s, e := openCapture(t, tg, prefix, randomName("convergo-cap-"))
		app := plainClient(t, tg)
		const n = 30
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprint(i)
		}
		key := func(id string) string { return prefix + "app:todo:" + id }
		var wg sync.WaitGroup
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(1, 1))
			for i := range 300 {
				k := key(ids[rng.IntN(n)])
				var err error
				switch rng.IntN(6) {
				case 0:
					err = app.Del(ctx, k).Err()
				case 1:
					err = app.HDel(ctx, k, "b").Err()
				default:
					err = app.HSet(ctx, k, []string{"a", "b", "c"}[rng.IntN(3)], fmt.Sprintf("plain%d", i)).Err()
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(2, 2))
			for i := range 300 {
				id := ids[rng.IntN(n)]
				var err error
				switch rng.IntN(6) {
				case 0:
					err = e.Delete(ctx, "todos", id)
				default:
					err = e.Update(ctx, "todos", id, engine.Doc{[]string{"a", "c", "d"}[rng.IntN(3)]: fmt.Sprintf("engine%d", i)})
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
		wg.Wait()
		eventually(t, "every hash equal to its record", func() (bool, string) {
			for _, id := range ids {
				r, h := recordView(t, s, id), hashView(t, app, key(id))
				if !maps.Equal(r, h) {
					return false, fmt.Sprintf("%s: record %v, hash %v", id, r, h)
				}
			}
			return true, ""
		})
	})
}

// Writes made while capture was not listening (its keyspace subscription
// killed, the store closed) are caught by reconciliation.
func TestCaptureReconciles(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		ctx := testContext(t)
		prefix := uniquePrefix()
		cleanupPrefix(t, tg, prefix)
		name := randomName("convergo-cap-")
		app := plainClient(t, tg)
		key := func(i int) string { return prefix + "app:todo:" + fmt.Sprint(i) }

		o := captureOpts(prefix, name)
		o.Addrs, o.Cluster = tg.addrs, tg.cluster
		o.CaptureInterval = time.Hour // only the reconciliation at (re)subscription and start
		s1, err := Open(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		e1, err := engine.Open(engine.Config{Store: s1, Replica: "srv"})
		if err != nil {
			t.Fatal(err)
		}
		if err := app.HSet(ctx, key(0), "v", "first").Err(); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the first capture", func() (bool, string) {
			r := recordView(t, s1, "0")
			return r["v"] == "first", fmt.Sprint(r)
		})
		// Kill the keyspace subscriptions and write at once.
		killSubscribers(ctx, t, tg, name)
		for i := 1; i <= 10; i++ {
			if err := app.HSet(ctx, key(i), "v", "during kill").Err(); err != nil {
				t.Fatal(err)
			}
		}
		eventually(t, "writes around the kill", func() (bool, string) {
			for i := 1; i <= 10; i++ {
				if recordView(t, s1, fmt.Sprint(i))["v"] != "during kill" {
					return false, fmt.Sprint(i)
				}
			}
			return true, ""
		})
		e1.Close()
		s1.Close()

		// While no store runs: writes, removes and deletes.
		for i := 1; i <= 10; i++ {
			var err error
			switch i % 3 {
			case 0:
				err = app.Del(ctx, key(i)).Err()
			case 1:
				err = app.HSet(ctx, key(i), "v", "while down", "w", "new").Err()
			default:
				err = app.HSet(ctx, key(i+100), "v", "new key").Err()
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		s2, _ := openCapture(t, tg, prefix, name)
		eventually(t, "every write made while down", func() (bool, string) {
			for i := 1; i <= 110; i++ {
				if i > 10 && i < 101 {
					continue
				}
				id := fmt.Sprint(i)
				r, h := recordView(t, s2, id), hashView(t, app, key(i))
				if !maps.Equal(r, h) {
					return false, fmt.Sprintf("%s: record %v, hash %v", id, r, h)
				}
			}
			return true, ""
		})
	})
}

func TestCaptureRuleValidation(t *testing.T) {
	for _, r := range []CaptureRule{
		{Collection: "c", KeyPattern: "app:*:*"},
		{Collection: "c", KeyPattern: "app:todo"},
		{Collection: "c", KeyPattern: "*"},
		{Collection: "c", KeyPattern: "p:{x}*"},
		{Collection: "c", KeyPattern: "p:*"},
		{Collection: "c", KeyPattern: "p*"},
		{Collection: "c", KeyPattern: "*:r"},
		{Collection: "c", KeyPattern: "p:convergo:*"},
		{Collection: "", KeyPattern: "app:*"},
	} {
		if _, err := New(goredis.NewClient(&goredis.Options{}), Options{KeyPrefix: "p:", Capture: []CaptureRule{r}}); err == nil {
			t.Errorf("rule %+v accepted", r)
		}
	}
	for key, want := range map[string]string{"app:todo:1": "app:todo:1", "app:{t}:1": "t", "a{b": "a{b"} {
		if got, ok := hashTag(key); !ok || got != want {
			t.Errorf("hashTag(%q) = %q, %v; want %q", key, got, ok, want)
		}
	}
	if _, ok := hashTag("a{}b"); ok {
		t.Error("hashTag accepted a key whose shadow cannot share its slot")
	}
}

// Two capture rules whose key patterns can match one key would give that
// key to two collections: the first rule captures it, and the mirror of
// the other writes it. With rules notes=app:note:* and todos=app:*;mirror,
// a client that may write only todos writes record "note:1" there, and
// the mirror puts its fields into app:note:1, the app's hash of record 1
// of notes (which Convergo's notes then no longer agrees with); with the
// rules the other way round, the app's notes are captured into todos for
// its readers. So the store refuses such rules, as it refuses one that
// could match its own keys.
func TestCaptureRulesMayNotOverlap(t *testing.T) {
	open := func(patterns ...string) error {
		var rules []CaptureRule
		for i, p := range patterns {
			rules = append(rules, CaptureRule{Collection: fmt.Sprintf("c%d", i), KeyPattern: p, Mirror: i == len(patterns)-1})
		}
		s, err := New(goredis.NewClient(&goredis.Options{}), Options{KeyPrefix: "p:", Capture: rules})
		if err == nil {
			s.Close()
		}
		return err
	}
	for _, pair := range [][2]string{
		{"app:note:*", "app:*"},
		{"app:*", "app:note:*"},
		{"app:*:x", "app:note:*"},
		{"app:*:a", "app:x*"},
		{"app:*", "app:*"},
	} {
		if err := open(pair[0], pair[1]); !errors.Is(err, stores.ErrInvalid) {
			t.Errorf("rules %q and %q, which both match some key, accepted: %v", pair[0], pair[1], err)
		}
	}
	for _, pair := range [][2]string{
		{"app:todo:*", "app:note:*"},
		{"app:*:todo", "app:*:note"},
		{"x:*", "y:*"},
	} {
		if err := open(pair[0], pair[1]); err != nil {
			t.Errorf("rules %q and %q, which match no key in common, refused: %v", pair[0], pair[1], err)
		}
	}
}
