package crdt

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"
)

// This file holds the hand-written decoder of records, changes and change
// batches: the hot path of every push and every store read. It replaces
// fxamacker/cbor's reflection for these types and must accept exactly what
// that decoder, configured by decMode and the UnmarshalCBOR methods, accepts,
// produce the same values, and refuse the rest with the same sentinel error
// (ErrMalformed, ErrInvalid or ErrTooLarge). Differential tests and
// FuzzDecodeDifferential hold it to the reflection decoder.
//
// Decoding runs in two passes, as the reflection decoder does:
//
//  1. wellFormed checks the whole input against the decode limits
//     (nesting, container sizes, no tags, no indefinite lengths, only the
//     simple values false, true and null, no trailing bytes). Any failure
//     here is ErrMalformed and wins over every other error.
//  2. The typed pass reads the envelopes. It keeps the reflection
//     decoder's error precedence: within a map or array the first error is
//     kept and decoding goes on, except that an unknown or duplicate key
//     in a record or change map ends that map with ErrMalformed at once,
//     whatever came before it.
//
// What the envelopes accept is what the reflection decoder accepts,
// including its leniencies: integer heads need not be in shortest form and
// map keys need not be sorted, an envelope string or stamp element may be
// null (read as its zero value), and a null delete stamp or field map means
// "absent". Field arrays are read by the same strict rules as
// Field.UnmarshalCBOR.
//
// Ownership: a decoded record's field names and id share one string, and
// its field values share one byte array, copied from the input; the input
// is not retained. Each Value is capped (len == cap), so appending to one
// never overwrites another. Replica ids and collection names are interned
// per call. The price of few allocations: one kept name or value keeps all
// the names or values of its record in memory, at most MaxRecordBytes; a
// long-lived holder of a few fields of large records can copy them
// (strings.Clone, bytes.Clone).

// decodeRecordFast is DecodeRecord: the input is checked as a whole, then
// decoded as one record.
func decodeRecordFast(data []byte) (Record, error) {
	if err := wellFormed(data); err != nil {
		return Record{}, err
	}
	d := fastDecoder{b: data}
	r, _, err := d.record(0)
	return r, err
}

// decodeChangeFast is (*Change).UnmarshalCBOR.
func decodeChangeFast(data []byte) (Change, error) {
	if err := wellFormed(data); err != nil {
		return Change{}, err
	}
	d := fastDecoder{b: data}
	c, _, err := d.change(0)
	return c, err
}

// decodeChangesFast is DecodeChanges without its error prefix.
func decodeChangesFast(data []byte) ([]Change, error) {
	if err := wellFormed(data); err != nil {
		return nil, err
	}
	d := fastDecoder{b: data}
	major, _, n, off := readHead(data, 0)
	switch {
	case data[0] == 0xf6: // null decodes to a nil slice
		return nil, nil
	case major != majorArray:
		return nil, fmt.Errorf("%w: change batch is not an array", ErrMalformed)
	}
	cs := make([]Change, n)
	for i := range cs {
		c, end, err := d.change(off)
		if err != nil {
			return nil, err
		}
		cs[i] = c
		off = end
	}
	return cs, nil
}

// fastDecoder holds one input and the state reused across its records.
type fastDecoder struct {
	b []byte
	// The fields of the record being read: the first ones in small, which
	// lives where the decoder does (the caller's stack), the rest in more.
	small    [16]fieldDesc
	more     []fieldDesc
	nfields  int
	replicas internTable // replica ids
	colls    internTable // collection names
	// cmp is the message's compact form (nil: plain stamps); extra is how
	// many bytes the record being read grows by in the plain form.
	cmp   *Compact
	extra int
}

// internTable remembers the first strings made from the input so that
// equal ones share memory: a batch carries few replicas and collections.
type internTable struct {
	strs [8]string
	n    int
}

// fieldDesc locates one field of the record being read in the input.
type fieldDesc struct {
	name     span
	wall     int64
	logical  uint32
	replica  string
	value    span
	norm     []byte // the value normalized, when its input was not canonical
	hasValue bool
}

type span struct{ s, e int }

func (p span) len() int { return p.e - p.s }

var errUnknownKey = fmt.Errorf("%w: unknown or duplicate map key", ErrMalformed)

func malformed(what string) error { return fmt.Errorf("%w: %s", ErrMalformed, what) }

// keyAction is what an envelope map does with a key that names none of its
// fields, mirroring the reflection decoder's struct decoding.
type keyAction int

