package redis

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// The record blob: the form in which a record lives in Redis and in which a
// change travels to the merge script. merge.lua reads and writes the same
// layout; doc.go explains why it is not CBOR.
//
//	blob   = version:1 (=1) seq:8 stamp field*
//	stamp  = wall:8 logical:4 replicaLen:1 replica   (zero stamp: 13 zero bytes)
//	field  = nameLen:2 name stamp flag:1 [valueLen:4 value]   (flag 0 unset, 1 value)
//
// Numbers are big-endian. A change is encoded with sequence number 0.
const blobVersion = 1

const (
	stampFixed = 8 + 4 + 1
	blobHeader = 1 + 8
)

var errMalformedBlob = errors.New("malformed record blob")

// checkRecord checks what the blob layout and the script's ordering rely on:
// stamps in range (a wall time is never negative, so its big-endian bytes
// order as the number does), replica ids and field names within their
// length prefixes, and the field and value limits of crdt. Full validation
// of values (CanonicalValue) is the engine's job; this keeps the store from
// writing what it could not read back.
func checkRecord(r crdt.Record) error {
	if len(r.Fields) > crdt.MaxFieldsPerRecord {
		return fmt.Errorf("%w: %d fields, more than %d", stores.ErrTooLarge, len(r.Fields), crdt.MaxFieldsPerRecord)
	}
	if err := r.Deleted.Validate(); err != nil {
		return fmt.Errorf("delete stamp: %w", err) // crdt.ErrInvalid is stores.ErrInvalid
	}
	for name, f := range r.Fields {
		if err := crdt.ValidateFieldName(name); err != nil {
			return err
		}
		if f.Stamp.IsZero() {
			return fmt.Errorf("%w: field %q has a zero stamp", stores.ErrInvalid, name)
		}
		if err := f.Stamp.Validate(); err != nil {
			return fmt.Errorf("field %q: %w", name, err)
		}
		if f.Value != nil && len(f.Value) == 0 {
			return fmt.Errorf("%w: field %q has an empty value", stores.ErrInvalid, name)
		}
		if len(f.Value) > crdt.MaxValueBytes {
			return fmt.Errorf("%w: field %q has a value of %d bytes, more than %d", stores.ErrTooLarge, name, len(f.Value), crdt.MaxValueBytes)
		}
	}
	return nil
}

func blobSize(r crdt.Record) int {
	n := blobHeader + stampFixed + len(r.Deleted.Replica)
	for name, f := range r.Fields {
		n += 2 + len(name) + stampFixed + len(f.Stamp.Replica) + 1
		if f.Value != nil {
			n += 4 + len(f.Value)
		}
	}
	return n
}

func appendStamp(b []byte, s crdt.Stamp) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(s.Wall))
	b = binary.BigEndian.AppendUint32(b, s.Logical)
	b = append(b, byte(len(s.Replica)))
	return append(b, s.Replica...)
}

// encodeBlob encodes r, which checkRecord accepted, with sequence number
// seq.
func encodeBlob(seq uint64, r crdt.Record) []byte {
	return appendBlob(make([]byte, 0, blobSize(r)), seq, r)
}

// appendBlob appends the blob of r, which checkRecord accepted, with
// sequence number seq to b: blobSize(r) bytes.
func appendBlob(b []byte, seq uint64, r crdt.Record) []byte {
	b = append(b, blobVersion)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = appendStamp(b, r.Deleted)
	for name, f := range r.Fields {
		b = binary.BigEndian.AppendUint16(b, uint16(len(name)))
		b = append(b, name...)
		b = appendStamp(b, f.Stamp)
		if f.Value == nil {
			b = append(b, 0)
			continue
		}
		b = append(b, 1)
		b = binary.BigEndian.AppendUint32(b, uint32(len(f.Value)))
		b = append(b, f.Value...)
	}
	return b
}

type blobReader struct {
	b   []byte
	s   string // the same bytes as b, when the blob is a string: names and replica ids are cut from it
	off int
	err error
}

// text is the next n bytes as a string: cut from r.s when the blob is a
// string (no copy), else copied.
func (r *blobReader) text(n int) string {
	off := r.off
	p := r.take(n)
	if r.s != "" {
		if p == nil {
			return ""
		}
		return r.s[off : off+n]
	}
	return string(p)
}

func (r *blobReader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b)-r.off {
		r.err = fmt.Errorf("%w: %d bytes wanted at offset %d of %d", errMalformedBlob, n, r.off, len(r.b))
		return nil
	}
	p := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return p
}

func (r *blobReader) stamp() crdt.Stamp {
	p := r.take(stampFixed)
	if p == nil {
		return crdt.Stamp{}
	}
	s := crdt.Stamp{
		Wall:    int64(binary.BigEndian.Uint64(p)),
		Logical: binary.BigEndian.Uint32(p[8:]),
	}
	s.Replica = r.text(int(p[12]))
	return s
}

// decodeBlob decodes a record blob of record id. Values share the blob's
// memory; the blob must not be modified afterwards.
func decodeBlob(id string, b []byte) (uint64, crdt.Record, error) {
	return decodeBlobFrom(id, blobReader{b: b})
}

// decodeStringBlob decodes a record blob of record id held in a string:
// names, replica ids and values share its memory (no copy), so the values
// must only be read.
func decodeStringBlob(id string, s string) (uint64, crdt.Record, error) {
	return decodeBlobFrom(id, blobReader{b: unsafe.Slice(unsafe.StringData(s), len(s)), s: s})
}

func decodeBlobFrom(id string, r blobReader) (uint64, crdt.Record, error) {
	b := r.b
	head := r.take(blobHeader)
	if head == nil {
		return 0, crdt.Record{}, r.err
	}
	if head[0] != blobVersion {
		return 0, crdt.Record{}, fmt.Errorf("%w: version %d", errMalformedBlob, head[0])
	}
	seq := binary.BigEndian.Uint64(head[1:])
	rec := crdt.Record{ID: id, Deleted: r.stamp()}
	for r.err == nil && r.off < len(b) {
		nlen := r.take(2)
		if nlen == nil {
			break
		}
		name := r.text(int(binary.BigEndian.Uint16(nlen)))
		f := crdt.Field{Stamp: r.stamp()}
		flag := r.take(1)
		if flag == nil {
			break
		}
		switch flag[0] {
		case 0:
		case 1:
			if vlen := r.take(4); vlen != nil {
				f.Value = r.take(int(binary.BigEndian.Uint32(vlen)))
			}
		default:
			return 0, crdt.Record{}, fmt.Errorf("%w: field %q has flag %d", errMalformedBlob, name, flag[0])
		}
		if rec.Fields == nil {
			rec.Fields = make(map[string]crdt.Field)
		}
		if _, dup := rec.Fields[name]; dup {
			return 0, crdt.Record{}, fmt.Errorf("%w: duplicate field %q", errMalformedBlob, name)
		}
		rec.Fields[name] = f
	}
	if r.err != nil {
		return 0, crdt.Record{}, r.err
	}
	return seq, rec, nil
}
