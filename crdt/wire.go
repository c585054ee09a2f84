package crdt

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"unicode/utf8"

	"github.com/x448/float16"
)

// This file holds the hand-written parts of the codec that sit on hot paths:
// appending records in deterministic encoding without reflection, reading a
// field array, and checking that a value is canonical by walking its bytes.
// Tests hold them to the reflection-based encoding of fxamacker/cbor.

const (
	majorUint   = 0
	majorNegint = 1
	majorBytes  = 2
	majorText   = 3
	majorArray  = 4
	majorMap    = 5
	majorTag    = 6
	majorSimple = 7
)

// AppendHead appends a CBOR head (major type and argument) in its shortest
// form, for hand-written encoders of messages that carry records.
func AppendHead(b []byte, major byte, n uint64) []byte { return appendHead(b, major, n) }

// appendHead appends a CBOR head in its shortest form.
func appendHead(b []byte, major byte, n uint64) []byte {
	m := major << 5
	switch {
	case n < 24:
		return append(b, m|byte(n))
	case n <= math.MaxUint8:
		return append(b, m|24, byte(n))
	case n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, m|25), uint16(n))
	case n <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, m|26), uint32(n))
	}
	return binary.BigEndian.AppendUint64(append(b, m|27), n)
}

func appendText(b []byte, s string) []byte {
	return append(appendHead(b, majorText, uint64(len(s))), s...)
}

func appendStamp(b []byte, s Stamp, value []byte, withValue bool) []byte {
	n := uint64(3)
	if withValue {
		n = 4
	}
	b = appendHead(b, majorArray, n)
	if s.Wall >= 0 {
		b = appendHead(b, majorUint, uint64(s.Wall))
	} else {
		b = appendHead(b, majorNegint, uint64(-1-s.Wall))
	}
	b = appendHead(b, majorUint, uint64(s.Logical))
	b = appendText(b, s.Replica)
	if withValue {
		b = append(b, value...)
	}
	return b
}

// lessEncodedText orders text strings as their deterministic encodings
// compare byte-wise: shorter first, then by bytes.
func lessEncodedText(a, b string) int {
	if len(a) != len(b) {
		if len(a) < len(b) {
			return -1
		}
		return 1
	}
	return bytesCompareString(a, b)
}

func bytesCompareString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// AppendRecord appends the deterministic encoding of r to b.
func AppendRecord(b []byte, r Record) []byte { return appendRecord(b, r, nil) }

// appendRecord appends r with its stamps as c writes them (nil: plain).
func appendRecord(b []byte, r Record, c *Compact) []byte {
	n := uint64(1)
	if !r.Deleted.IsZero() {
		n++
	}
	if len(r.Fields) > 0 {
		n++
	}
	b = appendHead(b, majorMap, n)
	b = append(b, 0x01)
	b = appendText(b, r.ID)
	if !r.Deleted.IsZero() {
		b = append(b, 0x02)
		b = c.appendStamp(b, r.Deleted, nil, false)
	}
	if len(r.Fields) > 0 {
		b = append(b, 0x03)
		b = appendHead(b, majorMap, uint64(len(r.Fields)))
		var buf [16]string
		names := buf[:0]
		for name := range r.Fields {
			names = append(names, name)
		}
		slices.SortFunc(names, lessEncodedText)
		for _, name := range names {
			f := r.Fields[name]
			b = appendText(b, name)
			b = c.appendStamp(b, f.Stamp, f.Value, f.Value != nil)
		}
	}
	return b
}

// AppendChange appends the deterministic encoding of c to b.
func AppendChange(b []byte, c Change) []byte {
	b = append(b, 0xa2, 0x01)
	b = appendText(b, c.Collection)
	b = append(b, 0x02)
	return AppendRecord(b, c.Record)
}

// cursor reads CBOR from a byte slice, refusing anything the canonical form
// does not allow.
type cursor struct {
	b   []byte
	off int
}

