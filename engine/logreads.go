package engine

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/convergo/convergo/internal/bug"
	"github.com/convergo/convergo/stores"
)

// logReads shares identical store reads of a log among the pulls that ask
// for them at once. The live subscribers of a collection sit in one
// broadcast group per scope (and schema version), each group reads for
// itself, and one write wakes them all: they read the same log from the
// same position within the same bounds, and judge what they read each by
// its own scope. Without sharing, a write to a collection read under
// many scopes (owner == $sub, one per user; or one subject's many
// subscriptions) costs as many store reads as scopes.
//
// # Fresh reads
//
// A pull shares only a store read begun after the pull began (its since,
// begin), so that it sees every write committed before it: a live
// subscriber woken by a head reads after that head's write, a pull after
// the client's acknowledged push reads it. A pull that finds the
// identical read in flight but begun before it waits for the next one,
// which begins when that read ends and is shared by every pull that
// waited for it. Nothing is kept once a read ends: a pull later finds no
// read to share and reads the store itself.
//
// # Ownership
//
// Every pull that shares a read gets the same stores.Page: none may
// change it, its entries or their records (a record's Fields map). A
// pull reslices what it reads and copies the records it serves when the
// read was shared (scanLog), so a page it returns is its caller's, as
// without sharing.
//
// # Cancellation
//
// A read runs on a goroutine of its own with a context that is not any
// one pull's: a pull whose context ends returns at once with its error,
// and the read goes on for the others. The read's context is cancelled
// once no pull waits for it, so it is bounded by the longest of its
// pulls' contexts; a panic in the store fails that read with an error
// wrapping bug.ErrPanic, for each of its pulls.
//
// # Turns
//
// A pull whose context carries a turn (WithReadTurn) takes it before it
// begins a store read of its own, and before it returns the page of a
// read it shared, whose bytes are held once for all its pulls: so the
// pulls of one turn's holder (a live client's caught-up broadcast groups)
// hold at most as many pages, read and judged, as it has turns, and
// still share the reads of the pulls woken with them.
type logReads struct {
	begun  atomic.Uint64 // reads begun; written under mu
	shared atomic.Uint64 // pulls that shared a read another began (SharedPulls)

	mu    sync.Mutex
	reads map[logRead]*logQueue
}

// logRead is what determines a store read's result: the collection, the
// shard (-1: the log of an unsharded collection, Store.Pull), the
// position it reads after and its bounds.
type logRead struct {
	collection string
	shard      int
	after      uint64
	limit      stores.PageLimit
}

// logQueue is the read of one logRead in flight and the one that waits
// for it to end, if any.
type logQueue struct {
	cur, next *logFlight
}

// logFlight is one store read and the pulls that share it.
type logFlight struct {
	born uint64 // logReads.begun when it began; 0 while it waits
	// dropped: no pull waits for it any more, and its context is
	// cancelled; no pull joins it.
	dropped bool
	ctx     context.Context
	cancel  context.CancelFunc
	pulls   int // pulls that asked for it; final once done is closed
	waiting int // pulls still waiting for it
	done    chan struct{}
	page    stores.Page
	err     error
}

// begin returns the since of a pull beginning now: the reads begun so
// far, none of which it may share.
func (r *logReads) begin() uint64 { return r.begun.Load() }

