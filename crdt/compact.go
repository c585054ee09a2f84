package crdt

import (
	"fmt"
	"iter"
	"slices"
)

// Compact stamps (docs/protocol.md, "Compact stamps"). A message that
// carries records (a pull page, a live changes message, a push body) may
// write their stamps against a replica table and a base wall time that the
// message carries once: a stamp's replica may be a uint index into the
// table, and with a base every wall is its difference to the base. A page
// repeats a few replica ids and nearly equal wall times, and a change
// carries its replica id in every stamp, so this is most of what a stamp
// costs on the wire. Stored records, seals and the shared record vectors
// keep the plain form: only the messages change.
//
// The encoding is deterministic (Go and JS write the same bytes): the
// table holds the message's pinned id, if any (a push's replica, key 1),
// then every other id that occurs in two or more stamps, in encoded-text
// order; the base is the smallest wall, used only when it saves bytes.

// Compact is how one message writes its stamps: built by PlanCompact to
// encode, by NewCompact to decode. A nil *Compact is the plain form.
type Compact struct {
	table   []string // index → replica id; table[:pinned] is carried elsewhere in the message
	pinned  int
	base    int64
	hasBase bool
	implied bool              // the base is the session's: the message does not carry it
	index   map[string]uint64 // encoding only
}

// NewCompact makes the Compact of a received message: its pinned id ("" for
// none; a push body's replica, which is then index 0), its table (key 7)
// and its base wall (key 8, nil when absent). It refuses an invalid id or
// base with ErrMalformed.
func NewCompact(pinned string, table []string, base *uint64) (*Compact, error) {
	c := &Compact{}
	if pinned != "" {
		c.table = append(make([]string, 0, 1+len(table)), pinned)
		c.pinned = 1
	}
	for _, id := range table {
		if !validReplicaBytes([]byte(id)) {
			return nil, fmt.Errorf("%w: replica table holds an invalid replica id %q", ErrMalformed, id)
		}
		c.table = append(c.table, id)
	}
	if base != nil {
		if *base > MaxWall {
			return nil, fmt.Errorf("%w: base wall %d out of range", ErrMalformed, *base)
		}
		c.base, c.hasBase = int64(*base), true
	}
	return c, nil
}

// PlanCompact plans the compact form of a message whose records are
// records and whose pinned id is pinned ("" for none): the table and the
// base the encoders of every implementation choose for it.
func PlanCompact(pinned string, records iter.Seq[Record]) *Compact {
	c, each, minWall := planTable(pinned, records)
	if minWall >= 0 {
		plain, delta := 0, 1+HeadLen(uint64(minWall)) // key 8 and the base
		each(func(s Stamp) {
			plain += HeadLen(uint64(s.Wall))
			delta += HeadLen(uint64(s.Wall - minWall))
		})
		if delta < plain {
			c.base, c.hasBase = minWall, true
		}
	}
	return c
}

// PlanCompactFrom plans the compact form of a message whose walls are
// always written as differences, from a base both ends already share
// (session: a live push's session base, the server time of its session's
// welcome) unless the message carries one of its own (key 8): the table as
// PlanCompact's, and the base by this rule, the same in every
// implementation. Let B be the smallest wall of the records' stamps: when
// every wall is at or after session and the differences from session take
// no more bytes than key 8, B and the differences from B, the walls are
// written from session and the message carries no base (Base reports
// none); otherwise its base is B. A session base outside 0..MaxWall is
// never used. Records without stamps carry no base.
func PlanCompactFrom(pinned string, records iter.Seq[Record], session int64) *Compact {
	c, each, minWall := planTable(pinned, records)
	usable := session >= 0 && session <= MaxWall
	c.base, c.hasBase, c.implied = session, true, true
	if minWall < 0 {
		c.hasBase = usable
		return c
	}
	fromSession, fromMin := 0, 1+HeadLen(uint64(minWall)) // key 8 and the base
	each(func(s Stamp) {
		fromSession += HeadLen(uint64(s.Wall - session))
		fromMin += HeadLen(uint64(s.Wall - minWall))
	})
	if !usable || minWall < session || fromSession > fromMin {
		c.base, c.implied = minWall, false
	}
	return c
}

