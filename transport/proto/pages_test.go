package proto

import (
	"bytes"
	"fmt"
	"testing"

	"pgregory.net/rapid"

	"github.com/convergo/convergo/crdt"
)

// Types without the hand-written encoders: the reference encoding.
type (
	plainPull    PullResponse
	plainChanges Changes
)

func genRecord(t *rapid.T, label string) crdt.Record {
	id := rapid.StringMatching(`[a-z0-9]{1,40}`).Draw(t, label+"id")
	stamp := func(l string) crdt.Stamp {
		return crdt.Stamp{
			Wall:    rapid.Int64Range(1, crdt.MaxWall).Draw(t, l+"wall"),
			Logical: rapid.Uint32().Draw(t, l+"logical"),
			Replica: rapid.StringMatching(`[a-z0-9]{1,20}`).Draw(t, l+"replica"),
		}
	}
	r := crdt.Record{ID: id}
	if rapid.Bool().Draw(t, label+"deleted") {
		r.Deleted = stamp(label + "del")
	}
	n := rapid.IntRange(0, 5).Draw(t, label+"fields")
	for i := 0; i < n; i++ {
		if r.Fields == nil {
			r.Fields = map[string]crdt.Field{}
		}
		name := rapid.StringMatching(`[a-zA-Z_]{1,12}`).Draw(t, label+"name")
		var v []byte
		if rapid.Bool().Draw(t, label+"set") {
			var err error
			v, err = crdt.EncodeValue(rapid.OneOf(
				rapid.Map(rapid.String(), func(s string) any { return s }),
				rapid.Map(rapid.Int64(), func(n int64) any { return n }),
				rapid.Map(rapid.Bool(), func(b bool) any { return b }),
			).Draw(t, label+"value"))
			if err != nil {
				t.Fatal(err)
			}
		}
		r.Fields[name] = crdt.Field{Stamp: stamp(label + name), Value: v}
	}
	return r
}

func genRecords(t *rapid.T) []crdt.Record {
	n := rapid.IntRange(0, 30).Draw(t, "records")
	rs := make([]crdt.Record, n)
	for i := range rs {
		rs[i] = genRecord(t, fmt.Sprint(i))
	}
	return rs
}

// TestPageEncodingRoundTrips: the hand-written encoders write compact
// stamps, and what they write decodes to what was encoded, as does the
// plain form (reflection), which decoders accept too.
func TestPageEncodingRoundTrips(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		es := genRecords(t)
		next := rapid.SliceOfN(rapid.Byte(), 0, 40).Draw(t, "next")
		more := rapid.Bool().Draw(t, "more")

		var seals [][]byte
		if rapid.Bool().Draw(t, "sealed") {
			for range es {
				seals = append(seals, rapid.SliceOfN(rapid.Byte(), 16, 16).Draw(t, "seal"))
			}
		}
		var leaves [][]byte
		for i := range rapid.IntRange(0, 5).Draw(t, "leaves") {
			leaves = append(leaves, LeaveDigest("demo.todos", fmt.Sprint("gone", i)))
		}
		var reset *ResetInfo
		if rapid.Bool().Draw(t, "reset") {
			reset = &ResetInfo{Reason: ResetHistoryLost, Message: rapid.String().Draw(t, "why")}
		}
		p := PullResponse{Records: es, Next: next, More: more, Reset: reset, Seals: seals, Leaves: leaves}
		fast, _ := p.MarshalCBOR()
		ref, err := crdt.Marshal(plainPull(p))
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range [][]byte{fast, ref} {
			var back PullResponse
			if err := Decode(b, &back); err != nil {
				t.Fatalf("decode %x: %v", b, err)
			}
			if !bytes.Equal(back.Next, next) || back.More != more || len(back.Leaves) != len(leaves) || len(back.Seals) != len(seals) ||
				(reset == nil) != (back.Reset == nil) || !sameRecords(back.Records, es) {
				t.Fatalf("round trip of %x:\n got %+v\nwant %+v", b, back, p)
			}
		}

		c := Changes{Type: TypeChanges, Collection: "demo.todos", Records: es, Next: next, More: more, Seals: seals, Leaves: leaves}
		fast, _ = EncodeMessage(c)
		ref, err = crdt.Marshal(plainChanges(c))
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range [][]byte{fast, ref} {
			m, err := DecodeServerMessage(b)
			if err != nil {
				t.Fatalf("decode %x: %v", b, err)
			}
			back := m.(Changes)
			if back.Collection != c.Collection || !bytes.Equal(back.Next, next) || back.More != more ||
				len(back.Leaves) != len(leaves) || len(back.Seals) != len(seals) || !sameRecords(back.Records, es) {
				t.Fatalf("round trip of %x:\n got %+v\nwant %+v", b, back, c)
			}
		}
	})
}

func sameRecords(a, b []crdt.Record) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

func TestEmptyPageIsAnArray(t *testing.T) {
	for _, es := range [][]crdt.Record{nil, {}} {
		b, _ := Encode(PullResponse{Records: es, Next: []byte{7}})
		if want := []byte{0xa3, 0x01, 0x80, 0x02, 0x41, 0x07, 0x03, 0xf4}; !bytes.Equal(b, want) {
			t.Fatalf("got %x, want %x", b, want)
		}
	}
}

func benchPage(b *testing.B) PullResponse {
	v, _ := crdt.EncodeValue("a todo title of some length")
	es := make([]crdt.Record, 1000)
	for i := range es {
		s := crdt.Stamp{Wall: 1_700_000_000_000 + int64(i), Replica: "client-abcdef"}
		es[i] = crdt.Record{ID: fmt.Sprintf("todo-%06d", i), Fields: map[string]crdt.Field{
			"title": {Stamp: s, Value: v}, "done": {Stamp: s, Value: []byte{0xf4}}, "order": {Stamp: s, Value: []byte{0x18, 0x2a}},
		}}
	}
	return PullResponse{Records: es, Next: []byte{1, 2, 3}, More: true}
}

func BenchmarkEncodePage(b *testing.B) {
	p := benchPage(b)
	b.Run("hand", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Encode(p); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("reflection", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := crdt.Marshal(plainPull(p)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
