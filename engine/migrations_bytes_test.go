package engine

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/migrate"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
)

// growing is a migration whose down-translation grows every record: the
// v1 field names are longer than the v2 ones, and a split is served back
// as a merge with a long separator.
var growing = `{"version": 2, "steps": [{"to": 2, "ops": [
	{"op": "rename", "from": "` + strings.Repeat("l", 120) + `", "to": "n"},
	{"op": "split", "from": "who", "to": ["first", "last"], "sep": "` + strings.Repeat("-", 60) + `"}]}]}`

// A page translated down to an old version keeps to the byte limit on
// what is served, not on what is stored, on every path (plain, scoped,
// sharded), and the pages together hold every record once.
func TestPullAtBytesTranslated(t *testing.T) {
	d, err := migrate.Parse([]byte(growing))
	if err != nil {
		t.Fatal(err)
	}
	rules := []Rule{{Pattern: "g", Migrations: d}}
	ctx := context.Background()
	all := func() *scope.Pred {
		s, err := scope.Parse(`first == "Ada"`)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}()
	for _, tc := range []struct {
		name  string
		store func() stores.Store
		scope *scope.Pred
	}{
		{"plain", func() stores.Store { return memory.New() }, nil},
		{"scoped", func() stores.Store { return memory.New() }, all},
		{"sharded", func() stores.Store { return newSharded(4) }, nil},
		{"sharded scoped", func() stores.Store { return newSharded(4) }, all},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := tc.store()
			e := openOn(t, st, rules)
			const n = 20
			var changes []crdt.Change
			for i := range n {
				v := "value " + strconv.Itoa(i%10) // every record the same size
				if i == 7 {
					v = strings.Repeat("big", 400) // larger than a page alone
				}
				changes = append(changes, crdt.Change{Collection: "g", Record: rec(t, "r"+strconv.Itoa(i+10), 999_000,
					map[string]any{"n": v, "first": "Ada", "last": "Lovelace"})})
			}
			if _, err := e.Apply(ctx, changes); err != nil {
				t.Fatal(err)
			}
			// The limit holds three records as served at v1 exactly, and
			// more as stored.
			one, _, err := d.Record(changes[0].Record, 2, 1)
			if err != nil {
				t.Fatal(err)
			}
			served, stored := len(crdt.AppendRecord(nil, one)), len(crdt.AppendRecord(nil, changes[0].Record))
			limit := 3 * served
			if limit < 5*stored {
				t.Fatalf("the test's records do not grow enough: %d served, %d stored", served, stored)
			}
			pullEach(t, n, limit, func(cur Cursor) (Page, error) {
				return e.PullAt(ctx, "g", cur, PageLimit{Bytes: limit}, tc.scope, 1)
			}, func(r crdt.Record) {
				if _, ok := r.Fields["who"]; !ok {
					t.Fatalf("record %s not served at v1: %v", r.ID, r)
				}
			})
		})
	}
}

// Records stored before a migration was installed are resolved to the
// current version when read; when that grows them (a rename to a longer
// name), the page keeps to its byte bound on the records served too.
func TestPullBytesResolvedUp(t *testing.T) {
	ctx := context.Background()
	long := strings.Repeat("n", 150)
	d, err := migrate.Parse([]byte(`{"version": 2, "steps": [{"to": 2, "ops": [{"op": "rename", "from": "t", "to": "` + long + `"}]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	st := memory.New()
	t.Cleanup(func() { st.Close() })
	before := openPlain(t, st, nil)
	const n = 20
	var changes []crdt.Change
	for i := range n {
		changes = append(changes, crdt.Change{Collection: "g", Record: rec(t, "r"+strconv.Itoa(i+10), 999_000, map[string]any{"t": "v"})})
	}
	if _, err := before.Apply(ctx, changes); err != nil {
		t.Fatal(err)
	}
	before.Close()
	e := openOn(t, st, []Rule{{Pattern: "g", Migrations: d}})
	one, _, err := d.Record(changes[0].Record, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	limit := 3 * len(crdt.AppendRecord(nil, one))
	sizes := pullEach(t, n, limit, func(cur Cursor) (Page, error) {
		return e.Pull(ctx, "g", cur, PageLimit{Bytes: limit})
	}, func(r crdt.Record) {
		if _, ok := r.Fields[long]; !ok {
			t.Fatalf("record %s not resolved: %v", r.ID, r)
		}
	})
	for i, k := range sizes[:len(sizes)-1] {
		if k != 3 {
			t.Errorf("page %d of %d records, want 3 (the limit holds 3 exactly)", i, k)
		}
	}
}

// pullEach reads every page that pull serves from the start, calling each
// on every record, and checks what both tests above require: no page
// leaves records, a page of more than one record keeps to limit bytes as
// served, and the pages together hold n records, each once. It returns
// the number of records of each page.
func pullEach(t *testing.T, n, limit int, pull func(Cursor) (Page, error), each func(crdt.Record)) []int {
	t.Helper()
	seen := map[string]int{}
	var sizes []int
	var cur Cursor
	for pages := 0; ; pages++ {
		if pages > 3*n {
			t.Fatal("no end of pages")
		}
		p, err := pull(cur)
		if err != nil {
			t.Fatal(err)
		}
		size := 0
		for _, en := range p.Entries {
			size += len(crdt.AppendRecord(nil, en.Record))
			seen[en.Record.ID]++
			each(en.Record)
		}
		if len(p.Left) > 0 {
			t.Fatalf("leaves %v", p.Left)
		}
		if len(p.Entries) > 1 && size > limit {
			t.Fatalf("page of %d records and %d bytes served, limit %d", len(p.Entries), size, limit)
		}
		sizes = append(sizes, len(p.Entries))
		cur = p.Next
		if !p.More {
			break
		}
	}
	if len(seen) != n {
		t.Fatalf("read %d records, want %d", len(seen), n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Errorf("record %s read %d times", id, c)
		}
	}
	return sizes
}
