package dynamodb

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// TestCommitTurns walks two instances through the turn protocol on the
// model table, one step at a time, on the model's clock (turn.go): a
// commit holds the turn for a grace shorter than the turn, and the second
// instance waits that out instead of sending a transaction bound to be
// cancelled; the first, whose cached head is
// stale, learns the second's turn from its one cancellation and waits; an
// instance whose turn ends on a contested log yields once and, nobody
// taking the turn, commits on without pausing again; a waiting instance
// whose owner starts a new turn without yielding commits anyway; and
// every change is in the log once, in order.
func TestCommitTurns(t *testing.T) {
	clock := newFakeClock()
	modelPause(t, clock)
	tab := newModelTable()
	tab.clock = clock
	ctx := context.Background()
	const turnLen = 100 * time.Millisecond
	open := func() *Store {
		st, err := newStore(ctx, Config{Table: "model", CommitTurn: turnLen}, tab)
		if err != nil {
			t.Fatal(err)
		}
		st.now = clock.Now
		return st
	}
	a, b := open(), open()
	qa, qb := &collQueue{ref: logRef{coll: "c", shards: 1}}, &collQueue{ref: logRef{coll: "c", shards: 1}}
	n := 0
	apply := func(st *Store, q *collQueue) {
		t.Helper()
		n++
		ch := []crdt.Change{{Collection: "c", Record: crdt.SetField(fmt.Sprint("r", n), "f", val(t, n), stamp(int64(n), "w"))}}
		res := make([]stores.Result, 1)
		if _, _, err := st.applyGroup(ctx, q, ch, []int{0}, res); err != nil {
			t.Fatal(err)
		}
		if res[0].Seq != uint64(n) {
			t.Fatalf("change %d got seq %d", n, res[0].Seq)
		}
	}
	stats := func(st *Store) [4]int64 {
		c, x := st.TxStats()
		w, y := st.TurnStats()
		return [4]int64{c, x, w, y}
	}
	want := func(what string, st *Store, w [4]int64) {
		t.Helper()
		if got := stats(st); got != w {
			t.Fatalf("%s: committed, cancelled, waits, yields = %v, want %v", what, got, w)
		}
	}

	apply(a, qa) // a's turn begins
	want("a's first commit", a, [4]int64{1, 0, 0, 0})
	began := clock.Now()
	held := qa.turns.seen
	if held.owner != a.turnID() || held.until <= began.UnixMilli() || held.until >= began.Add(turnLen).UnixMilli() {
		t.Fatalf("a's commit at %d holds the turn %+v: want a, for a grace shorter than the turn", began.UnixMilli(), held)
	}
	apply(b, qb) // b reads a's turn held and waits it out: no cancellation
	want("b after a's turn", b, [4]int64{1, 0, 1, 0})
	if now := clock.Now().UnixMilli(); now < held.until {
		t.Fatalf("b committed at %d, before a's hold ended (%d)", now, held.until)
	}
	apply(a, qa) // a's cached head is stale: one cancellation names b's turn, then a waits
	want("a after b's turn", a, [4]int64{2, 1, 1, 0})

	// a alone: at the end of its turn the log is contested (b wrote it),
	// so a yields once; b takes nothing, so a never pauses again.
	for clock.Now().Sub(began) < 10*turnLen {
		apply(a, qa)
		clock.advance(time.Millisecond) // a keeps the turn held
	}
	if _, _, w, y := unpack(stats(a)); w != 1 || y != 1 {
		t.Fatalf("a alone for 10 turns: %d waits and %d yields, want 1 and 1", w, y)
	}

	// b, whose view of the head is old, waits while a holds the turn.
	apply(a, qa)
	qb.headOK = false
	apply(b, qb)
	_, xb, wb, _ := unpack(stats(b))
	if wb != 2 {
		t.Fatalf("b waited %d times, want 2", wb)
	}
	// b waited for a's turn x; a (not having seen b's commit) starts a new
	// turn without yielding, and holds it: b barges in instead of waiting
	// a second time.
	x := qa.turns.seen
	clock.advance(turnLen)
	qa.turns.contested = false
	apply(a, qa)
	if y := qa.turns.seen; y.began <= x.began || y.until <= clock.Now().UnixMilli() {
		t.Fatalf("a's turn %+v after %+v: want a new one, held", y, x)
	}
	qb.turns.seen, qb.turns.waited = x, x
	qb.headOK = false
	apply(b, qb)
	if _, x, w, _ := unpack(stats(b)); w != wb || x != xb {
		t.Fatalf("b waited again (%d waits, %d cancelled), want a barge (%d, %d)", w, x, wb, xb)
	}

	page, err := a.pullLog(ctx, qa.ref, 0, stores.PageLimit{Records: 1000, Bytes: stores.DefaultPageBytes})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Entries) != n {
		t.Fatalf("log holds %d entries, want %d", len(page.Entries), n)
	}
	for k, e := range page.Entries {
		if e.Seq != uint64(k+1) {
			t.Fatalf("entry %d at seq %d", k, e.Seq)
		}
	}
}

