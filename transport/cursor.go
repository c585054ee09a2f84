package transport

import (
	"crypto/hmac"
	"crypto/sha256"

	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/transport/proto"
)

// Cursors carry a tag. A cursor is opaque to clients, but nothing stops a
// client from writing one, and a scoped cursor names the scope it was read
// under: when a later read has another scope, that scope decides which
// leave entries are sent (docs/protocol.md, "Changing a scope"). A
// client that wrote the scope itself would learn which records outside
// its scope match a predicate of its choosing. So every cursor the server
// sends ends with a tag, an HMAC with the seal key of the collection and
// the cursor, and a cursor whose tag does not verify (made before cursors
// had tags, under another key, for another collection, or by a client) is
// read as engine.Cursor.Unverified: its positions hold, its scope is not
// believed.

// cursorTagBytes is the length of a cursor's tag: 128 bits of
// HMAC-SHA256. engine.MaxCursorBytes leaves room for it.
const cursorTagBytes = 16

// cursorDomain separates cursor tags from seals and any other use of the
// key.
const cursorDomain = "convergo/cursor/v2\x00"

func (s *sealer) cursorTag(collection string, b []byte) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(cursorDomain))
	m.Write([]byte(collection))
	m.Write([]byte{0})
	m.Write(b)
	return m.Sum(nil)[:cursorTagBytes]
}

// cursorBytes returns the wire form of a cursor of collection: its bytes
// and their tag; the beginning is the empty byte string.
func (s *sealer) cursorBytes(collection string, c engine.Cursor) []byte {
	b := c.Bytes()
	if len(b) == 0 {
		return b
	}
	return append(b, s.cursorTag(collection, b)...)
}

// readCursor reads a cursor of collection a client sent: one this server
// (or one with its key) made and tagged, else an untagged one or one
// whose tag does not verify, unverified. One that is no cursor at all is
// invalid (crdt.ErrInvalid), as is one over proto.MaxCursorBytes.
func (s *sealer) readCursor(collection string, b []byte) (engine.Cursor, error) {
	if len(b) == 0 || len(b) > proto.MaxCursorBytes {
		return engine.ParseCursor(b) // the beginning, which claims nothing; or refused: too long
	}
	n := len(b) - cursorTagBytes
	if n > 0 && hmac.Equal(b[n:], s.cursorTag(collection, b[:n])) {
		return engine.ParseCursor(b[:n])
	}
	// A tagged cursor never parses whole (no cursor ends in 16 bytes the
	// format does not account for), so an untagged one is tried first.
	c, err := engine.ParseCursor(b)
	if err != nil && n > 0 {
		if c2, err2 := engine.ParseCursor(b[:n]); err2 == nil {
			c, err = c2, nil
		}
	}
	if err != nil {
		return engine.Cursor{}, err
	}
	return c.Unverified(), nil
}
