package proto

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/convergo/convergo/crdt"
)

func stamp(w int64, r string) crdt.Stamp { return crdt.Stamp{Wall: w, Logical: 0, Replica: r} }

func mustValue(t testing.TB, v any) []byte {
	t.Helper()
	b, err := crdt.EncodeValue(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func testChange(t testing.TB, coll, id, field string, v any, w int64) crdt.Change {
	return crdt.Change{Collection: coll, Record: crdt.SetField(id, field, mustValue(t, v), stamp(w, "c1"))}
}

func TestBodiesRoundTrip(t *testing.T) {
	ch := testChange(t, "demo.todos", "r1", "title", "milk", 1700000000000)
	cases := []struct {
		name string
		in   any
		out  any
	}{
		{"hello request", &HelloRequest{Protocol: Version, Replica: "c1"}, &HelloRequest{}},
		{"hello response", &HelloResponse{Protocol: Version, ServerTime: 42, ServerReplica: "srv-1", MaxPush: 1000, MaxPull: 1000, MaxBodyBytes: 4 << 20, MaxDrift: 300000, Subject: "alice", MaxPageBytes: 1 << 20, MaxMessageBytes: 4 << 20}, &HelloResponse{}},
		{"push request", &PushRequest{Replica: "c1", Changes: []crdt.Change{ch}}, &PushRequest{}},
		{"push response", &PushResponse{Results: []PushResult{{Status: StatusApplied}, {Status: StatusDuplicate}, {Status: StatusSuperseded, Lost: []string{"a", "b"}}, {Status: StatusRefused, Code: CodeClockDrift, Message: "ahead"}}}, &PushResponse{}},
		{"pull request", &PullRequest{Collection: "demo.todos", Cursor: []byte{1, 2}, Limit: 50}, &PullRequest{}},
		// The beginning: an empty cursor (a nil one goes as h'' too, never null).
		{"scoped pull request", &PullRequest{Collection: "demo.todos", Cursor: []byte{}, Scope: []byte{0x81, 0x63, 'a', 'l', 'l'}}, &PullRequest{}},
		{"pull response", &PullResponse{Records: []crdt.Record{ch.Record}, Next: []byte{9}, More: true}, &PullResponse{}},
		{"pull response with leaves", &PullResponse{Records: []crdt.Record{ch.Record}, Next: []byte{9}, Leaves: [][]byte{LeaveDigest("demo.todos", "r2")}}, &PullResponse{}},
		{"error body", &ErrorBody{Code: CodeForbidden, Message: "no", RequestID: "r-1"}, &ErrorBody{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Encode(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if err := Decode(b, tc.out); err != nil {
				t.Fatalf("decode %x: %v", b, err)
			}
			if !reflect.DeepEqual(tc.in, tc.out) {
				t.Fatalf("round trip: got %+v, want %+v", tc.out, tc.in)
			}
		})
	}
}

// A known key is never null on the wire (docs/protocol.md, section 2):
// nil slices and maps of an envelope go as empty ones. The Go client sent
// a pull or sub from the beginning with its cursor null, which every
// decoder now refuses malformed.
func TestEnvelopesNeverNull(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   any
		want string
	}{
		{"pull from the beginning", PullRequest{Collection: "a.b"}, "a30163612e6202400300"},
		{"sub from the beginning", Sub{Collection: "a.b"}, "a3006373756201" + "63612e62" + "0240"},
		{"push answer of no changes", PushResponse{}, "a10180"},
		{"restore of no records", RestoreRequest{Collection: "a.b"}, "a20163612e620280"},
	} {
		var b []byte
		var err error
		if m, ok := tc.in.(Message); ok {
			b, err = EncodeMessage(m)
		} else {
			b, err = Encode(tc.in)
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(b); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

// The wire form is the one docs/protocol.md gives: int-keyed maps, entries
// as arrays.
func TestWireShape(t *testing.T) {
	b, err := Encode(PullRequest{Collection: "a.b", Cursor: []byte{1}, Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	// {1: "a.b", 2: h'01', 3: 2}
	if got, want := hex.EncodeToString(b), "a30163612e620241010302"; got != want {
		t.Fatalf("pull request: got %s, want %s", got, want)
	}
	r := crdt.Record{ID: "x", Deleted: stamp(5, "r")}
	b, err = Encode(PullResponse{Records: []crdt.Record{r}, Next: []byte{4}})
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := crdt.EncodeRecord(r)
	// {1: [record], 2: h'04', 3: false}
	want := "a3" + "01" + "81" + hex.EncodeToString(rec) + "024104" + "03f4"
	if got := hex.EncodeToString(b); got != want {
		t.Fatalf("pull response: got %s, want %s", got, want)
	}
	b, err = EncodeMessage(Ping{Nonce: 7})
	if err != nil {
		t.Fatal(err)
	}
	// {0: "ping", 1: 7}
	if got, want := hex.EncodeToString(b), "a2006470696e670107"; got != want {
		t.Fatalf("ping: got %s, want %s", got, want)
	}
}

func TestMessagesRoundTrip(t *testing.T) {
	ch := testChange(t, "demo.todos", "r1", "done", true, 1700000000000)
	client := []Message{
		Hello{Protocol: Version, Replica: "c1", Token: "tok"},
		Sub{Collection: "demo.todos", Cursor: []byte{3}},
		Sub{Collection: "demo.todos", Cursor: []byte{3}, Scope: []byte{0x81, 0x63, 'a', 'l', 'l'}},
		Unsub{Collection: "demo.todos"},
		Ping{Nonce: 11},
		PushLive{Changes: []crdt.Change{ch}, Session: testSession},
		PushLive{Changes: []crdt.Change{}, Versions: map[string]uint64{"demo.todos": 2}, Session: testSession},
	}
	server := []Message{
		Welcome{Hello: HelloResponse{Protocol: Version, ServerTime: 5, ServerReplica: "s"}},
		Changes{Collection: "demo.todos", Records: []crdt.Record{ch.Record}, Next: []byte{1}, More: false},
		Changes{Collection: "demo.todos", Records: []crdt.Record{}, Next: []byte{1}, Leaves: [][]byte{LeaveDigest("demo.todos", "r1")}},
		Pong{Nonce: 11},
		ErrorMessage{Code: CodeForbidden, Message: "no", Collection: "x.y", RequestID: "r"},
		Resync{Collection: "demo.todos"},
		Pushed{Results: []PushResult{{Status: StatusApplied}, {Status: StatusRefused, Code: CodeForgedReplica, Message: "no"}}},
		Pushed{Results: []PushResult{}},
		Pushed{Code: CodeTooLarge, Message: "too many"},
		Pushed{Code: CodeUnavailable},
		Pushed{Results: []PushResult{{Status: StatusRefused, Code: CodeForbidden}}, RequestID: "srv-7"},
		Pushed{Code: CodeUnavailable, Message: "busy", RequestID: "srv-8"},
	}
	check := func(t *testing.T, msgs []Message, decode func([]byte) (Message, error)) {
		for _, m := range msgs {
			b, err := EncodeMessage(m)
			if err != nil {
				t.Fatal(err)
			}
			got, err := decode(b)
			if err != nil {
				t.Fatalf("%T: %v", m, err)
			}
			want := setType(m)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%T: got %+v, want %+v", m, got, want)
			}
		}
	}
	check(t, client, func(b []byte) (Message, error) { return DecodeClientMessage(b, testSession) })
	check(t, server, DecodeServerMessage)

	// A server message is not a client message and the other way round:
	// to the receiver it is a message of a type it does not know.
	b, _ := EncodeMessage(Pong{Nonce: 1})
	if _, err := DecodeClientMessage(b, testSession); !errors.Is(err, ErrUnknownType) {
		t.Fatalf("pong as client message: got %v, want ErrUnknownType", err)
	}
	b, _ = EncodeMessage(Ping{Nonce: 1})
	if _, err := DecodeServerMessage(b); !errors.Is(err, ErrUnknownType) {
		t.Fatalf("ping as server message: got %v, want ErrUnknownType", err)
	}
	// Keys a message type does not declare are skipped.
	withExtra, _ := hex.DecodeString("a3006470696e67010718636178") // {0: "ping", 1: 7, 99: "x"}
	if m, err := DecodeClientMessage(withExtra, testSession); err != nil || m != (Ping{Type: TypePing, Nonce: 7}) {
		t.Fatalf("ping with an unknown key: %+v, %v", m, err)
	}
}

func setType(m Message) Message {
	v := reflect.New(reflect.TypeOf(m)).Elem()
	v.Set(reflect.ValueOf(m))
	v.FieldByName("Type").SetString(m.MessageType())
	return v.Interface().(Message)
}

func TestDecodeRefuses(t *testing.T) {
	h := func(s string) []byte {
		b, err := hex.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := []struct {
		name string
		data []byte
		v    any
	}{
		{"duplicate key", h("a2010101016178"), &HelloRequest{}},       // {1:1, 1:"x"}
		{"indefinite map", h("bf0101026178ff"), &HelloRequest{}},      // {_ 1:1, 2:"x"}
		{"tag", h("a201c101026178"), &HelloRequest{}},                 // {1: 1(1), 2:"x"}
		{"wrong type", h("a2016178026178"), &HelloRequest{}},          // protocol as text
		{"invalid utf8", h("a201010262c328"), &HelloRequest{}},        // replica of bad UTF-8
		{"not a map", h("83010203"), &PullRequest{}},                  // [1,2,3]
		{"trailing bytes", h("a30161610200030000"), &PullRequest{}},   // {...} 00
		{"truncated", h("a301616102"), &PullRequest{}},                // cut short
		{"record without an id", h("a10181a0"), &PullResponse{}},      // {1: [{}]}
		{"push changes not array", h("a20161630201"), &PushRequest{}}, // {1:"c", 2:1}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data := tc.data
			err := Decode(data, tc.v)
			if err == nil {
				t.Fatalf("decode %x into %T: no error", data, tc.v)
			}
			if !errors.Is(err, crdt.ErrMalformed) && !errors.Is(err, crdt.ErrInvalid) {
				t.Fatalf("decode %x: %v does not wrap ErrMalformed or ErrInvalid", data, err)
			}
		})
	}
	for _, bad := range []string{
		"a0",           // {}
		"a10063666f6f", // {0:"foo"}
		"a1016161",     // {1:"a"}: no type
		"a1000c",       // {0:12}
	} {
		if _, err := DecodeClientMessage(h(bad), testSession); !errors.Is(err, crdt.ErrMalformed) && !errors.Is(err, ErrUnknownType) {
			t.Errorf("message %s: got %v, want ErrMalformed or ErrUnknownType", bad, err)
		}
	}
}

// A push keeps going past an invalid or unreadable change: the change is
// refused alone.
func TestPushDecodeRefusesPerChange(t *testing.T) {
	good := testChange(t, "demo.todos", "r1", "title", "a", 1700000000000)
	bad := testChange(t, "demo.todos", "r2", "title", "b", 1700000000000)
	bad.Collection = "no spaces allowed"
	big := testChange(t, "demo.todos", "r3", "title", strings.Repeat("x", 100<<10), 1700000000000)
	big.Record.Fields["t2"] = crdt.Field{Stamp: stamp(1700000000000, "c1"), Value: big.Record.Fields["title"].Value}
	big.Record.Fields["t3"] = crdt.Field{Stamp: stamp(1700000000000, "c1"), Value: big.Record.Fields["title"].Value}
	raw := func(c crdt.Change) []byte { return crdt.AppendChange(nil, c) }
	body := []byte{0xa2, 0x01, 0x62, 'c', '1', 0x02, 0x84}
	body = append(body, raw(good)...)
	body = append(body, raw(bad)...)
	body = append(body, raw(big)...)
	body = append(body, 0x01) // not a change at all
	var p PushRequest
	if err := Decode(body, &p); err != nil {
		t.Fatal(err)
	}
	changes, refused := p.Changes, p.Refused
	if len(changes) != 4 || len(refused) != 4 {
		t.Fatalf("got %d changes, %d refusals; want 4, 4", len(changes), len(refused))
	}
	if refused[0] != nil || !changes[0].Record.Equal(good.Record) {
		t.Fatalf("good change: refused %v, got %+v", refused[0], changes[0])
	}
	if !errors.Is(refused[1], crdt.ErrInvalid) {
		t.Fatalf("bad collection: got %v, want ErrInvalid", refused[1])
	}
	if !errors.Is(refused[2], crdt.ErrTooLarge) {
		t.Fatalf("big record: got %v, want ErrTooLarge", refused[2])
	}
	if !errors.Is(refused[3], crdt.ErrMalformed) {
		t.Fatalf("not a change: got %v, want ErrMalformed", refused[3])
	}
}

func TestStatusOf(t *testing.T) {
	for code, want := range map[string]int{
		CodeMalformed: 400, CodeInvalid: 400, CodeUnsupportedVersion: 400, CodeUnauthenticated: 401,
		CodeTokenExpired: 401, CodeForbidden: 403, CodeNotFound: 404, CodeMethodNotAllowed: 405, CodeTooLarge: 413,
		CodeUpgradeRequired: 426, CodeRateLimited: 429, CodeUnavailable: 503, CodeInternal: 500, CodeClockDrift: 400, "whatever": 500,
	} {
		if got := StatusOf(code); got != want {
			t.Errorf("StatusOf(%q): got %d, want %d", code, got, want)
		}
	}
}

// Decoding untrusted bytes never panics, and what decodes re-encodes to
// something that decodes to the same message.
func FuzzDecodeClientMessage(f *testing.F) {
	for _, m := range []Message{
		Hello{Protocol: Version, Replica: "c1", Token: "t"},
		Sub{Collection: "demo.todos", Cursor: []byte{9}},
		Unsub{Collection: "a"},
		Ping{Nonce: 3},
		PushLive{Changes: []crdt.Change{testChange(f, "demo.todos", "r1", "title", "a", testSession.Base+5)}, Session: testSession},
	} {
		b, err := EncodeMessage(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeClientMessage(data, testSession)
		if err != nil {
			return
		}
		if p, ok := m.(PushLive); ok && p.Refused != nil {
			return // a refused change re-encodes as a zero one
		}
		b, err := EncodeMessage(m)
		if err != nil {
			t.Fatalf("re-encode %T: %v", m, err)
		}
		back, err := DecodeClientMessage(b, testSession)
		if err != nil {
			t.Fatalf("decode re-encoded %x: %v", b, err)
		}
		b2, _ := EncodeMessage(back)
		if !bytes.Equal(b, b2) {
			t.Fatalf("not stable: %x then %x", b, b2)
		}
	})
}

// TestLeaveDigest pins the digest: clients compute it on their own
// (protocol.json's leaveVectors carry more).
func TestLeaveDigest(t *testing.T) {
	got := LeaveDigest("notes", "n1")
	sum := sha256.Sum256([]byte("convergo/leave/v2\x00notes\x00n1"))
	if !bytes.Equal(got, sum[:16]) || len(got) != LeaveBytes {
		t.Fatalf("got %x, want %x", got, sum[:16])
	}
	if !Reserved(DenyCollection) || Reserved("convergo.deny") || Reserved("_convergo") {
		t.Fatal("reserved prefix")
	}
}

// testSession is a live session as the tests push over it: its replica
// is testChange's, its base a little before testChange's usual walls.
var testSession = Session{Replica: "c1", Base: 1699999990000}

// WithDefaults is the rule both clients read a hello by (docs/protocol.md,
// section 6): each limit key (4, 5, 6, 7, 9 and 10) left at 0 is its
// default, the others stay as announced.
func TestHelloWithDefaults(t *testing.T) {
	announced := HelloResponse{Protocol: Version, ServerTime: 42, MaxPush: 7, MaxPull: 8, MaxBodyBytes: 9, MaxDrift: 10, MaxPageBytes: 11, MaxMessageBytes: 12}
	for _, tc := range []struct {
		key  int
		zero func(*HelloResponse)
		want func(HelloResponse) HelloResponse
	}{
		{4, func(h *HelloResponse) { h.MaxPush = 0 }, func(h HelloResponse) HelloResponse { h.MaxPush = DefaultMaxPushChanges; return h }},
		{5, func(h *HelloResponse) { h.MaxPull = 0 }, func(h HelloResponse) HelloResponse { h.MaxPull = DefaultMaxPullRecords; return h }},
		{6, func(h *HelloResponse) { h.MaxBodyBytes = 0 }, func(h HelloResponse) HelloResponse { h.MaxBodyBytes = DefaultMaxBodyBytes; return h }},
		{7, func(h *HelloResponse) { h.MaxDrift = 0 }, func(h HelloResponse) HelloResponse {
			h.MaxDrift = uint64(crdt.DefaultMaxDrift.Milliseconds())
			return h
		}},
		{9, func(h *HelloResponse) { h.MaxPageBytes = 0 }, func(h HelloResponse) HelloResponse { h.MaxPageBytes = DefaultMaxPageBytes; return h }},
		{10, func(h *HelloResponse) { h.MaxMessageBytes = 0 }, func(h HelloResponse) HelloResponse {
			h.MaxMessageBytes = DefaultMaxMessageBytes
			return h
		}},
	} {
		t.Run(fmt.Sprintf("key %d at 0", tc.key), func(t *testing.T) {
			h := announced
			tc.zero(&h)
			if got, want := h.WithDefaults(), tc.want(announced); got != want {
				t.Fatalf("got %+v, want %+v", got, want)
			}
		})
	}
	if got := announced.WithDefaults(); got != announced {
		t.Fatalf("nothing at 0: got %+v, want it unchanged %+v", got, announced)
	}
}

// A limit of the hello is a count, never negative: a hello that announces
// one below 0 does not decode, in the browser client as here.
func TestHelloNegativeLimitIsMalformed(t *testing.T) {
	for _, key := range []int{4, 5, 6, 7, 9, 10} {
		t.Run(fmt.Sprintf("key %d", key), func(t *testing.T) {
			b, err := Encode(map[int]any{1: Version, 2: 42, key: -1})
			if err != nil {
				t.Fatal(err)
			}
			var h HelloResponse
			if err := Decode(b, &h); err == nil {
				t.Fatalf("a hello with key %d at -1 decoded as %+v", key, h)
			}
		})
	}
}
