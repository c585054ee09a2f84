package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/transport/proto"
)

// offlineTransport fails every request while off is set, like a network
// that is down.
type offlineTransport struct {
	off  atomic.Bool
	next http.RoundTripper
}

var errOffline = errors.New("offline")

func (o *offlineTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if o.off.Load() {
		return nil, errOffline
	}
	return o.next.RoundTrip(r)
}

func newReplica(t *testing.T, f *fakeServer, id string, net *offlineTransport, colls ...string) *Replica {
	t.Helper()
	c := f.client(t, id, func(cfg *Config) {
		if net != nil {
			cfg.HTTPClient = &http.Client{Transport: net}
		}
	})
	r, err := NewReplica(c, ReplicaConfig{Collections: colls})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// nested returns a value of levels arrays, one inside the other.
func nested(levels int) any {
	var v any = 1
	for range levels {
		v = []any{v}
	}
	return v
}

func mustValue(t *testing.T, v any) []byte {
	t.Helper()
	b, err := crdt.EncodeValue(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReplicaSyncConverges(t *testing.T) {
	f := newFakeServer(t)
	ctx := t.Context()
	a := newReplica(t, f, "a", nil, "todos")
	b := newReplica(t, f, "b", nil, "todos")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(a.Set("todos", "t1", "title", "milk"))
	must(a.Set("todos", "t1", "done", false))
	must(a.Sync(ctx))
	must(b.Sync(ctx))
	// b has seen a's writes, so its own sort after them and win.
	must(b.Set("todos", "t1", "done", true))
	must(b.Set("todos", "t2", "title", "eggs"))
	must(b.Sync(ctx))
	must(a.Sync(ctx))
	must(a.Delete("todos", "t2")) // after seeing b's write: hides it
	for range 2 {
		must(a.Sync(ctx))
		must(b.Sync(ctx))
	}
	if len(a.Pending()) != 0 || len(b.Pending()) != 0 {
		t.Fatalf("outboxes not empty: %d, %d", len(a.Pending()), len(b.Pending()))
	}
	ra, rb := a.Records("todos"), b.Records("todos")
	if len(ra) != 2 || len(rb) != 2 {
		t.Fatalf("got %d and %d records, want 2", len(ra), len(rb))
	}
	for id, rec := range ra {
		if !rec.Equal(rb[id]) {
			t.Fatalf("record %s differs:\n a %+v\n b %+v", id, rec, rb[id])
		}
		got, err := f.eng.GetRecord(ctx, "todos", id)
		if err != nil || !got.Record.Equal(rec) {
			t.Fatalf("record %s differs from the server's: %+v, %v", id, got, err)
		}
	}
	t1 := ra["t1"].Values()
	if string(t1["done"]) != string(mustValue(t, true)) || string(t1["title"]) != string(mustValue(t, "milk")) {
		t.Fatalf("t1: got %v", t1)
	}
	if ra["t2"].Exists() {
		t.Fatalf("t2 exists after a later delete: %+v", ra["t2"])
	}
	if got, want := f.cursorSeq(t, a.Cursor("todos")), f.mustHead(t, "todos"); got != want {
		t.Fatalf("cursor at %d, head %d", got, want)
	}
}

func (f *fakeServer) mustHead(t *testing.T, coll string) uint64 {
	t.Helper()
	h, err := f.eng.Head(t.Context(), coll)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// cursorSeq reads a cursor as the server does (clients never do).
func (f *fakeServer) cursorSeq(t *testing.T, cursor []byte) uint64 {
	t.Helper()
	c, err := engine.ParseCursor(cursor)
	if err != nil {
		t.Fatalf("cursor %x: %v", cursor, err)
	}
	return c.Seq()
}

func TestReplicaKeepsOutboxWhileOffline(t *testing.T) {
	f := newFakeServer(t)
	ctx := t.Context()
	net := &offlineTransport{next: http.DefaultTransport}
	var acked atomic.Int64
	c := f.client(t, "a", func(cfg *Config) { cfg.HTTPClient = &http.Client{Transport: net} })
	r, err := NewReplica(c, ReplicaConfig{Collections: []string{"c"}, OnResult: func(_ crdt.Change, res Result) {
		if res.Acknowledged() {
			acked.Add(1)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	net.off.Store(true)
	for i := range 3 {
		if err := r.Set("c", "r", fmt.Sprint("f", i), i); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Sync(ctx); !errors.Is(err, errOffline) {
		t.Fatalf("offline sync: got %v, want errOffline", err)
	}
	if n := len(r.Pending()); n != 3 {
		t.Fatalf("outbox after a failed sync: %d, want 3", n)
	}
	if rec, _ := r.Get("c", "r"); len(rec.Values()) != 3 {
		t.Fatalf("local writes not visible offline: %+v", rec)
	}
	net.off.Store(false)
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(r.Pending()); n != 0 || acked.Load() != 3 {
		t.Fatalf("after reconnecting: outbox %d, acked %d; want 0 and 3", n, acked.Load())
	}
}

func TestReplicaRefusedChangeWithClockDrift(t *testing.T) {
	f := newFakeServer(t)
	fast := f.client(t, "fast", func(cfg *Config) { cfg.Now = func() time.Time { return time.Now().Add(time.Hour) } })
	r, err := NewReplica(fast, ReplicaConfig{Collections: []string{"c"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Set("c", "r", "f", 1); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(r.Pending()) != 0 {
		t.Fatal("a refused change stayed in the outbox")
	}
	rej := r.Rejected()
	if len(rej) != 1 || !errors.Is(rej[0].Err(), ErrClockDrift) || rej[0].Code != proto.CodeClockDrift || rej[0].RecordID != "r" {
		t.Fatalf("rejected: got %+v, want one clock_drift for r", rej)
	}
	if rec, ok := r.Get("c", "r"); ok {
		t.Fatalf("the refused write is still visible: %+v", rec)
	}
}

// TestReplicaRollsBackRefusedChange: a refused change leaves the local
// view, which goes back to the server's version merged with the changes
// still pending (here one written while the push was in flight), and is
// kept, with its reason, among the rejected changes; OnRejected reports it
// after the rollback.
func TestReplicaRollsBackRefusedChange(t *testing.T) {
	f := newFakeServer(t)
	rf := refusingServer(t, f)
	ctx := t.Context()
	when := time.Now().Round(0) // fixed: the HLC counts on within the millisecond
	c := f.client(t, "a", func(cfg *Config) { cfg.Now = func() time.Time { return when } })
	var r *Replica
	var events []Rejection
	var results []Status
	r, err := NewReplica(c, ReplicaConfig{
		Collections: []string{"todos"},
		OnResult:    func(_ crdt.Change, res Result) { results = append(results, res.Status) },
		OnRejected: func(j Rejection) {
			rec, _ := r.Get(j.Collection, j.RecordID)
			if string(rec.Values()["title"]) != string(mustValue(t, "milk")) {
				t.Errorf("OnRejected before the rollback: %+v", rec)
			}
			events = append(events, j)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(r.Set("todos", "t1", "title", "milk"))
	must(r.Sync(ctx))

	must(r.Set("todos", "t1", "title", "a very long title"))
	must(r.Set("todos", "t2", "title", "eggs"))
	refused := r.Pending()[0]
	rf.set(func(ch crdt.Change) bool { return ch.Record.Equal(refused.Record) }, func() {
		if err := r.Set("todos", "t1", "note", "racing the push"); err != nil {
			t.Error(err) // not t.Fatal: this runs on the server's goroutine
		}
	})
	if rec, _ := r.Get("todos", "t1"); string(rec.Values()["title"]) != string(mustValue(t, "a very long title")) {
		t.Fatalf("local write not visible before the push: %+v", rec)
	}
	must(r.Flush(ctx))
	rf.set(nil, nil)

	rec, _ := r.Get("todos", "t1")
	if got := rec.Values(); len(got) != 2 || string(got["title"]) != string(mustValue(t, "milk")) ||
		string(got["note"]) != string(mustValue(t, "racing the push")) {
		t.Fatalf("t1 after the refusal: got %+v, want the server's title and the pending note", rec)
	}
	if rec, _ := r.Get("todos", "t2"); string(rec.Values()["title"]) != string(mustValue(t, "eggs")) {
		t.Fatalf("t2, applied, got %+v", rec)
	}
	if p := r.Pending(); len(p) != 1 || p[0].Record.FieldNames()[0] != "note" {
		t.Fatalf("outbox: got %+v, want the racing write", p)
	}
	if fmt.Sprint(results) != fmt.Sprint([]Status{StatusApplied, StatusRefused, StatusApplied}) {
		t.Fatalf("results: got %v", results)
	}
	rej := r.Rejected()
	want := Rejection{ID: rej[0].ID, Collection: "todos", RecordID: "t1", Change: refused, Code: proto.CodeTooLarge,
		Message: "the record would grow past the limit", When: when}
	if len(rej) != 1 || !rejectionEqual(rej[0], want) {
		t.Fatalf("rejected: got %+v, want %+v", rej, want)
	}
	if !errors.Is(rej[0].Err(), ErrTooLarge) {
		t.Fatalf("rejection error %v does not match ErrTooLarge", rej[0].Err())
	}
	if len(events) != 1 || !rejectionEqual(events[0], rej[0]) {
		t.Fatalf("OnRejected: got %+v, want %+v", events, rej)
	}
	must(r.Sync(ctx))
	srv, err := f.eng.GetRecord(ctx, "todos", "t1")
	if rec, _ := r.Get("todos", "t1"); err != nil || !rec.Equal(srv.Record) {
		t.Fatalf("after sync: local %+v, server %+v (%v)", rec, srv.Record, err)
	}
}

func rejectionEqual(a, b Rejection) bool {
	return a.ID == b.ID && a.Collection == b.Collection && a.RecordID == b.RecordID &&
		a.Change.Collection == b.Change.Collection && a.Change.Record.Equal(b.Change.Record) &&
		a.Code == b.Code && a.Message == b.Message && a.When.Equal(b.When) && a.Subject == b.Subject
}

// TestReplicaRetryWinsAgain: a retried change is stamped afresh, so it
// wins over writes made after it was first refused, and is pushed as a new
// write.
func TestReplicaRetryWinsAgain(t *testing.T) {
	f := newFakeServer(t)
	rf := refusingServer(t, f)
	ctx := t.Context()
	a := newReplica(t, f, "a", nil, "c")
	b := newReplica(t, f, "b", nil, "c")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(a.Set("c", "r", "f", "a"))
	rf.set(func(ch crdt.Change) bool { return string(ch.Record.Fields["f"].Value) == string(mustValue(t, "a")) }, nil)
	must(a.Flush(ctx))
	rf.set(nil, nil)
	time.Sleep(2 * time.Millisecond)
	must(b.Set("c", "r", "f", "b"))
	must(errors.Join(b.Sync(ctx), a.Sync(ctx)))
	if rec, _ := a.Get("c", "r"); string(rec.Values()["f"]) != string(mustValue(t, "b")) {
		t.Fatalf("a before the retry: %+v", rec)
	}
	rej := a.Rejected()
	if len(rej) != 1 {
		t.Fatalf("rejected: %+v", rej)
	}
	if err := a.Retry(rej[0].ID + 1000); !errors.Is(err, ErrNoRejection) {
		t.Fatalf("retry of an unknown id: got %v, want ErrNoRejection", err)
	}
	must(a.Retry(rej[0].ID))
	if len(a.Rejected()) != 0 || len(a.Pending()) != 1 {
		t.Fatalf("after retry: rejected %d, outbox %d; want 0 and 1", len(a.Rejected()), len(a.Pending()))
	}
	if rec, _ := a.Get("c", "r"); string(rec.Values()["f"]) != string(mustValue(t, "a")) {
		t.Fatalf("the retried write is not visible: %+v", rec)
	}
	if err := a.Retry(rej[0].ID); !errors.Is(err, ErrNoRejection) {
		t.Fatalf("second retry: got %v, want ErrNoRejection", err)
	}
	must(errors.Join(a.Sync(ctx), b.Sync(ctx)))
	for _, r := range []*Replica{a, b} {
		if rec, _ := r.Get("c", "r"); string(rec.Values()["f"]) != string(mustValue(t, "a")) {
			t.Fatalf("%s: the retried write lost: %+v", r.Client().Replica(), rec)
		}
	}
}

func TestReplicaDiscardRejected(t *testing.T) {
	f := newFakeServer(t)
	rf := refusingServer(t, f)
	rf.set(func(crdt.Change) bool { return true }, nil)
	r := newReplica(t, f, "a", nil, "c")
	for i := range 3 {
		if err := r.Set("c", "r", fmt.Sprint("f", i), i); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	rej := r.Rejected()
	if len(rej) != 3 {
		t.Fatalf("rejected: got %d, want 3", len(rej))
	}
	if err := r.Discard(rej[1].ID); err != nil {
		t.Fatal(err)
	}
	if err := r.Discard(rej[1].ID); !errors.Is(err, ErrNoRejection) {
		t.Fatalf("second discard: got %v, want ErrNoRejection", err)
	}
	got := r.Rejected()
	if len(got) != 2 || got[0].ID != rej[0].ID || got[1].ID != rej[2].ID {
		t.Fatalf("after discard: got %+v", got)
	}
	if _, ok := r.Get("c", "r"); ok {
		t.Fatal("refused writes visible")
	}
}

// TestReplicaResultsTellOutcomesApart: a change that applied except for a
// field a newer write won, and a change that applied nothing, are
// reported with different statuses, both listing the lost field, and
// neither is rejected.
func TestReplicaResultsTellOutcomesApart(t *testing.T) {
	f := newFakeServer(t)
	ctx := t.Context()
	type outcome struct {
		status Status
		lost   string
	}
	var got []outcome
	c := f.client(t, "a", nil)
	a, err := NewReplica(c, ReplicaConfig{Collections: []string{"c"}, OnResult: func(_ crdt.Change, res Result) {
		got = append(got, outcome{res.Status, fmt.Sprint(res.Lost)})
	}})
	if err != nil {
		t.Fatal(err)
	}
	b := newReplica(t, f, "b", nil, "c")
	// A change of two fields, as a retried rejection of another client's
	// making could be: queued white-box, since Set writes one field.
	s, err := c.Now()
	if err != nil {
		t.Fatal(err)
	}
	two := crdt.Record{ID: "r1", Fields: map[string]crdt.Field{"x": {Stamp: s, Value: mustValue(t, 1)}, "y": {Stamp: s, Value: mustValue(t, 1)}}}
	a.mu.Lock()
	a.nextID++
	a.outbox = append(a.outbox, pending{id: a.nextID, change: crdt.Change{Collection: "c", Record: two}})
	a.mu.Unlock()
	if err := a.Set("c", "r2", "f", "a"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond)
	if err := errors.Join(b.Set("c", "r1", "y", 2), b.Set("c", "r2", "f", "b"), b.Sync(ctx)); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	want := []outcome{{StatusApplied, "[y]"}, {StatusSuperseded, "[f]"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("results: got %v, want %v", got, want)
	}
	if len(a.Rejected()) != 0 || len(a.Pending()) != 0 {
		t.Fatalf("rejected %d, outbox %d; want 0 and 0", len(a.Rejected()), len(a.Pending()))
	}
}

func TestReplicaWritesDuringFlushStayQueued(t *testing.T) {
	f := newFakeServer(t)
	ctx := t.Context()
	r := newReplica(t, f, "a", nil, "c")
	if err := r.Set("c", "r", "f", 0); err != nil {
		t.Fatal(err)
	}
	// A write racing a flush is either pushed by it or left for the next.
	done := make(chan error)
	go func() { done <- r.Flush(ctx) }()
	if err := r.Set("c", "r", "g", 1); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := f.eng.GetRecord(ctx, "c", "r")
	if err != nil || len(got.Record.Values()) != 2 || len(r.Pending()) != 0 {
		t.Fatalf("server record %+v (%v), outbox %d", got, err, len(r.Pending()))
	}
}

func TestReplicaRejectsInvalidWrites(t *testing.T) {
	f := newFakeServer(t)
	r := newReplica(t, f, "a", nil)
	for _, err := range []error{
		r.Set("bad coll", "r", "f", 1),
		r.Set("c", "", "f", 1),
		r.Set("c", "r", "", 1),
		r.Set("c", "r", "f", make(chan int)),
	} {
		if err == nil {
			t.Fatal("invalid write accepted")
		}
	}
	if len(r.Pending()) != 0 {
		t.Fatal("invalid writes queued")
	}
	if _, err := NewReplica(r.Client(), ReplicaConfig{Collections: []string{"a/b"}}); err == nil {
		t.Fatal("invalid collection accepted")
	}
}

func TestReplicaObservesPulledStamps(t *testing.T) {
	f := newFakeServer(t)
	ctx := t.Context()
	// b's clock is 2 minutes ahead (within the drift bound); a's write
	// after pulling b's must still sort after it.
	b := newReplica(t, f, "b", nil, "c")
	b.Client().cfg.Now = func() time.Time { return time.Now().Add(2 * time.Minute) }
	a := newReplica(t, f, "a", nil, "c")
	if err := b.Set("c", "r", "f", "b"); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Set("c", "r", "f", "a"); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(a.Sync(ctx), b.Sync(ctx)); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*Replica{a, b} {
		rec, _ := r.Get("c", "r")
		if string(rec.Values()["f"]) != string(mustValue(t, "a")) {
			t.Fatalf("%s: the later write lost: %+v", r.Client().Replica(), rec)
		}
	}
}

var _ = context.Background

func TestReplicaSupersededIsAcknowledgedAndConverges(t *testing.T) {
	f := newFakeServer(t)
	ctx := t.Context()
	var results []Result
	ca := f.client(t, "a", nil)
	a, err := NewReplica(ca, ReplicaConfig{Collections: []string{"c"}, OnResult: func(_ crdt.Change, res Result) {
		results = append(results, res)
	}})
	if err != nil {
		t.Fatal(err)
	}
	b := newReplica(t, f, "b", nil, "c")
	// a writes first but syncs last: its write is older than b's.
	if err := a.Set("c", "r", "f", "a"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond)
	if err := b.Set("c", "r", "f", "b"); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if len(results) != 1 || results[0].Status != StatusSuperseded || fmt.Sprint(results[0].Lost) != "[f]" {
		t.Fatalf("results: got %+v, want one superseded losing [f]", results)
	}
	if len(a.Pending()) != 0 || len(a.Rejected()) != 0 {
		t.Fatalf("a superseded change stayed: outbox %d, rejected %d", len(a.Pending()), len(a.Rejected()))
	}
	rec, _ := a.Get("c", "r")
	if string(rec.Values()["f"]) != string(mustValue(t, "b")) {
		t.Fatalf("a kept its superseded value: %+v", rec)
	}
}

// TestReplicaRefusesWritesPastTheLimits: a local write that breaks a model
// limit is refused at once, as the browser client refuses it, with an
// error matching the sentinel of the code the server would answer
// (ErrTooLarge, ErrInvalid, ErrMalformed), as well as crdt's; nothing is queued and the
// record is as it was. A write at the limit is taken.
func TestReplicaRefusesWritesPastTheLimits(t *testing.T) {
	f := newFakeServer(t)
	r := newReplica(t, f, "a", nil)
	full := map[string]any{}
	for i := range crdt.MaxFieldsPerRecord {
		full[fmt.Sprintf("f%d", i)] = i
	}
	for name, v := range full {
		if err := r.Set("c", "full", name, v); err != nil {
			t.Fatalf("field %d of %d: %v", len(r.Pending()), crdt.MaxFieldsPerRecord, err)
		}
	}
	atLimit := strings.Repeat("x", crdt.MaxValueBytes-5) // a text of 2^16 bytes or more has a 5-byte head
	if err := r.Set("c", "v", "f", atLimit); err != nil {
		t.Fatalf("a value of exactly %d bytes: %v", crdt.MaxValueBytes, err)
	}
	if err := r.Set("c", "deep", "f", nested(crdt.MaxValueNestedLevels)); err != nil {
		t.Fatalf("a value nested %d levels: %v", crdt.MaxValueNestedLevels, err)
	}
	before, _ := r.Get("c", "full")
	queued := len(r.Pending())
	for _, tc := range []struct {
		name      string
		err       error
		code, sub error
	}{
		{"a value a byte over", r.Set("c", "v2", "f", atLimit+"x"), ErrTooLarge, crdt.ErrTooLarge},
		{"a field past the field limit", r.Set("c", "full", "one-more", 1), ErrTooLarge, crdt.ErrTooLarge},
		{"an unset past the field limit", r.Unset("c", "full", "one-more"), ErrTooLarge, crdt.ErrTooLarge},
		{"an id a byte over", r.Set("c", strings.Repeat("i", crdt.MaxIDBytes+1), "f", 1), ErrInvalid, crdt.ErrInvalid},
		{"a field name a byte over", r.Set("c", "r", strings.Repeat("n", crdt.MaxFieldNameBytes+1), 1), ErrInvalid, crdt.ErrInvalid},
		{"a collection name a byte over", r.Set(strings.Repeat("c", crdt.MaxCollectionBytes+1), "r", "f", 1), ErrInvalid, crdt.ErrInvalid},
		// The server refuses a value nested deeper than the value limit
		// malformed (a decode limit, docs/protocol.md section 5), as the
		// browser client refuses it locally.
		{"a value nested a level over", r.Set("c", "v3", "f", nested(crdt.MaxValueNestedLevels+1)), ErrMalformed, crdt.ErrMalformed},
	} {
		if !errors.Is(tc.err, tc.code) || !errors.Is(tc.err, tc.sub) {
			t.Errorf("%s: got %v, want an error matching %v and %v", tc.name, tc.err, tc.code, tc.sub)
		}
	}
	if n := len(r.Pending()); n != queued {
		t.Fatalf("refused writes queued: %d pending, want %d", n, queued)
	}
	if after, _ := r.Get("c", "full"); !after.Equal(before) {
		t.Fatalf("a refused write changed the record: %d fields, had %d", len(after.Fields), len(before.Fields))
	}
	if _, ok := r.Get("c", "v2"); ok {
		t.Fatal("a refused write created its record")
	}
	// A write that stays within the limits is taken: a field the record has.
	if err := r.Set("c", "full", "f0", "again"); err != nil {
		t.Fatalf("a write of a field the full record has: %v", err)
	}
}
