package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport/proto"
)

const rulesJSON = `{
  "todos.*": {
    "scope": "owner == $sub",
    "schema": {"fields": {"title": {"type": "string", "required": true, "maxBytes": 10},
                          "owner": {"type": "string"}, "done": {"type": "bool"},
                          "n": {"type": "int", "min": 0, "max": 10}, "tags": {"type": "array", "maxItems": 2}},
               "additional": false}
  },
  "*": {"write": ["in", "owner", {"$": "claims.owners"}]}
}`

func TestParseRules(t *testing.T) {
	rules, err := ParseRules([]byte(rulesJSON))
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) != 2 || rules[0].Pattern != "todos.*" || rules[1].Pattern != "*" {
		t.Fatalf("rules %+v", rules)
	}
	if rules[0].Read == nil || rules[0].Write != nil || rules[0].Schema == nil || !rules[0].Schema.Closed {
		t.Errorf("rule 0: %+v", rules[0])
	}
	if rules[1].Read != nil || rules[1].Write == nil || rules[1].Schema != nil {
		t.Errorf("rule 1: %+v", rules[1])
	}
	for _, bad := range []string{
		`[]`,
		`{"todos": {"scope": "owner =="}}`,
		`{"todos": {"red": "owner == a"}}`,
		`{"todos": {"schema": {"fields": {"t": {"type": "text"}}}}}`,
		`{"todos": {"schema": {"fields": {"t": {"type": "string", "max_bytes": 3}}}}}`,
		`{"to dos": {}}`,
		`{"todos": {}} {}`,
	} {
		if _, err := ParseRules([]byte(bad)); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseRules(%s): %v, want ErrInvalid", bad, err)
		}
	}
}

func TestRulesFor(t *testing.T) {
	rules, err := ParseRules([]byte(rulesJSON))
	if err != nil {
		t.Fatal(err)
	}
	e, err := Open(Config{Store: memory.New(), PollInterval: -1, Rules: rules})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if got := e.RulesFor("todos.alice"); len(got) != 2 {
		t.Errorf("todos.alice: %d rules, want 2", len(got))
	}
	if got := e.RulesFor("notes"); len(got) != 1 || got[0].Pattern != "*" {
		t.Errorf("notes: %+v", got)
	}
	params := scope.Params{"sub": "a", "claims": map[string]any{"owners": []any{"a", "b"}}}
	ws, err := e.WriteScope("todos.alice", params)
	if err != nil || ws == nil || !ws.Bound() {
		t.Fatalf("write scope %v, %v", ws, err)
	}
	rec := func(owner string) crdt.Record {
		return crdt.SetField("r", "owner", value(t, owner), crdt.Stamp{Wall: 1, Replica: "c"})
	}
	if !ws.Match(rec("a")) || ws.Match(rec("b")) {
		t.Errorf("write scope %v: owner a and b", ws)
	}
	if _, err := e.ReadScope("todos.alice", scope.Params{}); !errors.Is(err, scope.ErrUnbound) {
		t.Errorf("read scope without a subject: %v", err)
	}
}

