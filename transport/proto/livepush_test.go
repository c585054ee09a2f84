package proto

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"

	"pgregory.net/rapid"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/crdttest"
)

// livePushSpace draws changes whose stamps name the session's replica and
// two others; their walls are moved around a session base by genLivePush.
var livePushSpace = crdttest.Space{
	IDs:        []string{"a", "b"},
	Fields:     []string{"f", "g", "h"},
	Replicas:   []string{repA, repB, "r3"},
	Values:     []any{1, "x", true, nil},
	MaxWall:    4,
	MaxLogical: 2,
}

// wallOffsets are distances (ms) around the session base and between
// walls where the CBOR head of a difference changes length.
var wallOffsets = []int64{0, 1, 23, 24, 255, 256, 65_535, 65_536, 3_600_000, 1 << 32, 1<<32 - 1}

// genLivePush draws a session and the changes of a push over it: walls
// before, at and after the session base, close together or far apart.
func genLivePush(t *rapid.T) (Session, []crdt.Change) {
	s := Session{Replica: repA, Base: rapid.Int64Range(0, 1<<41).Draw(t, "base")}
	if rapid.IntRange(0, 9).Draw(t, "base at the edge") == 0 {
		s.Base = rapid.SampledFrom([]int64{0, crdt.MaxWall}).Draw(t, "edge")
	}
	origin := s.Base + rapid.SampledFrom(wallOffsets).Draw(t, "origin")
	if rapid.Bool().Draw(t, "origin before the base") {
		origin = s.Base - rapid.SampledFrom(wallOffsets).Draw(t, "before")
	}
	// Walls 1..4 of the space become origin plus an offset each.
	var step [5]int64
	for i := range step {
		step[i] = rapid.SampledFrom(wallOffsets).Draw(t, "step")
	}
	changes := livePushSpace.Changes("demo.todos", "notes").Draw(t, "changes")
	move := func(st *crdt.Stamp) {
		if st.IsZero() {
			return
		}
		st.Wall = min(max(origin+step[st.Wall], 0), crdt.MaxWall)
	}
	for i := range changes {
		r := changes[i].Record.Clone()
		move(&r.Deleted)
		for name, f := range r.Fields {
			move(&f.Stamp)
			r.Fields[name] = f
		}
		changes[i].Record = r
	}
	return s, changes
}

// stampsOf returns the walls of every stamp of changes.
func wallsOf(changes []crdt.Change) []int64 {
	var ws []int64
	for _, c := range changes {
		if !c.Record.Deleted.IsZero() {
			ws = append(ws, c.Record.Deleted.Wall)
		}
		for _, f := range c.Record.Fields {
			ws = append(ws, f.Stamp.Wall)
		}
	}
	return ws
}

func headOf(n int64) int { return len(crdt.AppendHead(nil, 0, uint64(n))) }

// A live push decodes, in its session, to the changes encoded.
func TestLivePushRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s, changes := genLivePush(t)
		b, err := EncodeMessage(PushLive{Changes: changes, Session: s})
		if err != nil {
			t.Fatal(err)
		}
		m, err := DecodeClientMessage(b, s)
		if err != nil {
			t.Fatalf("decode %x: %v", b, err)
		}
		p := m.(PushLive)
		if p.Refused != nil || len(p.Changes) != len(changes) {
			t.Fatalf("decoded %x: %+v", b, p)
		}
		for i := range changes {
			if p.Changes[i].Collection != changes[i].Collection || !p.Changes[i].Record.Equal(changes[i].Record) {
				t.Fatalf("change %d: got %+v, want %+v", i, p.Changes[i], changes[i])
			}
		}
		again, _ := EncodeMessage(p)
		if !bytes.Equal(again, b) {
			t.Fatalf("re-encoded differently:\n%x\n%x", b, again)
		}
	})
}

