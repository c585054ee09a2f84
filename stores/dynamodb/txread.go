package dynamodb

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/convergo/convergo/stores"
)

// A Query is read-committed item by item, not isolated from a
// TransactWriteItems: while a transaction that wrote log entries N+1..N+k
// is being applied, a strongly consistent Query may return N+2 and not yet
// N+1. A reader that moved its cursor to N+2 would skip N+1 for good. So
// each log entry of a transaction that writes more than one carries the
// sequence numbers of all of them (attrTx), and a page that read some
// entries of a transaction and not others at or below its cursor reads
// those others with a TransactGetItems, which is serializable with the
// writing transaction: it sees all of its writes or none, or is cancelled
// while the transaction is in progress (and read again). An entry it does
// not find was compacted by a later transaction (its record moved on, or
// was purged). A page without such gaps costs no read besides its
// Queries.

// maxTxAttrBytes bounds the size of attrTx on a log item: its name, the
// first sequence number and the count, and a delta per further entry.
const maxTxAttrBytes = len(attrTx) + 2*binary.MaxVarintLen64 + (recordsPerTx-1)*binary.MaxVarintLen64

// appendTxSeqs encodes the ascending log sequence numbers of one
// transaction: the first and the count less one (uvarints), then, unless
// they are consecutive, the difference of each further one from the one
// before it.
func appendTxSeqs(dst []byte, seqs []uint64) []byte {
	dst = binary.AppendUvarint(dst, seqs[0])
	dst = binary.AppendUvarint(dst, uint64(len(seqs)-1))
	if seqs[len(seqs)-1]-seqs[0] == uint64(len(seqs)-1) {
		return dst
	}
	for i := 1; i < len(seqs); i++ {
		dst = binary.AppendUvarint(dst, seqs[i]-seqs[i-1])
	}
	return dst
}

// txSeqs decodes a log item's attrTx: nil when it has none (an entry
// written alone, or before entries named their transaction).
func txSeqs(item map[string]types.AttributeValue) ([]uint64, error) {
	v, ok := item[attrTx]
	if !ok {
		return nil, nil
	}
	raw, ok := v.(*types.AttributeValueMemberB)
	if !ok {
		return nil, fmt.Errorf("attribute %q is not binary", attrTx)
	}
	bad := fmt.Errorf("attribute %q is malformed", attrTx)
	first, n := binary.Uvarint(raw.Value)
	if n <= 0 {
		return nil, bad
	}
	rest := raw.Value[n:]
	more, n := binary.Uvarint(rest)
	if n <= 0 || more >= recordsPerTx {
		return nil, bad
	}
	rest = rest[n:]
	dense := len(rest) == 0 // no differences follow: consecutive
	seqs := make([]uint64, 1, more+1)
	seqs[0] = first
	for i := range more {
		d := uint64(1)
		if !dense {
			if d, n = binary.Uvarint(rest); n <= 0 || d == 0 {
				return nil, bad
			}
			rest = rest[n:]
		}
		if seqs[i]+d < seqs[i] {
			return nil, bad
		}
		seqs = append(seqs, seqs[i]+d)
	}
	if len(rest) > 0 {
		return nil, bad
	}
	return seqs, nil
}

// pageRead is what a page's Queries read: the sizes of the entries by seq
// (those a later entry of their record replaced too), and the
// transactions those entries name, by their first seq.
type pageRead struct {
	seen map[uint64]int
	txs  map[uint64]*txRead
}

// txRead is a transaction some of whose log entries a page read: the seqs
// of all of them, and the latest the page read (its seq and record).
type txRead struct {
	seqs []uint64
	seq  uint64
	id   string
}

// saw notes that the page read e, an entry of the transaction that wrote
// the log seqs tx.
func (r pageRead) saw(tx []uint64, e stores.Entry) {
	t := r.txs[tx[0]]
	if t == nil {
		t = &txRead{seqs: tx}
		r.txs[tx[0]] = t
	}
	if e.Seq > t.seq {
		t.seq, t.id = e.Seq, e.Record.ID
	}
}

// hole is a transaction the page read in part, and the seqs of its entries
// at or below the page's cursor that the page did not read.
type hole struct {
	tx      *txRead
	missing []uint64
}

