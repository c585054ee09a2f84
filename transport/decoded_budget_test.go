package transport

import (
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// tinyFields is a push of n changes of fields tiny fields each: about 9
// bytes a field on the wire, well over 100 once decoded (a map entry, its
// name and value copied out of the body).
func tinyFields(t *testing.T, n, fields int) []crdt.Change {
	t.Helper()
	st := crdt.Stamp{Wall: 1, Replica: ownReplica}
	chs := make([]crdt.Change, n)
	for i := range chs {
		rec := crdt.Record{ID: fmt.Sprint(i), Fields: map[string]crdt.Field{}}
		for f := 0; f < fields; f++ {
			rec.Fields[fmt.Sprint(f)] = crdt.Field{Stamp: st, Value: []byte{0x01}}
		}
		chs[i] = crdt.Change{Collection: "notes", Record: rec}
	}
	return chs
}

// The bodies in flight (MaxBodyBytesInFlight) bound what pushes hold in
// memory, their decoded changes included: a push of tiny fields decodes
// to about 15 times its bytes, which docs/operations.md counted as 2, so
// sixteen pushes of 4 MiB could hold near a GiB where the budget said
// 64 MiB. A push's changes take their room in the budget as they are
// decoded: beside other bodies in flight, one whose decoded changes do
// not fit is refused unavailable (a client retries it), over HTTP and
// over a live session alike (beside another client's; beside its own,
// its share is the bound, TestBodyShareDecoded), and gives back what it took; alone in
// flight, it is served, as a body larger than the budget is.
func TestPushDecodedFormCharged(t *testing.T) {
	ts, gate := newGatedServer(t, func(c *Config) { c.Limits.MaxBodyBytesInFlight = 2 << 20 })
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	// Another tenant's: alice's own would find her share of the budget
	// taken first (TestBodyShareDecoded).
	bob := ts.token(t, "bob", []string{"notes"}, []string{"notes"})
	a, sa := ts.openPusher(t, tok)
	b, sb := ts.openPusher(t, bob)
	gate.close()
	ts.pushLive(t, a, sa, tok, change(t, "notes", "a", "f", 1)) // held in flight
	gate.waitEntered(t)

	big := tinyFields(t, 1000, 60) // about 550 KiB, some 14 MiB decoded
	// Admitted, a push would wait at the gate, closed until the end of
	// these two: any answer before then is a refusal, and its wait is the
	// time a loaded machine takes to encode, send and decode the body.
	ts.pushLive(t, b, sb, bob, big...)
	m, err := b.recvErr(refusedWithin)
	if p, ok := m.(proto.Pushed); err != nil || !ok || p.Code != proto.CodeUnavailable {
		t.Fatalf("live push decoded over the budget beside another: %#v, %v; want pushed unavailable while the other is held", m, err)
	}
	answered := make(chan answer, 1)
	posted := make(chan struct{})
	go func() {
		defer close(posted)
		answered <- ts.post(t, proto.PathPush, bob, proto.PushRequest{Replica: ownReplica, Changes: big})
	}()
	// The post ends before the test does, also when the test fails
	// waiting for it (the gate opened lets an admitted push end): a
	// failure of the post after the test panics the whole package.
	t.Cleanup(func() { gate.open(); <-posted })
	select {
	case got := <-answered:
		if got.status != http.StatusServiceUnavailable {
			t.Fatalf("HTTP push decoded over the budget beside another: status %d, want 503", got.status)
		}
	case <-time.After(refusedWithin):
		t.Fatal("HTTP push decoded over the budget beside another: no answer while the other is held (admitted, at the gate); want 503")
	}
	gate.open()
	if p := recvPushed(t, a); len(p.Results) != 1 || p.Results[0].Status != proto.StatusApplied {
		t.Fatalf("held push: %+v", p)
	}
	waitFor(t, "the held push's room given back", func() bool { return ts.srv.bodies.inUse() == 0 })
	// Alone in flight, it is served.
	if res := ts.push(t, bob, big...); res[0].Status != proto.StatusApplied {
		t.Fatalf("the push alone: %+v", res[0])
	}
	if got := ts.srv.bodies.inUse(); got != 0 {
		t.Fatalf("%d bytes still held after the pushes", got)
	}
}

// refusedWithin is how long a test waits for a push's refusal while
// another is held at the gate: an admitted push would wait there for as
// long as the test holds it.
const refusedWithin = 30 * time.Second

// decodedBytes is at least what a push's decoded changes hold in memory,
// for the shapes that hold the most per byte of body: many changes of
// one tiny field, or of none (a delete), and changes of many tiny fields.
func TestDecodedBytesBound(t *testing.T) {
	deletes := tinyFields(t, 16384, 0)
	for i := range deletes {
		deletes[i].Record.Deleted = crdt.Stamp{Wall: 1, Replica: ownReplica}
	}
	for _, tc := range []struct {
		name    string
		changes []crdt.Change
	}{
		{"16384 changes of one field", tinyFields(t, 16384, 1)},
		{"16384 deletes", deletes},
		{"1000 changes of 300 fields", tinyFields(t, 1000, 300)},
		{"100 changes of 1024 fields", tinyFields(t, 100, 1024)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, err := proto.Encode(proto.PushRequest{Replica: ownReplica, Changes: tc.changes})
			if err != nil {
				t.Fatal(err)
			}
			req, held, charged, err := decodeHeld(func(charge proto.Charge) (proto.PushRequest, error) {
				return proto.DecodePushCharged(body, "", charge)
			})
			if err != nil || len(req.Changes) != len(tc.changes) {
				t.Fatalf("decode: %d changes, %v", len(req.Changes), err)
			}
			t.Logf("body %d bytes, held %d decoded, charged %d", len(body), held, charged)
			if held > charged {
				t.Fatalf("the decoded push holds %d bytes, charged %d", held, charged)
			}
		})
	}
}