func (c *cursor) errf(format string, args ...any) error {
	return fmt.Errorf("%w: at byte %d: %s", ErrMalformed, c.off, fmt.Sprintf(format, args...))
}

// head reads a head and checks it is in shortest form. It returns the major
// type, the additional information and the argument.
func (c *cursor) head() (major, info byte, arg uint64, err error) {
	major, info, arg, err = c.headAny()
	if err != nil || major == majorSimple || info < 24 {
		return major, info, arg, err // floats and simple values: checked by the caller
	}
	shortest := (info == 24 && arg >= 24) || (info == 25 && arg > math.MaxUint8) ||
		(info == 26 && arg > math.MaxUint16) || (info == 27 && arg > math.MaxUint32)
	if !shortest {
		return 0, 0, 0, errNonCanonical
	}
	return major, info, arg, nil
}

var errNonCanonical = fmt.Errorf("%w: value is not in deterministic CBOR encoding", ErrInvalid)

// canonicalItem checks one data item at the cursor, inside depth arrays
// and maps of the value.
func (c *cursor) canonicalItem(depth int) error {
	start := c.off
	major, info, arg, err := c.head()
	if err != nil {
		return err
	}
	if (major == majorArray || major == majorMap) && depth >= MaxValueNestedLevels {
		return c.errf("nested deeper than %d levels", MaxValueNestedLevels)
	}
	switch major {
	case majorUint, majorNegint:
		return nil
	case majorBytes, majorText:
		if arg > uint64(len(c.b)-c.off) {
			return c.errf("string of %d bytes runs past the end", arg)
		}
		s := c.b[c.off : c.off+int(arg)]
		c.off += int(arg)
		if major == majorText && !utf8.Valid(s) {
			return c.errf("invalid UTF-8")
		}
		return nil
	case majorArray:
		if arg > MaxContainerItems {
			return c.errf("array of %d items exceeds %d", arg, MaxContainerItems)
		}
		for range arg {
			if err := c.canonicalItem(depth + 1); err != nil {
				return err
			}
		}
		return nil
	case majorMap:
		if arg > MaxContainerItems {
			return c.errf("map of %d pairs exceeds %d", arg, MaxContainerItems)
		}
		var prev []byte
		for i := range arg {
			ks := c.off
			if err := c.canonicalItem(depth + 1); err != nil {
				return err
			}
			key := c.b[ks:c.off]
			if i > 0 {
				switch bytes.Compare(prev, key) {
				case 0:
					return c.errf("duplicate map key")
				case 1:
					return errNonCanonical
				}
			}
			prev = key
			if err := c.canonicalItem(depth + 1); err != nil {
				return err
			}
		}
		return nil
	case majorTag:
		return c.errf("tags are not allowed")
	}
	// Major type 7: simple values and floats.
	switch info {
	case 20, 21, 22:
		return nil
	case 25:
		h := uint16(arg)
		if h&0x7c00 == 0x7c00 && h&0x03ff != 0 && h != 0x7e00 {
			return errNonCanonical // a NaN other than the canonical one
		}
		return nil
	case 26:
		f := math.Float32frombits(uint32(arg))
		if fitsFloat16(f) {
			return errNonCanonical
		}
		return nil
	case 27:
		f := math.Float64frombits(arg)
		if math.IsNaN(f) || math.IsInf(f, 0) || float64(float32(f)) == f {
			return errNonCanonical
		}
		return nil
	}
	c.off = start
	return c.errf("simple value %d is not allowed", arg)
}

// fitsFloat16 reports whether f would encode as a float16 in deterministic
// encoding, as fxamacker/cbor decides it.
func fitsFloat16(f float32) bool {
	if f != f || math.IsInf(float64(f), 0) {
		return true
	}
	switch float16.PrecisionFromfloat32(f) {
	case float16.PrecisionExact:
		return true
	case float16.PrecisionUnknown:
		return float16.Fromfloat32(f).Float32() == f
	}
	return false
}