const (
	keyField keyAction = iota // a known integer key: decode its value
	keySkip                   // an error that does not end the map: skip the value
	keyAbort                  // unknown or duplicate key: the map fails now
)

// envelopeKey reads the key at off of a map decoded into a struct with
// integer keys 1..nkeys. It returns the field number, the action and the
// offset of the value.
func (d *fastDecoder) envelopeKey(off int, nkeys uint64) (field uint64, act keyAction, next int) {
	b := d.b
	major, _, arg, p := readHead(b, off)
	switch major {
	case majorText:
		if !utf8.Valid(b[p : p+int(arg)]) {
			return 0, keySkip, p + int(arg)
		}
		return 0, keyAbort, p + int(arg) // text never matches a keyasint field
	case majorBytes, majorArray, majorMap:
		// A byte string or container key cannot match a field nor be
		// remembered for duplicate detection: an error, and decoding goes
		// on.
		return 0, keySkip, skipItem(b, off)
	case majorUint:
		if arg > math.MaxInt64 {
			return 0, keySkip, p
		}
		if arg >= 1 && arg <= nkeys {
			return arg, keyField, p
		}
		return 0, keyAbort, p
	case majorNegint:
		if arg > math.MaxInt64 {
			return 0, keySkip, p
		}
		return 0, keyAbort, p
	}
	return 0, keyAbort, p // false, true, null and floats: unknown keys
}

// envelopeString decodes the item at s into a Go string as the reflection
// decoder does: a text string, null for "", anything else is an error. It
// returns the text's span and the end of the item (-1 if not known).
func (d *fastDecoder) envelopeString(s int) (span, int, error) {
	b := d.b
	if b[s] == 0xf6 {
		return span{}, s + 1, nil
	}
	major, _, arg, p := readHead(b, s)
	if major != majorText {
		return span{}, -1, malformed("expected a text string")
	}
	end := p + int(arg)
	if !utf8.Valid(b[p:end]) {
		return span{}, end, malformed("invalid UTF-8")
	}
	return span{p, end}, end, nil
}

// change decodes the change at s as (*Change).UnmarshalCBOR does. It
// returns the end of the item when it succeeds.
func (d *fastDecoder) change(s int) (Change, int, error) {
	b := d.b
	var (
		first error
		coll  span
		rec   Record
	)
	major, _, n, off := readHead(b, s)
	switch {
	case b[s] == 0xf6:
		off = s + 1
	case major != majorMap:
		return Change{}, 0, malformed("change is not a map")
	default:
		var seen [3]bool
		for range n {
			field, act, voff := d.envelopeKey(off, 2)
			switch act {
			case keyAbort:
				return Change{}, 0, errUnknownKey
			case keySkip:
				if first == nil {
					first = malformed("bad change map key")
				}
				off = skipItem(b, voff)
				continue
			}
			if seen[field] {
				return Change{}, 0, errUnknownKey
			}
			seen[field] = true
			var (
				err error
				end int
			)
			if field == 1 {
				coll, end, err = d.envelopeString(voff)
			} else {
				rec, end, err = d.record(voff)
			}
			if err != nil && first == nil {
				first = err
			}
			if end < 0 {
				end = skipItem(b, voff)
			}
			off = end
		}
	}
	if first != nil {
		return Change{}, 0, first
	}
	c := Change{Collection: d.intern(&d.colls, b[coll.s:coll.e]), Record: rec}
	if err := ValidateCollection(c.Collection); err != nil {
		return Change{}, 0, err
	}
	if rec.ID == "" {
		return Change{}, 0, fmt.Errorf("%w: change to %s has no record", ErrMalformed, c.Collection)
	}
	return c, off, nil
}

// record decodes the record at s as (*Record).UnmarshalCBOR does. It
// returns the end of the item, also with an error.
func (d *fastDecoder) record(s int) (Record, int, error) {
	r, end, err := d.recordBody(s)
	if end < 0 {
		end = skipItem(d.b, s)
	}
	// The size is checked before anything else is; a compact record's is
	// its plain size, as it will be stored.
	if size := end - s + d.extra; size > MaxRecordBytes {
		return Record{}, end, fmt.Errorf("%w: record of %d bytes exceeds %d", ErrTooLarge, size, MaxRecordBytes)
	}
	return r, end, err
}