func TestWriteRules(t *testing.T) {
	rules, err := ParseRules([]byte(rulesJSON))
	if err != nil {
		t.Fatal(err)
	}
	rules = append(rules, Rule{Pattern: "todos.*", Validate: func(_ context.Context, coll string, r crdt.Record) error {
		if _, ok := r.Values()["forbidden"]; ok {
			return fmt.Errorf("no field forbidden in %s", coll)
		}
		return nil
	}})
	rules[0].Schema.Fields["forbidden"] = FieldRule{}
	st := memory.New()
	e, err := Open(Config{Store: st, PollInterval: -1, Rules: rules})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	const coll = "todos.shared"
	// Records stored beforehand, without rules: r-in is a's, r-out b's.
	for _, r := range []struct{ id, owner string }{{"r-in", "a"}, {"r-out", "b"}, {"r-del", "a"}, {"r-del-out", "b"}} {
		if err := e.Put(ctx, coll, r.id, Doc{"owner": r.owner, "title": "t"}); err != nil {
			t.Fatal(err)
		}
	}
	ws, err := e.WriteScope(coll, scope.Params{"sub": "a", "claims": map[string]any{"owners": []any{"a"}}})
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	as := WithWriteScope(func(c string) (*scope.Pred, error) {
		calls++
		if c != coll {
			return nil, fmt.Errorf("%w: no grant", ErrInvalid)
		}
		return ws, nil
	})
	set := func(id string, fields Doc) crdt.Change {
		s, err := e.Now(coll)
		if err != nil {
			t.Fatal(err)
		}
		r := crdt.Record{ID: id, Fields: map[string]crdt.Field{}}
		for k, v := range fields {
			r.Fields[k] = crdt.Field{Stamp: s, Value: value(t, v)}
		}
		return crdt.Change{Collection: coll, Record: r}
	}
	del := func(id string) crdt.Change {
		s, err := e.Now(coll)
		if err != nil {
			t.Fatal(err)
		}
		return crdt.Change{Collection: coll, Record: crdt.DeleteRecord(id, s)}
	}
	for _, tc := range []struct {
		name   string
		change crdt.Change
		want   error // nil: applied
	}{
		{"create inside", set("new-in", Doc{"owner": "a", "title": "x"}), nil},
		{"create outside", set("new-out", Doc{"owner": "b", "title": "x"}), ErrOutOfScope},
		{"edit inside", set("r-in", Doc{"title": "y"}), nil},
		{"move out", set("r-in", Doc{"owner": "b"}), ErrOutOfScope},
		{"edit outside", set("r-out", Doc{"title": "z"}), ErrOutOfScope},
		{"move in from outside", set("r-out", Doc{"owner": "a"}), ErrOutOfScope},
		{"delete inside", del("r-del"), nil},
		{"delete outside", del("r-del-out"), ErrOutOfScope},
		{"delete what does not exist", del("never"), nil},
		{"schema: required", set("s1", Doc{"owner": "a"}), ErrSchema},
		{"schema: too long", set("s2", Doc{"owner": "a", "title": "0123456789x"}), ErrSchema},
		{"schema: type", set("s3", Doc{"owner": "a", "title": "t", "done": "yes"}), ErrSchema},
		{"schema: above max", set("s4", Doc{"owner": "a", "title": "t", "n": 11}), ErrSchema},
		{"schema: float for int", set("s5", Doc{"owner": "a", "title": "t", "n": 1.5}), ErrSchema},
		{"schema: too many items", set("s6", Doc{"owner": "a", "title": "t", "tags": []string{"1", "2", "3"}}), ErrSchema},
		{"schema: additional", set("s7", Doc{"owner": "a", "title": "t", "color": "red"}), ErrSchema},
		{"schema: unset a required field", set("r-in", Doc{"title": nil}), ErrSchema},
		{"schema: within", set("s8", Doc{"owner": "a", "title": "t", "n": 10, "done": true, "tags": []string{"1"}}), nil},
		{"validate", set("v1", Doc{"owner": "a", "title": "t", "forbidden": 1}), ErrSchema},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := e.Apply(ctx, []crdt.Change{tc.change}, as)
			if err != nil {
				t.Fatal(err)
			}
			r := res[0]
			switch {
			case tc.want == nil && r.Status != StatusApplied:
				t.Errorf("got %v (%v), want applied", r.Status, r.Err)
			case tc.want != nil && (r.Status != StatusRefused || !errors.Is(r.Err, tc.want)):
				t.Errorf("got %v (%v), want refused with %v", r.Status, r.Err, tc.want)
			}
		})
	}
	// Per change in a batch; changes to one record see the earlier ones.
	res, err := e.Apply(ctx, []crdt.Change{
		set("b1", Doc{"owner": "a", "title": "t"}),
		set("b2", Doc{"owner": "b", "title": "t"}),
		set("b1", Doc{"owner": "b"}),
		set("b1", Doc{"title": "u"}),
		set("x", Doc{"owner": "a", "title": "t"}),
	}, as)
	if err != nil {
		t.Fatal(err)
	}
	want := []Status{StatusApplied, StatusRefused, StatusRefused, StatusApplied, StatusApplied}
	for i, r := range res {
		if r.Status != want[i] {
			t.Errorf("batch change %d: %v (%v), want %v", i, r.Status, r.Err, want[i])
		}
	}
	if !strings.Contains(fmt.Sprint(res[1].Err), "b2") {
		t.Errorf("the refusal does not name its record: %v", res[1].Err)
	}
	// A collection without a write scope from the function is refused.
	other := set("o", Doc{"title": "t"})
	other.Collection = "notes"
	res, err = e.Apply(ctx, []crdt.Change{other}, as)
	if err != nil || res[0].Status != StatusRefused || !errors.Is(res[0].Err, ErrInvalid) {
		t.Errorf("a refused grant: %+v, %v", res, err)
	}
	// Without a write scope, the schema still holds, for the engine's own
	// writes too.
	if err := e.Put(ctx, coll, "own", Doc{"owner": "z"}); !errors.Is(err, ErrSchema) {
		t.Errorf("Put without a title: %v, want ErrSchema", err)
	}
}

