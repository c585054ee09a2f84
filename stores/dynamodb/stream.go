package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	st "github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/internal/bug"
	"github.com/convergo/convergo/stores"
)

// maxConsumerBackoff bounds the consumer's pause after repeated failures.
const maxConsumerBackoff = 30 * time.Second

// consumer reads the table's stream. It follows shard lineage (a shard is
// read only after its parent is drained, so each item's records are seen in
// order), hands the changes of foreign writes to the capture sink (while one
// is registered; see Store.Capture) and turns changes of the collections'
// head items into notifications (always).
//
// It also follows the table to its stream: a table deleted and created
// again under its name (a restore in place) has a new stream, and the old
// one, still readable for a day, only ever shows the deleted table's
// writes; so does a stream disabled and enabled again. At most once per
// shard refresh, before it lists the shards, it describes the table
// (follow) and moves to the table's latest stream: at once when the table is another one (the deleted
// table's records are of items the restore replaced), after draining the
// old stream when it is the same table. The new stream is read from its
// oldest record, which holds every write to the new table, so capture
// misses none of them.
type consumer struct {
	st          *Store
	arn         string // the stream read
	inc         string // the incarnation of the table whose stream arn is
	next        string // the table's newer stream, read once arn is drained
	lastFollow  time.Time
	shards      map[string]*shard
	order       []string // shard ids in listing order
	lastListing time.Time
	log         *slog.Logger
	gen         uint64 // the sink registration the shards were read for
	// parked holds the queues of the collections whose foreign writes
	// are parked (park.go), parkedBytes their size and parkedCount
	// their number, and parkDirty says that what CaptureStats shows of
	// them is out of date. The consumer changes parked, and a queue's
	// writes and reason, under parkMu, for ParkedCaptures to read them
	// from another goroutine. reread asks for the stream to be read
	// again from its oldest record.
	parkMu      sync.Mutex
	parked      map[string]*parkedColl
	parkedBytes int
	parkedCount int
	maxParked   int // maxParkedBytes; tests lower it
	parkDirty   bool
	reread      bool
}

// errSinkGone means the sink was stopped or replaced during a call: not a
// failure of the consumer.
var errSinkGone = errors.New("capture sink stopped")

type shard struct {
	id, parent string
	iter       *string
	lastSeq    string // of the last record handled; "" before the first
	done       bool   // closed and drained
}

func newConsumer(s *Store, arn, inc string) *consumer {
	// New described the table just now.
	c := &consumer{st: s, arn: arn, inc: inc, shards: map[string]*shard{}, parked: map[string]*parkedColl{}, maxParked: maxParkedBytes, lastFollow: time.Now(), log: s.log.With("part", "stream")}
	s.counters.mu.Lock()
	s.counters.parkSrc = c
	s.counters.mu.Unlock()
	return c
}

// run reads the stream until ctx is done. Failures are logged and retried
// with a growing pause; when reading resumes after one, watchers get a
// Resync, since notifications may have been missed meanwhile.
func (c *consumer) run(ctx context.Context) {
	failures := 0
	for ctx.Err() == nil {
		progressed, err := c.step(ctx)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errSinkGone) {
			continue // read the same records again, for the next sink or none
		}
		if err != nil {
			failures++
			c.log.Warn("stream consumer failed; retrying", "attempt", failures, "err", err)
			_ = sleep(ctx, min(backoff(failures)*8, maxConsumerBackoff))
			continue
		}
		if failures > 0 {
			c.log.Info("stream consumer recovered", "after", failures)
			failures = 0
			c.st.watchers.Notify(stores.Notification{Resync: true})
		}
		if !progressed {
			_ = sleep(ctx, c.st.poll)
		}
	}
}

