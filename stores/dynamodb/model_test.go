package dynamodb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// The model test. DynamoDB Local serialises every request, so no run
// against it shows what a real table does when two server instances'
// requests interleave. Here the store's own code (readState, makePlan,
// commit, refresh, applyGroup and the reads of PullShard) runs against a
// model of the table that executes the requests the store really builds
// (conditions, ALL_OLD on cancellation, client request tokens), and a
// seeded scheduler decides which instance's next request goes first, and
// whether it is cancelled by a race, answered with a lost response (done,
// but the caller sees a network error and retries with the same token),
// refused before it is done, or cut by a crash of its instance (the
// client then retries its push on a restarted instance, which knows
// nothing). Between any two steps a reader pulls every shard from its
// cursor, and after every step the table is checked: each shard's log
// transactions each number their entries above the head they
// found and at most the head they write (so no later commit numbers below
// an entry a reader saw: no gap), no number is written twice, the head is
// the last number, every record is in
// one log entry, in its shard, at its record's seq. At the end the reader,
// having only ever read forward from its K positions, holds every record
// as stored, and every record is the merge of every change pushed.

// modelTable is an in-memory DynamoDB table of the store's key schema.
type modelTable struct {
	mu     sync.Mutex
	items  map[string]map[string]types.AttributeValue // by pk + "\x00" + sk
	tokens map[string]bool                            // committed transactions' tokens
	logged map[string][]uint64                        // every sk ever put under a ~l# key
	// violation is the first breach of the no-gap rule a transaction made.
	violation error
	// afterQuery, when set, runs after each Query (outside the lock).
	afterQuery func()
	sched      *scheduler
	// clock, when set, is the instances' clock: every request takes a
	// millisecond of it (and every pause its length; see modelPause).
	clock *fakeClock
}

// fakeClock is the model's time: commit turns (turn.go) run on it.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_800_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	if c == nil {
		return time.Now()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// modelPause makes pause (backoffs, turn waits) take no real time but
// clock's.
func modelPause(t testing.TB, clock *fakeClock) {
	pause = func(ctx context.Context, d time.Duration) error {
		clock.advance(d)
		return ctx.Err()
	}
	t.Cleanup(func() { pause = realPause })
}

func newModelTable() *modelTable {
	return &modelTable{items: map[string]map[string]types.AttributeValue{}, tokens: map[string]bool{}, logged: map[string][]uint64{}}
}

func itemKey(k map[string]types.AttributeValue) string {
	pk := k[attrPK].(*types.AttributeValueMemberS).Value
	sk := k[attrSK].(*types.AttributeValueMemberN).Value
	return pk + "\x00" + sk
}

func clone(item map[string]types.AttributeValue) map[string]types.AttributeValue {
	if item == nil {
		return nil
	}
	out := make(map[string]types.AttributeValue, len(item))
	for k, v := range item {
		out[k] = v
	}
	return out
}

// avEqual compares the scalar values the store's conditions use.
func avEqual(a, b types.AttributeValue) bool {
	switch a := a.(type) {
	case *types.AttributeValueMemberN:
		b, ok := b.(*types.AttributeValueMemberN)
		return ok && a.Value == b.Value
	case *types.AttributeValueMemberS:
		b, ok := b.(*types.AttributeValueMemberS)
		return ok && a.Value == b.Value
	case *types.AttributeValueMemberB:
		b, ok := b.(*types.AttributeValueMemberB)
		return ok && bytes.Equal(a.Value, b.Value)
	}
	return false
}

// holds evaluates the condition expressions the store writes: clauses
// joined by AND, each attribute_not_exists(#n) or #n = :v; or one such
// condition OR (another).
func holds(item map[string]types.AttributeValue, cond *string, names map[string]string, values map[string]types.AttributeValue) bool {
	if cond == nil {
		return true
	}
	if l, r, ok := strings.Cut(*cond, " OR ("); ok {
		r = strings.TrimSuffix(r, ")")
		return holds(item, &l, names, values) || holds(item, &r, names, values)
	}
	for _, clause := range strings.Split(*cond, " AND ") {
		clause = strings.TrimSpace(clause)
		if arg, ok := strings.CutPrefix(clause, "attribute_not_exists("); ok {
			if _, present := item[names[strings.TrimSuffix(arg, ")")]]; present {
				return false
			}
			continue
		}
		l, r, ok := strings.Cut(clause, " = ")
		if !ok {
			panic("model: unknown condition " + clause)
		}
		v, present := item[names[l]]
		if !present || !avEqual(v, values[r]) {
			return false
		}
	}
	return true
}