// A push's changes that do not decode are refused alone, and what the
// push holds for each until it is answered (its place in the change
// list, its raw bytes, its refusal, whose message may quote what it
// read) is charged as a decoded change is: a push of 16,384 one-byte
// changes, each refused, held over 5 MiB for its 16 KiB when refusals
// were charged nothing.
func TestRefusedChangesCharged(t *testing.T) {
	many := func(n int, item any) []any {
		items := make([]any, n)
		for i := range items {
			items[i] = item
		}
		return items
	}
	stamped := func(who any) map[int]any {
		return map[int]any{1: "notes", 2: map[int]any{1: "r", 3: map[string]any{"x": []any{1, 0, who, 1}}}}
	}
	for _, tc := range []struct {
		name string
		body map[int]any
	}{
		{"16384 changes without a record", map[int]any{1: ownReplica, 2: many(16384, map[int]any{})}},
		{"16384 changes of a replica index outside the table", map[int]any{1: ownReplica, 2: many(16384, stamped(uint64(1)<<60))}},
		{"16384 changes of a collection name that is not one", map[int]any{1: ownReplica, 2: many(16384, map[int]any{1: strings.Repeat("\x01", 200), 2: map[int]any{1: "r"}})}},
		{"16384 changes of a field name that is not one", map[int]any{1: ownReplica, 2: many(16384,
			map[int]any{1: "notes", 2: map[int]any{1: "r", 3: map[string]any{strings.Repeat("\x01", 200): []any{1, 0, ownReplica, 1}}}})}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, err := crdt.Marshal(tc.body)
			if err != nil {
				t.Fatal(err)
			}
			req, held, charged, err := decodeHeld(func(charge proto.Charge) (proto.PushRequest, error) {
				return proto.DecodePushCharged(body, "", charge)
			})
			if err != nil || len(req.Refused) != len(req.Changes) || req.Refused[len(req.Refused)-1] == nil {
				t.Fatalf("decode: %d changes, %d refusals, %v", len(req.Changes), len(req.Refused), err)
			}
			t.Logf("body %d bytes, held %d decoded, charged %d (refusal: %v)", len(body), held, charged, req.Refused[0])
			if held > charged {
				t.Fatalf("the decoded push holds %d bytes, charged %d", held, charged)
			}
		})
	}
}