// step lists the shards when due and reads every readable shard once. It
// reports whether any shard returned records.
func (c *consumer) step(ctx context.Context) (progressed bool, err error) {
	if gen := c.st.captureGen(); gen != c.gen || c.reread {
		// A new sink: read every shard again from its oldest record, so it
		// is offered the foreign writes made while none was registered.
		// So too once a parked collection that overflowed drains
		// (reread). Parked writes stay parked: read again, they are not
		// queued twice.
		if gen != c.gen && len(c.shards) > 0 {
			c.log.Info("capture sink registered; reading the stream again from its oldest record")
		}
		c.gen = gen
		c.readAgain()
	}
	if n, err := c.retryParked(ctx); err != nil {
		return n, err
	} else if n {
		progressed = true
	}
	if c.reread {
		// A queue that overflowed drained just now: read the stream
		// again before this step reads on, or a later write of an item
		// whose write was left to the stream would be captured first,
		// and the one left, read again, passed over as captured before.
		c.readAgain()
	}
	if c.lastListing.IsZero() || time.Since(c.lastListing) > c.st.refresh || c.allDone() {
		if time.Since(c.lastFollow) > c.st.refresh {
			if err := c.follow(ctx); err != nil {
				return false, err
			}
		}
		err := c.listShards(ctx)
		if c.next != "" && (isCode(err, "ResourceNotFoundException") || err == nil && c.allDone()) {
			c.moveTo(c.next, c.inc, "the table has a new stream and the old one is drained")
			return true, nil
		}
		if err != nil {
			return false, err
		}
	}
	for _, id := range c.order {
		sh := c.shards[id]
		if sh.done || !c.ready(sh) {
			continue
		}
		n, err := c.readShard(ctx, sh)
		if err != nil {
			return progressed, err
		}
		if n > 0 || sh.done {
			progressed = true
		}
	}
	return progressed, nil
}

// readAgain makes the consumer read every shard again from its oldest
// record.
func (c *consumer) readAgain() {
	c.reread = false
	c.shards, c.order, c.lastListing = map[string]*shard{}, nil, time.Time{}
}

func (c *consumer) allDone() bool {
	for _, sh := range c.shards {
		if !sh.done {
			return false
		}
	}
	return true
}

// follow, at most once per shard refresh, describes the table and, when
// its stream is not the one read, moves to it: at once when the table is
// another incarnation (deleted and created again: a restore in place, whose
// copy the store checks first, as Meta does after meeting the table
// missing, so that the new epoch starts before the first capture), else
// once the stream read is drained (c.next). A table missing or without a
// stream (a restore does not enable one) is a failure of the consumer:
// retried, and logged at warn, until it is fixed.
func (c *consumer) follow(ctx context.Context) error {
	desc, err := c.st.describe(ctx)
	if err != nil {
		return fmt.Errorf("the table of the stream: %w", err)
	}
	inc := incarnation(desc)
	if inc != c.inc {
		if err := c.st.recheckTable(ctx); err != nil {
			return err
		}
	}
	arn, err := c.st.tableStream(desc)
	if err != nil {
		return fmt.Errorf("the table of the stream: %w", err)
	}
	c.lastFollow = time.Now()
	switch {
	case arn == c.arn:
	case inc == c.inc:
		c.next = arn
	default:
		c.moveTo(arn, inc, "the table was deleted and created again (a restore in place?)")
	}
	return nil
}

// moveTo makes the consumer read stream arn, of the table incarnation inc,
// from its oldest record, and tells watchers to resync: wake-ups were
// missed while it read the old stream.
func (c *consumer) moveTo(arn, inc, why string) {
	c.log.Warn("reading the table's new stream from its oldest record; capture and wake-ups from other servers had stopped since the old one ended",
		"why", why, "old_stream", c.arn, "new_stream", arn)
	c.arn, c.inc, c.next = arn, inc, ""
	c.shards, c.order, c.lastListing = map[string]*shard{}, nil, time.Time{}
	c.st.watchers.Notify(stores.Notification{Resync: true})
}

// ready reports whether sh may be read: its parent is drained or no longer
// listed (trimmed).
func (c *consumer) ready(sh *shard) bool {
	p, ok := c.shards[sh.parent]
	return sh.parent == "" || !ok || p.done
}

