package transport

import (
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/transport/proto"
)

// A writer may not store a record that some version's readers are served
// beyond the model limits (docs/protocol.md, sections 11 and 13): a value
// a translation joins from parts, each within the limit, would be over
// it, and every reader of that version would be refused the page.
func TestTranslationGrownValue(t *testing.T) {
	part := strings.Repeat("x", 100<<10) // under crdt.MaxValueBytes alone, over it joined
	// fields is a change of r1 that sets each of values' fields.
	fields := func(t *testing.T, values map[string]any) crdt.Change {
		c := crdt.Change{Collection: "notes", Record: crdt.Record{ID: "r1", Fields: map[string]crdt.Field{}}}
		for name, v := range values {
			c.Record.Fields[name] = change(t, "notes", "r1", name, v).Record.Fields[name]
		}
		return c
	}
	for _, tc := range []struct {
		name    string
		rules   string
		values  func() map[string]any // the fields mallory pushes, in the current version
		version uint64                // the version a reader pulls at
		first   map[string]any        // what she pushed before, applied
	}{
		{"split served back as a merge", `{"notes": {"migrations": {"version": 2, "steps": [{"to": 2, "ops": [
			{"op": "split", "from": "who", "to": ["first", "last"], "sep": " "}]}]}}}`,
			func() map[string]any { return map[string]any{"first": part, "last": part} }, 1, nil},
		{"merge of old-shape parts", `{"notes": {"migrations": {"version": 2, "steps": [{"to": 2, "ops": [
			{"op": "merge", "from": ["first", "last"], "to": "who", "sep": " "}]}]}}}`,
			func() map[string]any { return map[string]any{"first": part, "last": part} }, 2, nil},
		{"merge of old-shape parts, one push each", `{"notes": {"migrations": {"version": 2, "steps": [{"to": 2, "ops": [
			{"op": "merge", "from": ["first", "last"], "to": "who", "sep": " "}]}]}}}`,
			func() map[string]any { return map[string]any{"last": part} }, 2, map[string]any{"first": part}},
		{"merge served back as a split, past the field count", `{"notes": {"migrations": {"version": 2, "steps": [{"to": 2, "ops": [
			{"op": "merge", "from": ["a", "b", "c"], "to": "who", "sep": " "}]}]}}}`,
			func() map[string]any {
				m := map[string]any{"who": "x y z"}
				for i := range crdt.MaxFieldsPerRecord - 1 {
					m["f"+strconv.Itoa(i)] = i
				}
				return m
			}, 1, nil},
		{"a rename to a longer name, past the record size", `{"notes": {"migrations": {"version": 2, "steps": [{"to": 2, "ops": [` +
			func() string {
				var ops []string
				for i := range 60 {
					ops = append(ops, `{"op": "rename", "from": "`+strings.Repeat("o", 250)+strconv.Itoa(i)+`", "to": "n`+strconv.Itoa(i)+`"}`)
				}
				return strings.Join(ops, ",")
			}() + `]}]}}}`,
			func() map[string]any {
				big := strings.Repeat("x", (crdt.MaxRecordBytes-60*50-1000)/3)
				m := map[string]any{"big1": big, "big2": big, "big3": big}
				for i := range 60 {
					m["n"+strconv.Itoa(i)] = 1
				}
				return m
			}, 1, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, nil)
			ts.withRules(t, tc.rules)
			tok := ts.token(t, "mallory", []string{"notes"}, []string{"notes"})
			if tc.first != nil {
				if res := ts.push(t, tok, fields(t, tc.first)); res[0].Status != proto.StatusApplied {
					t.Fatalf("the first push: %+v", res[0])
				}
			}
			c := fields(t, tc.values())
			if err := stores.CheckRecordLimits(c.Record); err != nil {
				t.Fatalf("the test's change is over the limits as pushed: %v", err)
			}
			a := ts.post(t, proto.PathPush, tok, proto.PushRequest{Replica: "c1", Changes: []crdt.Change{c}})
			if a.status != http.StatusOK {
				t.Fatalf("push: %d %s", a.status, a.errorCode(t))
			}
			var res proto.PushResponse
			if err := proto.Decode(a.body, &res); err != nil || len(res.Results) != 1 {
				t.Fatalf("push answer: %v", err)
			}
			if res.Results[0].Status != proto.StatusRefused || res.Results[0].Code != proto.CodeTooLarge {
				t.Errorf("push: %+v, want refused %s", res.Results[0], proto.CodeTooLarge)
			}
			// Whatever was admitted, every reader can decode its pages.
			a = ts.post(t, proto.PathPull, tok, proto.PullRequest{Collection: "notes", Version: tc.version})
			if a.status != http.StatusOK {
				t.Fatalf("pull: %d %s", a.status, a.errorCode(t))
			}
			var page proto.PullResponse
			if err := proto.Decode(a.body, &page); err != nil {
				t.Fatalf("a reader at version %d cannot decode its page: %v", tc.version, err)
			}
		})
	}
}

// A record some version's readers would be served beyond the limits,
// stored before that version existed (a record written before the
// migration was added, or before the check), can still be deleted and
// have fields unset: a change that only takes data away is never refused
// too_large, as a quota lets it through, so such a record is not kept for
// ever.
func TestTranslationGrownRecordDeleted(t *testing.T) {
	part := strings.Repeat("x", 100<<10)
	ts := newTestServer(t, nil)
	tok := ts.token(t, "mallory", []string{"notes"}, []string{"notes"})
	c := crdt.Change{Collection: "notes", Record: crdt.Record{ID: "r1", Fields: map[string]crdt.Field{}}}
	for _, name := range []string{"first", "last"} {
		c.Record.Fields[name] = change(t, "notes", "r1", name, part).Record.Fields[name]
	}
	c.Record.Fields["tag"] = change(t, "notes", "r1", "tag", "x").Record.Fields["tag"]
	if res := ts.push(t, tok, c); res[0].Status != proto.StatusApplied {
		t.Fatalf("the push before any migration: %+v", res[0])
	}
	// Version 2 splits who into first and last: readers of version 1
	// would be served the two joined.
	ts.withRules(t, `{"notes": {"migrations": {"version": 2, "steps": [{"to": 2, "ops": [
		{"op": "split", "from": "who", "to": ["first", "last"], "sep": " "}]}]}}}`)
	unset := crdt.Change{Collection: "notes", Record: crdt.Record{ID: "r1", Fields: map[string]crdt.Field{
		"tag": {Stamp: change(t, "notes", "r1", "tag", 1).Record.Fields["tag"].Stamp}}}}
	if res := ts.push(t, tok, unset); res[0].Status != proto.StatusApplied {
		t.Errorf("an unset: %+v; want applied", res[0])
	}
	del := crdt.Change{Collection: "notes", Record: crdt.DeleteRecord("r1", change(t, "notes", "r1", "first", 1).Record.Fields["first"].Stamp)}
	if res := ts.push(t, tok, del); res[0].Status != proto.StatusApplied {
		t.Errorf("the delete: %+v; want applied", res[0])
	}
}