// planTable plans the replica table of a message (PlanCompact) and returns
// it with a walk over the records' stamps and their smallest wall (-1 for
// none).
func planTable(pinned string, records iter.Seq[Record]) (c *Compact, each func(func(Stamp)), minWall int64) {
	count := map[string]int{}
	minWall = -1
	each = func(yield func(Stamp)) {
		for r := range records {
			if !r.Deleted.IsZero() {
				yield(r.Deleted)
			}
			for _, f := range r.Fields {
				yield(f.Stamp)
			}
		}
	}
	each(func(s Stamp) {
		count[s.Replica]++
		if minWall < 0 || s.Wall < minWall {
			minWall = s.Wall
		}
	})
	c = &Compact{index: map[string]uint64{}}
	if pinned != "" {
		c.table, c.pinned, c.index[pinned] = []string{pinned}, 1, 0
	}
	var shared []string
	for id, n := range count {
		if n >= 2 && id != pinned {
			shared = append(shared, id)
		}
	}
	slices.SortFunc(shared, lessEncodedText)
	for _, id := range shared {
		c.index[id] = uint64(len(c.table))
		c.table = append(c.table, id)
	}
	return c, each, minWall
}

// Table returns the ids the message carries in its replica table (key 7),
// the pinned one left out; nil for none.
func (c *Compact) Table() []string {
	if c == nil || len(c.table) == c.pinned {
		return nil
	}
	return c.table[c.pinned:]
}

// Base returns the message's base wall (key 8) and whether it has one.
func (c *Compact) Base() (uint64, bool) {
	if c == nil || !c.hasBase || c.implied {
		return 0, false
	}
	return uint64(c.base), true
}

// HeadLen is the length of a CBOR head with argument n in shortest form
// (what a size bound counts for a length or an integer; transport/proto's
// push sizes count by it too).
func HeadLen(n uint64) int {
	switch {
	case n < 24:
		return 1
	case n <= 0xff:
		return 2
	case n <= 0xffff:
		return 3
	case n <= 0xffffffff:
		return 5
	}
	return 9
}

// appendStamp appends s as a message planned by c writes it.
func (c *Compact) appendStamp(b []byte, s Stamp, value []byte, withValue bool) []byte {
	if c == nil {
		return appendStamp(b, s, value, withValue)
	}
	n := uint64(3)
	if withValue {
		n = 4
	}
	b = appendHead(b, majorArray, n)
	if c.hasBase {
		b = appendHead(b, majorUint, uint64(s.Wall-c.base))
	} else {
		b = appendHead(b, majorUint, uint64(s.Wall))
	}
	b = appendHead(b, majorUint, uint64(s.Logical))
	if i, ok := c.index[s.Replica]; ok {
		b = appendHead(b, majorUint, i)
	} else {
		b = appendText(b, s.Replica)
	}
	if withValue {
		b = append(b, value...)
	}
	return b
}

// AppendRecordCompact appends r with its stamps as c writes them; a nil c
// writes the plain form (AppendRecord).
func AppendRecordCompact(b []byte, r Record, c *Compact) []byte {
	return appendRecord(b, r, c)
}

// AppendChangeCompact is AppendRecordCompact for a change.
func AppendChangeCompact(b []byte, ch Change, c *Compact) []byte {
	b = append(b, 0xa2, 0x01)
	b = appendText(b, ch.Collection)
	b = append(b, 0x02)
	return appendRecord(b, ch.Record, c)
}

// DecodeRecords decodes and validates an array of records (null: none)
// whose stamps are written as c says (nil: plain).
func (c *Compact) DecodeRecords(data []byte) ([]Record, error) {
	if err := wellFormed(data); err != nil {
		return nil, err
	}
	if data[0] == 0xf6 {
		return nil, nil
	}
	major, _, n, off := readHead(data, 0)
	if major != majorArray {
		return nil, fmt.Errorf("%w: records are not an array", ErrMalformed)
	}
	d := fastDecoder{b: data, cmp: c}
	rs := make([]Record, n)
	for i := range rs {
		if data[off] == cborNull {
			// Null is no record (docs/protocol.md, section 2), malformed
			// in its place among them, as a record that is not a map;
			// read as one, it would be an empty record, invalid.
			return nil, fmt.Errorf("record %d: %w: null where a record is read", i, ErrMalformed)
		}
		r, end, err := d.record(off)
		if err != nil {
			return nil, fmt.Errorf("record %d: %w", i, err)
		}
		rs[i], off = r, end
	}
	return rs, nil
}

// DecodeChange decodes and validates one change whose stamps are written
// as c says (nil: plain).
func (c *Compact) DecodeChange(data []byte) (Change, error) {
	if err := wellFormed(data); err != nil {
		return Change{}, err
	}
	d := fastDecoder{b: data, cmp: c}
	ch, _, err := d.change(0)
	return ch, err
}

// replica returns the id at index i of the table.
func (c *Compact) replica(i uint64) (string, error) {
	if i >= uint64(len(c.table)) {
		return "", fmt.Errorf("%w: replica index %d outside the message's table of %d", ErrMalformed, i, len(c.table))
	}
	return c.table[i], nil
}
