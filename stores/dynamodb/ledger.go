package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// The capture ledger: one item per foreign item (pk "~c#COLL#ID", sk 0)
// holding the sequence number of the last stream record of that item that
// was captured (q, S, padded to seqDigits) and the time its change was
// stamped with: wall time (w, N, milliseconds) and logical counter (l, N;
// absent means 0).
//
// A foreign write is stamped after what its record holds, at the clock of
// the server that first sees its stream record (capture stamps: the
// package doc), which is fair to the clients (a write made after a
// client's is stamped after it, even when the client's stamp ran ahead of
// the server's clock) but not derivable from the stream record alone; so
// the first capture writes the stamp down, conditioned on being the first,
// before it hands the change to the sink. Every later delivery of the record
// (a duplicate, a replay from TRIM_HORIZON after a restart or a new sink,
// the consumer of another server) finds the entry and either reuses its
// stamp (the same record: applying it again is a no-op) or, for a record
// older than the one entered, skips it: records of one item are handled in
// stream order, so an entry for a later record means this one was handed to
// the sink before.
const (
	attrLedgerSeq     = "q"
	attrLedgerWall    = "w"
	attrLedgerLogical = "l"
)

func capturePK(coll, id string) string { return "~c#" + coll + "#" + id }

// claim is the outcome of entering a stream record in the capture ledger.
type claim struct {
	at    crdt.Timestamp // the stamp's time to use
	stale bool           // a later record of the item was captured: skip this one
}

// ledger records the stamps of captured foreign writes, and reads what a
// new one must follow. The store's is on its table (tableLedger); tests of
// the consumer use a map.
type ledger interface {
	// held returns the largest stamp record coll/id holds (Record.MaxStamp;
	// zero when there is no record), as the sink will merge into it.
	held(ctx context.Context, coll, id string) (crdt.Stamp, error)
	claim(ctx context.Context, coll, id, seq40 string, at crdt.Timestamp) (claim, error)
}

type tableLedger struct{ st *Store }

// held reads the record with a consistent read.
func (l tableLedger) held(ctx context.Context, coll, id string) (crdt.Stamp, error) {
	e, err := l.st.Get(ctx, coll, id)
	switch {
	case errors.Is(err, stores.ErrNotFound):
		return crdt.Stamp{}, nil
	case err != nil:
		return crdt.Stamp{}, fmt.Errorf("capture: %w", err)
	}
	return e.Record.MaxStamp(), nil
}

// claim enters (coll, id, seq40) with at unless an entry of seq40 or a
// later record is there: one conditional UpdateItem, whose cancellation
// returns the entry (ALL_OLD; a consistent GetItem where the service does
// not return it).
func (l tableLedger) claim(ctx context.Context, coll, id, seq40 string, at crdt.Timestamp) (claim, error) {
	st := l.st
	k := key(capturePK(coll, id), 0)
	_, err := st.db.UpdateItem(ctx, &awsdynamodb.UpdateItemInput{
		TableName:                           &st.table,
		Key:                                 k,
		UpdateExpression:                    ptr("SET #q = :q, #w = :w, #l = :l, #cvg = :cvg"),
		ConditionExpression:                 ptr("attribute_not_exists(#q) OR #q < :q"),
		ExpressionAttributeNames:            map[string]string{"#q": attrLedgerSeq, "#w": attrLedgerWall, "#l": attrLedgerLogical, "#cvg": attrCvg},
		ExpressionAttributeValues:           map[string]types.AttributeValue{":q": s(seq40), ":w": n(uint64(at.Wall)), ":l": n(uint64(at.Logical)), ":cvg": n(1)},
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	}, st.dbOpt)
	if err == nil {
		return claim{at: at}, nil
	}
	var cond *types.ConditionalCheckFailedException
	if !errors.As(err, &cond) {
		return claim{}, translate(ctx, "capture ledger "+coll+"/"+id, err)
	}
	item := cond.Item
	if item == nil {
		out, err := st.db.GetItem(ctx, &awsdynamodb.GetItemInput{TableName: &st.table, Key: k, ConsistentRead: ptr(true)}, st.dbOpt)
		if err != nil {
			return claim{}, translate(ctx, "capture ledger "+coll+"/"+id, err)
		}
		item = out.Item
	}
	q, _ := item[attrLedgerSeq].(*types.AttributeValueMemberS)
	if q == nil {
		return claim{}, fmt.Errorf("capture ledger %s/%s: entry without a sequence number", coll, id)
	}
	if q.Value != seq40 {
		return claim{stale: true}, nil
	}
	w, err := getN(item, attrLedgerWall)
	if err != nil {
		return claim{}, fmt.Errorf("capture ledger %s/%s: %w", coll, id, err)
	}
	var lg uint64 // entries written before the counter was kept have none
	if _, ok := item[attrLedgerLogical]; ok {
		if lg, err = getN(item, attrLedgerLogical); err != nil || lg > crdt.MaxLogical {
			return claim{}, fmt.Errorf("capture ledger %s/%s: bad logical counter %d: %v", coll, id, lg, err)
		}
	}
	return claim{at: crdt.Timestamp{Wall: int64(w), Logical: uint32(lg)}}, nil
}

