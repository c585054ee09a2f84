package transport

import (
	"bytes"
	"errors"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/transport/proto"
)

// A cursor the server tagged reads back as it was; one of another
// collection, another key, without a tag or with a client's bytes reads
// unverified, with its position; bytes that are no cursor, or too many,
// are invalid.
func TestCursorTags(t *testing.T) {
	s, err := newSealer([]byte("a seal key of 32 bytes, for tests"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := newSealer([]byte("another seal key of 32 bytes....."))
	if err != nil {
		t.Fatal(err)
	}
	c := engine.CursorAt(7)
	wire := s.cursorBytes("notes", c)
	if !bytes.HasPrefix(wire, c.Bytes()) || len(wire) != len(c.Bytes())+cursorTagBytes {
		t.Fatalf("wire cursor %x of %x", wire, c.Bytes())
	}
	if b := s.cursorBytes("notes", engine.Cursor{}); len(b) != 0 {
		t.Fatalf("the beginning: %x", b)
	}
	for _, tc := range []struct {
		name, coll string
		b          []byte
		want       engine.Cursor
	}{
		{"tagged", "notes", wire, c},
		{"the beginning", "notes", nil, engine.CursorAt(0)},
		{"another collection", "todos", wire, c.Unverified()},
		{"another key", "notes", other.cursorBytes("notes", c), c.Unverified()},
		{"untagged", "notes", c.Bytes(), c.Unverified()},
	} {
		got, err := s.readCursor(tc.coll, tc.b)
		if err != nil || got != tc.want {
			t.Errorf("%s: %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
	for _, b := range [][]byte{
		{3, 1, 2},
		append(bytes.Clone(wire), 0),
		append(bytes.Clone(wire), make([]byte, proto.MaxCursorBytes)...),
	} {
		if _, err := s.readCursor("notes", b); !errors.Is(err, crdt.ErrInvalid) {
			t.Errorf("readCursor(%x): %v, want invalid", b, err)
		}
	}
}
