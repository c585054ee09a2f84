package crdt

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"

	"github.com/fxamacker/cbor/v2"
)

// Decode limits. Every decode in Convergo, of a record, a change batch or a
// protocol message, goes through one DecMode built with these.
const (
	// MaxNestedLevels bounds nesting of arrays and maps in any decoded
	// message, envelopes and values together.
	MaxNestedLevels = 24
	// MaxValueNestedLevels bounds nesting of arrays and maps inside one
	// field value. It leaves MaxNestedLevels-MaxValueNestedLevels levels for
	// the envelopes a value travels in (a pull page or push batch, the
	// entry or change, the record, its field map and field array), so a
	// value CanonicalValue accepts decodes inside every message carrying it.
	MaxValueNestedLevels = 16
	// MaxContainerItems bounds the elements of one array and the pairs of
	// one map: the largest page of records or batch of changes, or the
	// largest array or map inside a value.
	MaxContainerItems = 16384
	// MaxFieldsPerRecord bounds the fields of one record.
	MaxFieldsPerRecord = 1024
	// MaxValueBytes bounds the encoded size of one field value.
	MaxValueBytes = 128 << 10
	// MaxRecordBytes bounds the encoded size of one record; it keeps a record
	// well inside DynamoDB's 400 KB item limit.
	MaxRecordBytes = 300 << 10
)

var (
	encMode cbor.EncMode
	// envEncMode encodes protocol envelopes: as encMode, but nil slices
	// and maps as empty ones, never null (MarshalEnvelope).
	envEncMode cbor.EncMode
	decMode    cbor.DecMode
	// envMode decodes protocol envelopes: as decMode, but map keys a
	// struct does not know are skipped (docs/protocol.md, "Encoding").
	envMode cbor.DecMode
)

// The modes are immutable and safe for concurrent use, so they are built
// once, here, and shared.
func init() {
	eo := cbor.CoreDetEncOptions() // RFC 8949 core deterministic encoding
	em, err := eo.EncMode()
	if err != nil {
		panic(err)
	}
	eo.NilContainers = cbor.NilContainerAsEmpty
	envEm, err := eo.EncMode()
	if err != nil {
		panic(err)
	}
	envEncMode = envEm
	var rejects []func(*cbor.SimpleValueRegistry) error
	for sv := 0; sv < 256; sv++ {
		if sv >= 20 && sv <= 22 || sv >= 24 && sv <= 31 {
			continue // false, true, null are values; 24..31 are not simple values
		}
		rejects = append(rejects, cbor.WithRejectedSimpleValue(cbor.SimpleValue(sv)))
	}
	simple, err := cbor.NewSimpleValueRegistryFromDefaults(rejects...)
	if err != nil {
		panic(err)
	}
	do := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   MaxNestedLevels,
		MaxArrayElements:  MaxContainerItems,
		MaxMapPairs:       MaxContainerItems,
		UTF8:              cbor.UTF8RejectInvalid,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		SimpleValues:      simple,
		BignumTag:         cbor.BignumTagForbidden,
	}
	dm, err := do.DecMode()
	if err != nil {
		panic(err)
	}
	do.ExtraReturnErrors = cbor.ExtraDecErrorNone
	env, err := do.DecMode()
	if err != nil {
		panic(err)
	}
	encMode, decMode, envMode = em, dm, env
}

// Marshal encodes v in deterministic CBOR. Protocol messages use it so that
// everything Convergo sends is encoded one way.
func Marshal(v any) ([]byte, error) {
	b, err := encMode.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("cbor encode: %w", err)
	}
	return b, nil
}

// Unmarshal decodes data into v with Convergo's hardened decode options.
// Every failure wraps ErrMalformed (or ErrInvalid/ErrTooLarge from types
// that validate themselves while decoding); it never panics.
func Unmarshal(data []byte, v any) error {
	// Records and changes, the bulk of every message, skip reflection.
	switch v := v.(type) {
	case *Record:
		r, err := decodeRecordFast(data)
		if err != nil {
			return err
		}
		*v = r
		return nil
	case *Change:
		c, err := decodeChangeFast(data)
		if err != nil {
			return err
		}
		*v = c
		return nil
	}
	if err := decMode.Unmarshal(data, v); err != nil {
		return wrapDecode(err)
	}
	return nil
}

// UnmarshalEnvelope decodes a protocol envelope (a request, an answer, a
// live message) into v like Unmarshal, except that map keys v's struct does
// not declare are skipped rather than refused, so that a later version of
// the protocol can add keys. The records, changes and stamps inside stay
// strict: their own decoders run as in Unmarshal.
// A known key whose value is null is malformed (nullKnownKey), as the
// codec would read it as the field's zero value.
func UnmarshalEnvelope(data []byte, v any) error {
	if err := envMode.Unmarshal(data, v); err != nil {
		return wrapDecode(err)
	}
	if t := reflect.TypeOf(v); t != nil && t.Kind() == reflect.Pointer {
		return nullKnownKey(data, t.Elem())
	}
	return nil
}

// MarshalEnvelope encodes a protocol envelope as Marshal does, but a nil
// slice or map as an empty one, never null: a known key is never null on
// the wire (docs/protocol.md, section 2; UnmarshalEnvelope refuses it).
func MarshalEnvelope(v any) ([]byte, error) {
	b, err := envEncMode.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("cbor encode: %w", err)
	}
	return b, nil
}

func wrapDecode(err error) error {
	if errors.Is(err, ErrInvalid) || errors.Is(err, ErrTooLarge) || errors.Is(err, ErrMalformed) {
		return err
	}
	return fmt.Errorf("%w: %v", ErrMalformed, err)
}

