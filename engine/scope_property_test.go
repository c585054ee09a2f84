package engine

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"pgregory.net/rapid"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
)

var (
	propOwners = []string{"a", "b", "c"}
	propTeams  = []string{"x", "y", "z"}
)

// genScope draws a reader's scope: none (unscoped) or a predicate over
// owner and team built with scope's API.
func genScope(t *rapid.T, label string) *scope.Pred {
	owner := func() any { return []any{"eq", "owner", rapid.SampledFrom(propOwners).Draw(t, label+" owner")} }
	teams := func() any {
		ts := rapid.SliceOfNDistinct(rapid.SampledFrom(propTeams), 1, 2, rapid.ID[string]).Draw(t, label+" teams")
		list := make([]any, len(ts))
		for i, x := range ts {
			list[i] = x
		}
		return []any{"in", "team", list}
	}
	var v any
	switch rapid.IntRange(0, 5).Draw(t, label) {
	case 0:
		return nil
	case 1:
		v = owner()
	case 2:
		v = teams()
	case 3:
		v = []any{"or", owner(), teams()}
	case 4:
		v = []any{"and", owner(), teams()}
	case 5:
		v = []any{"all"}
	}
	p, err := scope.FromValue(v)
	if err != nil {
		t.Fatalf("scope %v: %v", v, err)
	}
	return p
}

// propClient is a reader: its scope, what it holds, its cursor as bytes.
type propClient struct {
	scope  *scope.Pred
	held   map[string]crdt.Record
	cursor []byte
}

