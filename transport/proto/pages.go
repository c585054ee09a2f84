package proto

import (
	"slices"

	"github.com/convergo/convergo/crdt"
)

// Pages of records are most of what the server sends, so they are encoded
// by hand, without reflection, in the same deterministic form crdt.Marshal
// gives (pages_test.go holds them to it). An empty or nil page is the empty
// array, never null; a nil cursor is the empty byte string.

// MarshalCBOR encodes a pull answer {1: [record...], 2: next, 3: more,
// 4: reset?, 5: leaves?, 6: seals?, 7: replica table?, 8: base wall?}, its
// stamps compact (docs/protocol.md, "Compact stamps").
func (p PullResponse) MarshalCBOR() ([]byte, error) {
	b := make([]byte, 0, PageSizeHint(p.Records)+len(p.Next)+18*len(p.Seals)+18*len(p.Leaves))
	c := crdt.PlanCompact("", slices.Values(p.Records))
	n := uint64(3) + compactKeys(c)
	if p.Reset != nil {
		n++
	}
	if len(p.Leaves) > 0 {
		n++
	}
	if len(p.Seals) > 0 {
		n++
	}
	b = appendHead(b, 5, n)
	b = append(b, 0x01)
	b = appendRecords(b, p.Records, c)
	b = append(b, 0x02)
	b = appendBytes(b, p.Next)
	b = append(b, 0x03)
	b = appendBool(b, p.More)
	if p.Reset != nil {
		reset, err := crdt.MarshalEnvelope(p.Reset)
		if err != nil {
			return nil, err
		}
		b = append(append(b, 0x04), reset...)
	}
	if len(p.Leaves) > 0 {
		b = appendByteStrings(append(b, 0x05), p.Leaves)
	}
	if len(p.Seals) > 0 {
		b = appendByteStrings(append(b, 0x06), p.Seals)
	}
	return appendCompact(b, c), nil
}

// MarshalCBOR encodes a changes message {0: "changes", 1: collection,
// 2: records, 3: next, 4: more, 5: seals?, 6: leaves?, 7: replica table?,
// 8: base wall?}, its stamps compact, whatever its Type field says.
func (m Changes) MarshalCBOR() ([]byte, error) {
	b := make([]byte, 0, PageSizeHint(m.Records)+len(m.Collection)+len(m.Next)+18*len(m.Seals)+18*len(m.Leaves)+16)
	c := crdt.PlanCompact("", slices.Values(m.Records))
	n := uint64(5) + compactKeys(c)
	if len(m.Seals) > 0 {
		n++
	}
	if len(m.Leaves) > 0 {
		n++
	}
	b = append(appendHead(b, 5, n), 0x00)
	b = appendText(b, TypeChanges)
	b = append(b, 0x01)
	b = appendText(b, m.Collection)
	b = append(b, 0x02)
	b = appendRecords(b, m.Records, c)
	b = append(b, 0x03)
	b = appendBytes(b, m.Next)
	b = append(b, 0x04)
	b = appendBool(b, m.More)
	if len(m.Seals) > 0 {
		b = appendByteStrings(append(b, 0x05), m.Seals)
	}
	if len(m.Leaves) > 0 {
		b = appendByteStrings(append(b, 0x06), m.Leaves)
	}
	return appendCompact(b, c), nil
}

// compactKeys counts the envelope keys c adds: 7 (the replica table) and
// 8 (the base wall), each when it has one.
func compactKeys(c *crdt.Compact) uint64 {
	n := uint64(0)
	if len(c.Table()) > 0 {
		n++
	}
	if _, ok := c.Base(); ok {
		n++
	}
	return n
}

// appendCompact appends keys 7 and 8 of c, the last of every envelope
// that carries records.
func appendCompact(b []byte, c *crdt.Compact) []byte {
	if t := c.Table(); len(t) > 0 {
		b = appendHead(append(b, KeyReplicaTable), 4, uint64(len(t)))
		for _, id := range t {
			b = appendText(b, id)
		}
	}
	if base, ok := c.Base(); ok {
		b = appendHead(append(b, KeyBaseWall), 0, base)
	}
	return b
}

// appendByteStrings appends an array of byte strings (seals, leaves).
func appendByteStrings(b []byte, list [][]byte) []byte {
	b = appendHead(b, 4, uint64(len(list)))
	for _, s := range list {
		b = appendBytes(b, s)
	}
	return b
}

// PageSizeHint estimates, from above for ordinary records, the encoded size
// of a list of records.
func PageSizeHint(rs []crdt.Record) int {
	n := 16
	for _, r := range rs {
		n += 16 + len(r.ID) + len(r.Deleted.Replica)
		for name, f := range r.Fields {
			n += len(name) + len(f.Value) + len(f.Stamp.Replica) + 16
		}
	}
	return n
}

func appendRecords(b []byte, rs []crdt.Record, c *crdt.Compact) []byte {
	b = appendHead(b, 4, uint64(len(rs)))
	for _, r := range rs {
		b = crdt.AppendRecordCompact(b, r, c)
	}
	return b
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 0xf5)
	}
	return append(b, 0xf4)
}

func appendText(b []byte, s string) []byte {
	return append(appendHead(b, 3, uint64(len(s))), s...)
}

func appendBytes(b []byte, p []byte) []byte {
	return append(appendHead(b, 2, uint64(len(p))), p...)
}

func appendHead(b []byte, major byte, n uint64) []byte { return crdt.AppendHead(b, major, n) }