func unpack(s [4]int64) (int64, int64, int64, int64) { return s[0], s[1], s[2], s[3] }

// TestCommitTurnsOff: with CommitTurn negative no head item names a turn
// and nobody waits.
func TestCommitTurnsOff(t *testing.T) {
	clock := newFakeClock()
	modelPause(t, clock)
	tab := newModelTable()
	ctx := context.Background()
	st, err := newStore(ctx, Config{Table: "model", CommitTurn: -1}, tab)
	if err != nil {
		t.Fatal(err)
	}
	q := &collQueue{ref: logRef{coll: "c", shards: 1}}
	ch := []crdt.Change{{Collection: "c", Record: crdt.SetField("r", "f", val(t, 1), stamp(1, "w"))}}
	if _, _, err := st.applyGroup(ctx, q, ch, []int{0}, make([]stores.Result, 1)); err != nil {
		t.Fatal(err)
	}
	if h := tab.items[headPK("c")+"\x000"]; h[attrTurnOwner] != nil || h[attrTurnUntil] != nil {
		t.Fatalf("head item %v names a turn", h)
	}
}

// TestTurnHoldQuantile: a commit's hold is sized from the 90th percentile
// of the last ten half-rounds, not their mean, so one round twice as slow
// as usual (common under load) does not outlast the hold; a yield's pause
// stays on the mean; old rounds leave the window; the hold never passes
// the turn.
func TestTurnHoldQuantile(t *testing.T) {
	const turnLen = 200 * time.Millisecond
	q := &collQueue{}
	if g := q.grace(turnLen); g != 2*time.Millisecond {
		t.Fatalf("hold with no rounds timed: %v", g)
	}
	ms := time.Millisecond
	// Eight fast half-rounds and two slow ones (reads and transactions
	// alternate): a slow round takes 2*12 ms, more than the mean-sized hold.
	for _, d := range []time.Duration{4, 4, 12, 4, 4, 4, 12, 4, 4, 4} {
		q.timeRound(d * ms)
	}
	slowRound := 24 * ms
	if g := q.grace(turnLen); g < 2*slowRound {
		t.Fatalf("hold %v: want at least two slow rounds (%v)", g, 2*slowRound)
	}
	if p := q.pause(turnLen); p >= 2*slowRound {
		t.Fatalf("yield pause %v: want it sized from the mean, under %v", p, 2*slowRound)
	}
	// Ten fast half-rounds push the slow ones out of the window.
	for range roundWindow {
		q.timeRound(4 * ms)
	}
	if g, want := q.grace(turnLen), 4*4*ms+2*ms; g != want {
		t.Fatalf("hold after fast rounds: %v, want %v", g, want)
	}
	for range roundWindow {
		q.timeRound(time.Second)
	}
	if g := q.grace(turnLen); g != turnLen {
		t.Fatalf("hold with slow rounds: %v, want the turn %v", g, turnLen)
	}
}