// The encoder's choice (docs/protocol.md, "Live push"): with B the
// smallest wall, no key 8 exactly when every wall is at or after the
// session base S and sum(head(w-S)) <= 1 + head(B) + sum(head(w-B));
// otherwise key 8 is B. So the message is never longer than the same
// push with key 8, and the session base is what a tie chooses.
func TestLivePushEncoderChoice(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s, changes := genLivePush(t)
		b, err := EncodeMessage(PushLive{Changes: changes, Session: s})
		if err != nil {
			t.Fatal(err)
		}
		var w pushLiveWire
		if err := crdt.UnmarshalEnvelope(b, &w); err != nil {
			t.Fatal(err)
		}
		walls := wallsOf(changes)
		if len(walls) == 0 {
			if w.Base != nil {
				t.Fatalf("a push without stamps has key 8: %x", b)
			}
			return
		}
		low := walls[0]
		for _, x := range walls {
			low = min(low, x)
		}
		fromS, fromB := 0, 1+headOf(low)
		for _, x := range walls {
			fromS += headOf(x - s.Base)
			fromB += headOf(x - low)
		}
		wantKey8 := low < s.Base || fromS > fromB
		if (w.Base != nil) != wantKey8 {
			t.Fatalf("key 8 %v, want %v (S %d, B %d, from S %d bytes, from B %d)", w.Base, wantKey8, s.Base, low, fromS, fromB)
		}
		if w.Base != nil && *w.Base != uint64(low) {
			t.Fatalf("key 8 is %d, want the smallest wall %d", *w.Base, low)
		}
		// The same push with key 8 forced (a session without a usable base).
		forced, _ := EncodeMessage(PushLive{Changes: changes, Session: Session{Replica: s.Replica, Base: -1}})
		if !wantKey8 && len(b) > len(forced) {
			t.Fatalf("from the session base %d bytes, with key 8 %d", len(b), len(forced))
		}
	})
}

// A live push names no replica: key 1 or 9 refuses it whole, and so does
// a push without key 8 in a session without a base.
func TestLivePushRefusals(t *testing.T) {
	ch := testChange(t, "demo.todos", "r1", "title", "a", testSession.Base+5)
	good, err := EncodeMessage(PushLive{Changes: []crdt.Change{ch}, Session: testSession})
	if err != nil {
		t.Fatal(err)
	}
	// good is a map of 2 entries {0: "push", 2: [...]}: add one entry.
	with := func(entry ...byte) []byte {
		b := append([]byte{0xa3}, good[1:]...)
		return append(b, entry...)
	}
	cases := map[string]struct {
		data []byte
		s    Session
	}{
		"key 1":                         {with(0x01, 0x62, 'c', '1'), testSession},
		"key 1 null":                    {with(0x01, 0xf6), testSession},
		"key 9":                         {with(0x09, 0x62, 'c', '1'), testSession},
		"no session base":               {good, Session{Replica: "c1", Base: -1}},
		"session base past the largest": {good, Session{Replica: "c1", Base: crdt.MaxWall + 1}},
		"not a push":                    {func() []byte { b, _ := EncodeMessage(Ping{Nonce: 1}); return b }(), testSession},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := DecodePushLive(tc.data, tc.s)
			if !errors.Is(err, crdt.ErrMalformed) {
				t.Fatalf("decode %x: got %v, want ErrMalformed", tc.data, err)
			}
		})
	}
	if _, err := DecodePushLive(good, testSession); err != nil {
		t.Fatalf("the push itself: %v", err)
	}
}

// A pushed message has results or a code, exactly one of them.
func TestPushedRefuses(t *testing.T) {
	for _, h := range []string{
		"a10066707573686564",                   // {0: "pushed"}
		"a30066707573686564018002617803617878", // {0: "pushed", 1: [], 2: "x", 3: "xx"}
		"a2006670757368656402" + "60",          // {0: "pushed", 2: ""}
		"a2006670757368656401f6",               // {0: "pushed", 1: null}
	} {
		b := mustHex(t, h)
		if _, err := DecodeServerMessage(b); !errors.Is(err, crdt.ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", h, err)
		}
	}
	// The two forms, byte for byte.
	for _, tc := range []struct {
		m    Pushed
		want string
	}{
		{Pushed{Results: []PushResult{{Status: StatusDuplicate}}}, "a20066707573686564" + "0181a10101"},
		{Pushed{}, "a20066707573686564" + "0180"},
		{Pushed{Code: CodeTooLarge, Message: "m"}, "a30066707573686564" + "0269746f6f5f6c61726765" + "03616d"},
		// Key 4, the push's request id.
		{Pushed{Results: []PushResult{}, RequestID: "r-1"}, "a30066707573686564" + "0180" + "0463722d31"},
		{Pushed{Code: CodeTooLarge, Message: "m", RequestID: "r-1"}, "a40066707573686564" + "0269746f6f5f6c61726765" + "03616d" + "0463722d31"},
	} {
		b, err := EncodeMessage(tc.m)
		if err != nil {
			t.Fatal(err)
		}
		if got := hexOf(b); got != tc.want {
			t.Errorf("%+v: got %s, want %s", tc.m, got, tc.want)
		}
		m, err := DecodeServerMessage(b)
		if p, ok := m.(Pushed); err != nil || !ok || p.RequestID != tc.m.RequestID || p.Code != tc.m.Code {
			t.Errorf("%s decodes to %#v (%v), want request id %q", tc.want, m, err, tc.m.RequestID)
		}
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func hexOf(b []byte) string { return hex.EncodeToString(b) }
