package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// Group commit. Writes to one collection are serial (the head is the lock,
// see the package doc), so concurrent Apply calls of one server instance to
// one collection would only cancel each other's transactions. Instead each
// (instance, collection) has a queue and at most one committer goroutine:
// Apply enqueues its changes and waits; the committer takes every pending
// change, in arrival order, into one transaction (up to the transaction's
// limits: recordsPerTx records, 100 actions, the byte budget), commits it,
// hands each caller its results and goes on while anything is pending. So
// eight callers to one collection cost one transaction per round trip, not
// eight racing ones, and a busy collection carries more changes per
// transaction the busier it is.
//
// The committer caches the collection's head: a group reads only its
// records, and the transaction is conditioned on the cached head. A
// transaction cancelled on the head (another instance committed) returns
// the winner's head item (ALL_OLD), which becomes the cache, and is retried
// at once: the table did useful work meanwhile. Only a TransactionConflict
// or throttling backs off (with jitter).

// collQueue is the queue of pending Apply calls of one log: a collection,
// or one shard of a sharded collection (shards commit independently, each
// under its own head).
type collQueue struct {
	ref     logRef
	mu      sync.Mutex
	pending []*request
	running bool // a committer goroutine serves the queue
	// head is the collection's head as last committed or read by this
	// instance, when headOK; a stale value only costs a cancelled
	// transaction.
	head   uint64
	headOK bool
	// usage is what the head item holds, with head.
	usage headUsage
	// turns is what this instance knows of the instances' turns on the
	// log (turn.go).
	turns turnState
}

// request is one Apply call's changes to one collection.
type request struct {
	ctx     context.Context
	changes []crdt.Change
	results []stores.Result
	next    int // changes[:next] are done
	err     error
	done    chan struct{}
}

func (r *request) finish(err error) {
	r.err = err
	close(r.done)
}

// commitState is the store's set of collection queues.
type commitState struct {
	mu      sync.Mutex
	queues  map[logRef]*collQueue
	closing bool
}

// enqueue adds r to the queue of ref and makes sure a committer serves it.
func (st *Store) enqueue(ref logRef, r *request) error {
	cs := &st.commits
	cs.mu.Lock()
	if cs.closing {
		cs.mu.Unlock()
		return stores.ErrClosed
	}
	if cs.queues == nil {
		cs.queues = map[logRef]*collQueue{}
	}
	q := cs.queues[ref]
	if q == nil {
		q = &collQueue{ref: ref}
		cs.queues[ref] = q
	}
	q.mu.Lock()
	q.pending = append(q.pending, r)
	start := !q.running
	q.running = true
	q.mu.Unlock()
	if start {
		st.wg.Add(1)
	}
	cs.mu.Unlock()
	if start {
		go func() {
			defer st.wg.Done()
			st.serve(q)
		}()
	}
	return nil
}

// stopCommits refuses new requests; Close then waits for the committers,
// whose context it has cancelled.
func (st *Store) stopCommits() {
	st.commits.mu.Lock()
	st.commits.closing = true
	st.commits.mu.Unlock()
}

// serve commits q's pending changes until none are left.
func (st *Store) serve(q *collQueue) {
	for {
		q.mu.Lock()
		live := q.pending[:0]
		for _, r := range q.pending {
			if r.next == 0 && r.ctx.Err() != nil {
				r.finish(r.ctx.Err()) // never started; its caller left
				continue
			}
			live = append(live, r)
		}
		q.pending = live
		if len(q.pending) == 0 {
			q.running = false
			q.mu.Unlock()
			return
		}
		batch := append([]*request(nil), q.pending...)
		q.mu.Unlock()

		st.commitRound(q, batch)

		q.mu.Lock()
		live = q.pending[:0]
		for _, r := range q.pending {
			select {
			case <-r.done:
			default:
				live = append(live, r)
			}
		}
		q.pending = live
		q.mu.Unlock()
	}
}

// commitRound commits the first transaction's worth of the pending changes
// of batch. A change that the store refuses (too large, invalid) fails its
// own request only; the round is then planned again without it.
func (st *Store) commitRound(q *collQueue, batch []*request) {
	ctx := st.runCtx
	for len(batch) > 0 {
		// Flatten the pending changes, in order, with their owners.
		var flat []crdt.Change
		var owner []*request
		var offset []int
		for _, r := range batch {
			for i := r.next; i < len(r.changes); i++ {
				flat = append(flat, r.changes[i])
				owner = append(owner, r)
				offset = append(offset, i)
			}
		}
		idxs := make([]int, len(flat))
		for i := range idxs {
			idxs[i] = i
		}
		idxs = firstChunk(flat, idxs)
		results := make([]stores.Result, len(flat))
		done, head, err := st.applyGroup(ctx, q, flat, idxs, results)
		var ce *changeError
		if errors.As(err, &ce) {
			bad := owner[idxs[ce.idx]]
			bad.finish(ce.err)
			batch = without(batch, bad)
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				err = fmt.Errorf("apply %s: %w", q.ref.coll, stores.ErrClosed)
			}
			for _, r := range batch {
				r.finish(err)
			}
			return
		}
		for k := range done {
			i := idxs[k]
			r := owner[i]
			r.results[offset[i]] = results[i]
			r.next = offset[i] + 1
		}
		for _, r := range batch {
			if r.next == len(r.changes) {
				r.finish(nil)
			}
		}
		if head > 0 {
			st.watchers.Notify(headNotification(q.ref, head))
		}
		return
	}
}

func without(rs []*request, bad *request) []*request {
	out := rs[:0:0]
	for _, r := range rs {
		if r != bad {
			out = append(out, r)
		}
	}
	return out
}

// changeError is a refusal (ErrTooLarge) of the change at position idx of
// the idxs a plan was made of.
type changeError struct {
	idx int
	err error
}

func (e *changeError) Error() string { return e.err.Error() }
func (e *changeError) Unwrap() error { return e.err }

// TxStats returns how many transactions this instance committed and how
// many were cancelled (lost a race, or met a transaction in progress) since
// it opened: the measure of thrash.
func (st *Store) TxStats() (committed, cancelled int64) {
	return st.txCommitted.Load(), st.txCancelled.Load()
}