// listShards adds the stream's new shards (read from their oldest record)
// and forgets drained shards that are no longer listed.
func (c *consumer) listShards(ctx context.Context) error {
	listed := map[string]bool{}
	var order []string
	var start *string
	for {
		out, err := c.st.streams.DescribeStream(ctx, &dynamodbstreams.DescribeStreamInput{StreamArn: &c.arn, ExclusiveStartShardId: start}, c.st.streamOpt)
		if err != nil {
			return translate(ctx, "describe stream", err)
		}
		d := out.StreamDescription
		for _, s := range d.Shards {
			id := str(s.ShardId)
			if id == "" || listed[id] {
				continue
			}
			listed[id] = true
			order = append(order, id)
			if _, ok := c.shards[id]; !ok {
				c.shards[id] = &shard{id: id, parent: str(s.ParentShardId)}
			}
		}
		if d.LastEvaluatedShardId == nil {
			break
		}
		start = d.LastEvaluatedShardId
	}
	for id, sh := range c.shards {
		if !listed[id] && (sh.done || sh.iter == nil) {
			delete(c.shards, id)
		} else if !listed[id] {
			order = append(order, id) // still being read; keep it
		}
	}
	c.order = order
	c.lastListing = time.Now()
	return nil
}

// readShard reads one batch of records of sh and handles them. It returns
// how many records there were.
func (c *consumer) readShard(ctx context.Context, sh *shard) (int, error) {
	if sh.iter == nil {
		in := &dynamodbstreams.GetShardIteratorInput{StreamArn: &c.arn, ShardId: &sh.id, ShardIteratorType: st.ShardIteratorTypeTrimHorizon}
		if sh.lastSeq != "" {
			in.ShardIteratorType = st.ShardIteratorTypeAfterSequenceNumber
			in.SequenceNumber = &sh.lastSeq
		}
		out, err := c.st.streams.GetShardIterator(ctx, in, c.st.streamOpt)
		switch {
		case isCode(err, "TrimmedDataAccessException"):
			c.fellBehind(sh, err)
			return 0, nil
		case isCode(err, "ResourceNotFoundException"):
			c.log.Info("shard is gone", "shard", sh.id)
			sh.done = true
			return 0, nil
		case err != nil:
			return 0, translate(ctx, "get shard iterator "+sh.id, err)
		}
		sh.iter = out.ShardIterator
		if sh.iter == nil {
			sh.done = true
			return 0, nil
		}
	}
	out, err := c.st.streams.GetRecords(ctx, &dynamodbstreams.GetRecordsInput{ShardIterator: sh.iter}, c.st.streamOpt)
	switch {
	case isCode(err, "ExpiredIteratorException"):
		// Resume after the last record handled; nothing is skipped, but
		// the pause may have been long, so watchers catch up.
		c.log.Info("shard iterator expired; resuming", "shard", sh.id)
		sh.iter = nil
		c.st.watchers.Notify(stores.Notification{Resync: true})
		return 0, nil
	case isCode(err, "TrimmedDataAccessException"):
		c.fellBehind(sh, err)
		return 0, nil
	case err != nil:
		return 0, translate(ctx, "get records "+sh.id, err)
	}
	if err := c.handle(ctx, out.Records); err != nil {
		// The iterator is kept: the next step reads the same records
		// again, and applying them again is harmless.
		return 0, err
	}
	if k := len(out.Records); k > 0 && out.Records[k-1].Dynamodb != nil {
		sh.lastSeq = str(out.Records[k-1].Dynamodb.SequenceNumber)
	}
	sh.iter = out.NextShardIterator
	if sh.iter == nil {
		sh.done = true
	}
	return len(out.Records), nil
}

// fellBehind restarts sh from its oldest record after the records it was
// about to read were trimmed (older than the stream's 24 hours): foreign
// writes in the lost part are lost to capture, and watchers must resync.
func (c *consumer) fellBehind(sh *shard, err error) {
	c.log.Warn("stream consumer fell behind the stream's retention; restarting the shard from its oldest record", "shard", sh.id, "err", err)
	sh.iter, sh.lastSeq = nil, ""
	c.st.watchers.Notify(stores.Notification{Resync: true})
}