// TestScopedReadersConverge runs writers and scoped readers over one
// collection: records move between owners and teams, are deleted and
// re-created, readers pull pages of a few records and change their
// scopes. A reader never receives a record outside its scope, and
// whenever it has read to the head it holds exactly the records its scope
// matches, as they are.
func TestScopedReadersConverge(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ctx := context.Background()
		k := rapid.SampledFrom([]int{1, 1, 2, 3}).Draw(t, "shards")
		var st stores.Store = memory.New()
		if k > 1 {
			st = newSharded(k)
		}
		e, err := Open(Config{Store: st, Replica: "srv", PollInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		const coll = "items"
		ids := []string{"r0", "r1", "r2", "r3", "r4", "r5"}
		clients := make([]*propClient, rapid.IntRange(1, 3).Draw(t, "clients"))
		for i := range clients {
			clients[i] = &propClient{scope: genScope(t, fmt.Sprintf("scope %d", i)), held: map[string]crdt.Record{}}
		}
		n := 0
		// check compares what c holds with the store.
		check := func(i int, c *propClient) {
			for _, id := range ids {
				ent, err := e.GetRecord(ctx, coll, id)
				if err != nil && !errors.Is(err, ErrNotFound) {
					t.Fatal(err)
				}
				want := err == nil && matches(c.scope, ent.Record)
				got, has := c.held[id]
				switch {
				case want && !has:
					t.Fatalf("client %d (scope %v) lacks %s: %v", i, c.scope, id, ent.Record.Values())
				case !want && has:
					t.Fatalf("client %d (scope %v) holds %s, which it should not: %v", i, c.scope, id, got.Values())
				case want && !got.Equal(ent.Record):
					t.Fatalf("client %d holds %s as %v, the store as %v", i, id, got, ent.Record)
				}
			}
		}
		pull := func(i int, c *propClient, limit PageLimit) bool {
			cur, err := ParseCursor(c.cursor)
			if err != nil {
				t.Fatal(err)
			}
			p, err := e.PullScoped(ctx, coll, cur, limit, c.scope)
			if err != nil {
				t.Fatal(err)
			}
			for _, en := range p.Entries {
				if c.scope != nil && !c.scope.Match(en.Record) {
					t.Fatalf("client %d (scope %v) got %s outside its scope: %v", i, c.scope, en.Record.ID, en.Record.Values())
				}
				m, _ := crdt.Merge(c.held[en.Record.ID], en.Record)
				if m.Exists() {
					c.held[en.Record.ID] = m
				} else {
					delete(c.held, en.Record.ID)
				}
			}
			for _, l := range p.Left {
				if c.scope == nil {
					t.Fatalf("client %d: a leave of %s in an unscoped read", i, l.ID)
				}
				delete(c.held, l.ID)
			}
			b := p.Next.Bytes()
			if len(b) > MaxCursorBytes {
				t.Fatalf("cursor of %d bytes", len(b))
			}
			c.cursor = b
			if !p.More {
				check(i, c)
			}
			return p.More
		}
		steps := rapid.IntRange(1, 80).Draw(t, "steps")
		for range steps {
			id := rapid.SampledFrom(ids).Draw(t, "id")
			switch rapid.IntRange(0, 9).Draw(t, "step") {
			case 0, 1: // create, or rewrite whole
				n++
				err = e.Put(ctx, coll, id, Doc{"owner": rapid.SampledFrom(propOwners).Draw(t, "owner"), "team": rapid.SampledFrom(propTeams).Draw(t, "team"), "v": n})
			case 2: // move between owners
				err = e.Update(ctx, coll, id, Doc{"owner": rapid.SampledFrom(propOwners).Draw(t, "owner")})
			case 3: // move between teams, or edit
				if rapid.Bool().Draw(t, "edit") {
					n++
					err = e.Update(ctx, coll, id, Doc{"v": n})
				} else {
					err = e.Update(ctx, coll, id, Doc{"team": rapid.SampledFrom(propTeams).Draw(t, "team")})
				}
			case 4:
				if rapid.Bool().Draw(t, "delete") {
					err = e.Delete(ctx, coll, id)
				} else {
					err = e.Unset(ctx, coll, id, rapid.SampledFrom([]string{"owner", "team"}).Draw(t, "unset"))
				}
			case 5: // a client changes its scope: its next pull is a transition
				i := rapid.IntRange(0, len(clients)-1).Draw(t, "client")
				clients[i].scope = genScope(t, "new scope")
			default:
				i := rapid.IntRange(0, len(clients)-1).Draw(t, "client")
				limit := PageLimit{Records: rapid.IntRange(1, 4).Draw(t, "records")}
				if rapid.IntRange(0, 3).Draw(t, "small bytes") == 0 {
					limit.Bytes = rapid.IntRange(1, 200).Draw(t, "bytes")
				}
				pull(i, clients[i], limit)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		for i, c := range clients {
			pages := 0
			for pull(i, c, PageLimit{Records: 3}) {
				if pages++; pages > 1000 {
					t.Fatalf("client %d: no end after %d pages", i, pages)
				}
			}
			check(i, c)
		}
	})
}

// BenchmarkPullScoped reads a collection of 100,000 records of the
// memory store under a scope that matches 1% of them, in pages of
// MaxPage, and reports the time per log entry scanned (an Entry or a
// Left); "unscoped" reads the same log with no scope, for comparison.
func BenchmarkPullScoped(b *testing.B) {
	ctx := context.Background()
	st := memory.New()
	e, err := Open(Config{Store: st, Replica: "srv", PollInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	const records = 100_000
	const coll = "items"
	stamp, err := e.Now(coll)
	if err != nil {
		b.Fatal(err)
	}
	batch := make([]crdt.Change, 0, stores.MaxBatch)
	for i := range records {
		owner := fmt.Sprintf("user-%03d", i%100) // user-000 owns 1%
		r := crdt.Record{ID: fmt.Sprintf("rec-%06d", i), Fields: map[string]crdt.Field{
			"owner": {Stamp: stamp, Value: mustValue(b, owner)},
			"title": {Stamp: stamp, Value: mustValue(b, fmt.Sprintf("task number %d", i))},
			"done":  {Stamp: stamp, Value: mustValue(b, i%2 == 0)},
		}}
		batch = append(batch, crdt.Change{Collection: coll, Record: r})
		if len(batch) == cap(batch) {
			if _, err := e.Apply(ctx, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	s, err := scope.FromValue([]any{"eq", "owner", "user-000"})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("scope=1%", func(b *testing.B) { benchPull(b, e, coll, s, records) })
	b.Run("unscoped", func(b *testing.B) { benchPull(b, e, coll, nil, records) })
}

func benchPull(b *testing.B, e *Engine, coll string, s *scope.Pred, records int) {
	ctx := context.Background()
	scanned := 0
	for b.Loop() {
		var cur Cursor
		for {
			p, err := e.PullScoped(ctx, coll, cur, PageLimit{}, s)
			if err != nil {
				b.Fatal(err)
			}
			scanned += len(p.Entries) + len(p.Left)
			cur = p.Next
			if !p.More {
				break
			}
		}
	}
	if scanned%records != 0 {
		b.Fatalf("scanned %d entries, not a multiple of %d", scanned, records)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(scanned), "ns/record")
}

func mustValue(b *testing.B, v any) []byte {
	b.Helper()
	x, err := crdt.EncodeValue(v)
	if err != nil {
		b.Fatal(err)
	}
	return x
}