// recordBody is record but for its size. The end it returns is -1 when it
// stopped early.
func (d *fastDecoder) recordBody(s int) (Record, int, error) {
	b := d.b
	var (
		first     error
		id        span
		del       Stamp
		hasDel    bool
		hasFields bool // key 3 held a map (not null)
	)
	d.nfields, d.more, d.extra = 0, d.more[:0], 0
	major, _, n, off := readHead(b, s)
	switch {
	case b[s] == 0xf6:
		off = s + 1
	case major != majorMap:
		return Record{}, -1, malformed("record is not a map")
	default:
		var seen [4]bool
		for range n {
			field, act, voff := d.envelopeKey(off, 3)
			switch act {
			case keyAbort:
				return Record{}, -1, errUnknownKey
			case keySkip:
				if first == nil {
					first = malformed("bad record map key")
				}
				off = skipItem(b, voff)
				continue
			}
			if seen[field] {
				return Record{}, -1, errUnknownKey
			}
			seen[field] = true
			var err error
			end := voff + 1 // null
			switch field {
			case 1:
				id, end, err = d.envelopeString(voff)
			case 2:
				if b[voff] != 0xf6 { // null leaves the pointer nil
					hasDel = true
					del, end, err = d.envelopeStamp(voff)
				}
			case 3:
				if b[voff] != 0xf6 { // null leaves the map nil
					hasFields, end, err = d.fieldMap(voff)
				}
			}
			if err != nil && first == nil {
				first = err
			}
			if end < 0 {
				end = skipItem(b, voff)
			}
			off = end
		}
	}
	if first != nil {
		return Record{}, off, first
	}
	r, err := d.build(id, hasFields)
	if err != nil {
		return Record{}, off, err
	}
	if err := ValidateID(r.ID); err != nil {
		return Record{}, off, err
	}
	if len(r.Fields) > MaxFieldsPerRecord {
		return Record{}, off, fmt.Errorf("%w: record %q has %d fields, more than %d", ErrTooLarge, r.ID, len(r.Fields), MaxFieldsPerRecord)
	}
	for i := range d.nfields {
		name := d.fieldAt(i).name
		if err := validateFieldNameBytes(b[name.s:name.e]); err != nil {
			return Record{}, off, err
		}
	}
	if hasDel {
		if del.IsZero() {
			return Record{}, off, fmt.Errorf("%w: record %q has an explicit zero delete stamp", ErrInvalid, r.ID)
		}
		if err := del.Validate(); err != nil {
			return Record{}, off, err
		}
		r.Deleted = del
	}
	return r, off, nil
}

// build makes the record from its id and d's fields: one
// string for the id and the names, one array for the values, one map.
// Duplicate names are ErrMalformed.
func (d *fastDecoder) build(id span, hasFields bool) (Record, error) {
	b := d.b
	size, vsize := id.len(), 0
	for i := range d.nfields {
		fd := d.fieldAt(i)
		size += fd.name.len()
		if fd.hasValue {
			vsize += fd.value.len() + len(fd.norm)
		}
	}
	var sb strings.Builder
	sb.Grow(size)
	sb.Write(b[id.s:id.e])
	for i := range d.nfields {
		fd := d.fieldAt(i)
		sb.Write(b[fd.name.s:fd.name.e])
	}
	str := sb.String()
	r := Record{ID: str[:id.len()]}
	if !hasFields {
		return r, nil
	}
	var values []byte
	if vsize > 0 {
		values = make([]byte, 0, vsize)
	}
	r.Fields = make(map[string]Field, d.nfields)
	pos := id.len()
	for i := range d.nfields {
		fd := d.fieldAt(i)
		name := str[pos : pos+fd.name.len()]
		pos += fd.name.len()
		f := Field{Stamp: Stamp{Wall: fd.wall, Logical: fd.logical, Replica: fd.replica}}
		if fd.hasValue {
			vs := len(values)
			if fd.norm != nil {
				values = append(values, fd.norm...)
			} else {
				values = append(values, b[fd.value.s:fd.value.e]...)
			}
			f.Value = values[vs:len(values):len(values)]
		}
		r.Fields[name] = f
		if len(r.Fields) != i+1 {
			return Record{}, errUnknownKey
		}
	}
	return r, nil
}

func (d *fastDecoder) addField(fd fieldDesc) {
	if d.nfields < len(d.small) {
		d.small[d.nfields] = fd
	} else {
		d.more = append(d.more, fd)
	}
	d.nfields++
}

func (d *fastDecoder) fieldAt(i int) *fieldDesc {
	if i < len(d.small) {
		return &d.small[i]
	}
	return &d.more[i-len(d.small)]
}

