package proto

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/convergo/convergo/crdt"
)

// The compact vectors (crdt/testdata/compact.json) pin compact stamps
// (docs/protocol.md, "Compact stamps") for every implementation: each
// message in its plain and its compact form, the records it carries in
// their plain (stored) form, and messages every decoder refuses. The JS
// client's test/compact.test.js reads the same file. Regenerate with
//
//	go test ./transport/proto -run TestCompactVectors -update

const compactVectorsPath = "../../crdt/testdata/compact.json"

type compactFile struct {
	Comment  string           `json:"comment"`
	Messages []compactMessage `json:"messages"`
	Invalid  []compactInvalid `json:"invalid"`
}

type compactMessage struct {
	Name string `json:"name"`
	// Kind is "pull" (a pull answer), "changes" (a live changes message),
	// "push" (a push body) or "live push" (a push message over a live
	// session).
	Kind    string `json:"kind"`
	Replica string `json:"replica,omitempty"` // push: the pushing replica; live push: the session's
	// Base is, for a live push, the session base: the server time of the
	// session's welcome (Session.Base).
	Base *int64 `json:"base,omitempty"`
	// Versions is, for a push or live push, its key 3.
	Versions map[string]uint64 `json:"versions,omitempty"`
	// Prefix is, for a push, the replica prefix of the token it goes with
	// (PushRequest.Prefix): when the replica is one of its ids, the body
	// names it by its device part (key 9) and is read back with it.
	Prefix     string `json:"prefix,omitempty"`
	Collection string `json:"collection,omitempty"` // changes: key 1
	Next       string `json:"next,omitempty"`       // pull, changes: the cursor, hex
	More       bool   `json:"more,omitempty"`
	// Records are the message's records (pull, changes) in plain form,
	// hex; Changes a push's changes in plain form, hex.
	Records []string `json:"records,omitempty"`
	Changes []string `json:"changes,omitempty"`
	// PlainHex is the message with plain stamps; a live push has no plain
	// form (its walls are always differences) and none.
	PlainHex   string `json:"plain_hex,omitempty"`
	CompactHex string `json:"compact_hex"`
}

type compactInvalid struct {
	Name string `json:"name"`
	Kind string `json:"kind"` // "pull", "changes", "push" or "live push"
	Hex  string `json:"hex"`  // the whole message
	// Prefix is, for a push, the principal's replica prefix it is read
	// with.
	Prefix string `json:"prefix,omitempty"`
	// Replica and Base are, for a live push, the session it is read in.
	Replica string `json:"replica,omitempty"`
	Base    *int64 `json:"base,omitempty"`
	Error   string `json:"error"` // the code: malformed, invalid
	// Change is, for a push, the index of the change refused alone (the
	// rest of the push decodes); absent, the push is refused whole.
	Change *int `json:"change,omitempty"`
}

// Replica ids as clients make them: the subject's 16-character prefix,
// the separator and a 22-character random device part; and a short one.
const (
	repA = "abcdefghij234567_V1StGXR8_Z5jdHi6B-myT0"
	repB = "bcdefghij234567a_3f9Kq0Lw2xYz8pQrT5vNcA"
	repC = "zz"
	// prefixA and prefixB are the prefixes of repA and repB.
	prefixA = "abcdefghij234567"
	prefixB = "bcdefghij234567a"
)

func stampAt(wall int64, logical uint32, replica string) crdt.Stamp {
	return crdt.Stamp{Wall: wall, Logical: logical, Replica: replica}
}

