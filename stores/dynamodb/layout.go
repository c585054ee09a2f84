package dynamodb

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// Attribute names of the table layout (see the package doc).
const (
	attrPK   = "pk"   // partition key, S
	attrSK   = "sk"   // sort key, N
	attrRec  = "rec"  // encoded crdt.Record, B
	attrSeq  = "seq"  // record's sequence number, N
	attrID   = "id"   // record id of a log item, S
	attrHead = "head" // collection's head sequence number, N
	attrCvg  = "cvg"  // marks an item written by Convergo, N (layout version)
	attrK    = "k"    // a sharded collection's shard count, N (epoch and head items)
	attrTx   = "tx"   // the log seqs of a log entry's transaction, B (txread.go)
)

// layoutVersion is the value of attrCvg on every item Convergo writes.
const layoutVersion = "1"

// ownPrefix starts the partition key of every item Convergo writes. A
// collection name cannot start with '~', so no foreign item ("coll#id") can
// ever share a key with one of Convergo's items.
const ownPrefix = "~"

// Partition keys of Convergo's items.
func recordPK(coll, id string) string { return "~r#" + coll + "#" + id }
func headPK(coll string) string       { return "~h#" + coll }
func logPK(coll string) string        { return "~l#" + coll }

// logRef names one log of a collection: shard of shards. A collection of
// one shard keeps the layout's original keys (~h#COLL, ~l#COLL); shard i
// of K > 1 has ~h#COLL#i and ~l#COLL#i. ('#' is not allowed in a
// collection name, so the two never meet.)
type logRef struct {
	coll          string
	shard, shards int
}

func (r logRef) headPK() string {
	if r.shards <= 1 {
		return headPK(r.coll)
	}
	return headPK(r.coll) + "#" + strconv.Itoa(r.shard)
}

func (r logRef) logPK() string {
	if r.shards <= 1 {
		return logPK(r.coll)
	}
	return logPK(r.coll) + "#" + strconv.Itoa(r.shard)
}

func (r logRef) String() string {
	if r.shards <= 1 {
		return r.coll
	}
	return fmt.Sprintf("%s shard %d/%d", r.coll, r.shard, r.shards)
}

// DynamoDB limits the store respects.
const (
	// maxItemBytes is DynamoDB's item size limit (400 KB, counting
	// attribute names and values).
	maxItemBytes = 400 << 10
	// maxTxActions is the most actions one TransactWriteItems takes.
	maxTxActions = 100
	// maxTxBytes is the most data one TransactWriteItems takes (4 MB). The
	// store keeps well below it, leaving room for keys and expressions.
	maxTxBytes = 4 << 20
	// txBudgetBytes is what the store puts into one transaction at most.
	txBudgetBytes = maxTxBytes - 256<<10
	// maxBatchGetKeys is the most keys one BatchGetItem takes.
	maxBatchGetKeys = 100
	// maxTxGetItems is the most items one TransactGetItems reads.
	maxTxGetItems = 100
	// recordsPerTx is the most records one transaction can write: a new
	// record takes two actions (put record, put log entry), an existing one
	// three (and delete its old log entry), the head counter one. A group
	// reads this many records; its transaction takes as many as fit.
	recordsPerTx = (maxTxActions - 1) / 2
)

func s(v string) types.AttributeValue { return &types.AttributeValueMemberS{Value: v} }
func n(v uint64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatUint(v, 10)}
}
func b(v []byte) types.AttributeValue { return &types.AttributeValueMemberB{Value: v} }

func key(pk string, sk uint64) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{attrPK: s(pk), attrSK: n(sk)}
}

// itemSize is DynamoDB's size of an item: the UTF-8 length of every
// attribute name plus the size of its value (strings and binaries by length,
// numbers at most 21 bytes).
func itemSize(item map[string]types.AttributeValue) int {
	size := 0
	for name, v := range item {
		size += len(name)
		switch v := v.(type) {
		case *types.AttributeValueMemberS:
			size += len(v.Value)
		case *types.AttributeValueMemberB:
			size += len(v.Value)
		case *types.AttributeValueMemberN:
			size += 21
		default:
			size += 1
		}
	}
	return size
}

// recordItem is the item that holds a record's merged state.
func recordItem(coll string, e stores.Entry, enc []byte) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{
		attrPK: s(recordPK(coll, e.Record.ID)), attrSK: n(0),
		attrRec: b(enc), attrSeq: n(e.Seq), attrCvg: &types.AttributeValueMemberN{Value: layoutVersion},
	}
}

// logItem is the change-log entry of a record at its sequence number. It
// holds the record's state too, so that Pull is one Query.
func logItem(ref logRef, e stores.Entry, enc []byte) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{
		attrPK: s(ref.logPK()), attrSK: n(e.Seq),
		attrID: s(e.Record.ID), attrRec: b(enc), attrCvg: &types.AttributeValueMemberN{Value: layoutVersion},
	}
}

// Reading items. Every item read from the table is untrusted: a foreign
// program may have written anything under any key.

func getN(item map[string]types.AttributeValue, name string) (uint64, error) {
	v, ok := item[name].(*types.AttributeValueMemberN)
	if !ok {
		return 0, fmt.Errorf("attribute %q is missing or not a number", name)
	}
	u, err := strconv.ParseUint(v.Value, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("attribute %q: %v", name, err)
	}
	return u, nil
}

// decodeEntry reads a record item or a log item: its record (checked to be
// the record id wants) and sequence number (from seqAttr).
func decodeEntry(item map[string]types.AttributeValue, id string, seqAttr string) (stores.Entry, error) {
	seq, err := getN(item, seqAttr)
	if err != nil {
		return stores.Entry{}, err
	}
	raw, ok := item[attrRec].(*types.AttributeValueMemberB)
	if !ok {
		return stores.Entry{}, fmt.Errorf("attribute %q is missing or not binary", attrRec)
	}
	rec, err := crdt.DecodeRecord(raw.Value)
	if err != nil {
		return stores.Entry{}, err
	}
	if id != "" && rec.ID != id {
		return stores.Entry{}, fmt.Errorf("item holds record %q, want %q", rec.ID, id)
	}
	return stores.Entry{Seq: seq, Record: rec.Normalize()}, nil
}

// splitForeignPK splits the partition key of a foreign item, "coll#id", and
// checks both parts. ok is false for Convergo's own items and for keys that
// do not follow the convention.
func splitForeignPK(pk string) (coll, id string, ok bool) {
	if strings.HasPrefix(pk, ownPrefix) {
		return "", "", false
	}
	coll, id, found := strings.Cut(pk, "#")
	if !found || crdt.ValidateCollection(coll) != nil || crdt.ValidateID(id) != nil {
		return "", "", false
	}
	return coll, id, true
}