// fillHoles completes page, read from after: the entries of transactions
// it read in part, at or below its cursor, that its Queries did not return
// are read with TransactGetItems and put into the page in order. A record
// found twice is kept at its later seq; the page is cut again at limit.
func (st *Store) fillHoles(ctx context.Context, ref logRef, after uint64, page stores.Page, read pageRead, limit stores.PageLimit) (stores.Page, error) {
	var holes []hole
	for _, t := range read.txs {
		var missing []uint64
		for _, q := range t.seqs {
			if _, ok := read.seen[q]; !ok && q > after && q <= page.Next {
				missing = append(missing, q)
			}
		}
		if len(missing) > 0 {
			holes = append(holes, hole{tx: t, missing: missing})
		}
	}
	if len(holes) == 0 {
		return page, nil
	}
	slices.SortFunc(holes, func(a, b hole) int { return cmp.Compare(a.tx.seqs[0], b.tx.seqs[0]) })
	entries := page.Entries
	// One read takes whole transactions, each an item more than its
	// missing entries (a transaction misses at most recordsPerTx-1), and
	// at most what DynamoDB answers one TransactGetItems with (4 MB of
	// items): holeBytes of each, the record item as large as the entry
	// the page read of it. A missing entry is counted as nothing: it was
	// compacted away, as a rule, and found only while its transaction is
	// being applied; a read that finds too much for one answer is refused
	// whole (ValidationException) and read again in halves, down to one
	// transaction's hole, which always fits: its entries are the log
	// items of one transaction (at most half of txBudgetBytes) and its
	// record item one more.
	for i := 0; i < len(holes); {
		j, items, size := i, 0, 0
		for j < len(holes) && items+2+len(holes[j].missing) <= maxTxGetItems && (j == i || size+holeBytes(holes[j], read.seen) <= txBudgetBytes) {
			items += 2 + len(holes[j].missing)
			size += holeBytes(holes[j], read.seen)
			j++
		}
		found, err := st.readHoles(ctx, ref, holes[i:j], read.seen)
		for err != nil && j-i > 1 && refusedRead(err) {
			st.log.Debug("log read over DynamoDB's answer size; reading it in halves", "collection", ref.String(), "transactions", j-i)
			j = i + (j-i)/2
			found, err = st.readHoles(ctx, ref, holes[i:j], read.seen)
		}
		if err != nil {
			return stores.Page{}, err
		}
		entries = append(entries, found...)
		i = j
	}
	slices.SortFunc(entries, func(a, b stores.Entry) int { return cmp.Compare(a.Seq, b.Seq) })
	// A record found twice moved between the reads: keep its later entry.
	last := map[string]uint64{}
	for _, e := range entries {
		last[e.Record.ID] = e.Seq
	}
	entries = slices.DeleteFunc(entries, func(e stores.Entry) bool { return last[e.Record.ID] != e.Seq })
	out := stores.Page{Next: after}
	used := 0
	for _, e := range entries {
		size := read.seen[e.Seq]
		if !stores.PageFits(limit, len(out.Entries), used, size) {
			out.More = true
			return out, nil
		}
		used += size
		out.Entries = append(out.Entries, e)
		out.Next = e.Seq
	}
	out.Next, out.More = page.Next, page.More
	return out, nil
}

// refusedRead reports whether DynamoDB refused a TransactGetItems for what
// it would read rather than for a transaction in progress: a
// ValidationException (DynamoDB Local's answer to items over 4 MB:
// "Payload in response is too large"), or a cancellation for a validation
// error, which a read of fewer items may avoid.
func refusedRead(err error) bool {
	var cancelled *types.TransactionCanceledException
	if errors.As(err, &cancelled) {
		return slices.Contains(reasonCodes(cancelled.CancellationReasons), "ValidationError")
	}
	return apiCode(err) == "ValidationException"
}

// holeItemBytes is what a record item holds beside its record's encoding:
// its key (the collection and the record id, at most MaxCollectionBytes
// and MaxIDBytes) and its other attributes, with room to spare.
const holeItemBytes = 2 << 10

// holeBytes is what the read of h is expected to answer: the record item
// of the entry the page read of its transaction, about that entry's size
// (seen), that entry's key, and none of its missing entries (fillHoles).
func holeBytes(h hole, seen map[uint64]int) int {
	return seen[h.tx.seq] + holeItemBytes
}