func val(t *testing.T, v any) []byte {
	t.Helper()
	b, err := crdt.EncodeValue(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func compactCases(t *testing.T) []compactMessage {
	const w = int64(1_764_720_000_000) // 2025-12-03
	todo := func(id string, s crdt.Stamp, title string) crdt.Record {
		return crdt.Record{ID: id, Fields: map[string]crdt.Field{
			"title": {Stamp: s, Value: val(t, title)},
			"done":  {Stamp: s, Value: val(t, false)},
			"order": {Stamp: s, Value: val(t, 42)},
		}}
	}
	page := func(name string, next []byte, more bool, rs ...crdt.Record) compactMessage {
		return compactMessage{Name: name, Kind: "pull", Next: hex.EncodeToString(next), More: more, Records: recordsHex(rs)}
	}
	var out []compactMessage
	out = append(out,
		page("empty page", nil, false),
		page("one replica, close walls: table and base", []byte{1, 2, 3}, true,
			todo("t1", stampAt(w, 0, repA), "milk"),
			todo("t2", stampAt(w+1, 0, repA), "eggs"),
			todo("t3", stampAt(w+300, 2, repA), "bread")),
		page("every id once, walls far apart: plain", []byte{9}, false,
			crdt.Record{ID: "a", Fields: map[string]crdt.Field{"v": {Stamp: stampAt(1, 0, repA), Value: val(t, 1)}}},
			crdt.Record{ID: "b", Fields: map[string]crdt.Field{"v": {Stamp: stampAt(w, 0, repB), Value: val(t, 2)}}}),
		page("delete stamps, unset fields, three replicas in encoded order", []byte{4}, false,
			crdt.Record{ID: "x", Deleted: stampAt(w+5, 0, repB), Fields: map[string]crdt.Field{
				"title": {Stamp: stampAt(w+5, 0, repB)},
				"done":  {Stamp: stampAt(w+2, 1, repC), Value: val(t, true)},
			}},
			crdt.Record{ID: "y", Deleted: stampAt(w+70_000, 0, repC), Fields: map[string]crdt.Field{
				"a": {Stamp: stampAt(w, 0, repA), Value: val(t, "one")},
				"b": {Stamp: stampAt(w, 1, repA), Value: val(t, map[string]any{"k": []any{1, "two"}})},
			}}),
		page("one wall, many replicas: base but no table", nil, false,
			crdt.Record{ID: "p", Fields: map[string]crdt.Field{
				"a": {Stamp: stampAt(w, 0, repA), Value: val(t, 1)},
				"b": {Stamp: stampAt(w, 0, repB), Value: val(t, 2)},
				"c": {Stamp: stampAt(w, 0, repC), Value: val(t, 3)},
			}}),
	)
	// A live changes message as the fan-out sends one write.
	out = append(out, compactMessage{Name: "changes of one write", Kind: "changes", Collection: "demo.todos",
		Next: "0a0b", More: false, Records: recordsHex([]crdt.Record{todo("t9", stampAt(w+9, 0, repB), "call")})})
	// Pushes: index 0 is the pusher (key 1).
	change := func(coll string, r crdt.Record) string {
		return hex.EncodeToString(crdt.AppendChange(nil, crdt.Change{Collection: coll, Record: r}))
	}
	out = append(out,
		compactMessage{Name: "B3.1 push: one change of one field", Kind: "push", Replica: repA, Changes: []string{
			change("b3", crdt.Record{ID: "doc", Fields: map[string]crdt.Field{"v": {Stamp: stampAt(w, 0, repA), Value: val(t, 7)}}}),
		}},
		compactMessage{Name: "push of one change of three fields", Kind: "push", Replica: repA, Changes: []string{
			change("demo.todos", todo("t1", stampAt(w, 3, repA), "milk")),
		}},
		compactMessage{Name: "push of several changes, another replica twice", Kind: "push", Replica: repA, Changes: []string{
			change("demo.todos", todo("t1", stampAt(w, 0, repA), "milk")),
			change("demo.todos", crdt.Record{ID: "t2", Deleted: stampAt(w+1, 0, repB), Fields: map[string]crdt.Field{
				"title": {Stamp: stampAt(w+1, 0, repB)},
			}}),
			change("notes", crdt.Record{ID: "n1", Fields: map[string]crdt.Field{"body": {Stamp: stampAt(w+4_000_000_000, 0, repC), Value: val(t, "far")}}}),
		}},
		compactMessage{Name: "push of a pusher that wrote nothing of its own", Kind: "push", Replica: repC, Changes: []string{
			change("demo.todos", crdt.Record{ID: "t3", Fields: map[string]crdt.Field{"done": {Stamp: stampAt(w, 0, repB), Value: val(t, true)}}}),
		}},
	)
	// Pushes sent with a token whose subject's prefix is the pusher's:
	// key 9 names the pusher by its device part.
	out = append(out,
		compactMessage{Name: "B3.1 push by device part", Kind: "push", Replica: repA, Prefix: prefixA, Changes: []string{
			change("b3", crdt.Record{ID: "doc", Fields: map[string]crdt.Field{"v": {Stamp: stampAt(w, 0, repA), Value: val(t, 7)}}}),
		}},
		compactMessage{Name: "push by device part, several changes, another replica twice", Kind: "push", Replica: repA, Prefix: prefixA, Changes: []string{
			change("demo.todos", todo("t1", stampAt(w, 0, repA), "milk")),
			change("demo.todos", crdt.Record{ID: "t2", Deleted: stampAt(w+1, 0, repB), Fields: map[string]crdt.Field{
				"title": {Stamp: stampAt(w+1, 0, repB)},
			}}),
		}},
		compactMessage{Name: "push with another subject's prefix: the replica whole", Kind: "push", Replica: repA, Prefix: prefixB, Changes: []string{
			change("b3", crdt.Record{ID: "doc", Fields: map[string]crdt.Field{"v": {Stamp: stampAt(w, 0, repA), Value: val(t, 7)}}}),
		}},
	)
	out = append(out, liveCompactCases(t, w, todo, change)...)
	for i := range out {
		encodeCompactMessage(t, &out[i])
	}
	return out
}

// liveCompactCases are live pushes: the session's replica is index 0, the
// walls differences from the session base unless key 8 beats it by the
// encoder's rule (crdt.PlanCompactFrom).
func liveCompactCases(t *testing.T, w int64, todo func(string, crdt.Stamp, string) crdt.Record, change func(string, crdt.Record) string) []compactMessage {
	live := func(name string, base int64, replica string, changes ...string) compactMessage {
		return compactMessage{Name: "live push: " + name, Kind: "live push", Replica: replica, Base: &base, Changes: changes}
	}
	one := func(wall int64) string {
		return change("b3", crdt.Record{ID: "doc", Fields: map[string]crdt.Field{"v": {Stamp: stampAt(wall, 0, repA), Value: val(t, 7)}}})
	}
	const hour = 3_600_000
	several := make([]string, 4)
	for i := range several {
		several[i] = change("demo.todos", todo(fmt.Sprintf("t%d", i), stampAt(w+int64(i), 0, repA), "item"))
	}
	versioned := live("schema versions (key 3)", w-1000, repA, one(w))
	versioned.Versions = map[string]uint64{"b3": 2, "demo.todos": 1}
	return []compactMessage{
		live("B3.1, a session opened a second before: from the session base", w-1000, repA, one(w)),
		live("B3.1, a session opened hours before: from the session base", w-3*hour, repA, one(w)),
		live("a wall at the session base", w, repA, one(w)),
		live("three fields within a minute of the session base", w-30_000, repA, change("demo.todos", todo("t1", stampAt(w, 3, repA), "milk"))),
		live("a wall before the session base: key 8", w, repA, one(w-5_000)),
		live("many close stamps hours after the session base: key 8", w-10*hour, repA, several...),
		live("another replica twice: in the table", w, repA,
			change("demo.todos", todo("t1", stampAt(w, 0, repA), "milk")),
			change("demo.todos", crdt.Record{ID: "t2", Deleted: stampAt(w+1, 0, repB), Fields: map[string]crdt.Field{
				"title": {Stamp: stampAt(w+1, 0, repB)},
			}}),
			change("notes", crdt.Record{ID: "n1", Fields: map[string]crdt.Field{"body": {Stamp: stampAt(w+2, 0, repC), Value: val(t, "once")}}})),
		live("a session replica that wrote nothing of its own", w-1000, repC,
			change("demo.todos", crdt.Record{ID: "t3", Fields: map[string]crdt.Field{"done": {Stamp: stampAt(w, 0, repB), Value: val(t, true)}}})),
		live("a change without stamps", w, repA, change("demo.todos", crdt.Record{ID: "t4"})),
		live("no changes", w, repA),
		versioned,
	}
}

func recordsHex(rs []crdt.Record) []string {
	out := []string{}
	for _, r := range rs {
		out = append(out, hex.EncodeToString(crdt.AppendRecord(nil, r)))
	}
	return out
}

func decodeHexList(t *testing.T, list []string, decode func([]byte) error) {
	t.Helper()
	for _, h := range list {
		b, err := hex.DecodeString(h)
		if err != nil {
			t.Fatal(err)
		}
		if err := decode(b); err != nil {
			t.Fatalf("%s: %v", h, err)
		}
	}
}

// messageOf builds the message m describes, in Go.
func messageOf(t *testing.T, m compactMessage) (any, []crdt.Record, []crdt.Change) {
	t.Helper()
	var rs []crdt.Record
	var cs []crdt.Change
	decodeHexList(t, m.Records, func(b []byte) error {
		r, err := crdt.DecodeRecord(b)
		rs = append(rs, r)
		return err
	})
	decodeHexList(t, m.Changes, func(b []byte) error {
		var c crdt.Change
		err := crdt.Unmarshal(b, &c)
		cs = append(cs, c)
		return err
	})
	next, err := hex.DecodeString(m.Next)
	if err != nil {
		t.Fatal(err)
	}
	if rs == nil {
		rs = []crdt.Record{}
	}
	switch m.Kind {
	case "pull":
		return PullResponse{Records: rs, Next: next, More: m.More}, rs, nil
	case "changes":
		return Changes{Type: TypeChanges, Collection: m.Collection, Records: rs, Next: next, More: m.More}, rs, nil
	case "push":
		return PushRequest{Replica: m.Replica, Changes: cs, Prefix: m.Prefix, Versions: m.Versions}, nil, cs
	case "live push":
		if cs == nil {
			cs = []crdt.Change{}
		}
		return PushLive{Changes: cs, Versions: m.Versions, Session: Session{Replica: m.Replica, Base: *m.Base}}, nil, cs
	}
	t.Fatalf("kind %q", m.Kind)
	return nil, nil, nil
}

// encodeCompactMessage fills m's plain and compact encodings.
func encodeCompactMessage(t *testing.T, m *compactMessage) {
	t.Helper()
	msg, _, _ := messageOf(t, *m)
	var plain, compact []byte
	var err error
	switch v := msg.(type) {
	case PullResponse:
		compact, _ = v.MarshalCBOR()
		plain, err = crdt.Marshal(plainPull(v))
	case Changes:
		compact, _ = EncodeMessage(v)
		plain, err = crdt.Marshal(plainChanges(v))
	case PushRequest:
		compact, _ = Encode(v)
		plain, err = crdt.Marshal(plainPush{Replica: v.Replica, Changes: v.Changes})
	case PushLive:
		compact, err = EncodeMessage(v)
	}
	if err != nil {
		t.Fatal(err)
	}
	m.PlainHex, m.CompactHex = hex.EncodeToString(plain), hex.EncodeToString(compact)
}

// plainPush is a push body with plain stamps, as a client that does not
// write compact ones sends it.
type plainPush struct {
	Replica string        `cbor:"1,keyasint"`
	Changes []crdt.Change `cbor:"2,keyasint"`
}

func compactInvalidCases(t *testing.T) []compactInvalid {
	const w = 1_764_720_000_000
	rec := func(stamp string) string { // one record with one field stamped stamp (hex)
		return "a20162696403a16176" + "84" + stamp + "01"
	}
	text := func(s string) string {
		return hex.EncodeToString(crdt.AppendHead(nil, 3, uint64(len(s)))) + hex.EncodeToString([]byte(s))
	}
	uintHex := func(n uint64) string { return hex.EncodeToString(crdt.AppendHead(nil, 0, n)) }
	change := func(stamp string) string { return "a2016162" + "02" + rec(stamp) } // {1: "b", 2: record}
	s, late := int64(w), int64(crdt.MaxWall-1)
	livePush := func(n int, extra string, changes ...string) string { // {0: "push", 2: changes, extra...}
		return fmt.Sprintf("%x00%s02%x%s%s", 0xa2+n, text(TypePush), 0x80+len(changes), strings.Join(changes, ""), extra)
	}
	pull := func(rec, extra string, n int) string {
		return fmt.Sprintf("%x01%s%s0240%s", 0xa2+n, "81"+rec, "", extra)
	}
	zero, one := 0, 1
	return []compactInvalid{
		{Name: "replica index without a table", Kind: "pull", Hex: pull(rec(uintHex(w)+"0000"), "", 0), Error: CodeMalformed},
		{Name: "replica index outside the table", Kind: "pull", Hex: pull(rec(uintHex(w)+"0001"), "0781"+text(repA), 1), Error: CodeMalformed},
		{Name: "table with an invalid replica id", Kind: "pull", Hex: pull(rec(uintHex(w)+"00"+text(repA)), "0781"+text("a.b"), 1), Error: CodeMalformed},
		{Name: "table with an invalid replica id in a page without records", Kind: "pull", Hex: "a2" + "0240" + "0781" + text("a.b"), Error: CodeMalformed},
		{Name: "base past the largest wall in a page without records", Kind: "pull", Hex: "a2" + "0240" + "08" + uintHex(crdt.MaxWall+1), Error: CodeMalformed},
		{Name: "changes: table with an invalid replica id and no records", Kind: "changes",
			Hex: "a400" + text(TypeChanges) + "01" + text("demo.todos") + "0340" + "0781" + text("a.b"), Error: CodeMalformed},
		{Name: "table that is not an array of text", Kind: "pull", Hex: pull(rec(uintHex(w)+"00"+text(repA)), "0701", 1), Error: CodeMalformed},
		{Name: "base plus difference past the largest wall", Kind: "pull", Hex: pull(rec(uintHex(2)+"00"+text(repA)), "08"+uintHex(crdt.MaxWall-1), 1), Error: CodeInvalid},
		{Name: "base past the largest wall", Kind: "pull", Hex: pull(rec("0000"+text(repA)), "08"+uintHex(crdt.MaxWall+1), 1), Error: CodeMalformed},
		{Name: "negative difference to the base", Kind: "pull", Hex: pull(rec("2000"+text(repA)), "08"+uintHex(w), 1), Error: CodeInvalid},
		{Name: "changes: replica index outside the table", Kind: "changes",
			Hex: "a400" + text(TypeChanges) + "01" + text("demo.todos") + "0281" + rec(uintHex(w)+"0000") + "0340", Error: CodeMalformed},
		{Name: "push: index past the pusher alone refuses that change", Kind: "push",
			Hex: "a201" + text(repA) + "0282" +
				"a2016162" + "02" + rec(uintHex(w)+"0000") +
				"a2016162" + "02" + rec(uintHex(w)+"0001"),
			Error: CodeMalformed, Change: &one},
		{Name: "push: replica and device part both", Kind: "push", Prefix: prefixA,
			Hex:   "a301" + text(repA) + "0281" + "a2016162" + "02" + rec(uintHex(w)+"0000") + "09" + text("V1StGXR8_Z5jdHi6B-myT0"),
			Error: CodeMalformed},
		{Name: "push: device part that is not one", Kind: "push", Prefix: prefixA,
			Hex:   "a20281" + "a2016162" + "02" + rec(uintHex(w)+"0000") + "09" + text("a.b"),
			Error: CodeInvalid},
		{Name: "push: empty device part", Kind: "push", Prefix: prefixA,
			Hex:   "a20281" + "a2016162" + "02" + rec(uintHex(w)+"0000") + "09" + text(""),
			Error: CodeInvalid},
		{Name: "push: device part that is not text", Kind: "push", Prefix: prefixA,
			Hex:   "a20281" + "a2016162" + "02" + rec(uintHex(w)+"0000") + "0901",
			Error: CodeMalformed},
		{Name: "push: device part too long for a replica id", Kind: "push", Prefix: prefixA,
			Hex:   "a20281" + "a2016162" + "02" + rec(uintHex(w)+"0000") + "09" + text(strings.Repeat("d", MaxDeviceBytes+1)),
			Error: CodeInvalid},
		{Name: "live push: replica named (key 1)", Kind: "live push", Replica: repA, Base: &s,
			Hex: "a3006470757368" + "01" + text(repA) + "0281" + change("0000"+"00"), Error: CodeMalformed},
		{Name: "live push: device part named (key 9)", Kind: "live push", Replica: repA, Base: &s,
			Hex: livePush(1, "09"+text("V1StGXR8_Z5jdHi6B-myT0"), change("0000"+"00")), Error: CodeMalformed},
		{Name: "live push: index past the session's replica refuses that change", Kind: "live push", Replica: repA, Base: &s,
			Hex: livePush(0, "", change("0000"+"00"), change("0000"+"01")), Error: CodeMalformed, Change: &one},
		{Name: "live push: index past the table refuses that change", Kind: "live push", Replica: repA, Base: &s,
			Hex: livePush(1, "0781"+text(repB), change("0000"+"02")), Error: CodeMalformed, Change: &zero},
		{Name: "live push: session base plus difference past the largest wall", Kind: "live push", Replica: repA, Base: &late,
			Hex: livePush(0, "", change("0000"+"00"), change("0200"+"00")), Error: CodeInvalid, Change: &one},
		{Name: "live push: base (key 8) plus difference past the largest wall", Kind: "live push", Replica: repA, Base: &s,
			Hex: livePush(1, "08"+uintHex(crdt.MaxWall-1), change("0200"+"00")), Error: CodeInvalid, Change: &zero},
		{Name: "live push: a wall that is not a difference", Kind: "live push", Replica: repA, Base: &s,
			Hex: livePush(0, "", change("2000"+"00")), Error: CodeInvalid, Change: &zero},
		{Name: "live push: base (key 8) past the largest wall", Kind: "live push", Replica: repA, Base: &s,
			Hex: livePush(1, "08"+uintHex(crdt.MaxWall+1), change("0000"+"00")), Error: CodeMalformed},
	}
}

func TestCompactVectors(t *testing.T) {
	f := compactFile{
		Comment: "Generated by `go test ./transport/proto -run TestCompactVectors -update`; do not edit by hand. " +
			"Compact stamps (docs/protocol.md): each message in plain and compact form, with its records or changes in plain form (hex); " +
			"encoders write compact_hex byte for byte, decoders read plain_hex and compact_hex to the same records; invalid messages are refused with the code named.",
		Messages: compactCases(t),
		Invalid:  compactInvalidCases(t),
	}
	want, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, '\n')
	if *update {
		if err := os.WriteFile(compactVectorsPath, want, 0o644); err != nil {
			t.Fatal(err)
		}
	} else if got, err := os.ReadFile(compactVectorsPath); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("%s is missing or stale: run go test ./transport/proto -run TestCompactVectors -update (%v)", compactVectorsPath, err)
	}
	for _, m := range f.Messages {
		t.Run(m.Name, func(t *testing.T) {
			msg, rs, cs := messageOf(t, m)
			plain, _ := hex.DecodeString(m.PlainHex)
			compact, _ := hex.DecodeString(m.CompactHex)
			forms := [][]byte{plain, compact}
			if m.Kind == "live push" {
				forms = forms[1:]
			} else if len(compact) > len(plain) {
				t.Errorf("compact form %d bytes, plain %d", len(compact), len(plain))
			}
			for _, b := range forms {
				switch msg.(type) {
				case PullResponse:
					var back PullResponse
					if err := Decode(b, &back); err != nil {
						t.Fatal(err)
					}
					if !sameRecords(back.Records, rs) {
						t.Fatalf("decoded %x:\n got %+v\nwant %+v", b, back.Records, rs)
					}
				case Changes:
					back, err := DecodeServerMessage(b)
					if err != nil {
						t.Fatal(err)
					}
					if !sameRecords(back.(Changes).Records, rs) {
						t.Fatalf("decoded %x: %+v", b, back)
					}
				case PushRequest:
					back, err := DecodePush(b, m.Prefix)
					if err != nil || back.Refused != nil {
						t.Fatalf("decode %x: %v %v", b, err, back.Refused)
					}
					if back.Replica != m.Replica || len(back.Changes) != len(cs) {
						t.Fatalf("decoded %x: %+v", b, back)
					}
					for i := range cs {
						if back.Changes[i].Collection != cs[i].Collection || !back.Changes[i].Record.Equal(cs[i].Record) {
							t.Fatalf("change %d: got %+v, want %+v", i, back.Changes[i], cs[i])
						}
					}
				case PushLive:
					back, err := DecodeClientMessage(b, Session{Replica: m.Replica, Base: *m.Base})
					if err != nil {
						t.Fatalf("decode %x: %v", b, err)
					}
					p := back.(PushLive)
					if p.Refused != nil || len(p.Changes) != len(cs) || !reflect.DeepEqual(p.Versions, m.Versions) {
						t.Fatalf("decoded %x: %+v", b, p)
					}
					for i := range cs {
						if p.Changes[i].Collection != cs[i].Collection || !p.Changes[i].Record.Equal(cs[i].Record) {
							t.Fatalf("change %d: got %+v, want %+v", i, p.Changes[i], cs[i])
						}
					}
				}
			}
		})
	}
	for _, v := range f.Invalid {
		t.Run(v.Name, func(t *testing.T) {
			b, err := hex.DecodeString(v.Hex)
			if err != nil {
				t.Fatal(err)
			}
			switch v.Kind {
			case "pull":
				var p PullResponse
				err = Decode(b, &p)
			case "changes":
				_, err = DecodeServerMessage(b)
			case "push":
				var p PushRequest
				if p, err = DecodePush(b, v.Prefix); v.Change == nil {
					break
				}
				err = refusedAlone(t, p, p.Refused, err, *v.Change)
			case "live push":
				var m Message
				m, err = DecodeClientMessage(b, Session{Replica: v.Replica, Base: *v.Base})
				if v.Change == nil {
					break
				}
				var p PushLive
				if err == nil {
					p = m.(PushLive)
				}
				err = refusedAlone(t, p, p.Refused, err, *v.Change)
			}
			if code := decodeCode(err); code != v.Error {
				t.Fatalf("got %v (%s), want %s", err, code, v.Error)
			}
		})
	}
}

