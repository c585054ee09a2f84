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

// Liberal in values: a client may encode a field value any way CBOR allows
// within the value model (null, booleans, integers, floats, text, bytes,
// arrays and maps, without tags, undefined, other simple values or
// indefinite lengths): map keys in any order, integers and floats in any
// width. Decoding stores the value in the one deterministic form every
// replica compares (NormalizeValue), so a client whose CBOR library encodes
// {b, a} or 0.5 as a float64 converges with one that encodes canonically.
// Stamps, names and the envelopes of records and changes stay strict.

// NormalizeValue returns v in deterministic encoding: v itself when it
// already is (no copy), else the canonical bytes. It refuses what the value
// model does not hold (ErrMalformed), duplicate map keys once keys are
// canonical (ErrInvalid), nesting beyond MaxValueNestedLevels and a result
// over MaxValueBytes (ErrTooLarge).
func NormalizeValue(v []byte) ([]byte, error) {
	err := CanonicalValue(v)
	if err == nil {
		return v, nil
	}
	if err != errNonCanonical {
		return nil, err
	}
	c := cursor{b: v}
	out, err := c.normItem(make([]byte, 0, len(v)), 0)
	if err != nil {
		return nil, err
	}
	if c.off != len(v) {
		return nil, fmt.Errorf("%w: %d bytes after the value", ErrMalformed, len(v)-c.off)
	}
	if len(out) > MaxValueBytes {
		return nil, fmt.Errorf("%w: value of %d bytes exceeds %d", ErrTooLarge, len(out), MaxValueBytes)
	}
	return out, nil
}

// headAny reads a head in any length (head also checks the shortest form).
// Indefinite lengths and reserved heads are refused.
func (c *cursor) headAny() (major, info byte, arg uint64, err error) {
	if c.off >= len(c.b) {
		return 0, 0, 0, c.errf("unexpected end")
	}
	ib := c.b[c.off]
	c.off++
	major, info = ib>>5, ib&0x1f
	size := 0
	switch {
	case info < 24:
		return major, info, uint64(info), nil
	case info == 24:
		size = 1
	case info == 25:
		size = 2
	case info == 26:
		size = 4
	case info == 27:
		size = 8
	default:
		return 0, 0, 0, c.errf("indefinite length or reserved head 0x%02x", ib)
	}
	if len(c.b)-c.off < size {
		return 0, 0, 0, c.errf("unexpected end")
	}
	p := c.b[c.off : c.off+size]
	c.off += size
	switch size {
	case 1:
		arg = uint64(p[0])
	case 2:
		arg = uint64(binary.BigEndian.Uint16(p))
	case 4:
		arg = uint64(binary.BigEndian.Uint32(p))
	default:
		arg = binary.BigEndian.Uint64(p)
	}
	return major, info, arg, nil
}

// normItem appends the deterministic encoding of the item at the cursor.
func (c *cursor) normItem(out []byte, depth int) ([]byte, error) {
	major, info, arg, err := c.headAny()
	if err != nil {
		return nil, err
	}
	if (major == majorArray || major == majorMap) && depth >= MaxValueNestedLevels {
		return nil, c.errf("nested deeper than %d levels", MaxValueNestedLevels)
	}
	switch major {
	case majorUint, majorNegint:
		return appendHead(out, major, arg), nil
	case majorBytes, majorText:
		if arg > uint64(len(c.b)-c.off) {
			return nil, c.errf("string of %d bytes runs past the end", arg)
		}
		s := c.b[c.off : c.off+int(arg)]
		c.off += int(arg)
		if major == majorText && !utf8.Valid(s) {
			return nil, c.errf("invalid UTF-8")
		}
		return append(appendHead(out, major, arg), s...), nil
	case majorArray:
		if arg > MaxContainerItems {
			return nil, c.errf("array of %d items exceeds %d", arg, MaxContainerItems)
		}
		out = appendHead(out, majorArray, arg)
		for range arg {
			if out, err = c.normItem(out, depth+1); err != nil {
				return nil, err
			}
		}
		return out, nil
	case majorMap:
		if arg > MaxContainerItems {
			return nil, c.errf("map of %d pairs exceeds %d", arg, MaxContainerItems)
		}
		type pair struct{ k, v []byte }
		pairs := make([]pair, arg)
		for i := range pairs {
			k, err := c.normItem(nil, depth+1)
			if err != nil {
				return nil, err
			}
			v, err := c.normItem(nil, depth+1)
			if err != nil {
				return nil, err
			}
			pairs[i] = pair{k, v}
		}
		slices.SortFunc(pairs, func(a, b pair) int { return bytes.Compare(a.k, b.k) })
		out = appendHead(out, majorMap, arg)
		for i, p := range pairs {
			if i > 0 && bytes.Equal(pairs[i-1].k, p.k) {
				return nil, fmt.Errorf("%w: duplicate map key in a value", ErrInvalid)
			}
			out = append(append(out, p.k...), p.v...)
		}
		return out, nil
	case majorTag:
		return nil, c.errf("tags are not allowed")
	}
	switch info {
	case 20, 21, 22:
		return append(out, 0xe0|info), nil
	case 25:
		return appendFloat(out, float64(float16.Frombits(uint16(arg)).Float32())), nil
	case 26:
		return appendFloat(out, float64(math.Float32frombits(uint32(arg)))), nil
	case 27:
		return appendFloat(out, math.Float64frombits(arg)), nil
	}
	return nil, c.errf("simple value %d is not allowed", arg)
}

// appendFloat appends f in its shortest exact width, as deterministic
// encoding (and canonicalItem) wants it: one NaN, 0xf97e00.
func appendFloat(out []byte, f float64) []byte {
	switch {
	case math.IsNaN(f):
		return append(out, 0xf9, 0x7e, 0x00)
	case float64(float32(f)) == f || math.IsInf(f, 0):
		f32 := float32(f)
		if fitsFloat16(f32) {
			return binary.BigEndian.AppendUint16(append(out, 0xf9), float16.Fromfloat32(f32).Bits())
		}
		return binary.BigEndian.AppendUint32(append(out, 0xfa), math.Float32bits(f32))
	}
	return binary.BigEndian.AppendUint64(append(out, 0xfb), math.Float64bits(f))
}
