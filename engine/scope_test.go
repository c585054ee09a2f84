package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
)

// mustScope builds a scope from its array form.
func mustScope(t testing.TB, v ...any) *scope.Pred {
	t.Helper()
	p, err := scope.FromValue(v)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// reader is a scoped client: what it holds and where it is.
type reader struct {
	held   map[string]crdt.Record
	cursor Cursor
}

func newReader() *reader { return &reader{held: map[string]crdt.Record{}} }

// pull reads one page under s, applies it and returns it.
func (r *reader) pull(t *testing.T, e *Engine, coll string, s *scope.Pred, limit int) Page {
	t.Helper()
	p, err := e.PullScoped(context.Background(), coll, r.cursor, PageLimit{Records: limit}, s)
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range p.Entries {
		m, _ := crdt.Merge(r.held[en.Record.ID], en.Record)
		if m.Exists() {
			r.held[en.Record.ID] = m
		} else {
			delete(r.held, en.Record.ID)
		}
	}
	for _, l := range p.Left {
		delete(r.held, l.ID)
	}
	c, err := ParseCursor(p.Next.Bytes())
	if err != nil || c != p.Next {
		t.Fatalf("cursor %v does not round-trip: %v, %v", p.Next, c, err)
	}
	r.cursor = c
	return p
}

// pullAll pulls under s until the log has no more.
func (r *reader) pullAll(t *testing.T, e *Engine, coll string, s *scope.Pred, limit int) {
	t.Helper()
	for range 1000 {
		if !r.pull(t, e, coll, s, limit).More {
			return
		}
	}
	t.Fatal("no end of the log after 1000 pages")
}

func (r *reader) ids() []string {
	var ids []string
	for id := range r.held {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func pageIDs(p Page) (entries, left []string) {
	for _, en := range p.Entries {
		entries = append(entries, en.Record.ID)
	}
	for _, l := range p.Left {
		left = append(left, l.ID)
	}
	return entries, left
}

// seedScoped writes r1 (owner a, team x), r2 (b, y), r3 (c, x) and r4
// (a, x, deleted).
func seedScoped(t *testing.T, e *Engine, coll string) {
	t.Helper()
	ctx := context.Background()
	for _, r := range []struct{ id, owner, team string }{{"r1", "a", "x"}, {"r2", "b", "y"}, {"r3", "c", "x"}, {"r4", "a", "x"}} {
		if err := e.Put(ctx, coll, r.id, Doc{"owner": r.owner, "team": r.team}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Delete(ctx, coll, "r4"); err != nil {
		t.Fatal(err)
	}
}

func TestPullScopedReadsEntriesAndLeaves(t *testing.T) {
	e := engineOn(t, memory.New())
	seedScoped(t, e, "todos")
	r := newReader()
	p := r.pull(t, e, "todos", mustScope(t, "eq", "owner", "a"), 0)
	entries, left := pageIDs(p)
	if want := []string{"r1"}; !slices.Equal(entries, want) {
		t.Errorf("entries %v, want %v", entries, want)
	}
	if want := []string{"r2", "r3", "r4"}; !slices.Equal(left, want) {
		t.Errorf("left %v, want %v", left, want)
	}
	if !p.Next.Scoped() || p.Next.InTransition() || p.More {
		t.Errorf("next %v, more %v: want a scoped cursor at the end", p.Next, p.More)
	}
	// Leaves count toward the record limit.
	r = newReader()
	p = r.pull(t, e, "todos", mustScope(t, "eq", "owner", "a"), 2)
	if n := len(p.Entries) + len(p.Left); n != 2 || !p.More {
		t.Errorf("a page of 2 holds %d, more %v", n, p.More)
	}
	// An unbound scope is refused.
	_, err := e.PullScoped(context.Background(), "todos", Cursor{}, PageLimit{}, mustScope(t, "eq", "owner", map[string]any{"$": "sub"}))
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("an unbound scope: got %v, want ErrInvalid", err)
	}
}

func TestPullScopedLeavesCountBytes(t *testing.T) {
	e := engineOn(t, memory.New())
	for i := range 10 {
		if err := e.Put(context.Background(), "big", fmt.Sprintf("r%d", i), Doc{"owner": "b", "pad": strings.Repeat("x", 1000)}); err != nil {
			t.Fatal(err)
		}
	}
	r := newReader()
	p, err := e.PullScoped(context.Background(), "big", r.cursor, PageLimit{Bytes: 3 * leftBytes}, mustScope(t, "eq", "owner", "a"))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Left) != 3 || !p.More {
		t.Errorf("a page of %d bytes holds %d leaves, more %v; want 3 and more", 3*leftBytes, len(p.Left), p.More)
	}
}

func TestTransitions(t *testing.T) {
	a := func(t *testing.T) *scope.Pred { return mustScope(t, "eq", "owner", "a") }
	b := func(t *testing.T) *scope.Pred { return mustScope(t, "eq", "owner", "b") }
	x := func(t *testing.T) *scope.Pred { return mustScope(t, "in", "team", []any{"x"}) }
	none := func(*testing.T) *scope.Pred { return nil }
	// bigA and bigB are A and B with predicates that match nothing
	// (o == i), each within the scope limits, their or over the limit of
	// predicates (scope.MaxNodes) but not of bytes.
	big := func(owner string, from int) func(t *testing.T) *scope.Pred {
		return func(t *testing.T) *scope.Pred {
			ps := []any{"or", []any{"eq", "owner", owner}}
			for i := range scope.MaxNodes / 2 {
				ps = append(ps, []any{"eq", "o", from + i})
			}
			return mustScope(t, ps...)
		}
	}
	bigA, bigB := big("a", 0), big("b", scope.MaxNodes/2)
	type step struct {
		scope func(*testing.T) *scope.Pred
		limit int // records; 0: read to the end
	}
	for _, tc := range []struct {
		name  string
		steps []step
		// first is what the first page after the last change of scope
		// holds, read whole.
		entries, left []string
		held          []string
	}{
		{"unscoped to scoped", []step{{none, 0}, {a, 0}}, nil, []string{"r2", "r3"}, []string{"r1"}},
		{"scoped to unscoped", []step{{a, 0}, {none, 0}}, []string{"r2", "r3", "r4"}, nil, []string{"r1", "r2", "r3"}},
		{"A to B", []step{{a, 0}, {x, 0}}, []string{"r3"}, nil, []string{"r1", "r3"}},
		{"B to A", []step{{x, 0}, {a, 0}}, nil, []string{"r3"}, []string{"r1"}},
		// A to B cut after one entry (r1 left), then to C: prev is A or
		// B, an over-approximation, so r1 must be sent again.
		{"A to B to C mid-scan", []step{{a, 0}, {b, 1}, {x, 0}}, []string{"r1", "r3"}, []string{"r2"}, []string{"r1", "r3"}},
		{"same scope", []step{{a, 0}, {a, 0}}, nil, nil, []string{"r1"}},
		// The or of A and B is over the scope limits: prev is dropped,
		// and the reader is told of every entry from the start.
		{"A to B to C mid-scan, A or B over the limits", []step{{bigA, 0}, {bigB, 1}, {x, 0}}, []string{"r1", "r3"}, []string{"r2", "r4"}, []string{"r1", "r3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := engineOn(t, memory.New())
			seedScoped(t, e, "todos")
			r := newReader()
			var s *scope.Pred
			for _, st := range tc.steps[:len(tc.steps)-1] {
				s = st.scope(t)
				if st.limit == 0 {
					r.pullAll(t, e, "todos", s, 0)
				} else {
					r.pull(t, e, "todos", s, st.limit)
				}
			}
			s = tc.steps[len(tc.steps)-1].scope(t)
			p := r.pull(t, e, "todos", s, 0)
			if p.More {
				t.Fatal("more after a whole page")
			}
			entries, left := pageIDs(p)
			if !slices.Equal(entries, tc.entries) || !slices.Equal(left, tc.left) {
				t.Errorf("entries %v, left %v; want %v, %v", entries, left, tc.entries, tc.left)
			}
			if got := r.ids(); !slices.Equal(got, tc.held) {
				t.Errorf("holds %v, want %v", got, tc.held)
			}
			if p.Next.InTransition() {
				t.Errorf("the transition is kept after the head: %v", p.Next)
			}
			// A write after the transition reads as usual.
			if err := e.Update(context.Background(), "todos", "r2", Doc{"owner": "a", "team": "x"}); err != nil {
				t.Fatal(err)
			}
			r.pullAll(t, e, "todos", s, 0)
			want := expected(t, e, "todos", s, "r1", "r2", "r3", "r4")
			if got := r.ids(); !slices.Equal(got, want) {
				t.Errorf("after a write, holds %v, want %v", got, want)
			}
		})
	}
}

// expected returns the ids among ids whose record s holds.
func expected(t *testing.T, e *Engine, coll string, s *scope.Pred, ids ...string) []string {
	t.Helper()
	var out []string
	for _, id := range ids {
		ent, err := e.GetRecord(context.Background(), coll, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if matches(s, ent.Record) {
			out = append(out, id)
		}
	}
	return out
}

func TestTransitionMidScanKeepsState(t *testing.T) {
	e := engineOn(t, memory.New())
	seedScoped(t, e, "todos")
	r := newReader()
	a := mustScope(t, "eq", "owner", "a")
	r.pullAll(t, e, "todos", a, 0)
	x := mustScope(t, "in", "team", []any{"x"})
	p := r.pull(t, e, "todos", x, 1)
	if !p.More || !p.Next.InTransition() {
		t.Fatalf("a page of one mid-transition: more %v, next %v", p.More, p.Next)
	}
	if len(p.Next.Bytes()) > MaxCursorBytes || p.Next.Bytes()[0] != cursorFormatScoped+cursorStateSlots {
		t.Errorf("transition cursor bytes %x", p.Next.Bytes())
	}
	r.pullAll(t, e, "todos", x, 1)
	if got, want := r.ids(), []string{"r1", "r3"}; !slices.Equal(got, want) {
		t.Errorf("holds %v, want %v", got, want)
	}
}

func TestTransitionShards(t *testing.T) {
	st := newSharded(3)
	e := engineOn(t, st)
	ctx := context.Background()
	for i := range 30 {
		if err := e.Put(ctx, "todos", fmt.Sprintf("r%d", i), Doc{"owner": []string{"a", "b", "c"}[i%3], "team": []string{"x", "y"}[i%2]}); err != nil {
			t.Fatal(err)
		}
	}
	ids := make([]string, 30)
	for i := range ids {
		ids[i] = fmt.Sprintf("r%d", i)
	}
	r := newReader()
	a := mustScope(t, "eq", "owner", "a")
	r.pullAll(t, e, "todos", a, 4)
	if got, want := r.ids(), sorted(expected(t, e, "todos", a, ids...)); !slices.Equal(got, want) {
		t.Fatalf("holds %v, want %v", got, want)
	}
	if r.cursor.Shards() != 3 {
		t.Fatalf("cursor of %d shards", r.cursor.Shards())
	}
	x := mustScope(t, "in", "team", []any{"x"})
	r.pull(t, e, "todos", x, 3)
	y := mustScope(t, "in", "team", []any{"y"})
	r.pullAll(t, e, "todos", y, 4)
	if got, want := r.ids(), sorted(expected(t, e, "todos", y, ids...)); !slices.Equal(got, want) {
		t.Fatalf("holds %v, want %v", got, want)
	}
}

func sorted(s []string) []string { slices.Sort(s); return s }

func TestCursorFormats(t *testing.T) {
	big := make([]any, 0, 300)
	for i := range 300 {
		big = append(big, fmt.Sprintf("team-%04d", i))
	}
	sb := string(mustScope(t, "in", "team", big).Encode())
	for _, c := range []Cursor{
		CursorAt(5),
		cursorOf(noIdentity, 3, []uint64{1, 2, 3}),
		{store: noIdentity, epoch: 1, seq: 9, scope: sb},
		{store: noIdentity, epoch: 1, seq: 0, scope: sb, trans: exactPrev, prevPos: packPositions([]uint64{7})},
		{store: noIdentity, epoch: 1, seq: 2, trans: approxPrev, prev: sb, prevPos: packPositions([]uint64{7})},
		{store: noIdentity, epoch: 1, shards: packPositions(make([]uint64, 16)), scope: sb, trans: exactPrev, prev: sb, prevPos: packPositions(slices.Repeat([]uint64{1 << 62}, 16))},
		{store: noIdentity, epoch: 1, seq: 4, slots: packSlots([]uint32{7}, nil)},
		{store: noIdentity, epoch: 1, shards: packPositions(slices.Repeat([]uint64{1 << 59}, 16)), slots: packSlots(slices.Repeat([]uint32{1<<32 - 1}, 16), slices.Repeat([]uint32{1<<32 - 1}, 16)), mark: 1 << 40},
		{store: noIdentity, epoch: 1, shards: packPositions(slices.Repeat([]uint64{1 << 59}, 16)), slots: packSlots(make([]uint32, 16), append(make([]uint32, 15), 1)), scope: sb, trans: exactPrev, prev: sb, prevPos: packPositions(slices.Repeat([]uint64{1 << 62}, 16))},
		// The longest unscoped cursor with slot marks.
		{store: noIdentity, epoch: 1<<64 - 1, shards: packPositions(slices.Repeat([]uint64{1<<64 - 1}, stores.MaxShards)), slots: packSlots(slices.Repeat([]uint32{1<<32 - 1}, stores.MaxShards), slices.Repeat([]uint32{1<<32 - 1}, stores.MaxShards)), mark: 1<<64 - 1},
		// State marks (formats 5 and 6): a record at the position named,
		// one still to be met, none.
		{store: noIdentity, epoch: 1, seq: 4, slots: packSlots([]uint32{7 | stateFlag}, []uint32{9}), stateSlots: true},
		{store: noIdentity, epoch: 1, shards: packPositions([]uint64{4, 5, 6}), slots: packSlots([]uint32{7, 0, 8 | stateFlag}, []uint32{9, 3, 1}), stateSlots: true, scope: sb},
		{store: noIdentity, epoch: 1<<64 - 1, shards: packPositions(slices.Repeat([]uint64{1<<64 - 1}, stores.MaxShards)), slots: packSlots(slices.Repeat([]uint32{1<<32 - 1}, stores.MaxShards), slices.Repeat([]uint32{1<<32 - 1}, stores.MaxShards)), stateSlots: true, mark: 1<<64 - 1},
	} {
		b := c.Bytes()
		got, err := ParseCursor(b)
		if err != nil || got != c {
			t.Errorf("%v: parsed %v, %v", c, got, err)
		}
		if len(b) > MaxCursorBytes {
			t.Errorf("%v: %d bytes, at most %d", c, len(b), MaxCursorBytes)
		}
		if c.scope == "" && c.trans == noTransition && c.slots == "" && (b[0] != cursorFormat || len(b) > 256) {
			t.Errorf("%v: an unscoped cursor is not format 1 within 256 bytes: %x", c, b)
		}
		// The bound docs/design.md gives ("Cursor"): 327 bytes for 16 shards.
		format := byte(cursorFormat + cursorSlots)
		if c.stateSlots {
			format = cursorFormat + cursorStateSlots
		}
		if max := 1 + 8 + (3+stores.MaxShards)*10 + 2*slotBytes*stores.MaxShards; c.scope == "" && c.trans == noTransition && c.slots != "" && (b[0] != format || len(b) > max) {
			t.Errorf("%v: an unscoped cursor with slot marks is not format %d within %d bytes: %x", c, format, max, b)
		}
	}
	for _, b := range [][]byte{
		append([]byte{2}, make([]byte, MaxCursorBytes)...),
		{3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1},                            // no slot marks
		{3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0},    // marks all unknown: format 1 says that
		{7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1},                            // no such format
		{5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0x80, 0, 0, 0, 0, 0, 0, 9}, // a flag without a state mark
		{5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0x80, 0, 0, 7, 0, 0, 0, 0}, // a flag without the id it says follows
		{2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 3, 'a', 'b', 'c', 0},       // not a scope
		{2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 3},                      // no such transition
	} {
		if _, err := ParseCursor(b); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseCursor(%x): %v, want ErrInvalid", b, err)
		}
	}
}

// A reader that says it holds nothing (FreshStart) reads its first pass
// of the log without leave entries, then as any scoped reader.
func TestFreshReaderSkipsLeaves(t *testing.T) {
	e := engineOn(t, memory.New())
	ctx := context.Background()
	for i := range 40 {
		owner := "b"
		if i%10 == 0 {
			owner = "a"
		}
		if err := e.Put(ctx, "todos", fmt.Sprint("t", i), Doc{"owner": owner}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Delete(ctx, "todos", "t10"); err != nil {
		t.Fatal(err)
	}
	mine := mustScope(t, "eq", "owner", "a")
	r := newReader()
	r.cursor = FreshStart()
	pages := 0
	for {
		p := r.pull(t, e, "todos", mine, 3)
		pages++
		if len(p.Left) > 0 {
			t.Fatalf("page %d of a fresh reader has leave entries %v", pages, p.Left)
		}
		if !p.More {
			break
		}
		if pages > 100 {
			t.Fatal("no end of the log")
		}
	}
	if got, want := r.ids(), expected(t, e, "todos", mine, r.ids()...); !slices.Equal(got, []string{"t0", "t20", "t30"}) || !slices.Equal(got, want) {
		t.Fatalf("a fresh reader holds %v, want t0 t20 t30 (%v)", got, want)
	}
	if r.cursor.InTransition() {
		t.Fatalf("at the end of the log the cursor %v is still in its first pass", r.cursor)
	}
	// After the first pass, a record that leaves the scope is a leave.
	if err := e.Put(ctx, "todos", "t20", Doc{"owner": "b"}); err != nil {
		t.Fatal(err)
	}
	p := r.pull(t, e, "todos", mine, 0)
	if _, left := pageIDs(p); !slices.Equal(left, []string{"t20"}) {
		t.Fatalf("after the first pass, a record moved out gave leaves %v, want t20", left)
	}
	// Unscoped, FreshStart is the beginning.
	p, err := e.PullScoped(ctx, "todos", FreshStart(), PageLimit{}, nil)
	if err != nil || len(p.Entries) != 40 || len(p.Left) != 0 {
		t.Fatalf("unscoped from FreshStart: %d entries, %d leaves, %v", len(p.Entries), len(p.Left), err)
	}
}

// noIdentityStore is a store without an identity: its cursors carry no
// slot marks (slotKeyOf).
type noIdentityStore struct{ stores.Store }

func (noIdentityStore) Identity(context.Context) (string, error) { return "", nil }

// TestScopeChangeWithoutSlotMarks: a change of scope on a store without an
// identity (no slot marks) reads again from the start, as on any store.
func TestScopeChangeWithoutSlotMarks(t *testing.T) {
	ctx := context.Background()
	e := engineOn(t, noIdentityStore{memory.New()})
	write(t, e, "todos", 0, 3)
	p, err := e.Pull(ctx, "todos", Cursor{}, PageLimit{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Next.IsStart() || p.Next.slots != "" {
		t.Fatalf("next %v: want a cursor past the start, without slot marks", p.Next)
	}
	if _, err := e.PullScoped(ctx, "todos", p.Next, PageLimit{}, mustScope(t, "eq", "n", 1)); err != nil {
		t.Fatalf("a change of scope: %v", err)
	}
}
