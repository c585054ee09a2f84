package transport

import (
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

const notesV2 = `{"notes": {"migrations": {"version": 2, "steps": [{"to": 2, "ops": [
	{"op": "rename", "from": "title", "to": "name"}]}]}}}`

func fieldText(t *testing.T, r crdt.Record, name string) string {
	t.Helper()
	f, ok := r.Fields[name]
	if !ok || f.Value == nil {
		return "<absent>"
	}
	var s string
	if err := crdt.DecodeValue(f.Value, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// A version above a collection's current one is schema_ahead, for every
// request that names one; a collection without migrations has version 1.
func TestSchemaAhead(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.withRules(t, notesV2)
	tok := ts.token(t, "alice", []string{"notes", "plain"}, []string{"notes", "plain"})
	for _, tc := range []struct {
		name string
		path string
		body any
	}{
		{"pull", proto.PathPull, proto.PullRequest{Collection: "notes", Version: 3}},
		{"pull without migrations", proto.PathPull, proto.PullRequest{Collection: "plain", Version: 2}},
		{"push", proto.PathPush, proto.PushRequest{Replica: "c1", Versions: map[string]uint64{"notes": 3},
			Changes: []crdt.Change{change(t, "notes", "r1", "name", "x")}}},
		{"restore", proto.PathRestore, proto.RestoreRequest{Collection: "notes", Records: []proto.SealedRecord{}, Version: 3}},
	} {
		a := ts.post(t, tc.path, tok, tc.body)
		if a.status != http.StatusConflict || a.errorCode(t) != proto.CodeSchemaAhead {
			t.Errorf("%s: got %d %s, want 409 %s", tc.name, a.status, a.errorCode(t), proto.CodeSchemaAhead)
		}
	}
	// Version 1 of a collection without migrations is its current one.
	a := ts.post(t, proto.PathPull, tok, proto.PullRequest{Collection: "plain", Version: 1})
	if a.status != http.StatusOK {
		t.Errorf("pull of plain at version 1: %d %s", a.status, a.errorCode(t))
	}

	c, _ := ts.open(t, tok)
	c.send(proto.Sub{Collection: "notes", Version: 3})
	if e, ok := c.recv().(proto.ErrorMessage); !ok || e.Code != proto.CodeSchemaAhead || e.Collection != "notes" {
		t.Fatalf("sub at version 3: %+v", e)
	}
	c.send(proto.Ping{Nonce: 1})
	if _, ok := c.recv().(proto.Pong); !ok {
		t.Fatal("the refused sub ended the session")
	}
}

// Pushes of each version land in the current shape; pulls and live
// subscriptions of each version get their own shape, from broadcast groups
// of their own, with seals of their version.
func TestSchemaVersionsServed(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.withRules(t, notesV2)
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	a := ts.post(t, proto.PathPush, tok, proto.PushRequest{Replica: "c1", Versions: map[string]uint64{"notes": 1},
		Changes: []crdt.Change{change(t, "notes", "r1", "title", "v1 wrote")}})
	if a.status != http.StatusOK {
		t.Fatalf("push: %d %s", a.status, a.errorCode(t))
	}
	stored, err := ts.eng.GetRecord(t.Context(), "notes", "r1")
	if err != nil || fieldText(t, stored.Record, "name") != "v1 wrote" {
		t.Fatalf("stored %v %v", stored.Record, err)
	}

	pullAt := func(v uint64) proto.PullResponse {
		a := ts.post(t, proto.PathPull, tok, proto.PullRequest{Collection: "notes", Version: v})
		var p proto.PullResponse
		if err := proto.Decode(a.body, &p); err != nil || a.status != http.StatusOK || len(p.Records) != 1 {
			t.Fatalf("pull at %d: %d %+v %v", v, a.status, p, err)
		}
		return p
	}
	p1, p2, p0 := pullAt(1), pullAt(2), pullAt(0)
	if fieldText(t, p1.Records[0], "title") != "v1 wrote" || fieldText(t, p2.Records[0], "name") != "v1 wrote" {
		t.Fatalf("v1 %v, v2 %v", p1.Records[0], p2.Records[0])
	}
	if string(p0.Seals[0]) != string(p2.Seals[0]) || string(p1.Seals[0]) == string(p2.Seals[0]) {
		t.Error("the seal at version 0 must be the current version's, and version 1's another")
	}

	c1, _ := ts.open(t, tok)
	c2, _ := ts.open(t, tok)
	c1.send(proto.Sub{Collection: "notes", Version: 1})
	c2.send(proto.Sub{Collection: "notes", Version: 2})
	for _, c := range []*liveClient{c1, c2} {
		if m, ok := c.recv().(proto.Changes); !ok || len(m.Records) != 1 {
			t.Fatalf("catch-up page: %+v", m)
		}
	}
	ts.srv.hub.mu.Lock()
	groups := len(ts.srv.hub.groups)
	ts.srv.hub.mu.Unlock()
	if groups != 2 {
		t.Errorf("%d broadcast groups for two versions, want 2", groups)
	}
	a = ts.post(t, proto.PathPush, tok, proto.PushRequest{Replica: "c1", Versions: map[string]uint64{"notes": 2},
		Changes: []crdt.Change{change(t, "notes", "r2", "name", "v2 wrote")}})
	if a.status != http.StatusOK {
		t.Fatalf("push: %d", a.status)
	}
	for i, c := range []*liveClient{c1, c2} {
		m, ok := c.recv().(proto.Changes)
		if !ok || len(m.Records) != 1 || len(m.Seals) != 1 {
			t.Fatalf("live page: %+v", m)
		}
		want := map[int]string{0: "title", 1: "name"}[i]
		if fieldText(t, m.Records[0], want) != "v2 wrote" {
			t.Errorf("version %d subscriber got %v", i+1, m.Records[0])
		}
	}
}

// A record sealed at version 1 restores, named at version 1, and is stored
// in the current shape; named at version 2 its seal does not hold.
func TestRestoreAtVersion(t *testing.T) {
	key := []byte("a seal key of 32 bytes, for tests")
	old := newTestServer(t, func(c *Config) { c.SealKey = key })
	old.withRules(t, notesV2)
	tok := old.token(t, "alice", []string{"notes"}, []string{"notes"})
	old.push(t, tok, change(t, "notes", "r1", "name", "kept"))
	a := old.post(t, proto.PathPull, tok, proto.PullRequest{Collection: "notes", Version: 1})
	var page proto.PullResponse
	if err := proto.Decode(a.body, &page); err != nil || len(page.Records) != 1 {
		t.Fatalf("pull: %+v %v", page, err)
	}
	sealed := []proto.SealedRecord{{Record: page.Records[0], Seal: page.Seals[0]}}

	fresh := newTestServer(t, func(c *Config) { c.SealKey = key })
	fresh.withRules(t, notesV2)
	reader := fresh.token(t, "reader", []string{"notes"}, nil)
	restore := func(v uint64) proto.PushResult {
		a := fresh.post(t, proto.PathRestore, reader, proto.RestoreRequest{Collection: "notes", Records: sealed, Version: v})
		var res proto.RestoreResponse
		if err := proto.Decode(a.body, &res); err != nil || len(res.Results) != 1 {
			t.Fatalf("restore at %d: %d %v", v, a.status, err)
		}
		return res.Results[0]
	}
	if r := restore(2); r.Code != proto.CodeBadSeal {
		t.Errorf("restore at version 2: %+v, want bad_seal", r)
	}
	if r := restore(1); r.Status != proto.StatusApplied {
		t.Fatalf("restore at version 1: %+v", r)
	}
	got, err := fresh.eng.GetRecord(t.Context(), "notes", "r1")
	if err != nil || fieldText(t, got.Record, "name") != "kept" || fieldText(t, got.Record, "title") != "<absent>" {
		t.Errorf("restored %v %v", got.Record, err)
	}
}

// notesGrowing renames a long v1 field name to a short v2 one: records
// served at version 1 are larger than the store holds them.
var notesGrowing = `{"notes": {"migrations": {"version": 2, "steps": [{"to": 2, "ops": [
	{"op": "rename", "from": "` + strings.Repeat("t", 200) + `", "to": "n"}]}]}}}`

// Pull pages and live frames served at an old version keep to
// MaxPageBytes on the records sent, and hold every record once.
func TestSchemaVersionPageBytes(t *testing.T) {
	const limit = 1000
	ts := newTestServer(t, func(c *Config) { c.Limits.MaxPageBytes = limit })
	ts.withRules(t, notesGrowing)
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	const n = 30
	var changes []crdt.Change
	for i := range n {
		changes = append(changes, change(t, "notes", "r"+strconv.Itoa(100+i), "n", "value "+strconv.Itoa(i)))
	}
	changes[5] = change(t, "notes", "r105", "n", strings.Repeat("big", 500)) // alone over the limit
	if a := ts.post(t, proto.PathPush, tok, proto.PushRequest{Replica: "c1", Changes: changes}); a.status != http.StatusOK {
		t.Fatalf("push: %d %s", a.status, a.errorCode(t))
	}
	check := func(how string, records []crdt.Record, seen map[string]int) {
		t.Helper()
		size := 0
		for _, r := range records {
			size += len(crdt.AppendRecord(nil, r))
			seen[r.ID]++
			if _, ok := r.Fields[strings.Repeat("t", 200)]; !ok {
				t.Fatalf("%s: %s not served at version 1: %v", how, r.ID, r)
			}
		}
		if len(records) > 1 && size > limit {
			t.Fatalf("%s: %d records of %d bytes, limit %d", how, len(records), size, limit)
		}
	}
	exactlyOnce := func(how string, seen map[string]int) {
		t.Helper()
		if len(seen) != n {
			t.Fatalf("%s: %d records, want %d", how, len(seen), n)
		}
		for id, c := range seen {
			if c != 1 {
				t.Errorf("%s: %s served %d times", how, id, c)
			}
		}
	}

	seen := map[string]int{}
	var cursor []byte
	for pages := 0; ; pages++ {
		if pages > n {
			t.Fatal("no end of pull pages")
		}
		a := ts.post(t, proto.PathPull, tok, proto.PullRequest{Collection: "notes", Cursor: cursor, Version: 1})
		var p proto.PullResponse
		if err := proto.Decode(a.body, &p); err != nil || a.status != http.StatusOK {
			t.Fatalf("pull: %d %v", a.status, err)
		}
		check("pull", p.Records, seen)
		cursor = p.Next
		if !p.More {
			break
		}
	}
	exactlyOnce("pull", seen)

	c, _ := ts.open(t, tok)
	c.send(proto.Sub{Collection: "notes", Version: 1})
	seen = map[string]int{}
	for frames := 0; ; frames++ {
		if frames > n {
			t.Fatal("no end of live frames")
		}
		m, ok := c.recv().(proto.Changes)
		if !ok {
			t.Fatalf("live: %+v", m)
		}
		check("live", m.Records, seen)
		if !m.More {
			break
		}
	}
	exactlyOnce("live", seen)

	// Written while subscribed: the broadcast frames too.
	changes = changes[:0]
	for i := range n {
		changes = append(changes, change(t, "notes", "r"+strconv.Itoa(100+i), "n", "again "+strconv.Itoa(i)))
	}
	if a := ts.post(t, proto.PathPush, tok, proto.PushRequest{Replica: "c1", Changes: changes}); a.status != http.StatusOK {
		t.Fatalf("push: %d %s", a.status, a.errorCode(t))
	}
	seen = map[string]int{}
	for frames := 0; len(seen) < n; frames++ {
		if frames > n {
			t.Fatalf("no end of broadcast frames: %d records", len(seen))
		}
		m, ok := c.recv().(proto.Changes)
		if !ok {
			t.Fatalf("broadcast: %+v", m)
		}
		check("broadcast", m.Records, seen)
	}
	exactlyOnce("broadcast", seen)
}