// pull returns the store's answer to read, from a store read begun after
// since, shared with the other pulls that ask for it meanwhile; shared
// reports whether another pull got the same page (which none may
// change). A pull whose ctx ends returns ctx's error at once.
func (r *logReads) pull(ctx context.Context, store stores.Store, read logRead, since uint64) (_ stores.Page, shared bool, _ error) {
	turn := readTurnOf(ctx)
	r.mu.Lock()
	if r.reads == nil {
		r.reads = map[logRead]*logQueue{}
	}
	var q *logQueue
	var f *logFlight
	for f == nil {
		if q = r.reads[read]; q == nil {
			q = &logQueue{}
			r.reads[read] = q
		}
		switch {
		case q.cur != nil && q.cur.born > since && !q.cur.dropped:
			f = q.cur
		case q.cur != nil && q.next != nil:
			f = q.next
		case q.cur != nil:
			// Begun before this pull: the next one, when it ends.
			q.next = newLogFlight(ctx)
			f = q.next
		case turn != nil:
			// A read of its own: its turn first (WithReadTurn), then
			// what is in flight by then.
			r.mu.Unlock()
			if err := turn(ctx, false); err != nil {
				return stores.Page{}, false, err
			}
			turn = nil
			r.mu.Lock()
		default:
			q.cur = newLogFlight(ctx)
			f = q.cur
			f.born = r.begun.Add(1)
			go r.fly(store, read, q, f)
		}
	}
	if f.pulls > 0 {
		r.shared.Add(1)
	}
	f.pulls++
	f.waiting++
	r.mu.Unlock()
	select {
	case <-f.done:
		if turn != nil && f.err == nil {
			// A read shared: its page is held once, however many
			// pulls wait for their turn to judge it.
			if err := turn(ctx, true); err != nil {
				return stores.Page{}, false, err
			}
		}
		return f.page, f.pulls > 1, f.err
	case <-ctx.Done():
		r.mu.Lock()
		select {
		case <-f.done:
			r.mu.Unlock()
			if turn != nil && f.err == nil {
				if err := turn(ctx, true); err != nil {
					return stores.Page{}, false, err
				}
			}
			return f.page, f.pulls > 1, f.err
		default:
		}
		defer r.mu.Unlock()
		if f.waiting--; f.waiting == 0 {
			// Nobody waits for it: it ends unread, or cancelled.
			f.cancel()
			f.dropped = true
			if q.next == f {
				q.next = nil
			}
		}
		return stores.Page{}, false, ctx.Err()
	}
}

// newLogFlight returns a read for the pull of ctx to wait for, with a
// context that keeps ctx's values but not its end.
func newLogFlight(ctx context.Context) *logFlight {
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	return &logFlight{ctx: rctx, cancel: cancel, done: make(chan struct{})}
}

// fly reads f, which is q.cur and began under r.mu, and then q.next
// while there is one, each begun when the one before ended.
func (r *logReads) fly(store stores.Store, read logRead, q *logQueue, f *logFlight) {
	for f != nil {
		var p stores.Page
		err := bug.Recovered(func() (err error) {
			if read.shard < 0 {
				p, err = store.Pull(f.ctx, read.collection, read.after, read.limit)
			} else {
				// scanLog reads a shard only of a Sharder.
				p, err = store.(stores.Sharder).PullShard(f.ctx, read.collection, read.shard, read.after, read.limit)
			}
			return err
		})
		f.cancel()
		r.mu.Lock()
		f.page, f.err = p, err
		close(f.done)
		q.cur, q.next = q.next, nil
		if f = q.cur; f != nil {
			f.born = r.begun.Add(1)
		} else {
			delete(r.reads, read)
		}
		r.mu.Unlock()
	}
}

// readTurnKey is the context key of a pull's turn (WithReadTurn).
type readTurnKey struct{}

// WithReadTurn returns ctx with a turn its pulls take before they hold a
// page of a collection's log: before a store read of their own (held
// false), and before they judge a read they shared with other pulls (held
// true: they hold its page while they wait, logReads). take blocks until
// the turn is the caller's or ctx ends (its error); once it has returned
// nil it returns nil at once, and the caller gives the turn back when the
// pull has ended.
func WithReadTurn(ctx context.Context, take func(ctx context.Context, held bool) error) context.Context {
	return context.WithValue(ctx, readTurnKey{}, take)
}

func readTurnOf(ctx context.Context) func(context.Context, bool) error {
	take, _ := ctx.Value(readTurnKey{}).(func(context.Context, bool) error)
	return take
}
