package bolt

import (
	"errors"
	"testing"

	"github.com/convergo/convergo/crdt"
)

// FuzzDecodeEntry feeds arbitrary bytes to the decoder of stored records:
// it must refuse them with ErrCorrupt or return an entry that round-trips,
// and never panic.
func FuzzDecodeEntry(f *testing.F) {
	v, _ := crdt.EncodeValue("hello")
	r := crdt.Record{ID: "a", Deleted: crdt.Stamp{Wall: 3, Replica: "x"}, Fields: map[string]crdt.Field{
		"f": {Stamp: crdt.Stamp{Wall: 5, Logical: 1, Replica: "y"}, Value: v},
		"g": {Stamp: crdt.Stamp{Wall: 6, Replica: "y"}},
	}}
	f.Add(encodeEntry(7, r))
	f.Add(encodeEntry(1, crdt.Record{ID: "a"}))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 1, 0xa0})
	f.Fuzz(func(t *testing.T, raw []byte) {
		e, err := decodeEntry(raw, "a")
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		back, err := decodeEntry(encodeEntry(e.Seq, e.Record), "a")
		if err != nil {
			t.Fatalf("re-encoded entry does not decode: %v", err)
		}
		if back.Seq != e.Seq || !back.Record.Equal(e.Record) {
			t.Fatalf("round trip changed the entry: %+v, then %+v", e, back)
		}
	})
}
