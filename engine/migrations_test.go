package engine

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
	"pgregory.net/rapid"
)

const notesMigrations = `{"version": 2, "steps": [{"to": 2, "ops": [
	{"op": "rename", "from": "title", "to": "name"},
	{"op": "split", "from": "who", "to": ["first", "last"], "sep": " "},
	{"op": "default", "field": "priority", "value": 0},
	{"op": "drop", "field": "legacy"}]}]}`

func migrationRules(t testing.TB, extra string) []Rule {
	t.Helper()
	rs, err := ParseRules([]byte(`{"notes": {` + extra + `"migrations": ` + notesMigrations + `}}`))
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func openOn(t testing.TB, st stores.Store, rules []Rule) *Engine {
	t.Helper()
	e := openPlain(t, st, rules)
	t.Cleanup(func() { e.Close() })
	return e
}

// openPlain opens an engine the caller closes.
func openPlain(t tb, st stores.Store, rules []Rule) *Engine {
	t.Helper()
	clk := &fakeClock{ms: 1_000_000}
	e, err := Open(Config{Store: st, Replica: "srv", Now: clk.now, PollInterval: -1, Rules: rules})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestParseRulesMigrations(t *testing.T) {
	rs := migrationRules(t, "")
	if rs[0].Migrations == nil || rs[0].Migrations.Current() != 2 {
		t.Fatalf("got %+v, want migrations of version 2", rs[0])
	}
	for _, bad := range []string{
		`{"notes.*": {"migrations": {"version": 1, "steps": []}}}`,
		`{"*": {"migrations": {"version": 1, "steps": []}}}`,
		`{"notes": {"migrations": {"version": 2, "steps": []}}}`,
		`{"notes": {"migrations": {"version": 2, "steps": [{"to": 2, "ops": [{"op": "copy"}]}]}}}`,
	} {
		if _, err := ParseRules([]byte(bad)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := Open(Config{Store: memory.New(), PollInterval: -1, Rules: []Rule{
		{Pattern: "notes", Migrations: rs[0].Migrations}, {Pattern: "notes", Migrations: rs[0].Migrations}}}); err == nil {
		t.Error("two rules with migrations for one collection: opened")
	}
}

// tb is what these helpers need of *testing.T and *rapid.T.
type tb interface {
	Helper()
	Fatal(args ...any)
}

func st1(wall int64) crdt.Stamp { return crdt.Stamp{Wall: wall, Replica: "c1"} }

func rec(t tb, id string, wall int64, fields map[string]any) crdt.Record {
	t.Helper()
	r := crdt.Record{ID: id, Fields: map[string]crdt.Field{}}
	for k, v := range fields {
		b, err := crdt.EncodeValue(v)
		if err != nil {
			t.Fatal(err)
		}
		r.Fields[k] = crdt.Field{Stamp: st1(wall), Value: b}
	}
	return r
}

func str(t tb, r crdt.Record, field string) string {
	t.Helper()
	f, ok := r.Fields[field]
	if !ok || f.Value == nil {
		return "<absent>"
	}
	var s string
	if err := crdt.DecodeValue(f.Value, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

func pullVersion(t tb, e *Engine, coll string, s *scope.Pred, version int) map[string]crdt.Record {
	t.Helper()
	out := map[string]crdt.Record{}
	var cur Cursor
	for {
		p, err := e.PullAt(context.Background(), coll, cur, PageLimit{}, s, version)
		if err != nil {
			t.Fatal(err)
		}
		for _, en := range p.Entries {
			out[en.Record.ID] = en.Record
		}
		for _, l := range p.Left {
			delete(out, l.ID)
		}
		cur = p.Next
		if !p.More {
			return out
		}
	}
}

// A collection's changes are translated up at admission, stored records
// written before the migration was installed are resolved when read, and
// pages are served in the version asked for.
func TestMigrationsApplyAndPull(t *testing.T) {
	ctx := context.Background()
	st := memory.New()
	t.Cleanup(func() { st.Close() })
	before := openOn(t, st, nil)
	if _, err := before.Apply(ctx, []crdt.Change{
		{Collection: "notes", Record: rec(t, "old", 999_000, map[string]any{"title": "written at v1", "legacy": 1})},
		{Collection: "notes", Record: rec(t, "bad", 999_000, map[string]any{"who": 7})},
	}); err != nil {
		t.Fatal(err)
	}
	before.Close()

	e := openOn(t, st, migrationRules(t, ""))
	changes := []crdt.Change{
		{Collection: "notes", Record: rec(t, "a", 999_001, map[string]any{"title": "from a v1 client", "who": "Ada Lovelace"})},
		{Collection: "notes", Record: rec(t, "b", 999_001, map[string]any{"who": 7})},
		{Collection: "notes", Record: rec(t, "c", 999_001, map[string]any{"legacy": true})},
	}
	res, err := e.Apply(ctx, changes, WithVersions(map[string]int{"notes": 1}))
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Status != StatusApplied || !errors.Is(res[1].Err, ErrUntranslatable) || !errors.Is(res[2].Err, ErrUntranslatable) {
		t.Fatalf("results %+v", res)
	}
	if _, err := e.Apply(ctx, changes[:1], WithVersions(map[string]int{"notes": 3})); !errors.Is(err, ErrSchemaAhead) {
		t.Fatalf("version 3: got %v, want ErrSchemaAhead", err)
	}
	if _, err := e.Apply(ctx, []crdt.Change{{Collection: "notes", Record: rec(t, "d", 999_002, map[string]any{"name": "from a v2 client"})}}); err != nil {
		t.Fatal(err)
	}

	v2 := pullVersion(t, e, "notes", nil, 0)
	if got := str(t, v2["a"], "name"); got != "from a v1 client" || str(t, v2["a"], "first") != "Ada" || str(t, v2["a"], "title") != "<absent>" {
		t.Errorf("a at v2: %v", v2["a"])
	}
	if got := str(t, v2["old"], "name"); got != "written at v1" || str(t, v2["old"], "legacy") != "<absent>" {
		t.Errorf("old at v2: %v", v2["old"])
	}
	if f := v2["bad"].Fields; len(f) != 0 || e.MigrationDrops() == 0 {
		t.Errorf("bad at v2: %v, %d fields dropped; want none left and a count", v2["bad"], e.MigrationDrops())
	}
	v1 := pullVersion(t, e, "notes", nil, 1)
	if str(t, v1["d"], "title") != "from a v2 client" || str(t, v1["a"], "who") != "Ada Lovelace" || str(t, v1["old"], "title") != "written at v1" {
		t.Errorf("at v1: %v", v1)
	}
	if _, err := e.PullAt(ctx, "notes", Cursor{}, PageLimit{}, nil, 3); !errors.Is(err, ErrSchemaAhead) {
		t.Errorf("pull at 3: got %v, want ErrSchemaAhead", err)
	}
	// Get resolves too.
	g, err := e.GetRecord(ctx, "notes", "old")
	if err != nil || str(t, g.Record, "name") != "written at v1" {
		t.Errorf("get old: %v %v", g.Record, err)
	}

	// A scope on the new field name holds the record written before the
	// migration; one on a default holds records that lack the field.
	named, err := scope.Parse(`name == "written at v1"`)
	if err != nil {
		t.Fatal(err)
	}
	if got := pullVersion(t, e, "notes", named, 1); len(got) != 1 || str(t, got["old"], "title") != "written at v1" {
		t.Errorf("scoped on name, read at v1: %v", got)
	}
	zero, err := scope.Parse(`priority == 0`)
	if err != nil {
		t.Fatal(err)
	}
	if got := pullVersion(t, e, "notes", zero, 0); len(got) != 3 {
		t.Errorf("scoped on a default: %d records, want 3", len(got))
	}
}

// A schema sees the current version's shape and defaults.
func TestMigrationsSchema(t *testing.T) {
	ctx := context.Background()
	e := openOn(t, memory.New(), migrationRules(t, `"schema": {"fields": {"name": {"type": "string", "required": true}, "priority": {"type": "int", "required": true}}},`))
	res, err := e.Apply(ctx, []crdt.Change{
		{Collection: "notes", Record: rec(t, "a", 999_001, map[string]any{"title": "t"})},
		{Collection: "notes", Record: rec(t, "b", 999_001, map[string]any{"title": 5})},
	}, WithVersions(map[string]int{"notes": 1}))
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Status != StatusApplied || !errors.Is(res[1].Err, ErrSchema) {
		t.Fatalf("results %+v", res)
	}
}

// Writers of versions 1 and 2, in any interleaving, converge: every order
// of their changes leaves the same records, seen from readers of either
// version, and the version 2 view is the merge of the changes translated
// up.
func TestPropMigratedWritersConverge(t *testing.T) {
	rs := migrationRules(t, "")
	d := rs[0].Migrations
	rapid.Check(t, func(t *rapid.T) {
		type write struct {
			version int
			change  crdt.Change
		}
		ids := []string{"r1", "r2"}
		v1Fields := []string{"title", "who", "legacy", "other"}
		v2Fields := []string{"name", "first", "last", "other"}
		n := rapid.IntRange(1, 12).Draw(t, "writes")
		var writes []write
		for i := range n {
			v := rapid.IntRange(1, 2).Draw(t, "version")
			fields := v1Fields
			if v == 2 {
				fields = v2Fields
			}
			r := crdt.Record{ID: rapid.SampledFrom(ids).Draw(t, "id"), Fields: map[string]crdt.Field{}}
			stamp := crdt.Stamp{Wall: 990_000 + rapid.Int64Range(0, 20).Draw(t, "wall"), Logical: uint32(i), Replica: rapid.SampledFrom([]string{"c1", "c2"}).Draw(t, "replica")}
			if rapid.IntRange(0, 5).Draw(t, "delete") == 0 {
				r.Deleted = stamp
			} else {
				for _, f := range rapid.SliceOfNDistinct(rapid.SampledFrom(fields), 1, 3, func(s string) string { return s }).Draw(t, "fields") {
					fd := crdt.Field{Stamp: stamp}
					if rapid.IntRange(0, 4).Draw(t, "unset") > 0 {
						fd.Value = mustText(t, rapid.SampledFrom([]string{"x", "x y", "y z w"}).Draw(t, "value"))
					}
					r.Fields[f] = fd
				}
			}
			writes = append(writes, write{v, crdt.Change{Collection: "notes", Record: r}})
		}
		// The model: the changes that translate, translated up, merged.
		model := map[string]crdt.Record{}
		for _, w := range writes {
			up, err := d.Change(w.change.Record, w.version, 2)
			if err != nil {
				continue
			}
			m := model[up.ID]
			m.Merge(up)
			model[up.ID] = m
		}
		var views [2][3]map[string]crdt.Record
		for run := range 2 {
			order := slices.Clone(writes)
			if run == 1 {
				order = rapid.Permutation(order).Draw(t, "order")
			}
			e := openPlain(t, memory.New(), rs)
			for _, w := range order {
				res, err := e.Apply(context.Background(), []crdt.Change{w.change}, WithVersions(map[string]int{"notes": w.version}))
				if err != nil {
					t.Fatal(err)
				}
				if res[0].Status == StatusRefused && !errors.Is(res[0].Err, ErrUntranslatable) {
					t.Fatalf("refused: %v", res[0].Err)
				}
			}
			for v := 1; v <= 2; v++ {
				views[run][v] = pullVersion(t, e, "notes", nil, v)
			}
			e.Close()
		}
		for v := 1; v <= 2; v++ {
			if !maps.EqualFunc(views[0][v], views[1][v], crdt.Record.Equal) {
				t.Fatalf("version %d readers diverge:\n%v\n%v", v, views[0][v], views[1][v])
			}
		}
		if len(model) != len(views[0][2]) {
			t.Fatalf("got records %v, want the model's %v", views[0][2], model)
		}
		for id, m := range model {
			got := views[0][2][id]
			if !m.Normalize().Equal(got.Normalize()) {
				t.Fatalf("record %s at v2: got %v, want the model %v", id, got, m)
			}
			down, _, _ := d.Record(m, 2, 1)
			if !down.Normalize().Equal(views[0][1][id].Normalize()) {
				t.Fatalf("record %s at v1: got %v, want %v", id, views[0][1][id], down)
			}
		}
	})
}

func mustText(t *rapid.T, s string) []byte {
	b, err := crdt.EncodeValue(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// BenchmarkPullAt measures a full unscoped pull, per record, of 20,000
// records written in version 1's shape (title, who, owner, done) before a
// migration to version 2 (rename, split, default, drop) was installed:
// without migrations (the baseline), resolved to version 2, and resolved
// then served back at version 1.
func BenchmarkPullAt(b *testing.B) {
	ctx := context.Background()
	st := memory.New()
	defer st.Close()
	const records = 20_000
	const coll = "notes"
	plain := openPlain(b, st, nil)
	stamp, err := plain.Now(coll)
	if err != nil {
		b.Fatal(err)
	}
	batch := make([]crdt.Change, 0, stores.MaxBatch)
	for i := range records {
		r := crdt.Record{ID: "01HZX" + strings.Repeat("0", 10) + strconv.Itoa(100000+i), Fields: map[string]crdt.Field{}}
		for k, v := range map[string]any{"title": "task number " + strconv.Itoa(i), "who": "Ada Lovelace", "owner": "user-001", "done": i%2 == 0} {
			enc, err := crdt.EncodeValue(v)
			if err != nil {
				b.Fatal(err)
			}
			r.Fields[k] = crdt.Field{Stamp: stamp, Value: enc}
		}
		batch = append(batch, crdt.Change{Collection: coll, Record: r})
		if len(batch) == cap(batch) {
			if _, err := plain.Apply(ctx, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	migrated := openPlain(b, st, migrationRules(b, ""))
	defer plain.Close()
	defer migrated.Close()
	run := func(b *testing.B, e *Engine, version int) {
		scanned := 0
		for b.Loop() {
			var cur Cursor
			for {
				p, err := e.PullAt(ctx, coll, cur, PageLimit{}, nil, version)
				if err != nil {
					b.Fatal(err)
				}
				scanned += len(p.Entries)
				cur = p.Next
				if !p.More {
					break
				}
			}
		}
		if scanned%records != 0 {
			b.Fatalf("scanned %d, not a multiple of %d", scanned, records)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(scanned), "ns/record")
	}
	b.Run("no migrations", func(b *testing.B) { run(b, plain, 0) })
	b.Run("resolved to v2", func(b *testing.B) { run(b, migrated, 2) })
	b.Run("served at v1", func(b *testing.B) { run(b, migrated, 1) })
}

// The rules judge a change on the record as readers will see it. A change
// in the current version may still carry a field of an older version's
// shape (title, renamed to name at version 2), and resolving the stored
// record moves it where it belongs: a title stamped after the change's
// name becomes the name. Judged on the merge alone, a writer held to
// name == "alice" could create a record that every reader sees as bob's,
// move one of its own to bob, and get past a schema's bound on name.
func TestMigrationsRulesJudgeTheResolvedRecord(t *testing.T) {
	ctx := context.Background()
	e := openOn(t, memory.New(), migrationRules(t, `"schema": {"fields": {"name": {"type": "string", "maxBytes": 8}}},`))
	alice, err := scope.Parse(`name == "alice"`)
	if err != nil {
		t.Fatal(err)
	}
	write := WithWriteScope(func(string) (*scope.Pred, error) { return alice, nil })
	text := func(s string) []byte {
		b, err := crdt.EncodeValue(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// name as the scope wants it, and a later title that resolves over it.
	sneak := func(id, title string) crdt.Change {
		return crdt.Change{Collection: "notes", Record: crdt.Record{ID: id, Fields: map[string]crdt.Field{
			"name":  {Stamp: st1(999_010), Value: text("alice")},
			"title": {Stamp: st1(999_020), Value: text(title)},
		}}}
	}
	own := crdt.Change{Collection: "notes", Record: rec(t, "mine", 999_000, map[string]any{"name": "alice"})}
	if res, err := e.Apply(ctx, []crdt.Change{own}, write); err != nil || res[0].Status != StatusApplied {
		t.Fatalf("alice's own record: %+v %v", res, err)
	}
	res, err := e.Apply(ctx, []crdt.Change{
		sneak("created", "bob"), // a create outside
		sneak("mine", "bob"),    // a move out
	}, write)
	if err != nil {
		t.Fatal(err)
	}
	long, err := e.Apply(ctx, []crdt.Change{sneak("long", "far too long a name")}) // past maxBytes
	if err != nil {
		t.Fatal(err)
	}
	res = append(res, long...)
	got := pullVersion(t, e, "notes", nil, 0)
	for i, want := range []error{ErrOutOfScope, ErrOutOfScope, ErrSchema} {
		if !errors.Is(res[i].Err, want) {
			id := []string{"created", "mine", "long"}[i]
			t.Errorf("change %d: %+v, want %v; readers see %s's name as %q", i, res[i], want, id, str(t, got[id], "name"))
		}
	}
}