// CanonicalValue checks that v is exactly one CBOR data item in the
// deterministic encoding Marshal produces, with no tags, no indefinite
// lengths and no simple values but false, true and null. Field values must
// be canonical so that equal values have equal bytes on every replica: the
// bytes are what replicas compare, store and send.
func CanonicalValue(v []byte) error {
	if len(v) == 0 {
		return fmt.Errorf("%w: empty value", ErrMalformed)
	}
	if len(v) > MaxValueBytes {
		return fmt.Errorf("%w: value of %d bytes exceeds %d", ErrTooLarge, len(v), MaxValueBytes)
	}
	c := cursor{b: v}
	if err := c.canonicalItem(0); err != nil {
		return err
	}
	if c.off != len(v) {
		return fmt.Errorf("%w: %d bytes after the value", ErrMalformed, len(v)-c.off)
	}
	return nil
}

// MarshalCBOR encodes f as [wall, logical, replica] when unset and
// [wall, logical, replica, value] when set.
func (f Field) MarshalCBOR() ([]byte, error) {
	return appendStamp(nil, f.Stamp, f.Value, f.Value != nil), nil
}

// UnmarshalCBOR decodes and validates a field.
func (f *Field) UnmarshalCBOR(data []byte) error {
	c := cursor{b: data}
	major, _, n, err := c.head()
	if err != nil {
		return err
	}
	if major != majorArray || (n != 3 && n != 4) {
		return fmt.Errorf("%w: field must be an array of 3 or 4 items", ErrMalformed)
	}
	var s Stamp
	major, _, wall, err := c.head()
	switch {
	case err != nil:
		return err
	case major == majorNegint:
		return fmt.Errorf("%w: negative wall time", ErrInvalid)
	case major != majorUint:
		return fmt.Errorf("%w: wall time is not an integer", ErrMalformed)
	case wall > MaxWall:
		return fmt.Errorf("%w: stamp wall time %d out of range", ErrInvalid, wall)
	}
	s.Wall = int64(wall)
	major, _, logical, err := c.head()
	switch {
	case err != nil:
		return err
	case major != majorUint || logical > MaxLogical:
		return fmt.Errorf("%w: logical counter is not a 32-bit unsigned integer", ErrMalformed)
	}
	s.Logical = uint32(logical)
	major, _, rlen, err := c.head()
	switch {
	case err != nil:
		return err
	case major != majorText || rlen > uint64(len(data)-c.off):
		return fmt.Errorf("%w: replica id is not a text string", ErrMalformed)
	}
	s.Replica = string(data[c.off : c.off+int(rlen)])
	c.off += int(rlen)
	if err := s.Validate(); err != nil {
		return err
	}
	if s.IsZero() {
		return fmt.Errorf("%w: field has a zero stamp", ErrInvalid)
	}
	f.Stamp, f.Value = s, nil
	if n == 4 {
		v, err := NormalizeValue(data[c.off:])
		if err != nil {
			return err
		}
		if &v[0] == &data[c.off] {
			v = bytes.Clone(v)
		}
		f.Value = v
		c.off = len(data)
	}
	if c.off != len(data) {
		return fmt.Errorf("%w: trailing bytes in field", ErrMalformed)
	}
	return nil
}

// MarshalCBOR encodes r as the map {1: id, 2: deleted, 3: {name: field}},
// leaving out a zero delete stamp and an empty field map.
func (r Record) MarshalCBOR() ([]byte, error) {
	return AppendRecord(nil, r), nil
}

// UnmarshalCBOR decodes and validates a record. The result is not
// normalized (see Normalize); merging normalizes. See decode_fast.go for
// what the decoder accepts and who owns the decoded bytes.
func (r *Record) UnmarshalCBOR(data []byte) error {
	if len(data) > MaxRecordBytes {
		return fmt.Errorf("%w: record of %d bytes exceeds %d", ErrTooLarge, len(data), MaxRecordBytes)
	}
	rec, err := decodeRecordFast(data)
	if err != nil {
		return err
	}
	*r = rec
	return nil
}

// MarshalCBOR encodes c as the map {1: collection, 2: record}.
func (c Change) MarshalCBOR() ([]byte, error) {
	return AppendChange(nil, c), nil
}

// UnmarshalCBOR decodes and validates a change.
func (c *Change) UnmarshalCBOR(data []byte) error {
	ch, err := decodeChangeFast(data)
	if err != nil {
		return err
	}
	*c = ch
	return nil
}

// Validate checks r as UnmarshalCBOR would: for records built in Go rather
// than decoded.
func (r Record) Validate() error {
	b, err := r.MarshalCBOR()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	var back Record
	return back.UnmarshalCBOR(b)
}

// EncodeRecord encodes r deterministically: equal records give equal bytes.
func EncodeRecord(r Record) ([]byte, error) { return r.MarshalCBOR() }

// DecodeRecord decodes and validates a record.
func DecodeRecord(data []byte) (Record, error) {
	r, err := decodeRecordFast(data)
	if err != nil {
		return Record{}, fmt.Errorf("decode record: %w", err)
	}
	return r, nil
}

// EncodeChanges encodes a batch of changes as a CBOR array.
func EncodeChanges(cs []Change) ([]byte, error) {
	b := appendHead(make([]byte, 0, 64*len(cs)+9), majorArray, uint64(len(cs)))
	for _, c := range cs {
		b = AppendChange(b, c)
	}
	return b, nil
}

// DecodeChanges decodes and validates a batch of changes.
func DecodeChanges(data []byte) ([]Change, error) {
	cs, err := decodeChangesFast(data)
	if err != nil {
		return nil, fmt.Errorf("decode changes: %w", err)
	}
	return cs, nil
}