var modelDebug = false

// lostResponse is the error of a request whose answer never came.
var lostResponse = &smithyhttp.RequestSendError{Err: errors.New("model: connection reset")}

func (m *modelTable) DescribeTable(context.Context, *awsdynamodb.DescribeTableInput, ...func(*awsdynamodb.Options)) (*awsdynamodb.DescribeTableOutput, error) {
	return &awsdynamodb.DescribeTableOutput{Table: &types.TableDescription{
		TableName: ptr("model"),
		AttributeDefinitions: []types.AttributeDefinition{
			{AttributeName: ptr(attrPK), AttributeType: types.ScalarAttributeTypeS},
			{AttributeName: ptr(attrSK), AttributeType: types.ScalarAttributeTypeN},
		},
		KeySchema: []types.KeySchemaElement{
			{AttributeName: ptr(attrPK), KeyType: types.KeyTypeHash},
			{AttributeName: ptr(attrSK), KeyType: types.KeyTypeRange},
		},
	}}, nil
}

func (m *modelTable) GetItem(ctx context.Context, in *awsdynamodb.GetItemInput, _ ...func(*awsdynamodb.Options)) (*awsdynamodb.GetItemOutput, error) {
	m.clock.advance(time.Millisecond)
	if err := m.sched.step(ctx, "GetItem"); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return &awsdynamodb.GetItemOutput{Item: clone(m.items[itemKey(in.Key)])}, nil
}

// TransactGetItems reads its items at once: a transaction is applied
// under the same lock.
func (m *modelTable) TransactGetItems(ctx context.Context, in *awsdynamodb.TransactGetItemsInput, _ ...func(*awsdynamodb.Options)) (*awsdynamodb.TransactGetItemsOutput, error) {
	m.clock.advance(time.Millisecond)
	if err := m.sched.step(ctx, "TransactGetItems"); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := &awsdynamodb.TransactGetItemsOutput{}
	for _, g := range in.TransactItems {
		out.Responses = append(out.Responses, types.ItemResponse{Item: clone(m.items[itemKey(g.Get.Key)])})
	}
	return out, nil
}

// BatchGetItem reads each item on its own, as DynamoDB does: between the
// first item and the rest, other workers may take a turn (not a
// snapshot).
func (m *modelTable) BatchGetItem(ctx context.Context, in *awsdynamodb.BatchGetItemInput, _ ...func(*awsdynamodb.Options)) (*awsdynamodb.BatchGetItemOutput, error) {
	m.clock.advance(time.Millisecond)
	if err := m.sched.step(ctx, "BatchGetItem"); err != nil {
		return nil, err
	}
	out := &awsdynamodb.BatchGetItemOutput{Responses: map[string][]map[string]types.AttributeValue{}}
	for table, ka := range in.RequestItems {
		for i, k := range ka.Keys {
			if i == 1 {
				if err := m.sched.step(ctx, "BatchGetItem, the rest"); err != nil {
					return nil, err
				}
			}
			m.mu.Lock()
			if it := m.items[itemKey(k)]; it != nil {
				out.Responses[table] = append(out.Responses[table], clone(it))
			}
			m.mu.Unlock()
		}
	}
	return out, nil
}