// handle hands the foreign writes among records, in order, to the capture
// sink and notifies watchers of the heads the records show. Without a sink
// foreign writes are passed over (a sink registered later reads them again).
// Each foreign write is stamped after what its record holds, through the
// capture ledger (ledger.go), before it goes to the sink, once the sink said it takes changes now
// (stores.CaptureSink), and a batch holds at most one write per item,
// so that the ledger never runs ahead of the sink by more than one record
// of an item. A write that maps to no change, or whose change the sink
// refuses, is logged, counted and listed (RejectedCaptures) and skipped.
// A collection whose changes the sink fails is parked, and so is every
// later write of a parked collection (park.go), while the others go on; an
// error of the sink as a whole or of the ledger fails the call, and the
// same records are read again.
func (c *consumer) handle(ctx context.Context, records []st.Record) error {
	reg, _ := c.st.acquireSink()
	if reg != nil {
		defer reg.calls.Done()
	}
	defer c.publishParked()
	var batch []crdt.Change
	var writes []parkedWrite
	inBatch := map[string]bool{}
	flush := func() error {
		defer func() { batch, writes, inBatch = batch[:0], writes[:0], map[string]bool{} }()
		return c.deliver(ctx, reg, batch, writes)
	}
	heads := map[logRef]uint64{}
	resync := false
	asked := false // whether the sink takes changes now
	for _, rec := range records {
		if isEpochRecord(rec) {
			resync = true
			continue
		}
		if ref, head, ok := headOf(rec); ok {
			heads[ref] = max(heads[ref], head)
			continue
		}
		if reg == nil || rec.Dynamodb == nil {
			continue
		}
		if kind, pk := classify(rec.Dynamodb); kind == keyOther {
			c.st.counters.add(func(s *CaptureStats) { s.Ignored++ })
			c.log.Debug("passing over an item outside the key convention", "item", pk, "stream_seq", str(rec.Dynamodb.SequenceNumber))
			continue
		}
		w, ok, err := readForeign(rec)
		if err != nil {
			c.reject(itemOf(rec), err, false)
			continue
		}
		if !ok {
			continue
		}
		pw := parkedWrite{w: w, item: itemOf(rec), size: parkedSize(w)}
		if c.isParked(w.coll) {
			// Behind the collection's parked writes, unstamped (park.go).
			c.park(pw, nil)
			continue
		}
		if inBatch[w.key] {
			if err := flush(); err != nil {
				return err
			}
			if c.isParked(w.coll) {
				c.park(pw, nil)
				continue
			}
		}
		if !asked {
			// Stamp nothing the sink would not take now
			// (stores.CaptureSink): the records are read again.
			if err := reg.sink.CheckReady(reg.ctx); err != nil {
				if reg.ctx.Err() != nil && ctx.Err() == nil {
					return errSinkGone
				}
				return fmt.Errorf("capture sink: %w", err)
			}
			asked = true
		}
		ch, ok, err := c.stamp(ctx, w, pw.item)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		batch = append(batch, ch)
		writes = append(writes, pw)
		inBatch[w.key] = true
	}
	if reg != nil {
		if err := flush(); err != nil {
			return err
		}
	}
	c.st.counters.add(func(s *CaptureStats) { s.Records += int64(len(records)) })
	for ref, head := range heads {
		c.st.watchers.Notify(headNotification(ref, head))
	}
	if resync {
		c.st.watchers.Notify(stores.Notification{Resync: true})
	}
	return nil
}

