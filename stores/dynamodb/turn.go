package dynamodb

import (
	"context"
	"encoding/hex"
	"slices"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Commit turns. Two server instances writing one log (a collection, or one
// shard of one) race on its head: each instance's committer conditions its
// transaction on the head it knows, so while both commit, about every
// other transaction is cancelled because the other instance's committed
// first. Refreshing the head from the cancellation (ALL_OLD) makes the
// retry succeed, but the cancelled transaction was sent, checked and
// refused in full: on DynamoDB Local, which serialises every request, a
// cancelled transaction of 99 items costs about what a committed one does,
// and 8 pushers over two instances measured 0.22–0.25× the rate of one.
//
// So the instances take turns. Every transaction's head put also names
// its instance (attrTurnOwner), when its turn began (attrTurnBegan) and
// until when it holds it (attrTurnUntil; the owner's clock, Unix ms). A
// turn begins with an instance's first commit and lasts at most
// Config.CommitTurn; each commit holds it for about two more of the
// owner's commit rounds (at the 90th percentile of its last ten, since
// rounds under load vary by more than 2x), so a turn lapses soon after its
// owner stops committing: an owner with nothing more to write keeps no one
// waiting long. An instance that sees, on the head it reads or in a
// cancellation's ALL_OLD item, another instance's turn held does not send
// its transaction: it waits until then and reads the head alone again
// (one item), waiting again while the owner goes on; then it reads its
// records and commits, its queue having grown meanwhile (the waiting
// pushers' changes go into fuller transactions). An instance that held
// its turn to its end (CommitTurn) and has seen another instance on this
// head since it began (contested) yields: it pauses for about three of
// its commit rounds, long enough for a waiting instance to read the head
// and its records and commit, then reads the head; if the other instance took a turn it waits for its end,
// and if nobody did the log is no longer contested and the instance
// commits on without pauses. An instance whose hold lapsed on a contested
// log (one of its rounds took longer than the grace) reads the head before
// it starts a new turn, since a waiting instance may be committing. An
// instance alone on a log never waits.
//
// Turns are advisory. Correctness stays with the head's condition: two
// instances that both believe they hold a turn (clocks apart, a turn
// ended while a transaction was in flight) only cancel one transaction,
// as before. A waiting instance never waits longer than twice CommitTurn
// from the moment it looks (an owner's clock far ahead cannot stall it),
// and one that waited for a turn and finds the same owner in a new turn
// without having yielded commits anyway (barges): its commit shows the
// owner that the log is contested, so the owner yields at the end of that
// turn. A crashed owner's turn lapses by itself.

// Attributes of a head item naming the turn of its last writer.
const (
	attrTurnOwner = "towner" // S: the instance (turnID)
	attrTurnBegan = "tbegan" // N: start of its turn, Unix ms, the owner's clock
	attrTurnUntil = "tuntil" // N: until when it holds the turn, likewise
)

// DefaultCommitTurn is the length of one instance's turn on a contested
// log when Config.CommitTurn is zero: on AWS (about 25 ms a commit round)
// some eight transactions, on DynamoDB Local a few.
const DefaultCommitTurn = 200 * time.Millisecond

// turn is what a head item says of its last writer's turn.
type turn struct {
	owner        string
	began, until int64 // Unix ms
}

func readTurn(item map[string]types.AttributeValue) turn {
	var t turn
	if o, ok := item[attrTurnOwner].(*types.AttributeValueMemberS); ok {
		t.owner = o.Value
	}
	if b, ok := item[attrTurnBegan].(*types.AttributeValueMemberN); ok {
		t.began, _ = strconv.ParseInt(b.Value, 10, 64)
	}
	if u, ok := item[attrTurnUntil].(*types.AttributeValueMemberN); ok {
		t.until, _ = strconv.ParseInt(u.Value, 10, 64)
	}
	return t
}

// turnID names this instance on head items.
func (st *Store) turnID() string { return hex.EncodeToString(st.nonce[:8]) }

// turnState is a committer's view of the turns on its log.
type turnState struct {
	seen      turn                       // as the head last read or returned says
	mine      time.Time                  // when this instance's current turn began; zero: none
	contested bool                       // another instance wrote the head since this one's turn began
	yielded   bool                       // this instance paused for others; the next head read says if one came
	waited    turn                       // the other instance's turn this committer last waited for
	lapseRead bool                       // the head was read after this instance's own hold lapsed
	round     time.Duration              // running mean of half-rounds (a read or a transaction)
	recent    [roundWindow]time.Duration // the last half-rounds, a ring
	nrecent   int                        // how many half-rounds were timed
}

// roundWindow is how many recent half-rounds a hold is sized from: a
// commit holds the turn for about two rounds at the window's 90th
// percentile, not its mean. Under load one round often takes more than
// twice the mean; a hold sized from the mean then lapsed mid-turn, the
// waiting instance committed, and the two raced (a cancellation).
const roundWindow = 10

// observe notes the turn of a head item just read (or returned by a
// cancellation).
func (st *Store) observe(q *collQueue, t turn) {
	ts := &q.turns
	if t.owner != "" && t.owner != st.turnID() {
		ts.contested, ts.mine = true, time.Time{}
	} else if ts.yielded {
		ts.contested = false // nobody took the turn this instance left
	}
	ts.yielded = false
	ts.seen = t
}

// nextTurn is the turn this instance's next transaction on q's log names,
// starting one when it holds none (zero when turns are off).
func (st *Store) nextTurn(q *collQueue) turn {
	if st.turn <= 0 {
		return turn{}
	}
	ts := &q.turns
	now := st.now()
	if ts.mine.IsZero() || !st.holding(q, now) || (!ts.contested && now.Sub(ts.mine) >= st.turn) {
		ts.mine = now // a new turn: none, a lapsed one, or one alone
	}
	until := min(ts.mine.Add(st.turn).UnixMilli(), now.Add(q.grace(st.turn)).UnixMilli())
	return turn{owner: st.turnID(), began: ts.mine.UnixMilli(), until: until}
}

// holding reports whether this instance holds the turn on q's log at now
// (its last commit's hold has not lapsed).
func (st *Store) holding(q *collQueue, now time.Time) bool {
	return q.turns.seen.owner == st.turnID() && now.UnixMilli() <= q.turns.seen.until
}

// grace is how long a commit holds the turn: about two commit rounds at
// the 90th percentile of the recent half-rounds (reads and transactions,
// about half a round each), at most the turn.
func (q *collQueue) grace(turnLen time.Duration) time.Duration {
	return min(4*q.turns.p90()+2*time.Millisecond, turnLen)
}

// pause is how long a yield pauses: about two commit rounds at the running
// mean, at most the turn (a waiting instance's rounds, not a slow one's).
func (q *collQueue) pause(turnLen time.Duration) time.Duration {
	return min(4*q.turns.round+2*time.Millisecond, turnLen)
}

// p90 is the 90th percentile (nearest rank) of the recent half-rounds.
func (ts *turnState) p90() time.Duration {
	n := min(ts.nrecent, roundWindow)
	if n == 0 {
		return 0
	}
	w := ts.recent // a copy: the ring keeps its order
	slices.Sort(w[:n])
	return w[(9*n+9)/10-1]
}

// committed notes that this instance's transaction naming t committed.
func (st *Store) committed(q *collQueue, t turn) {
	st.observe(q, t)
	q.turns.waited, q.turns.lapseRead = turn{}, false
}

// turnAttrs adds t to a head item (nothing for the zero turn).
func turnAttrs(item map[string]types.AttributeValue, t turn) {
	if t.owner == "" {
		return
	}
	item[attrTurnOwner] = s(t.owner)
	item[attrTurnBegan] = n(uint64(t.began))
	item[attrTurnUntil] = n(uint64(t.until))
}

// awaitTurn pauses q's committer while another instance holds the turn, or
// after its own turn on a contested log. It reports whether it paused: the
// head must then be read again (q.headOK is cleared).
func (st *Store) awaitTurn(ctx context.Context, q *collQueue) (bool, error) {
	if st.turn <= 0 {
		return false, nil
	}
	ts := &q.turns
	now := st.now()
	if o := ts.seen; o.owner != "" && o.owner != st.turnID() {
		left := time.Duration(o.until-now.UnixMilli()) * time.Millisecond
		if left <= 0 || left > 2*st.turn {
			return false, nil // over, or an owner's clock gone astray
		}
		if ts.waited.owner == o.owner && ts.waited.began < o.began {
			return false, nil // a new turn of the owner we waited for: barge
		}
		ts.waited = o
		st.turnWaits.Add(1)
		st.log.Debug("waiting for another instance's turn", "log", q.ref.String(), "for", left, "owner", o.owner)
		if err := sleep(ctx, left); err != nil {
			return false, err
		}
		q.headOK = false
		return true, nil
	}
	if end := ts.mine.Add(st.turn); ts.contested && !ts.mine.IsZero() && !now.Before(end) &&
		ts.seen.owner == st.turnID() && ts.seen.until >= end.UnixMilli() {
		// This instance held its turn to the end.
		ts.mine, ts.yielded = time.Time{}, true
		st.turnYields.Add(1)
		// A waiting instance needs about three round trips to commit (the
		// head, its records, its transaction): pause that long, so that
		// reading the head afterwards finds its turn, not a race.
		d := min(q.pause(st.turn)*3/2, st.turn)
		st.log.Debug("yielding the turn", "log", q.ref.String(), "for", d)
		if err := sleep(ctx, d); err != nil {
			return false, err
		}
		q.headOK = false
		return true, nil
	}
	if ts.contested && ts.seen.owner == st.turnID() && now.UnixMilli() > ts.seen.until && !ts.lapseRead {
		// This instance's hold lapsed on a contested log (a round took
		// longer than the grace): a waiting instance may be committing
		// now. Read the head before starting a new turn, once.
		ts.lapseRead = true
		q.headOK = false
		return true, nil
	}
	return false, nil
}

// timeRound notes the duration of one half-round (a read or a
// transaction): into the window a hold is sized from, and into the running
// mean a yield's pause is.
func (q *collQueue) timeRound(d time.Duration) {
	q.turns.recent[q.turns.nrecent%roundWindow] = d
	q.turns.nrecent++
	if q.turns.round == 0 {
		q.turns.round = d
		return
	}
	q.turns.round += (d - q.turns.round) / 4
}

// TurnStats returns how often this instance's committers waited for
// another instance's turn and yielded theirs since it opened.
func (st *Store) TurnStats() (waits, yields int64) {
	return st.turnWaits.Load(), st.turnYields.Load()
}