// fieldMap reads the field map at off (a non-null item) into d's fields. It
// reports whether the item was a map. Errors follow the reflection
// decoder's map decoding: the first error of an entry is kept and the map
// read on; a duplicate name among the entries that decoded makes the map
// ErrMalformed whatever else went wrong.
func (d *fastDecoder) fieldMap(off int) (bool, int, error) {
	b := d.b
	major, _, n, p := readHead(b, off)
	if major != majorMap {
		return false, -1, malformed("record fields are not a map")
	}
	if more := int(n) - len(d.small); more > cap(d.more) {
		d.more = make([]fieldDesc, 0, more)
	}
	var first error
	for range n {
		var name span
		if b[p] == 0xf6 {
			name = span{p + 1, p + 1} // a null key decodes as ""
			p++
		} else {
			kmajor, _, klen, kp := readHead(b, p)
			if kmajor != majorText {
				p = skipItem(b, skipItem(b, p))
				if first == nil {
					first = malformed("field name is not a text string")
				}
				continue
			}
			name = span{kp, kp + int(klen)}
			p = name.e
			if !utf8.Valid(b[name.s:name.e]) {
				p = skipItem(b, p)
				if first == nil {
					first = malformed("field name is not valid UTF-8")
				}
				continue
			}
		}
		fd, end, err := d.field(p)
		if end < 0 {
			end = skipItem(b, p)
		}
		p = end
		if err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		fd.name = name
		d.addField(fd)
	}
	if first != nil {
		if !errorIsMalformed(first) && d.hasDuplicateName() {
			return true, p, errUnknownKey
		}
		return true, p, first
	}
	return true, p, nil
}

func errorIsMalformed(err error) bool { return errors.Is(err, ErrMalformed) }

func (d *fastDecoder) hasDuplicateName() bool {
	seen := make(map[string]struct{}, d.nfields)
	for i := range d.nfields {
		name := d.fieldAt(i).name
		seen[string(d.b[name.s:name.e])] = struct{}{}
	}
	return len(seen) != d.nfields
}

// field reads the field array at s by the rules of (*Field).UnmarshalCBOR.
// It returns the end of the item, or -1 with an error.
func (d *fastDecoder) field(s int) (fieldDesc, int, error) {
	// The input is well-formed, so the cursor cannot run past the item.
	c := cursor{b: d.b, off: s}
	major, _, n, err := c.head()
	if err != nil {
		return fieldDesc{}, -1, err
	}
	if major != majorArray || (n != 3 && n != 4) {
		return fieldDesc{}, -1, fmt.Errorf("%w: field must be an array of 3 or 4 items", ErrMalformed)
	}
	major, _, wall, err := c.head()
	if err == nil && major == majorUint && d.cmp != nil && d.cmp.hasBase {
		d.extra -= HeadLen(wall)
		if wall > MaxWall {
			wall = MaxWall + 1 // out of range, whatever the base
		} else {
			wall += uint64(d.cmp.base)
		}
		d.extra += HeadLen(wall)
	}
	switch {
	case err != nil:
		return fieldDesc{}, -1, err
	case major == majorNegint:
		return fieldDesc{}, -1, fmt.Errorf("%w: negative wall time", ErrInvalid)
	case major != majorUint:
		return fieldDesc{}, -1, fmt.Errorf("%w: wall time is not an integer", ErrMalformed)
	case wall > MaxWall:
		return fieldDesc{}, -1, fmt.Errorf("%w: stamp wall time %d out of range", ErrInvalid, wall)
	}
	major, _, logical, err := c.head()
	switch {
	case err != nil:
		return fieldDesc{}, -1, err
	case major != majorUint || logical > MaxLogical:
		return fieldDesc{}, -1, fmt.Errorf("%w: logical counter is not a 32-bit unsigned integer", ErrMalformed)
	}
	major, _, rlen, err := c.head()
	var replica string
	switch {
	case err != nil:
		return fieldDesc{}, -1, err
	case major == majorUint && d.cmp != nil:
		if replica, err = d.cmp.replica(rlen); err != nil {
			return fieldDesc{}, -1, err
		}
		d.extra += HeadLen(uint64(len(replica))) + len(replica) - HeadLen(rlen)
	case major != majorText:
		return fieldDesc{}, -1, fmt.Errorf("%w: replica id is not a text string", ErrMalformed)
	default:
		rep := d.b[c.off : c.off+int(rlen)]
		c.off += int(rlen)
		if wall == 0 && logical == 0 && len(rep) == 0 {
			return fieldDesc{}, -1, fmt.Errorf("%w: field has a zero stamp", ErrInvalid)
		}
		if !validReplicaBytes(rep) {
			return fieldDesc{}, -1, ValidateReplica(string(rep))
		}
		replica = d.intern(&d.replicas, rep)
	}
	fd := fieldDesc{wall: int64(wall), logical: uint32(logical), replica: replica}
	if n == 4 {
		// CanonicalValue, with its size check first; a value in another
		// encoding is normalized (NormalizeValue) into bytes of its own.
		vs := c.off
		if err := c.canonicalItem(0); err != nil {
			ve := skipItem(d.b, vs)
			if err != errNonCanonical {
				if ve-vs > MaxValueBytes {
					return fieldDesc{}, -1, fmt.Errorf("%w: value of %d bytes exceeds %d", ErrTooLarge, ve-vs, MaxValueBytes)
				}
				return fieldDesc{}, -1, err
			}
			norm, err := NormalizeValue(d.b[vs:ve])
			if err != nil {
				return fieldDesc{}, -1, err
			}
			fd.norm, fd.hasValue = norm, true
			return fd, ve, nil
		}
		if c.off-vs > MaxValueBytes {
			return fieldDesc{}, -1, fmt.Errorf("%w: value of %d bytes exceeds %d", ErrTooLarge, c.off-vs, MaxValueBytes)
		}
		fd.value, fd.hasValue = span{vs, c.off}, true
	}
	return fd, c.off, nil
}