// stamp enters w in the capture ledger, stamped after what its record
// holds, and returns its change. ok is false when there is nothing to hand
// to the sink: a record captured before (a later one of the item is in the
// ledger), a write that changed nothing, or one rejected (reported here).
// An error is the ledger's.
func (c *consumer) stamp(ctx context.Context, w foreignWrite, it capturedItem) (ch crdt.Change, ok bool, err error) {
	held, err := c.st.ledger.held(ctx, w.coll, w.id)
	if err != nil {
		return crdt.Change{}, false, err
	}
	at, err := held.Time().Next(max(c.st.now().UnixMilli(), w.created.UnixMilli()))
	if err != nil {
		c.reject(it, err, false)
		return crdt.Change{}, false, nil
	}
	cl, err := c.st.ledger.claim(ctx, w.coll, w.id, w.seq40, at)
	if err != nil {
		return crdt.Change{}, false, err
	}
	if cl.stale {
		c.st.counters.add(func(s *CaptureStats) { s.Replayed++ })
		return crdt.Change{}, false, nil
	}
	if w.empty() {
		return crdt.Change{}, false, nil
	}
	stamp, err := captureStamp(c.st.replica, cl.at, w.seq40)
	if err != nil {
		c.reject(it, err, false)
		return crdt.Change{}, false, nil
	}
	return w.change(stamp), true, nil
}

// reject logs, counts and lists a foreign write that was not captured;
// one that maps to no change, once per stream record (firstUnmappable).
func (c *consumer) reject(it capturedItem, err error, refused bool) {
	if !refused && it.seq != "" && !c.st.counters.firstUnmappable(it.seq) {
		return // counted, logged and listed when first read
	}
	msg := "foreign write maps to no valid change; skipping it"
	if refused {
		msg = "captured change refused; skipping it"
	}
	if errors.Is(err, bug.ErrPanic) {
		c.log.Error(msg+" (a bug)", "item", it.key, "stream_seq", it.seq, "err", err)
	} else {
		c.log.Warn(msg, "item", it.key, "stream_seq", it.seq, "err", err)
	}
	c.st.counters.reject(RejectedCapture{Key: it.key, StreamSeq: it.seq, Reason: err.Error(), At: c.st.now()}, refused)
}

// capturedItem names the stream record a captured change came from, for
// logs.
type capturedItem struct{ key, seq string }

func itemOf(rec st.Record) capturedItem {
	var it capturedItem
	if sr := rec.Dynamodb; sr != nil {
		if pk, ok := sr.Keys[attrPK].(*st.AttributeValueMemberS); ok {
			it.key = pk.Value
		}
		it.seq = str(sr.SequenceNumber)
	}
	return it
}

// headOf reads a stream record of a head item (a collection's, or a
// shard's): the write of some store instance (this one or another) that
// advanced the log. The marker head of a sharded collection (head 0) is
// none.
func headOf(rec st.Record) (ref logRef, head uint64, ok bool) {
	sr := rec.Dynamodb
	if sr == nil || rec.EventName == st.OperationTypeRemove {
		return logRef{}, 0, false
	}
	pkv, _ := sr.Keys[attrPK].(*st.AttributeValueMemberS)
	if pkv == nil || !strings.HasPrefix(pkv.Value, "~h#") {
		return logRef{}, 0, false
	}
	ref = logRef{coll: strings.TrimPrefix(pkv.Value, "~h#"), shards: 1}
	if kv, _ := sr.NewImage[attrK].(*st.AttributeValueMemberN); kv != nil {
		coll, suffix, found := strings.Cut(ref.coll, "#")
		k, err := strconv.Atoi(kv.Value)
		if !found || err != nil || k < 2 || k > stores.MaxShards {
			return logRef{}, 0, false
		}
		shard, ok := shardSuffix(suffix)
		if !ok || shard >= k {
			return logRef{}, 0, false
		}
		ref = logRef{coll: coll, shard: shard, shards: k}
	}
	hv, _ := sr.NewImage[attrHead].(*st.AttributeValueMemberN)
	if crdt.ValidateCollection(ref.coll) != nil || hv == nil {
		return logRef{}, 0, false
	}
	h, err := strconv.ParseUint(hv.Value, 10, 64)
	if err != nil || h == 0 {
		return logRef{}, 0, false
	}
	return ref, h, true
}

func isCode(err error, code string) bool { return err != nil && apiCode(err) == code }
