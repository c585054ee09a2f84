package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
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

func TestReplicaDropsRefusedChanges(t *testing.T) {
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
	ref := r.Refused()
	if len(ref) != 1 || !errors.Is(ref[0].Err, ErrClockDrift) || ref[0].Change.Record.ID != "r" {
		t.Fatalf("refusals: got %+v, want one clock_drift for r", ref)
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
	if len(a.Pending()) != 0 || len(a.Refused()) != 0 {
		t.Fatalf("a superseded change stayed: outbox %d, refused %d", len(a.Pending()), len(a.Refused()))
	}
	rec, _ := a.Get("c", "r")
	if string(rec.Values()["f"]) != string(mustValue(t, "b")) {
		t.Fatalf("a kept its superseded value: %+v", rec)
	}
}
