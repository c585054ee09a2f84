package dynamodb

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// Apply implements stores.Store. Changes are grouped by collection and
// handed to the collection's group committer (commit.go), which puts them,
// with the pending changes of concurrent calls, into transactions of up to
// recordsPerTx records: each reads its records with one strongly
// consistent BatchGetItem, merges in Go and writes with one
// TransactWriteItems conditioned on the collection's head and on every
// record's sequence number as read. A transaction that loses a race is
// cancelled; the committer refreshes what it read (from the cancellation's
// ALL_OLD items, or by reading again) and tries again.
func (st *Store) Apply(ctx context.Context, changes []crdt.Change) ([]stores.Result, error) {
	if err := st.check(ctx); err != nil {
		return nil, err
	}
	if err := stores.CheckApply(changes); err != nil {
		return nil, err
	}
	// Changes go to the queue of their record's log: (collection, shard).
	var order []logRef
	groups := map[logRef][]int{}
	shards := map[string]int{}
	for i, c := range changes {
		k, ok := shards[c.Collection]
		if !ok {
			var err error
			if k, err = st.shardsOf(ctx, c.Collection); err != nil {
				return nil, err
			}
			shards[c.Collection] = k
		}
		ref := logRef{coll: c.Collection, shard: stores.ShardOf(c.Record.ID, k), shards: k}
		if _, ok := groups[ref]; !ok {
			order = append(order, ref)
		}
		groups[ref] = append(groups[ref], i)
	}
	reqs := make([]*request, len(order))
	for k, ref := range order {
		idxs := groups[ref]
		r := &request{ctx: ctx, changes: make([]crdt.Change, len(idxs)), results: make([]stores.Result, len(idxs)), done: make(chan struct{})}
		for j, i := range idxs {
			r.changes[j] = changes[i]
		}
		if err := st.enqueue(ref, r); err != nil {
			return nil, err
		}
		reqs[k] = r
	}
	results := make([]stores.Result, len(changes))
	for k, r := range reqs {
		select {
		case <-r.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if r.err != nil {
			return nil, r.err
		}
		for j, i := range groups[order[k]] {
			results[i] = r.results[j]
		}
	}
	return results, nil
}

// firstChunk returns the longest prefix of idxs that touches at most
// recordsPerTx distinct records.
func firstChunk(changes []crdt.Change, idxs []int) []int {
	seen := map[string]bool{}
	for k, i := range idxs {
		id := changes[i].Record.ID
		if !seen[id] {
			if len(seen) == recordsPerTx {
				return idxs[:k]
			}
			seen[id] = true
		}
	}
	return idxs
}

// groupState is what a group's transaction is conditioned on: the head and
// the records (by id; absent ones have sequence number 0) as read.
type groupState struct {
	head  uint64
	usage headUsage // as the head item holds it
	recs  map[string]stores.Entry
	sizes map[string]int // of the records' stored encodings, for usage
	// next is the turn the transaction names (turn.go); seen, when
	// seenOK, the turn a cancellation's ALL_OLD head item named.
	next, seen turn
	seenOK     bool
}

// readState reads the records ids of coll and, unless the committer knows
// it (q.headOK), the head, strongly consistent.
func (st *Store) readState(ctx context.Context, q *collQueue, ids []string) (groupState, error) {
	coll, hpk := q.ref.coll, q.ref.headPK()
	state := groupState{recs: make(map[string]stores.Entry, len(ids)), sizes: make(map[string]int, len(ids)), head: q.head, usage: q.usage}
	byPK := make(map[string]string, len(ids))
	var keys []map[string]types.AttributeValue
	if !q.headOK {
		keys = append(keys, key(hpk, 0))
	}
	for _, id := range ids {
		pk := recordPK(coll, id)
		byPK[pk] = id
		keys = append(keys, key(pk, 0))
	}
	items, err := st.batchGet(ctx, "apply "+coll+": read", keys)
	if err != nil {
		return groupState{}, err
	}
	for _, item := range items {
		pkv, _ := item[attrPK].(*types.AttributeValueMemberS)
		if pkv == nil {
			continue
		}
		if pkv.Value == hpk {
			h, err := headValue(item, q.ref)
			if errors.Is(err, errOtherShards) {
				st.forgetShards(coll)
			}
			if err != nil {
				return groupState{}, fmt.Errorf("apply %s: head item: %w", q.ref, err)
			}
			u, err := readHeadUsage(item)
			if err != nil {
				return groupState{}, fmt.Errorf("apply %s: head item: %w", coll, err)
			}
			state.head, state.usage = h, u
			q.head, q.headOK, q.usage = h, true, u
			st.observe(q, readTurn(item))
			continue
		}
		id, ok := byPK[pkv.Value]
		if !ok {
			continue
		}
		e, err := decodeEntry(item, id, attrSeq)
		if err != nil {
			return groupState{}, fmt.Errorf("apply %s/%s: record item: %w", coll, id, err)
		}
		state.recs[id] = e
		state.sizes[id] = recSize(item)
	}
	if !q.headOK {
		// No head item: a new collection, whose usage starts at zero.
		q.head, q.headOK, q.usage = 0, true, headUsage{kept: true}
		state.usage = q.usage
		st.observe(q, turn{})
	}
	return state, nil
}

type actionKind int

const (
	actHead actionKind = iota
	actRecord
	actLog
	actUnlog
)

type action struct {
	kind actionKind
	id   string
}

// plan is one group's transaction: its actions, the results of the first
// done changes, which it commits, and the head after it.
type plan struct {
	done    int
	results []stores.Result
	head    uint64
	usage   headUsage // the head item's after it
	items   []types.TransactWriteItem
	acts    []action
	token   string
	turn    turn // the turn its head item names
}

// makePlan merges changes idxs (in order) into state and builds the
// transaction that writes the result. It stops early, with done < len(idxs),
// when the transaction would pass txBudgetBytes.
func (st *Store) makePlan(ref logRef, state groupState, changes []crdt.Change, idxs []int, round int) (plan, error) {
	type work struct {
		oldSeq uint64
		cur    stores.Entry
		enc    []byte
		size   int // of the larger of its two items
		dirty  bool
	}
	// BatchGetItem reads each item on its own, not a snapshot: a record may
	// show a seq above the head read just before it. The head must then be
	// at least that seq, and taking it as the condition keeps new seqs above
	// every old one (a transaction may not touch one log item twice); if the
	// head moved further, the condition fails and the group is read again.
	for _, e := range state.recs {
		state.head = max(state.head, e.Seq)
	}
	coll := ref.coll
	p := plan{results: make([]stores.Result, 0, len(idxs)), head: state.head}
	works := map[string]*work{}
	var ids []string // changed records, in order of their first change
	total := 0
	actions := 1 // the head
	for k, i := range idxs {
		ch := changes[i].Record
		w := works[ch.ID]
		if w == nil {
			cur, ok := state.recs[ch.ID]
			if !ok {
				cur = stores.Entry{Record: crdt.Record{ID: ch.ID}}
			}
			w = &work{oldSeq: cur.Seq, cur: cur}
			works[ch.ID] = w
		}
		next := w.cur.Record.Clone()
		changed := next.Merge(ch)
		lost := crdt.LostFields(ch, next)
		if !changed {
			p.results = append(p.results, stores.Result{Seq: w.cur.Seq, Lost: lost})
			p.done = k + 1
			continue
		}
		if err := stores.CheckRecordLimits(next); err != nil {
			return plan{}, refuse(k, "apply %s/%s: %w", coll, ch.ID, err)
		}
		enc := crdt.AppendRecord(nil, next)
		e := stores.Entry{Seq: p.head + 1, Record: next}
		size := max(itemSize(recordItem(coll, e, enc)), itemSize(logItem(ref, e, enc))+maxTxAttrBytes)
		if size > maxItemBytes {
			return plan{}, refuse(k, "apply %s/%s: %w: item of %d bytes exceeds DynamoDB's %d", coll, ch.ID, stores.ErrTooLarge, size, maxItemBytes)
		}
		grown := total - 2*w.size + 2*size
		if grown > txBudgetBytes && k > 0 {
			break // the rest goes into the next transaction
		}
		if !w.dirty {
			need := 2
			if w.oldSeq != 0 {
				need = 3
			}
			if actions+need > maxTxActions {
				break // likewise
			}
			actions += need
		}
		total = grown
		p.head++
		w.cur, w.enc, w.size = e, enc, size
		if !w.dirty {
			w.dirty = true
			ids = append(ids, ch.ID)
		}
		p.results = append(p.results, stores.Result{Changed: true, Seq: p.head, Lost: lost})
		p.done = k + 1
	}
	if len(ids) == 0 {
		return p, nil
	}

	// Usage goes into the head item, in the same transaction.
	p.usage = state.usage
	if p.usage.kept {
		for _, id := range ids {
			w := works[id]
			if w.oldSeq == 0 {
				p.usage.u.Records++
			} else {
				p.usage.u.Bytes -= int64(state.sizes[id])
			}
			p.usage.u.Bytes += int64(len(w.enc))
		}
	}
	allOld := types.ReturnValuesOnConditionCheckFailureAllOld
	headItem := map[string]types.AttributeValue{
		attrPK: s(ref.headPK()), attrSK: n(0), attrHead: n(p.head),
		attrCvg: &types.AttributeValueMemberN{Value: layoutVersion},
	}
	if p.usage.kept {
		headItem[attrUsageRecords] = n(uint64(p.usage.u.Records))
		headItem[attrUsageBytes] = n(uint64(p.usage.u.Bytes))
	}
	turnAttrs(headItem, state.next)
	p.turn = state.next
	put := &types.Put{TableName: &st.table, Item: headItem, ReturnValuesOnConditionCheckFailure: allOld}
	put.ConditionExpression, put.ExpressionAttributeNames, put.ExpressionAttributeValues = headCondition(state.head, state.usage)
	if ref.shards > 1 {
		// A shard's head also names the shard count, so that a
		// writer routing by another count never commits to it.
		*put.ConditionExpression += " AND #n = :k"
		put.ExpressionAttributeNames["#n"] = attrK
		put.ExpressionAttributeValues[":k"] = n(uint64(ref.shards))
	}
	if state.head == 0 {
		// Nothing committed to the log yet: its head item is absent, or
		// holds head 0 (a rebuild that left the shard without a record
		// writes it so, with usage 0).
		put.ConditionExpression = ptr("attribute_not_exists(#pk) OR (" + *put.ConditionExpression + ")")
		put.ExpressionAttributeNames["#pk"] = attrPK
	}
	if ref.shards > 1 {
		headItem[attrK] = n(uint64(ref.shards))
	}
	p.items = append(p.items, types.TransactWriteItem{Put: put})
	p.acts = append(p.acts, action{kind: actHead})

	// Each log entry of a transaction that writes more than one names them
	// all, so that a reader that sees some of them can tell which others it
	// has yet to see (txread.go).
	var tx []byte
	if len(ids) > 1 {
		seqs := make([]uint64, len(ids))
		for i, id := range ids {
			seqs[i] = works[id].cur.Seq
		}
		slices.Sort(seqs)
		tx = appendTxSeqs(nil, seqs)
	}

	h := sha256.New()
	h.Write(st.nonce[:])
	h.Write([]byte(ref.headPK()))
	h.Write(binary.BigEndian.AppendUint64(nil, state.head))
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(round)))
	for _, id := range ids {
		w := works[id]
		h.Write([]byte(id))
		h.Write(binary.BigEndian.AppendUint64(nil, w.oldSeq))
		h.Write(binary.BigEndian.AppendUint64(nil, w.cur.Seq))
		h.Write(w.enc)

		rp := &types.Put{TableName: &st.table, Item: recordItem(coll, w.cur, w.enc), ReturnValuesOnConditionCheckFailure: allOld}
		if w.oldSeq == 0 {
			rp.ConditionExpression = ptr("attribute_not_exists(#k)")
			rp.ExpressionAttributeNames = map[string]string{"#k": attrPK}
		} else {
			rp.ConditionExpression = ptr("#s = :old")
			rp.ExpressionAttributeNames = map[string]string{"#s": attrSeq}
			rp.ExpressionAttributeValues = map[string]types.AttributeValue{":old": n(w.oldSeq)}
		}
		p.items = append(p.items, types.TransactWriteItem{Put: rp})
		p.acts = append(p.acts, action{kind: actRecord, id: id})

		li := logItem(ref, w.cur, w.enc)
		if tx != nil {
			li[attrTx] = b(tx)
		}
		p.items = append(p.items, types.TransactWriteItem{Put: &types.Put{
			TableName:                &st.table,
			Item:                     li,
			ConditionExpression:      ptr("attribute_not_exists(#k)"),
			ExpressionAttributeNames: map[string]string{"#k": attrPK},
		}})
		p.acts = append(p.acts, action{kind: actLog, id: id})
		if w.oldSeq != 0 {
			// Compaction: the record's previous log entry goes in the same
			// transaction, so the log holds each record once.
			p.items = append(p.items, types.TransactWriteItem{Delete: &types.Delete{
				TableName: &st.table,
				Key:       key(ref.logPK(), w.oldSeq),
			}})
			p.acts = append(p.acts, action{kind: actUnlog, id: id})
		}
	}
	// A token names the transaction's content and round: a retry of the
	// same transaction after an unknown outcome (a timeout, say) carries the
	// same token, so DynamoDB applies it at most once within its 10-minute
	// window. A new round (after a cancellation, whose outcome is known) gets
	// a new token even when its content is the same.
	p.token = hex.EncodeToString(h.Sum(nil))[:32]
	return p, nil
}