func decodeCode(err error) string {
	switch {
	case err == nil:
		return "none"
	case errors.Is(err, crdt.ErrMalformed):
		return CodeMalformed
	case errors.Is(err, crdt.ErrInvalid):
		return CodeInvalid
	case errors.Is(err, crdt.ErrTooLarge):
		return CodeTooLarge
	}
	return strings.TrimSpace(err.Error())
}

// BenchmarkCompactBytes reports the bytes of messages in plain and compact
// form (docs/benchmarks.md, "Compact stamps"): the push bodies of
// crdt-benchmarks' B3 (1,540 clients, one change each) and pull pages of
// 1,000 todo records with their seals. It measures sizes, not time:
//
//	go test ./transport/proto -run '^$' -bench CompactBytes -benchtime 1x
func BenchmarkCompactBytes(b *testing.B) {
	const (
		clients = 1540
		w0      = int64(1_764_720_000_000)
	)
	// Replica ids as the JS client makes them: 22 random characters of
	// [A-Za-z0-9_-] (a device part), under a 16-character prefix and "_"
	// when the server binds replicas to subjects.
	alphabet := "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
	seed := uint64(1)
	device := func() string {
		var s [22]byte
		for i := range s {
			seed = seed*6364136223846793005 + 1442695040888963407
			s[i] = alphabet[seed>>58]
		}
		return string(s[:])
	}
	report := func(b *testing.B, plain, compact int) {
		b.ReportMetric(float64(plain), "plain-bytes")
		b.ReportMetric(float64(compact), "compact-bytes")
		b.ReportMetric(float64(compact)/float64(plain), "ratio")
	}
	mustVal := func(v any) []byte {
		e, err := crdt.EncodeValue(v)
		if err != nil {
			b.Fatal(err)
		}
		return e
	}
	b3 := map[string]func(i int) []byte{
		"B3.1": func(i int) []byte { return mustVal(i) },
		"B3.2": func(i int) []byte { return mustVal(map[string]any{"name": fmt.Sprint(i), "address": "here"}) },
		"B3.3": func(i int) []byte { return mustVal(strings.Repeat(fmt.Sprint(i), clients)) },
	}
	for _, sc := range []string{"B3.1", "B3.2", "B3.3"} {
		for _, v := range []struct {
			prefix   string
			byDevice bool // sent with the token of the prefix's subject: key 9
		}{{"", false}, {"abcdefghij234567_", false}, {"abcdefghij234567_", true}} {
			prefix := v.prefix
			name := fmt.Sprintf("push/%s/replica-%d", sc, len(prefix)+22)
			var tokenPrefix string
			if v.byDevice {
				name += "/by-device"
				tokenPrefix = strings.TrimSuffix(prefix, "_")
			}
			b.Run(name, func(b *testing.B) {
				plain, compact := 0, 0
				for range b.N {
					plain, compact = 0, 0
					for i := range clients {
						rep := prefix + device()
						ch := crdt.Change{Collection: "b3", Record: crdt.Record{ID: "doc", Fields: map[string]crdt.Field{
							"v": {Stamp: crdt.Stamp{Wall: w0, Replica: rep}, Value: b3[sc](i)},
						}}}
						pb, err := crdt.Marshal(plainPush{Replica: rep, Changes: []crdt.Change{ch}})
						if err != nil {
							b.Fatal(err)
						}
						cb, err := Encode(PushRequest{Replica: rep, Changes: []crdt.Change{ch}, Prefix: tokenPrefix})
						if err != nil {
							b.Fatal(err)
						}
						plain += len(pb)
						compact += len(cb)
					}
				}
				report(b, plain, compact)
			})
		}
	}
	// Pull pages of 1,000 todos {title, done, order}, sealed (16 bytes per
	// record), with 39-character replica ids: written by one replica in
	// 10 seconds (an import), by 20 replicas over a day, and by 1,000
	// replicas over a year (every id once).
	pages := []struct {
		name     string
		replicas int
		span     int64 // ms
	}{
		{"one-replica-10s", 1, 10_000},
		{"20-replicas-1day", 20, 86_400_000},
		{"1000-replicas-1year", 1000, 365 * 86_400_000},
	}
	for _, pg := range pages {
		b.Run("page/"+pg.name, func(b *testing.B) {
			reps := make([]string, pg.replicas)
			for i := range reps {
				reps[i] = "abcdefghij234567_" + device()
			}
			rs := make([]crdt.Record, 1000)
			seals := make([][]byte, len(rs))
			for i := range rs {
				s := crdt.Stamp{Wall: w0 + int64(i)*pg.span/1000, Replica: reps[i%len(reps)]}
				rs[i] = crdt.Record{ID: fmt.Sprintf("todo-%06d", i), Fields: map[string]crdt.Field{
					"title": {Stamp: s, Value: mustVal(fmt.Sprintf("todo number %d", i))},
					"done":  {Stamp: s, Value: mustVal(i%3 == 0)},
					"order": {Stamp: s, Value: mustVal(i)},
				}}
				seals[i] = make([]byte, 16)
			}
			p := PullResponse{Records: rs, Next: make([]byte, 24), More: true, Seals: seals}
			plain, compact := 0, 0
			for range b.N {
				pb, err := crdt.Marshal(plainPull(p))
				if err != nil {
					b.Fatal(err)
				}
				cb, _ := p.MarshalCBOR()
				plain, compact = len(pb), len(cb)
			}
			report(b, plain, compact)
		})
	}
}

// refusedAlone fails t unless push p decoded (err is its decode error)
// with change want refused and no other, and returns why want was refused.
func refusedAlone(t *testing.T, p any, refused []error, err error, want int) error {
	t.Helper()
	if err != nil {
		t.Fatalf("push does not decode: %v", err)
	}
	if refused == nil || refused[want] == nil {
		t.Fatalf("change %d not refused: %+v", want, p)
	}
	for i, e := range refused {
		if i != want && e != nil {
			t.Fatalf("change %d refused too: %v", i, e)
		}
	}
	return refused[want]
}
