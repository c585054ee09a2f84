package engine

import (
	"testing"

	"github.com/convergo/convergo/crdt/scope"
)

// FuzzParseCursor: whatever bytes a client sends, ParseCursor either
// refuses them or returns a cursor that encodes within MaxCursorBytes and
// parses back to itself.
func FuzzParseCursor(f *testing.F) {
	s, err := scope.FromValue([]any{"or", []any{"eq", "owner", "a"}, []any{"in", "team", []any{"x", "y"}}})
	if err != nil {
		f.Fatal(err)
	}
	for _, c := range []Cursor{
		CursorAt(7),
		{store: noIdentity, epoch: 1, seq: 9, mark: 1<<horizonNonceBits | 3},
		cursorOf(noIdentity, 2, []uint64{1, 0, 300}),
		{store: noIdentity, epoch: 1, seq: 9, scope: string(s.Encode())},
		{store: noIdentity, epoch: 1, scope: string(s.Encode()), trans: exactPrev, prevPos: packPositions([]uint64{4})},
		{store: noIdentity, epoch: 1, seq: 3, trans: approxPrev, prev: string(s.Encode()), prevPos: packPositions([]uint64{4})},
		{store: noIdentity, epoch: 1, seq: 3, slots: packSlots([]uint32{9}, nil)},
		{store: noIdentity, epoch: 1, shards: packPositions([]uint64{3, 0}), slots: packSlots([]uint32{9, 0}, []uint32{0, 4}), scope: string(s.Encode()), mark: 5},
	} {
		f.Add(c.Bytes())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCursor(b)
		if err != nil {
			return
		}
		enc := c.Bytes()
		if len(enc) > MaxCursorBytes {
			t.Fatalf("%v encodes in %d bytes", c, len(enc))
		}
		back, err := ParseCursor(enc)
		if err != nil || back != c {
			t.Fatalf("%v: encoded %x, parsed back %v, %v", c, enc, back, err)
		}
	})
}