// applyGroup applies changes idxs of q's collection with one transaction
// (retried on conflicts). It fills results for the changes it applied and
// returns how many that is, and the collection's new head when something
// changed (else 0). It keeps q's cached head current. A refusal of one
// change is a *changeError naming its position in idxs.
func (st *Store) applyGroup(ctx context.Context, q *collQueue, changes []crdt.Change, idxs []int, results []stores.Result) (done int, head uint64, err error) {
	coll := q.ref.String()
	ids := make([]string, 0, len(idxs))
	seen := map[string]bool{}
	for _, i := range idxs {
		if id := changes[i].Record.ID; !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	var state groupState
	read := true // the state must be read (again) before the next attempt
	for attempt := 1; ; attempt++ {
		// Wait out another instance's turn, or yield after this one's;
		// either way read the head (and the records) again after it, and
		// look at the turn the head then names.
		for {
			paused, err := st.awaitTurn(ctx, q)
			if err != nil {
				return 0, 0, err
			}
			if paused {
				// The head alone: the turn it names says whether to wait
				// again; the records are read once the waiting is over.
				if _, err := st.readState(ctx, q, nil); err != nil {
					return 0, 0, err
				}
				read = true
				continue
			}
			if !read {
				break
			}
			began := st.now()
			if state, err = st.readState(ctx, q, ids); err != nil {
				return 0, 0, err
			}
			q.timeRound(st.now().Sub(began))
			read = false
		}
		state.next = st.nextTurn(q)
		began := st.now()
		p, err := st.makePlan(q.ref, state, changes, idxs, attempt)
		if err != nil {
			return 0, 0, err
		}
		if len(p.items) == 0 {
			for k, r := range p.results {
				results[idxs[k]] = r
			}
			return p.done, 0, nil
		}
		err = st.commit(ctx, coll, p)
		q.timeRound(st.now().Sub(began))
		if err == nil {
			for k, r := range p.results {
				results[idxs[k]] = r
			}
			q.head, q.headOK, q.usage = p.head, true, p.usage
			st.committed(q, p.turn)
			st.txCommitted.Add(1)
			return p.done, p.head, nil
		}
		var cancelled *types.TransactionCanceledException
		if !errors.As(err, &cancelled) {
			q.headOK = false // the outcome is unknown
			return 0, 0, translate(ctx, "apply "+coll, err)
		}
		st.txCancelled.Add(1)
		state.seenOK = false
		refreshed, contended, taken, err := refresh(&state, p, cancelled.CancellationReasons, q.ref)
		if err != nil {
			q.headOK = false
			if errors.Is(err, errOtherShards) {
				st.forgetShards(q.ref.coll)
			}
			return 0, 0, fmt.Errorf("apply %s: %w", coll, err)
		}
		q.head, q.usage = state.head, state.usage
		if state.seenOK {
			st.observe(q, state.seen)
		}
		st.log.Debug("transaction cancelled; retrying", "collection", coll, "attempt", attempt, "reasons", reasonCodes(cancelled.CancellationReasons))
		if taken || behindRecords(state) {
			// The log holds an entry at a seq the plan took, or the
			// head item stays below a record's seq: the head may be
			// behind its log (setHeadRight).
			moved, err := st.setHeadRight(ctx, q.ref, ids)
			if err != nil {
				q.headOK = false
				return 0, 0, fmt.Errorf("apply %s: %w", coll, err)
			}
			if moved {
				q.headOK = false
				read = true
				continue
			}
		}
		if attempt >= st.maxAttempts {
			q.headOK = false
			return 0, 0, fmt.Errorf("apply %s: %w: transaction still conflicting after %d attempts", coll, stores.ErrUnavailable, attempt)
		}
		// A failed condition means another writer committed: the table did
		// useful work, and its ALL_OLD item is what to retry against, at
		// once (unless it names another instance's turn, which the next
		// attempt waits out). A transaction in progress on the same items,
		// or throttling, is waited out with a jittered backoff.
		if contended || !refreshed {
			if err := sleep(ctx, backoff(attempt)); err != nil {
				return 0, 0, err
			}
		}
		// Every few attempts read everything again, in case a condition
		// that passed this time was about to fail.
		if !refreshed || attempt%3 == 0 {
			q.headOK = false
			read = true
		}
	}
}

// commit runs a plan's transaction. Throttling and network failures are
// retried with the same client request token, so a transaction that did
// commit before its response was lost is not applied twice.
func (st *Store) commit(ctx context.Context, coll string, p plan) error {
	in := &awsdynamodb.TransactWriteItemsInput{TransactItems: p.items, ClientRequestToken: &p.token}
	for attempt := 1; ; attempt++ {
		_, err := st.db.TransactWriteItems(ctx, in, st.dbOpt)
		if err == nil || !unavailable(err) || attempt >= 3 || ctx.Err() != nil {
			return err
		}
		st.log.Debug("transaction failed; retrying with the same token", "collection", coll, "attempt", attempt, "err", err)
		if err := sleep(ctx, backoff(attempt)); err != nil {
			return err
		}
	}
}

// refresh updates state from the cancellation reasons of p's transaction.
// It reports whether some condition failed (and its ALL_OLD item refreshed
// state), whether a transaction in progress or throttling was a reason,
// and whether a new log entry's seq was taken (a head behind its log), and
// returns an error for reasons a retry cannot fix.
func refresh(state *groupState, p plan, reasons []types.CancellationReason, ref logRef) (refreshed, contended, taken bool, err error) {
	for i, r := range reasons {
		code := str(r.Code)
		switch code {
		case "", "None":
			continue
		case "ConditionalCheckFailed":
			if i >= len(p.acts) {
				continue
			}
			refreshed = true
			switch a := p.acts[i]; a.kind {
			case actHead:
				state.head, state.usage = 0, headUsage{kept: true}
				if r.Item != nil {
					h, err := headValue(r.Item, ref)
					if err != nil {
						return false, false, false, fmt.Errorf("head item: %w", err)
					}
					u, err := readHeadUsage(r.Item)
					if err != nil {
						return false, false, false, fmt.Errorf("head item: %w", err)
					}
					state.head, state.usage = h, u
				}
				state.seen, state.seenOK = readTurn(r.Item), true
			case actRecord:
				delete(state.recs, a.id)
				if r.Item != nil {
					e, err := decodeEntry(r.Item, a.id, attrSeq)
					if err != nil {
						return false, false, false, fmt.Errorf("record item %s: %w", a.id, err)
					}
					state.recs[a.id] = e
					state.sizes[a.id] = recSize(r.Item)
				}
			case actLog:
				// The new entry's seq is taken: only a head behind its
				// log hands it out (setHeadRight).
				taken = true
			}
		default:
			if !contendedCode(code) {
				return false, false, false, fmt.Errorf("transaction cancelled: %s: %s", code, str(r.Message))
			}
			contended = true // retry after the backoff
		}
	}
	return refreshed, contended, taken, nil
}

// behindRecords reports whether a record of state holds a seq above its
// head: a commit read half applied, or a head behind its log.
func behindRecords(state groupState) bool {
	for _, e := range state.recs {
		if e.Seq > state.head {
			return true
		}
	}
	return false
}

// contendedCode reports whether code, a transaction's cancellation
// reason, says that another writer or the table's throughput refused it:
// the transaction is retried after a backoff.
func contendedCode(code string) bool {
	return slices.Contains([]string{"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded"}, code)
}

// backoff returns a jittered ("full jitter") pause before attempt+1.
func backoff(attempt int) time.Duration {
	d := 5 * time.Millisecond << min(attempt, 8)
	d = min(d, time.Second)
	return d/4 + rand.N(d*3/4)
}

func sleep(ctx context.Context, d time.Duration) error { return pause(ctx, d) }

// pause waits d or until ctx is done; the model test waits no time.
var pause = realPause

func realPause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func reasonCodes(reasons []types.CancellationReason) []string {
	out := make([]string, len(reasons))
	for i, r := range reasons {
		out[i] = str(r.Code)
	}
	return out
}

// refuse is a refusal of the change at position k of a plan's idxs.
func refuse(k int, format string, args ...any) error {
	return &changeError{idx: k, err: fmt.Errorf(format, args...)}
}