func (m *modelTable) Query(ctx context.Context, in *awsdynamodb.QueryInput, _ ...func(*awsdynamodb.Options)) (*awsdynamodb.QueryOutput, error) {
	if err := m.sched.step(ctx, "Query"); err != nil {
		return nil, err
	}
	if m.afterQuery != nil {
		defer m.afterQuery()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	pk := in.ExpressionAttributeValues[":pk"].(*types.AttributeValueMemberS).Value
	var after uint64 // none: the whole log (setHeadRight's Query of its highest entry)
	if v, ok := in.ExpressionAttributeValues[":after"].(*types.AttributeValueMemberN); ok {
		after, _ = strconv.ParseUint(v.Value, 10, 64)
	}
	if in.ExclusiveStartKey != nil {
		after, _ = strconv.ParseUint(in.ExclusiveStartKey[attrSK].(*types.AttributeValueMemberN).Value, 10, 64)
	}
	var sks []uint64
	for k := range m.items {
		p, sk, _ := strings.Cut(k, "\x00")
		if v, _ := strconv.ParseUint(sk, 10, 64); p == pk && v > after {
			sks = append(sks, v)
		}
	}
	slices.Sort(sks)
	if in.ScanIndexForward != nil && !*in.ScanIndexForward {
		slices.Reverse(sks)
	}
	out := &awsdynamodb.QueryOutput{}
	for i, sk := range sks {
		if in.Limit != nil && i == int(*in.Limit) {
			out.LastEvaluatedKey = key(pk, sks[i-1])
			break
		}
		out.Items = append(out.Items, clone(m.items[pk+"\x00"+strconv.FormatUint(sk, 10)]))
	}
	return out, nil
}

func (m *modelTable) Scan(context.Context, *awsdynamodb.ScanInput, ...func(*awsdynamodb.Options)) (*awsdynamodb.ScanOutput, error) {
	return nil, errors.New("model: Scan is not modelled")
}

// UpdateItem models the plain form Open's marking of the store item
// writes: "SET #a = :x, #b = :y" under a condition holds evaluates. Any
// other expression is not modelled.
func (m *modelTable) UpdateItem(ctx context.Context, in *awsdynamodb.UpdateItemInput, _ ...func(*awsdynamodb.Options)) (*awsdynamodb.UpdateItemOutput, error) {
	m.clock.advance(time.Millisecond)
	if err := m.sched.step(ctx, "UpdateItem"); err != nil {
		return nil, err
	}
	set, ok := strings.CutPrefix(*in.UpdateExpression, "SET ")
	if !ok || strings.ContainsAny(set, "()+-") {
		return nil, fmt.Errorf("model: UpdateItem %q is not modelled", *in.UpdateExpression)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	k := itemKey(in.Key)
	item := clone(m.items[k])
	if !holds(item, in.ConditionExpression, in.ExpressionAttributeNames, in.ExpressionAttributeValues) {
		return nil, &types.ConditionalCheckFailedException{Message: ptr("model: the condition failed")}
	}
	if item == nil {
		item = clone(in.Key)
	}
	for _, a := range strings.Split(set, ",") {
		l, r, ok := strings.Cut(strings.TrimSpace(a), " = ")
		if !ok {
			return nil, fmt.Errorf("model: UpdateItem %q is not modelled", *in.UpdateExpression)
		}
		item[in.ExpressionAttributeNames[l]] = in.ExpressionAttributeValues[r]
	}
	m.items[k] = item
	return &awsdynamodb.UpdateItemOutput{}, nil
}

// TransactWriteItems checks every condition, then does every write, or
// none and cancels with a reason per action (ALL_OLD items attached). A
// token of a committed transaction makes a repeat a success that writes
// nothing, as DynamoDB's idempotency window does.
func (m *modelTable) TransactWriteItems(ctx context.Context, in *awsdynamodb.TransactWriteItemsInput, _ ...func(*awsdynamodb.Options)) (*awsdynamodb.TransactWriteItemsOutput, error) {
	m.clock.advance(time.Millisecond)
	fate := m.sched.fate(ctx)
	if fate.err != nil && !fate.doThenFail {
		return nil, fate.err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if in.ClientRequestToken != nil && m.tokens[*in.ClientRequestToken] {
		return &awsdynamodb.TransactWriteItemsOutput{}, fate.err
	}
	touched := map[string]bool{}
	for _, a := range in.TransactItems {
		var k map[string]types.AttributeValue
		switch {
		case a.Put != nil:
			k = a.Put.Item
		case a.Delete != nil:
			k = a.Delete.Key
		case a.Update != nil:
			k = a.Update.Key
		}
		if touched[itemKey(k)] {
			m.violation = fmt.Errorf("a transaction touches %q twice, which DynamoDB refuses", itemKey(k))
			return nil, errors.New("model: ValidationException: transaction touches one item twice")
		}
		touched[itemKey(k)] = true
	}
	reasons := make([]types.CancellationReason, len(in.TransactItems))
	failed := false
	for i, a := range in.TransactItems {
		reasons[i].Code = ptr("None")
		var k map[string]types.AttributeValue
		var cond *string
		var names map[string]string
		var values map[string]types.AttributeValue
		var allOld bool
		switch {
		case a.Put != nil:
			k, cond, names, values = a.Put.Item, a.Put.ConditionExpression, a.Put.ExpressionAttributeNames, a.Put.ExpressionAttributeValues
			allOld = a.Put.ReturnValuesOnConditionCheckFailure == types.ReturnValuesOnConditionCheckFailureAllOld
		case a.Delete != nil:
			k, cond, names, values = a.Delete.Key, a.Delete.ConditionExpression, a.Delete.ExpressionAttributeNames, a.Delete.ExpressionAttributeValues
		case a.Update != nil:
			k, cond, names, values = a.Update.Key, a.Update.ConditionExpression, a.Update.ExpressionAttributeNames, a.Update.ExpressionAttributeValues
			allOld = a.Update.ReturnValuesOnConditionCheckFailure == types.ReturnValuesOnConditionCheckFailureAllOld
		}
		old := m.items[itemKey(k)]
		if !holds(old, cond, names, values) {
			failed = true
			reasons[i].Code = ptr("ConditionalCheckFailed")
			if allOld {
				reasons[i].Item = clone(old)
			}
		}
	}
	if modelDebug {
		var d []string
		for _, a := range in.TransactItems {
			switch {
			case a.Put != nil:
				d = append(d, "put "+itemKey(a.Put.Item)+" "+str(a.Put.ConditionExpression))
			case a.Delete != nil:
				d = append(d, "del "+itemKey(a.Delete.Key))
			}
		}
		fmt.Printf("tx w=%v failed=%v fate=%+v %q\n", ctx.Value(workerKey{}), failed, fate, d)
	}
	if failed {
		return nil, &types.TransactionCanceledException{Message: ptr("model: cancelled"), CancellationReasons: reasons}
	}
	// The no-gap rule, per transaction: its log entries' numbers lie above
	// its log's head before it and at most the head it writes, which is
	// higher; so every later transaction numbers above every entry a
	// reader may have seen. (A record changed twice in one transaction
	// takes two numbers and keeps the last: the first is never seen.)
	heads := map[string][2]uint64{} // log pk: head before, head after
	for _, a := range in.TransactItems {
		if a.Put == nil {
			continue
		}
		ik := itemKey(a.Put.Item)
		if pk, _, _ := strings.Cut(ik, "\x00"); strings.HasPrefix(pk, "~h#") {
			var before uint64
			if old := m.items[ik]; old != nil {
				before, _ = getN(old, attrHead)
			}
			after, _ := getN(a.Put.Item, attrHead)
			if after == 0 {
				continue // the marker head of a sharded collection
			}
			if after <= before {
				m.violation = fmt.Errorf("transaction sets head %s from %d to %d", pk, before, after)
			}
			heads["~l#"+strings.TrimPrefix(pk, "~h#")] = [2]uint64{before, after}
		}
	}
	for _, a := range in.TransactItems {
		if a.Put == nil {
			continue
		}
		ik := itemKey(a.Put.Item)
		if pk, sk, _ := strings.Cut(ik, "\x00"); strings.HasPrefix(pk, "~l#") {
			v, _ := strconv.ParseUint(sk, 10, 64)
			if h, ok := heads[pk]; !ok || v <= h[0] || v > h[1] {
				m.violation = fmt.Errorf("log entry %s at %d outside its transaction's head range %v", pk, v, h)
			}
		}
	}
	for _, a := range in.TransactItems {
		switch {
		case a.Put != nil:
			ik := itemKey(a.Put.Item)
			m.items[ik] = clone(a.Put.Item)
			if pk, sk, _ := strings.Cut(ik, "\x00"); strings.HasPrefix(pk, "~l#") {
				v, _ := strconv.ParseUint(sk, 10, 64)
				m.logged[pk] = append(m.logged[pk], v)
			}
		case a.Delete != nil:
			delete(m.items, itemKey(a.Delete.Key))
		case a.Update != nil: // establishShards: SET k, cvg
			ik := itemKey(a.Update.Key)
			it := clone(m.items[ik])
			if it == nil {
				it = clone(a.Update.Key)
			}
			it[attrK] = a.Update.ExpressionAttributeValues[":k"]
			it[attrCvg] = a.Update.ExpressionAttributeValues[":one"]
			m.items[ik] = it
		}
	}
	if in.ClientRequestToken != nil {
		m.tokens[*in.ClientRequestToken] = true
	}
	return &awsdynamodb.TransactWriteItemsOutput{}, fate.err
}

// check verifies the table's invariants for collection coll of k shards.
func (m *modelTable) check(coll string, k int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.violation != nil {
		return m.violation
	}
	where := map[string]string{} // record id: its log item's key
	for sh := range k {
		ref := logRef{coll: coll, shard: sh, shards: k}
		seqs := slices.Clone(m.logged[ref.logPK()])
		slices.Sort(seqs)
		for i := 1; i < len(seqs); i++ {
			if seqs[i] == seqs[i-1] {
				return fmt.Errorf("shard %d: log number %d written twice", sh, seqs[i])
			}
		}
		var head uint64
		if it := m.items[ref.headPK()+"\x000"]; it != nil {
			head, _ = getN(it, attrHead)
		}
		if len(seqs) > 0 && seqs[len(seqs)-1] != head {
			return fmt.Errorf("shard %d: head %d, last log number %d", sh, head, seqs[len(seqs)-1])
		}
		for ik, it := range m.items {
			pk, sk, _ := strings.Cut(ik, "\x00")
			if pk != ref.logPK() {
				continue
			}
			id := it[attrID].(*types.AttributeValueMemberS).Value
			if prev, dup := where[id]; dup {
				return fmt.Errorf("record %s has log items %q and %q", id, prev, ik)
			}
			where[id] = ik
			if want := stores.ShardOf(id, k); want != sh {
				return fmt.Errorf("record %s logged in shard %d, lives in %d", id, sh, want)
			}
			rec := m.items[recordPK(coll, id)+"\x000"]
			if rec == nil || rec[attrSeq].(*types.AttributeValueMemberN).Value != sk || !avEqual(rec[attrRec], it[attrRec]) {
				return fmt.Errorf("record %s: log item %s does not match its record item", id, ik)
			}
		}
	}
	for ik := range m.items {
		if pk, _, _ := strings.Cut(ik, "\x00"); strings.HasPrefix(pk, recordPK(coll, "")) {
			if id := strings.TrimPrefix(pk, recordPK(coll, "")); where[id] == "" {
				return fmt.Errorf("record %s has no log item", id)
			}
		}
	}
	return nil
}

// A scheduler runs one worker at a time: every request of a worker waits
// for its turn, and the seeded random source picks whose turn it is once
// every live worker waits, and what becomes of the request.
type scheduler struct {
	rng     *rand.Rand
	mu      sync.Mutex
	cond    *sync.Cond
	waiting map[int]chan fate // workers blocked in a request
	live    int               // workers not finished
	faults  bool
}

// fate is what the scheduler decides for one request.
type fate struct {
	err        error
	doThenFail bool // the request is done, its answer lost
}

type workerKey struct{}

func newScheduler(seed uint64, faults bool) *scheduler {
	s := &scheduler{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b9)), waiting: map[int]chan fate{}, faults: faults}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// fate blocks the calling worker until its turn and returns what happens
// to its request. Calls outside a worker (the reader, the checks) run at
// once: the scheduler's goroutine makes them between turns.
func (s *scheduler) fate(ctx context.Context) fate {
	if s == nil {
		return fate{}
	}
	w, ok := ctx.Value(workerKey{}).(int)
	if !ok {
		return fate{}
	}
	c := make(chan fate, 1)
	s.mu.Lock()
	s.waiting[w] = c
	s.cond.Broadcast()
	s.mu.Unlock()
	f := <-c
	if f.err == nil && ctx.Err() != nil {
		f.err = ctx.Err()
	}
	return f
}

// step is fate for reads: a lost answer is just an error.
func (s *scheduler) step(ctx context.Context, _ string) error {
	f := s.fate(ctx)
	return f.err
}

// next waits until every live worker waits, then releases one; it reports
// false when no worker is left. crash is called with the released worker
// when the scheduler decides it crashes at this step.
func (s *scheduler) next(crash func(w int)) bool {
	s.mu.Lock()
	for s.live > 0 && len(s.waiting) < s.live {
		s.cond.Wait()
	}
	if s.live == 0 {
		s.mu.Unlock()
		return false
	}
	ids := make([]int, 0, len(s.waiting))
	for w := range s.waiting {
		ids = append(ids, w)
	}
	slices.Sort(ids)
	w := ids[s.rng.IntN(len(ids))]
	c := s.waiting[w]
	delete(s.waiting, w)
	var f fate
	if s.faults {
		switch r := s.rng.IntN(20); {
		case r == 0: // the request never reaches the table
			f.err = lostResponse
		case r == 1: // done, the answer lost
			f = fate{err: lostResponse, doThenFail: true}
		case r == 2: // the instance crashes before the request
			s.mu.Unlock()
			crash(w)
			s.mu.Lock()
			f.err = context.Canceled
		case r == 3: // the instance crashes after the request was done
			s.mu.Unlock()
			crash(w)
			s.mu.Lock()
			f = fate{err: context.Canceled, doThenFail: true}
		}
	}
	s.mu.Unlock()
	c <- f
	return true
}

func (s *scheduler) done() {
	s.mu.Lock()
	s.live--
	s.cond.Broadcast()
	s.mu.Unlock()
}

// TestCommitModel runs the model over many seeds, K = 1 and 4, two
// instances, each with a committer per shard, every committer pushing
// batches of changes to records of its shard (the records of a shard are
// shared by both instances' committers, so they race on heads and
// records).
//
// The instances take commit turns (turn.go) on a clock of the model's
// (a millisecond per request, pauses their length), with turns of 8 ms:
// the runs must wait for other instances' turns and yield their own, and
// still leave no gap, no duplicate and every change merged.
func TestCommitModel(t *testing.T) {
	clock := newFakeClock()
	modelPause(t, clock)
	seeds := 150
	if testing.Short() {
		seeds = 30
	}
	for _, k := range []int{1, 4} {
		turnWaits.Store(0)
		turnYields.Store(0)
		for seed := range seeds {
			if err := runModel(uint64(seed), k, clock); err != nil {
				t.Fatalf("K=%d seed %d: %v (go test -run TestCommitModel reproduces it)", k, seed, err)
			}
		}
		t.Logf("K=%d: %d waits for another instance's turn, %d yields", k, turnWaits.Load(), turnYields.Load())
		if turnWaits.Load() == 0 || turnYields.Load() == 0 {
			t.Errorf("K=%d: %d turn waits and %d yields over %d seeds: the runs never exercised turns", k, turnWaits.Load(), turnYields.Load(), seeds)
		}
	}
}

// turnWaits and turnYields count the model's instances' turn pauses
// (turn.go) over a run of TestCommitModel.
var turnWaits, turnYields atomic.Int64

func runModel(seed uint64, k int, clock *fakeClock) error {
	const coll = "m"
	tab := newModelTable()
	sched := newScheduler(seed, true)
	tab.sched = sched
	tab.clock = clock
	rng := rand.New(rand.NewPCG(seed, 7))
	ctx := context.Background()
	newInstance := func() (*Store, error) {
		st, err := newStore(ctx, Config{Client: nil, Table: "model", DefaultShards: k, MaxAttempts: 1000, CommitTurn: 8 * time.Millisecond}, tab)
		if st != nil {
			st.now = clock.Now
		}
		return st, err
	}
	// The collection's K is set before the race (its own transaction;
	// TestShardsEstablished covers instances that disagree).
	st0, err := newInstance()
	if err != nil {
		return err
	}
	if got, err := st0.shardsOf(ctx, coll); err != nil || got != k {
		return fmt.Errorf("shardsOf = %d, %v; want %d", got, err, k)
	}
	// Records per shard.
	ids := make([][]string, k)
	for i := 0; len(ids[k-1]) < 6 || slices.ContainsFunc(ids, func(s []string) bool { return len(s) < 6 }); i++ {
		id := "r" + strconv.Itoa(i)
		sh := stores.ShardOf(id, k)
		if len(ids[sh]) < 6 {
			ids[sh] = append(ids[sh], id)
		}
	}
	type work struct {
		w       int
		shard   int
		batches [][]crdt.Change
	}
	var works []work
	var all []crdt.Change
	for inst := range 2 {
		for sh := range k {
			wk := work{w: len(works), shard: sh}
			for b := range 3 {
				var batch []crdt.Change
				for c := range 1 + rng.IntN(3) {
					id := ids[sh][rng.IntN(len(ids[sh]))]
					stamp := crdt.Stamp{Wall: int64(1000 + rng.IntN(50)), Logical: uint32(b*10 + c), Replica: fmt.Sprintf("i%d", inst)}
					v, _ := crdt.EncodeValue(fmt.Sprintf("%d-%d-%d", wk.w, b, c))
					ch := crdt.Change{Collection: coll, Record: crdt.SetField(id, fmt.Sprintf("f%d", rng.IntN(3)), v, stamp)}
					if rng.IntN(8) == 0 {
						ch.Record = crdt.Record{ID: id, Deleted: stamp}
					}
					batch = append(batch, ch)
					all = append(all, ch)
				}
				wk.batches = append(wk.batches, batch)
			}
			works = append(works, wk)
		}
	}
	sched.live = len(works)
	cancels := make([]context.CancelFunc, len(works))
	var cmu sync.Mutex
	errs := make(chan error, len(works))
	for _, wk := range works {
		go func() {
			defer sched.done()
			// An instance of its own per committer, keeping its cached
			// head and turns from batch to batch: a failure or a crash
			// restarts it with nothing cached.
			var st *Store
			var q *collQueue
			for _, batch := range wk.batches {
				for {
					if st == nil {
						var err error
						if st, err = newInstance(); err != nil {
							errs <- err
							return
						}
						q = &collQueue{ref: logRef{coll: coll, shard: wk.shard, shards: k}}
					}
					wctx, cancel := context.WithCancel(context.WithValue(ctx, workerKey{}, wk.w))
					cmu.Lock()
					cancels[wk.w] = cancel
					cmu.Unlock()
					idxs := make([]int, len(batch))
					for i := range idxs {
						idxs[i] = i
					}
					results := make([]stores.Result, len(batch))
					done, _, err := st.applyGroup(wctx, q, batch, idxs, results)
					cancel()
					w, y := st.TurnStats()
					turnWaits.Add(w)
					turnYields.Add(y)
					st.turnWaits.Store(0)
					st.turnYields.Store(0)
					if err == nil && done == len(batch) {
						break
					}
					if err == nil {
						batch = batch[done:] // the rest goes in the next transaction
						continue
					}
					// Failed or crashed: the client pushes the batch again
					// to a restarted instance.
					st = nil
				}
			}
		}()
	}
	// The reader: K positions, and the latest state of each record read.
	pos := make([]uint64, k)
	seen := map[string]crdt.Record{}
	reader, err := newInstance()
	if err != nil {
		return err
	}
	read := func() error {
		for sh := range k {
			for {
				p, err := reader.pullLog(ctx, logRef{coll: coll, shard: sh, shards: k}, pos[sh], stores.PageLimit{Records: 1 + rng.IntN(3), Bytes: stores.DefaultPageBytes})
				if err != nil {
					return err
				}
				for _, e := range p.Entries {
					if e.Seq <= pos[sh] {
						return fmt.Errorf("shard %d: entry at %d after position %d", sh, e.Seq, pos[sh])
					}
					pos[sh] = e.Seq
					seen[e.Record.ID] = e.Record
				}
				if !p.More {
					break
				}
			}
		}
		return nil
	}
	steps := 0
	for sched.next(func(w int) {
		cmu.Lock()
		if c := cancels[w]; c != nil {
			c()
		}
		cmu.Unlock()
	}) {
		steps++
		// The released request runs; wait for its worker to block again
		// (or finish) before reading, so that reads see a settled table.
		sched.mu.Lock()
		for sched.live > 0 && len(sched.waiting) < sched.live {
			sched.cond.Wait()
		}
		sched.mu.Unlock()
		if err := tab.check(coll, k); err != nil {
			return fmt.Errorf("after step %d: %w", steps, err)
		}
		if rng.IntN(3) == 0 {
			if err := read(); err != nil {
				return err
			}
		}
	}
	select {
	case err := <-errs:
		return err
	default:
	}
	if err := read(); err != nil {
		return err
	}
	// Every record is the merge of every change pushed, and the reader has
	// it as stored.
	want := map[string]crdt.Record{}
	for _, c := range all {
		r, ok := want[c.Record.ID]
		if !ok {
			r = crdt.Record{ID: c.Record.ID}
		}
		r.Merge(c.Record)
		want[c.Record.ID] = r
	}
	for id, w := range want {
		got, err := reader.Get(ctx, coll, id)
		if err != nil {
			return fmt.Errorf("get %s: %w", id, err)
		}
		if !got.Record.Equal(w.Normalize()) {
			return fmt.Errorf("record %s: stored %v, want the merge of its changes %v", id, got.Record, w)
		}
		if r, ok := seen[id]; !ok || !r.Equal(got.Record) {
			return fmt.Errorf("record %s: the reader has %v, the table %v: the reader skipped a change", id, r, got.Record)
		}
	}
	return nil
}

// TestPullAcrossCommit: a page that takes two Queries while a commit moves
// a record from an entry the first read to one the second reads holds the
// record once, in its later state (the page's Queries are no snapshot).
func TestPullAcrossCommit(t *testing.T) {
	tab := newModelTable()
	ctx := context.Background()
	st, err := newStore(ctx, Config{Table: "model"}, tab)
	if err != nil {
		t.Fatal(err)
	}
	ref := logRef{coll: "c", shards: 1}
	put := func(id string, wall int64) {
		t.Helper()
		q := &collQueue{ref: ref}
		ch := []crdt.Change{{Collection: "c", Record: crdt.SetField(id, "f", val(t, wall), stamp(wall, "w"))}}
		if _, _, err := st.applyGroup(ctx, q, ch, []int{0}, make([]stores.Result, 1)); err != nil {
			t.Fatal(err)
		}
	}
	ids := []string{"a", "b", "c", "d", "e", "f"}
	for i, id := range ids {
		put(id, int64(i+1))
	}
	limit := stores.PageLimit{Records: 10, Bytes: stores.DefaultPageBytes}
	if first := queryLimit(limit, 0, 0); int(first) >= len(ids) {
		t.Fatalf("the first Query reads %d items: the page would take one Query", first)
	}
	queries := 0
	tab.afterQuery = func() {
		if queries++; queries == 1 {
			put("a", 100) // a moves from seq 1 to 7
		}
	}
	p, err := st.pullLog(ctx, ref, 0, limit)
	tab.afterQuery = nil
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range p.Entries {
		if seen[e.Record.ID] {
			t.Fatalf("page holds %s twice: %v", e.Record.ID, p.Entries)
		}
		seen[e.Record.ID] = true
	}
	last := p.Entries[len(p.Entries)-1]
	if queries < 2 || last.Record.ID != "a" || last.Seq != 7 || p.Next != 7 {
		t.Fatalf("%d queries; page ends with %s at %d, Next %d; want a at 7", queries, last.Record.ID, last.Seq, p.Next)
	}
}
