package engine

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/transport/proto"
)

// A Cursor is a reader's position in a collection's change log. Clients
// hold it as opaque bytes (Bytes, ParseCursor) that only the server reads,
// so that what a position needs to say can grow (store identity, epoch,
// shard positions; docs/design.md, "Cursor") without changing a client.
//
// A collection whose log the store splits over K shards (stores.Sharder)
// has cursors of K positions, one per shard; a collection of one log has
// cursors of one. The zero Cursor is the beginning of every log. Cursors
// are comparable with ==.
type Cursor struct {
	store [8]byte // the first 8 bytes of SHA-256 of the store's identity
	epoch uint64  // the epoch of the collection's log
	seq   uint64  // the last sequence number read (one shard)
	// shards holds, for K > 1 shards, the last sequence number read in
	// each, 8 bytes big-endian per shard (a string keeps Cursor
	// comparable); empty for one shard.
	shards string
}

// cursorFormat is the first byte of an encoded cursor.
const cursorFormat = 1

// storeTag is the tag of a store identity.
func storeTag(identity string) [8]byte {
	sum := sha256.Sum256([]byte(identity))
	var t [8]byte
	copy(t[:], sum[:8])
	return t
}

// noIdentity is the tag of a store without an identity.
var noIdentity = storeTag("")

// CursorAt returns the cursor after sequence number seq of a log.
func CursorAt(seq uint64) Cursor { return Cursor{store: noIdentity, seq: seq} }

// cursorOf returns the cursor at positions pos (one per shard) of history
// (store, epoch).
func cursorOf(store [8]byte, epoch uint64, pos []uint64) Cursor {
	c := Cursor{store: store, epoch: epoch}
	if len(pos) <= 1 {
		if len(pos) == 1 {
			c.seq = pos[0]
		}
		return c
	}
	b := make([]byte, 0, 8*len(pos))
	for _, p := range pos {
		b = binary.BigEndian.AppendUint64(b, p)
	}
	c.shards = string(b)
	return c
}

// Shards returns the number of shard positions the cursor holds: 1 for a
// log of one shard (and for the zero Cursor).
func (c Cursor) Shards() int { return max(len(c.shards)/8, 1) }

// Positions returns the last sequence number read in each shard.
func (c Cursor) Positions() []uint64 {
	if c.shards == "" {
		return []uint64{c.seq}
	}
	pos := make([]uint64, len(c.shards)/8)
	for i := range pos {
		pos[i] = binary.BigEndian.Uint64([]byte(c.shards[8*i : 8*i+8]))
	}
	return pos
}

// Seq returns the last sequence number the cursor has read; for a cursor
// of K > 1 shards, the sum of its positions, which grows with every entry
// read as the sum of a collection's shard heads (Engine.Head) grows with
// every change.
func (c Cursor) Seq() uint64 {
	if c.shards == "" {
		return c.seq
	}
	var sum uint64
	for _, p := range c.Positions() {
		sum += p
	}
	return sum
}

// Epoch returns the epoch of the collection's log the cursor was read in.
func (c Cursor) Epoch() uint64 { return c.epoch }

// IsStart reports whether c is the beginning of the log: every position
// 0.
func (c Cursor) IsStart() bool { return c.Seq() == 0 }

// Bytes encodes c: format, store tag, epoch, the number of shards K and
// the K positions. The beginning of the log is the empty byte string.
func (c Cursor) Bytes() []byte {
	if c.IsStart() {
		return []byte{} // the start is the same in every history
	}
	pos := c.Positions()
	b := make([]byte, 0, 1+8+(2+len(pos))*binary.MaxVarintLen64)
	b = append(b, cursorFormat)
	b = append(b, c.store[:]...)
	b = binary.AppendUvarint(b, c.epoch)
	b = binary.AppendUvarint(b, uint64(len(pos)))
	for _, p := range pos {
		b = binary.AppendUvarint(b, p)
	}
	return b
}

func (c Cursor) String() string {
	if c.shards != "" {
		return fmt.Sprintf("cursor(store %x, epoch %d, shards %v)", c.store, c.epoch, c.Positions())
	}
	return fmt.Sprintf("cursor(store %x, epoch %d, seq %d)", c.store, c.epoch, c.seq)
}

// ParseCursor decodes a cursor from Bytes. The empty byte string is the
// beginning of the log. A cursor that is not one this engine wrote wraps
// crdt.ErrInvalid.
func ParseCursor(b []byte) (Cursor, error) {
	if len(b) == 0 {
		return CursorAt(0), nil
	}
	bad := func(what string) (Cursor, error) {
		return Cursor{}, fmt.Errorf("%w: cursor: %s", crdt.ErrInvalid, what)
	}
	if len(b) > proto.MaxCursorBytes {
		return bad("too long")
	}
	if b[0] != cursorFormat || len(b) < 9 {
		return bad("unknown format")
	}
	var store [8]byte
	copy(store[:], b[1:9])
	rest := b[9:]
	epoch, n := binary.Uvarint(rest)
	if n <= 0 {
		return bad("epoch")
	}
	rest = rest[n:]
	shards, n := binary.Uvarint(rest)
	if n <= 0 || shards < 1 || shards > stores.MaxShards {
		return bad("shard count")
	}
	rest = rest[n:]
	pos := make([]uint64, shards)
	for i := range pos {
		if pos[i], n = binary.Uvarint(rest); n <= 0 {
			return bad("position")
		}
		rest = rest[n:]
	}
	if len(rest) != 0 {
		return bad("trailing bytes")
	}
	c := cursorOf(store, epoch, pos)
	if c.IsStart() {
		return bad("an encoded start") // Bytes writes the start as empty
	}
	return c, nil
}
