package transport

import (
	"encoding/binary"
	"math"

	"github.com/convergo/convergo/crdt"
)

// Pages of records are most of what the server sends, so they are encoded
// by hand, without reflection, in the same deterministic form crdt.Marshal
// gives (wire_test.go holds them to it). An empty or nil page is the empty
// array, never null.

// MarshalCBOR encodes a pull answer {1: [[seq, record]...], 2: next, 3: more}.
func (p PullResponse) MarshalCBOR() ([]byte, error) {
	b := make([]byte, 0, pageSizeHint(p.Entries))
	b = append(b, 0xa3, 0x01)
	b = appendEntries(b, p.Entries)
	b = append(b, 0x02)
	b = appendUint(b, p.Next)
	b = append(b, 0x03)
	return appendBool(b, p.More), nil
}

// MarshalCBOR encodes a changes message {0: "changes", 1: collection,
// 2: entries, 3: next, 4: more}, whatever its Type field says.
func (m Changes) MarshalCBOR() ([]byte, error) {
	b := make([]byte, 0, pageSizeHint(m.Entries)+len(m.Collection)+16)
	b = append(b, 0xa5, 0x00)
	b = appendText(b, TypeChanges)
	b = append(b, 0x01)
	b = appendText(b, m.Collection)
	b = append(b, 0x02)
	b = appendEntries(b, m.Entries)
	b = append(b, 0x03)
	b = appendUint(b, m.Next)
	b = append(b, 0x04)
	return appendBool(b, m.More), nil
}

func pageSizeHint(es []Entry) int {
	n := 16
	for _, e := range es {
		n += 16 + len(e.Record.ID)
		for name, f := range e.Record.Fields {
			n += len(name) + len(f.Value) + len(f.Stamp.Replica) + 16
		}
	}
	return n
}

func appendEntries(b []byte, es []Entry) []byte {
	b = appendHead(b, 4, uint64(len(es)))
	for _, e := range es {
		b = append(b, 0x82)
		b = appendUint(b, e.Seq)
		b = crdt.AppendRecord(b, e.Record)
	}
	return b
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 0xf5)
	}
	return append(b, 0xf4)
}

func appendUint(b []byte, n uint64) []byte { return appendHead(b, 0, n) }

func appendText(b []byte, s string) []byte {
	return append(appendHead(b, 3, uint64(len(s))), s...)
}

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
