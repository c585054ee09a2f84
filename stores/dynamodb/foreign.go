package dynamodb

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	st "github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"

	"github.com/convergo/convergo/crdt"
)

// seqDigits is the width the stream sequence number is padded to inside a
// derived stamp's replica id: DynamoDB Streams sequence numbers are 21 to 40
// decimal digits, and padding makes byte order equal numeric order.
const seqDigits = 40

// streamStamp derives the stamp of a foreign write from its stream record:
// the wall time is the record's ApproximateCreationDateTime and the replica
// id is prefix, '-' and the zero-padded sequence number. Two deliveries of
// one stream record give one stamp, so applying a duplicate changes nothing;
// two writes to one item in the same second are ordered by their sequence
// numbers, which DynamoDB Streams orders per item.
func streamStamp(prefix string, created time.Time, seqNum string) (crdt.Stamp, error) {
	if seqNum == "" || len(seqNum) > seqDigits || strings.Trim(seqNum, "0123456789") != "" {
		return crdt.Stamp{}, fmt.Errorf("stream sequence number %q is not 1 to %d digits", seqNum, seqDigits)
	}
	wall := min(max(created.UnixMilli(), 0), crdt.MaxWall)
	stamp := crdt.Stamp{
		Wall:    wall,
		Replica: prefix + "-" + strings.Repeat("0", seqDigits-len(seqNum)) + seqNum,
	}
	if err := stamp.Validate(); err != nil {
		return crdt.Stamp{}, err
	}
	return stamp, nil
}

// foreignChange turns a stream record of a foreign item (an item some other
// program wrote directly to the table, following the convention of the
// package doc) into a change. ok is false, with a nil error, for records
// that are not about foreign items: Convergo's own items and keys outside
// the convention. An error means the record is about a foreign item but
// cannot become a change (an attribute that maps to no valid field); the
// consumer logs it and skips the record, never applying part of it.
func foreignChange(prefix string, rec st.Record) (change crdt.Change, ok bool, err error) {
	sr := rec.Dynamodb
	if sr == nil {
		return crdt.Change{}, false, nil
	}
	pkv, _ := sr.Keys[attrPK].(*st.AttributeValueMemberS)
	skv, _ := sr.Keys[attrSK].(*st.AttributeValueMemberN)
	if pkv == nil || skv == nil || skv.Value != "0" {
		return crdt.Change{}, false, nil
	}
	coll, id, isForeign := splitForeignPK(pkv.Value)
	if !isForeign {
		return crdt.Change{}, false, nil
	}
	if _, marked := sr.NewImage[attrCvg]; marked {
		return crdt.Change{}, false, nil
	}
	var created time.Time
	if sr.ApproximateCreationDateTime != nil {
		created = *sr.ApproximateCreationDateTime
	}
	seqNum := ""
	if sr.SequenceNumber != nil {
		seqNum = *sr.SequenceNumber
	}
	stamp, err := streamStamp(prefix, created, seqNum)
	if err != nil {
		return crdt.Change{}, false, fmt.Errorf("foreign item %s: %w", pkv.Value, err)
	}

	r := crdt.Record{ID: id}
	switch rec.EventName {
	case st.OperationTypeRemove:
		r.Deleted = stamp
	case st.OperationTypeInsert, st.OperationTypeModify:
		if sr.NewImage == nil {
			return crdt.Change{}, false, fmt.Errorf("foreign item %s: %s record without a new image (the stream must show NEW_IMAGE or NEW_AND_OLD_IMAGES)", pkv.Value, rec.EventName)
		}
		r.Fields = make(map[string]crdt.Field, len(sr.NewImage))
		for name, av := range sr.NewImage {
			if name == attrPK || name == attrSK {
				continue
			}
			if err := crdt.ValidateFieldName(name); err != nil {
				return crdt.Change{}, false, fmt.Errorf("foreign item %s: %w", pkv.Value, err)
			}
			v, err := attributeCBOR(av)
			if err != nil {
				return crdt.Change{}, false, fmt.Errorf("foreign item %s: attribute %q: %w", pkv.Value, name, err)
			}
			r.Fields[name] = crdt.Field{Stamp: stamp, Value: v}
		}
		// An attribute the write removed (an UpdateItem REMOVE, or a PutItem
		// that replaced the item without it) unsets its field.
		for name := range sr.OldImage {
			if _, still := sr.NewImage[name]; still || name == attrPK || name == attrSK {
				continue
			}
			if crdt.ValidateFieldName(name) != nil {
				continue // it never became a field
			}
			r.Fields[name] = crdt.Field{Stamp: stamp}
		}
	default:
		return crdt.Change{}, false, nil
	}
	if err := r.Validate(); err != nil {
		return crdt.Change{}, false, fmt.Errorf("foreign item %s: %w", pkv.Value, err)
	}
	return crdt.Change{Collection: coll, Record: r}, true, nil
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