// CaptureStats counts what the stream consumer did since the store opened.
// Every count but Records is about foreign items (package doc, "Capture of
// foreign writes").
type CaptureStats struct {
	// Records is the number of stream records handled, of every item. The
	// records read again when a new sink registers count again.
	Records int64
	// Captured is the number of foreign writes handed to the capture sink
	// (replays of a record whose outcome was unknown included).
	Captured int64
	// Replayed is the number of stream records of foreign items passed
	// over because they had been captured before (the ledger holds a later
	// record of the item).
	Replayed int64
	// Refused is the number of captured changes the sink refused (a limit,
	// the clock drift bound). Each is logged and listed by
	// RejectedCaptures.
	Refused int64
	// Rejected is the number of stream records of foreign items that map to
	// no valid change (an attribute name or value outside the value model, a
	// MODIFY without its old image). Each is logged and listed, once: a
	// record read again (the stream read from its oldest record) does not
	// count again.
	Rejected int64
	// Ignored is the number of stream records of items that are neither
	// Convergo's nor foreign items by the key convention (pk "COLL#ID" with
	// a valid collection name and id, sk 0): other data in the table.
	Ignored int64
	// Parked is the number of foreign writes parked now, and ParkedBytes
	// their size: writes of collections whose changes the sink fails for
	// now (a reshard's fence), held back in stream order and retried
	// while capture goes on for the others. Each is listed by
	// ParkedCaptures.
	Parked, ParkedBytes int64
	// Overflowed is the number of foreign writes of parked collections
	// that did not fit in the parked bytes' bound: left to the stream, and
	// read again from it once their collection's parked writes are
	// applied (as far as the stream still holds them).
	Overflowed int64
}

// RejectedCapture is a foreign write the store did not capture: the sink
// refused its change, or it maps to no valid change.
type RejectedCapture struct {
	Key       string    // the item's partition key, "COLL#ID"
	StreamSeq string    // the stream record's sequence number
	Reason    string    // why, as logged
	At        time.Time // when the consumer gave up on it
}

// maxRejected is how many rejected captures RejectedCaptures keeps.
const maxRejected = 256

type captureCounters struct {
	mu    sync.Mutex
	stats CaptureStats
	// applied is Captured less the sink's refusals (CaptureCounts),
	// counted apart so that it never goes down: Refused is counted after
	// Captured, as each refusal is reported.
	applied  uint64
	rejected []RejectedCapture // a ring of the latest, oldest first
	// unmappable holds the stream sequence numbers of the records counted
	// as mapping to no change: the stream read again (a new sink, a
	// parked collection's overflow drained) meets them again, and they
	// are no new writes. Cleared when it reaches maxUnmappableSeqs: a
	// record then counts once more.
	unmappable map[string]struct{}
	parkSrc    *consumer // whose queues ParkedCaptures lists
}

func (c *captureCounters) add(f func(*CaptureStats)) {
	c.mu.Lock()
	f(&c.stats)
	c.mu.Unlock()
}

// maxUnmappableSeqs bounds captureCounters.unmappable.
const maxUnmappableSeqs = 1 << 16

// firstUnmappable reports whether the stream record seq is met as
// mapping to no change for the first time (see unmappable).
func (c *captureCounters) firstUnmappable(seq string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.unmappable[seq]; ok {
		return false
	}
	if c.unmappable == nil || len(c.unmappable) >= maxUnmappableSeqs {
		c.unmappable = map[string]struct{}{}
	}
	c.unmappable[seq] = struct{}{}
	return true
}

func (c *captureCounters) reject(r RejectedCapture, refused bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if refused {
		c.stats.Refused++
	} else {
		c.stats.Rejected++
	}
	if len(c.rejected) == maxRejected {
		c.rejected = append(c.rejected[:0], c.rejected[1:]...)
	}
	c.rejected = append(c.rejected, r)
}

// CaptureStats returns the consumer's counts since the store opened.
func (st *Store) CaptureStats() CaptureStats {
	st.counters.mu.Lock()
	defer st.counters.mu.Unlock()
	return st.counters.stats
}

var _ stores.CaptureCounter = (*Store)(nil)

// CaptureCounts implements stores.CaptureCounter, from CaptureStats:
// Applied is Captured less Refused (the sink's refusals are among what it
// was handed), Unmappable is Rejected.
func (st *Store) CaptureCounts() stores.CaptureCounts {
	st.counters.mu.Lock()
	defer st.counters.mu.Unlock()
	s := &st.counters.stats
	return stores.CaptureCounts{Applied: st.counters.applied, Refused: uint64(s.Refused), Unmappable: uint64(s.Rejected),
		Overflowed: uint64(s.Overflowed), ParkedBytes: uint64(s.ParkedBytes)}
}

// RejectedCaptures lists the latest foreign writes (at most 256, oldest
// first) that were not captured, with the reason: what an operator looks
// at when CaptureStats shows Refused or Rejected growing. The list lives in
// memory; every entry is also logged, at warn with the same fields (at
// error when it met a bug).
func (st *Store) RejectedCaptures() []RejectedCapture {
	st.counters.mu.Lock()
	defer st.counters.mu.Unlock()
	return append([]RejectedCapture(nil), st.counters.rejected...)
}
