package transport

import (
	"bytes"
	"errors"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/transport/proto"
)

// FuzzReadCursor holds readCursor to its promises on whatever bytes a
// client sends as a cursor: it never panics, refuses only invalid, and
// believes no transition between scopes (which decides the leave
// entries a scoped reader is sent) of a cursor it did not tag for that
// collection: neither of bytes a client wrote nor of a cursor it tagged
// for another collection. A cursor it did tag reads back as itself.
func FuzzReadCursor(f *testing.F) {
	s, err := newSealer(testSecret)
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte{}, false)
	f.Add([]byte("not a cursor"), false)
	f.Add(engine.CursorAt(7).Bytes(), false)
	f.Add(s.cursorBytes("notes", engine.CursorAt(7)), false)
	f.Add(s.cursorBytes("other", engine.CursorAt(7)), true)
	f.Fuzz(func(t *testing.T, b []byte, tagForOther bool) {
		if tagForOther {
			// The client's bytes, tagged by the server for another
			// collection: as good as a cursor of that collection.
			b = append(append([]byte(nil), b...), s.cursorTag("other", b)...)
		}
		c, err := s.readCursor("notes", b)
		if err != nil {
			if !errors.Is(err, crdt.ErrInvalid) {
				t.Fatalf("readCursor(%x): %v, want invalid", b, err)
			}
			return
		}
		if len(b) > proto.MaxCursorBytes {
			t.Fatalf("readCursor took %d bytes, over %d", len(b), proto.MaxCursorBytes)
		}
		if c.InTransition() {
			t.Fatalf("readCursor(%x) believes the transition of %v, a cursor it did not tag for this collection", b, c)
		}
		// What the server sends back of it, it reads back as itself.
		back, err := s.readCursor("notes", s.cursorBytes("notes", c))
		if err != nil || !bytes.Equal(back.Bytes(), c.Bytes()) {
			t.Fatalf("cursor %v sent back as %x reads %v, %v", c, s.cursorBytes("notes", c), back, err)
		}
	})
}
