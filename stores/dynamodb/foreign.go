package dynamodb

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	st "github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/internal/bug"
)

// seqDigits is the width the stream sequence number is padded to inside a
// captured change's replica id (and in the capture ledger): DynamoDB
// Streams sequence numbers are 21 to 40 decimal digits, and padding makes
// byte order equal numeric order.
const seqDigits = 40

// padSeq checks a stream sequence number and pads it to seqDigits.
func padSeq(seqNum string) (string, error) {
	if seqNum == "" || len(seqNum) > seqDigits || strings.Trim(seqNum, "0123456789") != "" {
		return "", fmt.Errorf("stream sequence number %q is not 1 to %d digits", seqNum, seqDigits)
	}
	return strings.Repeat("0", seqDigits-len(seqNum)) + seqNum, nil
}

// captureStamp is the stamp of a captured foreign write: at is its time,
// after the record's largest stamp at the clock of the first capturing
// server to see the stream record (consumer.handle; kept in the capture
// ledger, ledger.go), and the replica id is prefix, '-' and the padded
// sequence number, which no client can own (client ids have no '-' in
// their first 16 characters) and which orders two captures of one time
// like the stream orders them.
func captureStamp(prefix string, at crdt.Timestamp, seq40 string) (crdt.Stamp, error) {
	stamp := crdt.Stamp{Wall: min(max(at.Wall, 0), crdt.MaxWall), Logical: at.Logical, Replica: prefix + "-" + seq40}
	if err := stamp.Validate(); err != nil {
		return crdt.Stamp{}, err
	}
	return stamp, nil
}

// foreignWrite is a stream record of a foreign item (an item some other
// program wrote directly to the table, following the convention of the
// package doc), mapped and checked but not yet stamped.
type foreignWrite struct {
	coll, id string
	key      string // the item's partition key, for logs
	seq40    string // the record's padded sequence number
	created  time.Time
	deleted  bool
	set      map[string][]byte // fields the write set, with their values
	unset    []string          // fields the write removed
}

// empty reports whether the write changed no field (an UpdateItem that set
// an attribute to the value it had).
func (w foreignWrite) empty() bool { return !w.deleted && len(w.set) == 0 && len(w.unset) == 0 }

// change stamps the write.
func (w foreignWrite) change(stamp crdt.Stamp) crdt.Change {
	r := crdt.Record{ID: w.id}
	if w.deleted {
		r.Deleted = stamp
		return crdt.Change{Collection: w.coll, Record: r}
	}
	r.Fields = make(map[string]crdt.Field, len(w.set)+len(w.unset))
	for name, v := range w.set {
		r.Fields[name] = crdt.Field{Stamp: stamp, Value: v}
	}
	for _, name := range w.unset {
		r.Fields[name] = crdt.Field{Stamp: stamp}
	}
	return crdt.Change{Collection: w.coll, Record: r}
}

// keyKind says what a stream record's item is.
type keyKind int

const (
	keyOwn     keyKind = iota // one of Convergo's items (pk starts with '~')
	keyForeign                // a foreign item: pk "COLL#ID", sk 0
	keyOther                  // anything else: not captured, counted
)

// classify reads a stream record's key.
func classify(sr *st.StreamRecord) (kind keyKind, pk string) {
	pkv, _ := sr.Keys[attrPK].(*st.AttributeValueMemberS)
	skv, _ := sr.Keys[attrSK].(*st.AttributeValueMemberN)
	if pkv == nil {
		return keyOther, ""
	}
	if strings.HasPrefix(pkv.Value, ownPrefix) {
		return keyOwn, pkv.Value
	}
	if skv == nil || skv.Value != "0" {
		return keyOther, pkv.Value
	}
	if _, _, ok := splitForeignPK(pkv.Value); !ok {
		return keyOther, pkv.Value
	}
	return keyForeign, pkv.Value
}