// envelopeStamp decodes the delete stamp at off (a non-null item) as the
// reflection decoder decodes a Stamp: an array of exactly three elements;
// wall an int64, logical a uint32 and replica a string, each of which may
// also be null for zero; integer heads in any length.
func (d *fastDecoder) envelopeStamp(off int) (Stamp, int, error) {
	b := d.b
	major, _, n, p := readHead(b, off)
	if major != majorArray || n != 3 {
		return Stamp{}, -1, malformed("delete stamp is not an array of 3 items")
	}
	var (
		s     Stamp
		first error
	)
	fail := func(what string) {
		if first == nil {
			first = malformed(what)
		}
	}
	// wall: int64
	if d.cmp != nil && d.cmp.hasBase {
		// The difference to the base: a uint (a plain stamp's leniencies
		// are for the reflection decoder's sake; no compact message has one).
		m, _, arg, _ := readHead(b, p)
		switch {
		case m != majorUint:
			fail("wall time is not a uint difference to the base")
		case arg > MaxWall:
			s.Wall = MaxWall + 1 // out of range, whatever the base
		default:
			s.Wall = d.cmp.base + int64(arg)
		}
		d.extra += HeadLen(uint64(s.Wall)) - HeadLen(arg)
	} else if b[p] != 0xf6 {
		m, _, arg, _ := readHead(b, p)
		switch {
		case m == majorUint && arg <= math.MaxInt64:
			s.Wall = int64(arg)
		case m == majorNegint && arg <= math.MaxInt64:
			s.Wall = -1 - int64(arg)
		default:
			fail("wall time is not an integer")
		}
	}
	p = skipItem(b, p)
	// logical: uint32
	if b[p] != 0xf6 {
		m, _, arg, _ := readHead(b, p)
		switch {
		case m == majorUint && arg <= math.MaxUint32:
			s.Logical = uint32(arg)
		default:
			fail("logical counter is not a 32-bit unsigned integer")
		}
	}
	p = skipItem(b, p)
	// replica: string, or in a compact message an index into its table
	if b[p] != 0xf6 {
		m, _, arg, q := readHead(b, p)
		switch {
		case m == majorText && utf8.Valid(b[q:q+int(arg)]):
			s.Replica = d.intern(&d.replicas, b[q:q+int(arg)])
		case m == majorUint && d.cmp != nil:
			rep, err := d.cmp.replica(arg)
			if err != nil && first == nil {
				first = err
			}
			s.Replica = rep
			d.extra += HeadLen(uint64(len(rep))) + len(rep) - HeadLen(arg)
		default:
			fail("replica id is not a text string")
		}
	}
	return s, skipItem(b, p), first
}

// intern returns s as a string, reusing an earlier one with the same bytes.
func (d *fastDecoder) intern(table *internTable, s []byte) string {
	for _, t := range table.strs[:table.n] {
		if t == string(s) {
			return t
		}
	}
	str := string(s)
	if table.n < len(table.strs) {
		table.strs[table.n] = str
		table.n++
	}
	return str
}