// readHoles reads the missing log entries of holes with one
// TransactGetItems and, for each transaction, the record item of the
// latest entry the page read of it. That record's seq is at least the
// entry's once the transaction committed (seqs only grow), so a lower one
// (or none) means the read was ordered before a transaction the page's
// Queries saw, and it is read again (unless the same read finds the entry
// the page read there: then the transaction is whole before it, and the
// record item below it is a restored table's, whose backup kept no
// transaction together; the entries not found are not coming), as when
// it is cancelled by a
// transaction in progress on its items (after a backoff, up to
// MaxAttempts). The log's head is not read: every commit writes it, so
// reading it would conflict with (and cancel) the log's writers. It
// returns the entries found and records their sizes in sizes.
func (st *Store) readHoles(ctx context.Context, ref logRef, holes []hole, sizes map[uint64]int) ([]stores.Entry, error) {
	op := "pull " + ref.String()
	var gets []types.TransactGetItem
	for _, h := range holes {
		// Of the record item only its seq is read (foundEntries).
		gets = append(gets, types.TransactGetItem{Get: &types.Get{
			TableName: &st.table, Key: key(recordPK(ref.coll, h.tx.id), 0),
			ProjectionExpression: ptr("#q"), ExpressionAttributeNames: map[string]string{"#q": attrSeq},
		}})
		// And the entry the page read, of its key alone: read with the
		// record item in one serializable read, it tells a transaction
		// in progress (the entry not yet there) from a table whose
		// items of one transaction are not together (foundEntries).
		gets = append(gets, types.TransactGetItem{Get: &types.Get{
			TableName: &st.table, Key: key(ref.logPK(), h.tx.seq),
			ProjectionExpression: ptr("#k"), ExpressionAttributeNames: map[string]string{"#k": attrSK},
		}})
		for _, q := range h.missing {
			gets = append(gets, types.TransactGetItem{Get: &types.Get{TableName: &st.table, Key: key(ref.logPK(), q)}})
		}
	}
	for attempt := 1; ; attempt++ {
		out, err := st.db.TransactGetItems(ctx, &awsdynamodb.TransactGetItemsInput{TransactItems: gets}, st.dbOpt)
		var cancelled *types.TransactionCanceledException
		switch {
		case err == nil && len(out.Responses) != len(gets):
			return nil, fmt.Errorf("%s: TransactGetItems answered %d items of %d", op, len(out.Responses), len(gets))
		case err == nil:
			found, before, err := foundEntries(op, holes, out.Responses, sizes)
			if err != nil || before == nil {
				return found, err
			}
			st.log.Debug("log read ordered before a transaction the page saw; reading again", "collection", ref.String(), "record", before.id, "seq", before.seq)
		case errors.As(err, &cancelled) && slices.Contains(reasonCodes(cancelled.CancellationReasons), "ValidationError"):
			// Not a transaction in progress: reading again would meet it
			// again (fillHoles reads fewer transactions at a time).
			return nil, translate(ctx, op, err)
		case errors.As(err, &cancelled):
			st.log.Debug("log read cancelled; reading again", "collection", ref.String(), "attempt", attempt, "reasons", reasonCodes(cancelled.CancellationReasons))
		default:
			return nil, translate(ctx, op, err)
		}
		if attempt >= st.maxAttempts {
			return nil, fmt.Errorf("%s: %w: the entries of a transaction in progress still unread after %d attempts", op, stores.ErrUnavailable, attempt)
		}
		if err := sleep(ctx, backoff(attempt)); err != nil {
			return nil, err
		}
	}
}

// foundEntries decodes what readHoles read: the log items found, or
// before, the transaction whose record item shows the read ordered before
// it.
func foundEntries(op string, holes []hole, resps []types.ItemResponse, sizes map[uint64]int) (found []stores.Entry, before *txRead, err error) {
	i := 0
	for _, h := range holes {
		rec := resps[i].Item
		i++
		seq := uint64(0)
		if rec != nil {
			if seq, err = getN(rec, attrSeq); err != nil {
				return nil, nil, fmt.Errorf("%s: record item of %q: %w", op, h.tx.id, err)
			}
		}
		entry := resps[i].Item
		i++
		if seq < h.tx.seq && entry == nil {
			// The record item from before the transaction the page
			// saw, and that transaction's entry not there: it is in
			// progress (or compacted since), read again. With the entry
			// there, this serializable read saw the transaction whole,
			// and a record item below it is a table restored from a
			// backup that kept no transaction together: reading again
			// would meet it for ever, and the entries missing are not
			// coming.
			return nil, h.tx, nil
		}
		for range h.missing {
			item := resps[i].Item
			i++
			if item == nil {
				continue // compacted by a later transaction
			}
			id, _ := item[attrID].(*types.AttributeValueMemberS)
			if id == nil {
				return nil, nil, fmt.Errorf("%s: log item without a record id", op)
			}
			e, err := decodeEntry(item, id.Value, attrSK)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: log item of %q: %w", op, id.Value, err)
			}
			if raw, ok := item[attrRec].(*types.AttributeValueMemberB); ok {
				sizes[e.Seq] = len(raw.Value)
			}
			found = append(found, e)
		}
	}
	return found, nil, nil
}