// countingStore counts Gets of records, and apart those of published
// horizons, which a write reads whatever the rules (enforced), from a
// cache (HorizonOf).
type countingStore struct {
	*memory.Store
	gets     int
	horizons int
}

func (s *countingStore) Get(ctx context.Context, coll, id string) (stores.Entry, error) {
	if coll == proto.HorizonCollection {
		s.horizons++
	} else {
		s.gets++
	}
	return s.Store.Get(ctx, coll, id)
}

func TestNoReadsWithoutRules(t *testing.T) {
	st := &countingStore{Store: memory.New()}
	e, err := Open(Config{Store: st, PollInterval: -1, Rules: []Rule{{Pattern: "todos", Schema: &Schema{}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	if err := e.Update(ctx, "notes", "n1", Doc{"a": 1}); err != nil {
		t.Fatal(err)
	}
	s, _ := e.Now("notes")
	none := WithWriteScope(func(string) (*scope.Pred, error) { return nil, nil })
	if _, err := e.Apply(ctx, []crdt.Change{{Collection: "notes", Record: crdt.SetField("n2", "a", value(t, 1), s)}}, none); err != nil {
		t.Fatal(err)
	}
	// Update reads its record once, for its stamp (OwnStamp); Apply reads
	// nothing for a change no rule applies to.
	if st.gets != 1 {
		t.Errorf("%d reads for an Update and a change no rule applies to, want 1 (the Update's stamp)", st.gets)
	}
	if err := e.Update(ctx, "todos", "t1", Doc{"a": 1}); err != nil {
		t.Fatal(err)
	}
	if st.gets != 3 {
		t.Errorf("%d reads in all after an Update a schema applies to, want 3 (one more for its stamp, one for the schema)", st.gets)
	}
	if st.horizons > 2 {
		t.Errorf("%d reads of published horizons for three changes to two collections, want at most one per collection", st.horizons)
	}
}

// The rules judge each change of a call on the record as the call's
// earlier changes leave it, but an earlier change the store or the quota
// then refuses (a record grown past the size limit) leaves nothing: a
// later change judged after it must not be applied on the strength of it. Here a
// writer held to owner == "alice" sends a change that keeps its record
// hers (a newer owner, and a value that makes the record too large),
// then an older owner "bob": judged after the first, the second changes
// nothing; applied without it, it moves the record to bob.
func TestRulesRefusedChangeLeavesNothing(t *testing.T) {
	ctx := context.Background()
	e := openEngine(t, "srv", &fakeClock{ms: 1_000_000})
	alice := mustScope(t, "eq", "owner", "alice")
	write := WithWriteScope(func(string) (*scope.Pred, error) { return alice, nil })
	text := func(s string) []byte {
		b, err := crdt.EncodeValue(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	at := func(ms int64) crdt.Stamp { return crdt.Stamp{Wall: 999_000 + ms, Replica: "c1"} }
	big := strings.Repeat("x", 120<<10)
	mine := crdt.Record{ID: "r", Fields: map[string]crdt.Field{
		"owner": {Stamp: at(1), Value: text("alice")},
		"pad1":  {Stamp: at(1), Value: text(big)},
		"pad2":  {Stamp: at(1), Value: text(big)},
	}}
	if res, err := e.Apply(ctx, []crdt.Change{{Collection: "notes", Record: mine}}, write); err != nil || res[0].Status != StatusApplied {
		t.Fatalf("alice's record: %+v %v", res, err)
	}
	grow := crdt.Record{ID: "r", Fields: map[string]crdt.Field{
		"owner": {Stamp: at(3), Value: text("alice")},
		"pad3":  {Stamp: at(3), Value: text(big)},
	}}
	move := crdt.Record{ID: "r", Fields: map[string]crdt.Field{"owner": {Stamp: at(2), Value: text("bob")}}}
	res, err := e.Apply(ctx, []crdt.Change{{Collection: "notes", Record: grow}, {Collection: "notes", Record: move}}, write)
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(res[0].Err, ErrTooLarge) {
		t.Fatalf("the growing change: %+v, want too large", res[0])
	}
	got, err := e.GetRecord(ctx, "notes", "r")
	if err != nil {
		t.Fatal(err)
	}
	if !alice.Match(got.Record) {
		t.Fatalf("the move: %+v; the record left alice's write scope: owner %x", res[1], got.Record.Fields["owner"].Value)
	}

	// The same with a change the quota refuses: at its quota a collection
	// takes unsets, and an older unset of owner, judged after a newer
	// owner that never lands, would leave the record outside the scope.
	q, err := Open(Config{Store: memory.New(), Replica: "srv", PollInterval: -1, Now: (&fakeClock{ms: 1_000_000}).now,
		Quotas: []Quota{{Pattern: "notes", MaxRecords: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	kept := crdt.Record{ID: "r", Fields: map[string]crdt.Field{
		"owner": {Stamp: at(1), Value: text("alice")},
		"title": {Stamp: at(1), Value: text("mine")},
	}}
	if res, err := q.Apply(ctx, []crdt.Change{{Collection: "notes", Record: kept}}, write); err != nil || res[0].Status != StatusApplied {
		t.Fatalf("alice's record: %+v %v", res, err)
	}
	newer := crdt.Record{ID: "r", Fields: map[string]crdt.Field{"owner": {Stamp: at(3), Value: text("alice")}}}
	unset := crdt.Record{ID: "r", Fields: map[string]crdt.Field{"owner": {Stamp: at(2)}}}
	res, err = q.Apply(ctx, []crdt.Change{{Collection: "notes", Record: newer}, {Collection: "notes", Record: unset}}, write)
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(res[0].Err, ErrQuotaExceeded) {
		t.Fatalf("the newer owner: %+v, want quota exceeded", res[0])
	}
	if got, err = q.GetRecord(ctx, "notes", "r"); err != nil {
		t.Fatal(err)
	}
	if !alice.Match(got.Record) {
		t.Fatalf("the unset: %+v; the record left alice's write scope: %+v", res[1], got.Record)
	}
}

// The mirror of TestRulesRefusedChangeLeavesNothing: a later change the
// rules refused on the strength of an earlier one that the store then
// refuses was refused on a record that never was. Here a note that is
// locked may have no body: a change locks the record and grows it past
// the size limit, then a body comes. Judged after the lock, the body is
// refused; but the lock never lands, and the body, on the record as
// stored, is valid: it must be taken, not refused schema.
func TestRulesRefusedChangeRefusesNothingLater(t *testing.T) {
	ctx := context.Background()
	e, err := Open(Config{Store: memory.New(), Replica: "srv", PollInterval: -1, Now: (&fakeClock{ms: 1_000_000}).now,
		Rules: []Rule{{Pattern: "notes", Validate: func(_ context.Context, _ string, r crdt.Record) error {
			v := r.Values()
			if _, ok := v["body"]; ok && v["locked"] != nil {
				return errors.New("a locked note has no body")
			}
			return nil
		}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	text := func(s string) []byte {
		b, err := crdt.EncodeValue(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	at := func(ms int64) crdt.Stamp { return crdt.Stamp{Wall: 999_000 + ms, Replica: "c1"} }
	big := strings.Repeat("x", 120<<10)
	lock := crdt.Record{ID: "r", Fields: map[string]crdt.Field{
		"locked": {Stamp: at(1), Value: text("yes")},
		"pad1":   {Stamp: at(1), Value: text(big)},
		"pad2":   {Stamp: at(1), Value: text(big)},
		"pad3":   {Stamp: at(1), Value: text(big)},
	}}
	body := crdt.Record{ID: "r", Fields: map[string]crdt.Field{"body": {Stamp: at(2), Value: text("hello")}}}
	res, err := e.Apply(ctx, []crdt.Change{{Collection: "notes", Record: lock}, {Collection: "notes", Record: body}})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(res[0].Err, ErrTooLarge) {
		t.Fatalf("the lock: %+v, want too large", res[0])
	}
	if res[1].Status != StatusApplied {
		t.Fatalf("the body: %+v (%v), want applied: the lock it was judged after never landed", res[1], res[1].Err)
	}
	got, err := e.Get(ctx, "notes", "r")
	if err != nil || got["body"] != "hello" {
		t.Fatalf("the record: %v %v, want the body", got, err)
	}

	// A lock that lands still refuses the body after it, also when the
	// store refuses another record's change of the batch (split).
	other := lock.Clone()
	other.ID = "other"
	small := crdt.Record{ID: "r2", Fields: map[string]crdt.Field{"locked": {Stamp: at(1), Value: text("yes")}}}
	body2 := body.Clone()
	body2.ID = "r2"
	res, err = e.Apply(ctx, []crdt.Change{{Collection: "notes", Record: other}, {Collection: "notes", Record: small}, {Collection: "notes", Record: body2}})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(res[0].Err, ErrTooLarge) || res[1].Status != StatusApplied || !errors.Is(res[2].Err, ErrSchema) {
		t.Fatalf("too large, the lock, the body: %+v, want refused too large, applied, refused schema", res)
	}
	if got, err := e.Get(ctx, "notes", "r2"); err != nil || got["body"] != nil || got["locked"] != "yes" {
		t.Fatalf("r2: %v %v, want locked without a body", got, err)
	}
}

// TestRulesRefusedChangeLeavesNothing, with the refused change's batch
// split further: each later change of the record is judged again on the
// record as stored, not only those of the half that follows the refusal.
// Here the store refuses the growing change inside a split half; a later
// change of the record in that half is judged again, and the move to bob,
// in the other half, must be too.
func TestRulesRefusedChangeLeavesNothingAcrossSplits(t *testing.T) {
	ctx := context.Background()
	e := openEngine(t, "srv", &fakeClock{ms: 1_000_000})
	alice := mustScope(t, "eq", "owner", "alice")
	write := WithWriteScope(func(string) (*scope.Pred, error) { return alice, nil })
	text := func(s string) []byte {
		b, err := crdt.EncodeValue(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	at := func(ms int64) crdt.Stamp { return crdt.Stamp{Wall: 999_000 + ms, Replica: "c1"} }
	set := func(id, field, v string, ms int64) crdt.Change {
		return crdt.Change{Collection: "notes", Record: crdt.SetField(id, field, text(v), at(ms))}
	}
	if res, err := e.Apply(ctx, []crdt.Change{set("r", "owner", "alice", 1), set("s", "owner", "alice", 1)}, write); err != nil || res[0].Status != StatusApplied {
		t.Fatalf("alice's records: %+v %v", res, err)
	}
	big := strings.Repeat("x", 120<<10)
	grow := crdt.Change{Collection: "notes", Record: crdt.Record{ID: "r", Fields: map[string]crdt.Field{
		"owner": {Stamp: at(3), Value: text("alice")},
		"pad1":  {Stamp: at(3), Value: text(big)},
		"pad2":  {Stamp: at(3), Value: text(big)},
		"pad3":  {Stamp: at(3), Value: text(big)},
	}}}
	// Split in halves: [s, grow, title] and [s, s, move]; the first again
	// in [s] and [grow, title], and that in [grow] and [title].
	changes := []crdt.Change{set("s", "a", "1", 2), grow, set("r", "title", "t", 4), set("s", "b", "1", 2), set("s", "c", "1", 2), set("r", "owner", "bob", 2)}
	res, err := e.Apply(ctx, changes, write)
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(res[1].Err, ErrTooLarge) || res[2].Status != StatusApplied {
		t.Fatalf("the growing change, the title: %+v, want too large, applied", res[1:3])
	}
	got, err := e.GetRecord(ctx, "notes", "r")
	if err != nil {
		t.Fatal(err)
	}
	if !alice.Match(got.Record) || !errors.Is(res[5].Err, ErrOutOfScope) {
		t.Fatalf("the move: %+v; the record left alice's write scope: owner %x", res[5], got.Record.Fields["owner"].Value)
	}
}