// readForeign maps a stream record of a foreign item to the write it made.
// ok is false, with a nil error, for records that are not about foreign
// items. An error means the record is about a foreign item but cannot
// become a change (an attribute that maps to no valid field, a MODIFY
// without its old image); the consumer reports it and skips the record,
// never applying part of it.
//
// Only what the write changed becomes a change: an attribute of the new
// image whose value differs from the old image's (or that the old image
// lacks) sets its field, an attribute of the old image missing from the new
// one unsets its field, and everything else is left to the fields' own
// stamps. So a foreign SET done = true cannot overwrite a newer title, and
// after a client delete it revives done alone.
//
// A bug (a panic) met mapping the record is its error, wrapping
// bug.ErrPanic: the consumer's goroutine, which no one recovers, rejects
// that record alone and goes on.
func readForeign(rec st.Record) (w foreignWrite, ok bool, err error) {
	err = bug.Recovered(func() (err error) {
		w, ok, err = mapForeign(rec)
		return err
	})
	if err != nil {
		return foreignWrite{}, false, err
	}
	return w, ok, nil
}

// mapForeign is readForeign, unrecovered.
func mapForeign(rec st.Record) (w foreignWrite, ok bool, err error) {
	sr := rec.Dynamodb
	if sr == nil {
		return foreignWrite{}, false, nil
	}
	kind, pk := classify(sr)
	if kind != keyForeign {
		return foreignWrite{}, false, nil
	}
	w.coll, w.id, _ = splitForeignPK(pk)
	w.key = pk
	fail := func(err error) (foreignWrite, bool, error) {
		return foreignWrite{}, false, fmt.Errorf("foreign item %s: %w", pk, err)
	}
	if w.seq40, err = padSeq(str(sr.SequenceNumber)); err != nil {
		return fail(err)
	}
	if sr.ApproximateCreationDateTime != nil {
		w.created = *sr.ApproximateCreationDateTime
	}
	switch rec.EventName {
	case st.OperationTypeRemove:
		w.deleted = true
		return w, true, nil
	case st.OperationTypeInsert, st.OperationTypeModify:
	default:
		return foreignWrite{}, false, nil
	}
	if sr.NewImage == nil {
		return fail(fmt.Errorf("%s record without a new image (the stream must show NEW_AND_OLD_IMAGES)", rec.EventName))
	}
	if rec.EventName == st.OperationTypeModify && sr.OldImage == nil {
		// Without the old image every attribute would look written, and an
		// old value would overwrite a newer one or revive a deleted record.
		return fail(errors.New("MODIFY record without its old image: capture needs a stream of NEW_AND_OLD_IMAGES"))
	}
	w.set = map[string][]byte{}
	for name, av := range sr.NewImage {
		if name == attrPK || name == attrSK {
			continue
		}
		var old []byte
		if oav, had := sr.OldImage[name]; had {
			old, _ = attributeCBOR(oav) // an unmappable old value differs from any new one
		}
		if err := crdt.ValidateFieldName(name); err != nil {
			if old != nil && sameAttribute(old, av) {
				continue // reported when it was written; untouched since
			}
			return fail(err)
		}
		v, err := attributeCBOR(av)
		if err != nil {
			return fail(fmt.Errorf("attribute %q: %w", name, err))
		}
		if old != nil && bytes.Equal(old, v) {
			continue // unchanged: its field keeps its own stamp
		}
		w.set[name] = v
	}
	for name := range sr.OldImage {
		if _, still := sr.NewImage[name]; still || name == attrPK || name == attrSK {
			continue
		}
		if crdt.ValidateFieldName(name) != nil {
			continue // it never became a field
		}
		w.unset = append(w.unset, name)
	}
	slices.Sort(w.unset)
	// Check the change as it will be, with a stand-in stamp.
	probe := w.change(crdt.Stamp{Wall: 1, Replica: "probe"})
	if err := probe.Record.Validate(); err != nil {
		return fail(err)
	}
	return w, true, nil
}

func sameAttribute(old []byte, av st.AttributeValue) bool {
	v, err := attributeCBOR(av)
	return err == nil && bytes.Equal(old, v)
}

