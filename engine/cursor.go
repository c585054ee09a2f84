package engine

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// A Cursor is a reader's position in a collection's change log. Clients
// hold it as opaque bytes (Bytes, ParseCursor) that only the server reads,
// so that what a position needs to say can grow (store identity, epoch,
// shard positions; docs/design.md, "Cursor") without changing a client.
//
// The zero Cursor is the beginning of the log. Cursors are comparable with
// ==.
type Cursor struct {
	store [8]byte // the first 8 bytes of SHA-256 of the store's identity
	epoch uint64  // the epoch of the collection's log
	seq   uint64  // the last sequence number read (one shard)
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

// Seq returns the last sequence number the cursor has read.
func (c Cursor) Seq() uint64 { return c.seq }

// Epoch returns the epoch of the collection's log the cursor was read in.
func (c Cursor) Epoch() uint64 { return c.epoch }

// IsStart reports whether c is the beginning of the log.
func (c Cursor) IsStart() bool { return c.seq == 0 }

// Bytes encodes c: format, store tag, epoch, the number of shards (1) and
// the position. The beginning of the log is the empty byte string.
func (c Cursor) Bytes() []byte {
	if c.seq == 0 {
		return []byte{} // the start is the same in every history
	}
	b := make([]byte, 0, 1+8+3*binary.MaxVarintLen64)
	b = append(b, cursorFormat)
	b = append(b, c.store[:]...)
	b = binary.AppendUvarint(b, c.epoch)
	b = binary.AppendUvarint(b, 1)
	return binary.AppendUvarint(b, c.seq)
}

func (c Cursor) String() string {
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
	var c Cursor
	copy(c.store[:], b[1:9])
	rest := b[9:]
	var n int
	var shards uint64
	if c.epoch, n = binary.Uvarint(rest); n <= 0 {
		return bad("epoch")
	}
	rest = rest[n:]
	if shards, n = binary.Uvarint(rest); n <= 0 || shards != 1 {
		return bad("shard count")
	}
	rest = rest[n:]
	if c.seq, n = binary.Uvarint(rest); n <= 0 {
		return bad("position")
	}
	if n != len(rest) {
		return bad("trailing bytes")
	}
	return c, nil
}