// validReplicaBytes is ValidateReplica's test without the allocation.
func validReplicaBytes(id []byte) bool {
	if len(id) == 0 || len(id) > MaxReplicaBytes {
		return false
	}
	for _, c := range id {
		if !isAlnum(c) && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// validateFieldNameBytes is ValidateFieldName for names in the input; the
// common all-printable-ASCII case is checked without converting.
func validateFieldNameBytes(name []byte) error {
	if len(name) > 0 && len(name) <= MaxFieldNameBytes {
		ok := true
		for _, c := range name {
			if c < 0x20 || c >= 0x7f {
				ok = false
				break
			}
		}
		if ok {
			return nil
		}
	}
	return ValidateFieldName(string(name))
}

// readHead reads the head at off of well-formed input, in any length. It
// returns the major type, the additional information, the argument and the
// offset after the head.
func readHead(b []byte, off int) (major, info byte, arg uint64, next int) {
	ib := b[off]
	major, info = ib>>5, ib&0x1f
	off++
	switch info {
	case 24:
		return major, info, uint64(b[off]), off + 1
	case 25:
		return major, info, uint64(b[off])<<8 | uint64(b[off+1]), off + 2
	case 26:
		return major, info, uint64(b[off])<<24 | uint64(b[off+1])<<16 | uint64(b[off+2])<<8 | uint64(b[off+3]), off + 4
	case 27:
		var v uint64
		for _, x := range b[off : off+8] {
			v = v<<8 | uint64(x)
		}
		return major, info, v, off + 8
	}
	return major, info, uint64(info), off
}

// skipItem returns the offset after the item at off of well-formed input.
func skipItem(b []byte, off int) int {
	major, _, arg, p := readHead(b, off)
	switch major {
	case majorBytes, majorText:
		return p + int(arg)
	case majorArray:
		for range arg {
			p = skipItem(b, p)
		}
	case majorMap:
		for range arg {
			p = skipItem(b, skipItem(b, p))
		}
	}
	return p
}

// wellFormed checks data as the reflection decoder's well-formedness pass
// does with decMode's options: exactly one item, definite lengths, no
// tags, only false, true and null among the simple values, at most
// MaxNestedLevels of arrays and maps and MaxContainerItems items each.
// Failures are ErrMalformed.
func wellFormed(data []byte) error {
	if len(data) == 0 {
		return malformed("no data")
	}
	off, err := wellFormedItem(data, 0, 0)
	if err != nil {
		return err
	}
	if off != len(data) {
		return fmt.Errorf("%w: %d bytes of extraneous data at %d", ErrMalformed, len(data)-off, off)
	}
	return nil
}

var (
	errTruncated = malformed("unexpected end of data")
	errNotWell   = malformed("not well-formed CBOR or not allowed by the decode limits")
)

func wellFormedItem(b []byte, off, depth int) (int, error) {
	if off >= len(b) {
		return 0, errTruncated
	}
	ib := b[off]
	major, info := ib>>5, ib&0x1f
	off++
	var arg uint64
	switch {
	case info < 24:
		arg = uint64(info)
	case info <= 27:
		size := 1 << (info - 24)
		if len(b)-off < size {
			return 0, errTruncated
		}
		for _, x := range b[off : off+size] {
			arg = arg<<8 | uint64(x)
		}
		off += size
	default: // reserved, indefinite lengths and the break code
		return 0, errNotWell
	}
	switch major {
	case majorBytes, majorText:
		if arg > uint64(len(b)-off) {
			return 0, errTruncated
		}
		return off + int(arg), nil
	case majorArray, majorMap:
		depth++
		if depth > MaxNestedLevels {
			return 0, fmt.Errorf("%w: nested deeper than %d levels", ErrMalformed, MaxNestedLevels)
		}
		if arg > MaxContainerItems {
			return 0, fmt.Errorf("%w: container of %d items exceeds %d", ErrMalformed, arg, MaxContainerItems)
		}
		items := arg
		if major == majorMap {
			items *= 2
		}
		for range items {
			var err error
			if off, err = wellFormedItem(b, off, depth); err != nil {
				return 0, err
			}
		}
		return off, nil
	case majorTag:
		return 0, malformed("tags are not allowed")
	case majorSimple:
		switch info {
		case 20, 21, 22, 25, 26, 27: // false, true, null, floats
			return off, nil
		}
		return 0, errNotWell
	}
	return off, nil
}