// A push's schema versions (key 3) are held until it is answered, one
// map entry each, and charged as they are: 16,384 of them, read before
// any change, held 840 KB for a body of 94 KB when they were charged
// nothing.
func TestPushVersionsCharged(t *testing.T) {
	versions := map[string]uint64{}
	for i := range crdt.MaxContainerItems {
		versions[fmt.Sprintf("%x", i)] = 1
	}
	for _, tc := range []struct {
		name   string
		body   map[int]any
		decode func([]byte, proto.Charge) (map[string]uint64, error)
	}{
		{"HTTP", map[int]any{1: ownReplica, 2: []any{}, 3: versions}, func(b []byte, charge proto.Charge) (map[string]uint64, error) {
			req, err := proto.DecodePushCharged(b, "", charge)
			return req.Versions, err
		}},
		{"live", map[int]any{0: proto.TypePush, 2: []any{}, 3: versions}, func(b []byte, charge proto.Charge) (map[string]uint64, error) {
			req, err := proto.DecodePushLiveCharged(b, proto.Session{Replica: ownReplica, Base: 1}, charge)
			return req.Versions, err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, err := crdt.Marshal(tc.body)
			if err != nil {
				t.Fatal(err)
			}
			got, held, charged, err := decodeHeld(func(charge proto.Charge) (map[string]uint64, error) { return tc.decode(body, charge) })
			if err != nil || len(got) != len(versions) {
				t.Fatalf("decode: %d versions, %v", len(got), err)
			}
			t.Logf("body %d bytes, held %d decoded, charged %d", len(body), held, charged)
			if held > charged {
				t.Fatalf("the decoded push holds %d bytes, charged %d", held, charged)
			}
		})
	}
}

// A restore's records take their room among the bodies in flight as they
// are decoded, as a push's changes do: beside another body in flight, a
// restore whose decoded records do not fit is answered unavailable, not
// read whole (its seals are checked only once it is).
func TestRestoreDecodedFormCharged(t *testing.T) {
	ts, gate := newGatedServer(t, func(c *Config) { c.Limits.MaxBodyBytesInFlight = 2 << 20 })
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	a, sa := ts.openPusher(t, tok)
	gate.close()
	ts.pushLive(t, a, sa, tok, change(t, "notes", "a", "f", 1)) // held in flight
	gate.waitEntered(t)
	var req proto.RestoreRequest
	req.Collection = "notes"
	for _, ch := range tinyFields(t, 1000, 60) {
		req.Records = append(req.Records, proto.SealedRecord{Record: ch.Record, Seal: make([]byte, 32)})
	}
	bob := ts.token(t, "bob", []string{"notes"}, nil) // another tenant, as in TestPushDecodedFormCharged
	if got := ts.post(t, proto.PathRestore, bob, req); got.status != http.StatusServiceUnavailable {
		t.Fatalf("restore decoded over the budget beside another body: status %d, want 503", got.status)
	}
	gate.open()
	if p := recvPushed(t, a); len(p.Results) != 1 || p.Results[0].Status != proto.StatusApplied {
		t.Fatalf("held push: %+v", p)
	}
	waitFor(t, "the room given back", func() bool { return ts.srv.bodies.inUse() == 0 })
}

// decodeHeld runs decode, charging what it reads as the server does
// (decodedBytes), and returns its result, what the result holds on the
// heap and what was charged.
func decodeHeld[T any](decode func(proto.Charge) (T, error)) (got T, held, charged int64, err error) {
	charge := func(ch crdt.Change, refused error) error { charged += decodedBytes(ch, refused); return nil }
	var before, after runtime.MemStats
	runtime.GC()
	runtime.GC() // the encoder's pooled buffers are freed by the second
	runtime.ReadMemStats(&before)
	got, err = decode(charge)
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(got)
	return got, int64(after.HeapAlloc) - int64(before.HeapAlloc), charged, err
}