// attributeCBOR maps a DynamoDB attribute value to a field value: one CBOR
// data item in Convergo's deterministic encoding.
func attributeCBOR(av st.AttributeValue) ([]byte, error) {
	v, err := attributeValue(av, 0)
	if err != nil {
		return nil, err
	}
	enc, err := crdt.EncodeValue(v)
	if err != nil {
		return nil, err
	}
	if err := crdt.CanonicalValue(enc); err != nil {
		return nil, err
	}
	return enc, nil
}

// maxAttributeDepth bounds nesting of lists and maps inside one attribute,
// leaving room for the record's own levels within crdt.MaxNestedLevels.
const maxAttributeDepth = crdt.MaxNestedLevels - 5

// attributeValue maps an attribute value to the Go value whose CBOR
// encoding is the field value (see the package doc for the table).
func attributeValue(av st.AttributeValue, depth int) (any, error) {
	if depth > maxAttributeDepth {
		return nil, fmt.Errorf("%w: nested deeper than %d levels", crdt.ErrInvalid, maxAttributeDepth)
	}
	switch v := av.(type) {
	case *st.AttributeValueMemberS:
		return v.Value, nil
	case *st.AttributeValueMemberN:
		return parseNumber(v.Value)
	case *st.AttributeValueMemberB:
		return bytes.Clone(v.Value), nil
	case *st.AttributeValueMemberBOOL:
		return v.Value, nil
	case *st.AttributeValueMemberNULL:
		return nil, nil
	case *st.AttributeValueMemberL:
		out := make([]any, len(v.Value))
		for i, e := range v.Value {
			x, err := attributeValue(e, depth+1)
			if err != nil {
				return nil, err
			}
			out[i] = x
		}
		return out, nil
	case *st.AttributeValueMemberM:
		out := make(map[string]any, len(v.Value))
		for k, e := range v.Value {
			x, err := attributeValue(e, depth+1)
			if err != nil {
				return nil, err
			}
			out[k] = x
		}
		return out, nil
	case *st.AttributeValueMemberSS:
		return slices.Sorted(slices.Values(v.Value)), nil
	case *st.AttributeValueMemberBS:
		out := slices.Clone(v.Value)
		slices.SortFunc(out, bytes.Compare)
		return out, nil
	case *st.AttributeValueMemberNS:
		type num struct {
			v any
			f float64
			s string
		}
		nums := make([]num, len(v.Value))
		for i, s := range v.Value {
			x, err := parseNumber(s)
			if err != nil {
				return nil, err
			}
			f, _ := strconv.ParseFloat(s, 64)
			nums[i] = num{x, f, s}
		}
		slices.SortFunc(nums, func(a, b num) int {
			if c := cmpFloat(a.f, b.f); c != 0 {
				return c
			}
			return strings.Compare(a.s, b.s)
		})
		out := make([]any, len(nums))
		for i, x := range nums {
			out[i] = x.v
		}
		return out, nil
	case nil:
		return nil, fmt.Errorf("%w: missing attribute value", crdt.ErrInvalid)
	default:
		return nil, fmt.Errorf("%w: unsupported attribute type %T", crdt.ErrInvalid, av)
	}
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// parseNumber maps a DynamoDB number (up to 38 significant digits, exponent
// -130 to +125) to an integer when it is one that fits 64 bits, else to the
// nearest float64. Numbers that need more precision than float64 lose it;
// the package doc says so.
func parseNumber(s string) (any, error) {
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return i, nil
	}
	if u, err := strconv.ParseUint(s, 10, 64); err == nil {
		return u, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil && !isRange(err) {
		return nil, fmt.Errorf("%w: number %q: %v", crdt.ErrInvalid, s, err)
	}
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return nil, fmt.Errorf("%w: number %q out of float64 range", crdt.ErrInvalid, s)
	}
	if f == math.Trunc(f) && math.Abs(f) < 1<<63 {
		return int64(f), nil // "1.0e3" is the integer 1000
	}
	return f, nil
}

func isRange(err error) bool {
	ne, ok := err.(*strconv.NumError)
	return ok && ne.Err == strconv.ErrRange
}
