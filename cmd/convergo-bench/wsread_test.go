package main

import (
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

func TestRecordIDs(t *testing.T) {
	clock, err := crdt.NewClock(crdt.ClockConfig{Replica: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	var recs []crdt.Record
	for _, id := range []string{"w0", "w17", "other"} {
		s, err := clock.Now(time.Now().UnixMilli())
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, crdt.SetField(id, "title", []byte{0x61, 'x'}, s))
	}
	b, err := proto.EncodeMessage(proto.Changes{Collection: "demo.todos", Records: recs, Next: []byte{1, 2}, Seals: [][]byte{{1}, {2}, {3}}})
	if err != nil {
		t.Fatal(err)
	}
	// The decoder's answer is what recordIDs must agree with.
	m, err := proto.DecodeServerMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, r := range m.(proto.Changes).Records {
		want = append(want, r.ID)
	}
	var got []string
	if ok, err := recordIDs(b, func(id []byte) { got = append(got, string(id)) }); err != nil || !ok {
		t.Fatalf("recordIDs = %v, %v; want a changes message", ok, err)
	}
	if !slices.Equal(got, want) || len(got) != 3 {
		t.Errorf("recordIDs = %q, want %q", got, want)
	}
	if k, ok := writeIndex([]byte("w17")); !ok || k != 17 {
		t.Errorf("writeIndex(w17) = %d, %v", k, ok)
	}
	for _, id := range []string{"other", "w", "wx1", "17"} {
		if _, ok := writeIndex([]byte(id)); ok {
			t.Errorf("writeIndex(%q) accepted", id)
		}
	}

	pong, err := proto.EncodeMessage(proto.Pong{Nonce: 3})
	if err != nil {
		t.Fatal(err)
	}
	got = nil
	if ok, err := recordIDs(pong, func(id []byte) { got = append(got, string(id)) }); err != nil || ok || got != nil {
		t.Errorf("recordIDs(pong) = %q, %v, %v; want nothing", got, ok, err)
	}
	if _, err := recordIDs(b[:len(b)/2], func([]byte) {}); err == nil {
		t.Error("recordIDs accepted a truncated message")
	}
}

// TestRawSubFrames feeds rawSub a message cut into fragments with a ping
// between them, in pieces of 3 bytes: it returns the message whole and
// answers the ping with a masked pong of the same payload.
func TestRawSubFrames(t *testing.T) {
	frame := func(fin bool, op byte, p []byte) []byte {
		b := []byte{op, byte(len(p))}
		if fin {
			b[0] |= 0x80
		}
		return append(b, p...)
	}
	long := make([]byte, 300)
	for i := range long {
		long[i] = byte(i)
	}
	long16 := append([]byte{0x82, 126, 0x01, 0x2c}, long...) // 300 bytes, 16-bit length
	var wire []byte
	wire = append(wire, frame(false, 0x2, []byte("hel"))...)
	wire = append(wire, frame(true, 0x9, []byte("pp"))...)
	wire = append(wire, frame(true, 0x0, []byte("lo"))...)
	wire = append(wire, long16...)

	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	pongs := make(chan []byte, 1)
	go func() {
		b := make([]byte, 8)
		n, _ := io.ReadFull(server, b)
		pongs <- b[:n]
	}()
	s := &rawSub{conn: client}
	pos := 0
	read := func(p []byte) (int, error) { // 3 bytes at a time
		if pos == len(wire) {
			return 0, io.EOF
		}
		n := copy(p[:min(len(p), 3)], wire[pos:])
		pos += n
		return n, nil
	}
	next := func() []byte {
		for {
			m, ok, err := s.parse()
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				return slices.Clone(m)
			}
			if err := s.fill(read); err != nil {
				t.Fatal(err)
			}
		}
	}
	if m := next(); string(m) != "hello" {
		t.Errorf("first message %q, want hello", m)
	}
	if m := next(); !slices.Equal(m, long) {
		t.Errorf("second message of %d bytes, want the 300 sent", len(m))
	}
	p := <-pongs
	if len(p) != 8 || p[0] != 0x8a || p[1] != 0x82 {
		t.Fatalf("pong frame % x, want a final masked pong of 2 bytes", p)
	}
	if got := []byte{p[6] ^ p[2], p[7] ^ p[3]}; string(got) != "pp" {
		t.Errorf("pong payload %q, want pp", got)
	}
}
