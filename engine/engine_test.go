package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
)

// fakeClock is a wall clock tests move by hand.
type fakeClock struct{ ms int64 }

func (c *fakeClock) now() time.Time { return time.UnixMilli(c.ms) }

func openEngine(t *testing.T, replica string, clk *fakeClock) *Engine {
	t.Helper()
	st := memory.New()
	e, err := Open(Config{Store: st, Replica: replica, Now: clk.now, PollInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(); st.Close() })
	return e
}

func value(t *testing.T, v any) []byte {
	t.Helper()
	b, err := crdt.EncodeValue(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestApplyStatuses(t *testing.T) {
	clk := &fakeClock{ms: 1_000_000}
	e := openEngine(t, "srv", clk)
	ctx := context.Background()
	s := func(wall int64) crdt.Stamp { return crdt.Stamp{Wall: wall, Replica: "c1"} }
	batch := []crdt.Change{
		{Collection: "todos", Record: crdt.SetField("a", "title", value(t, "one"), s(999_000))},
		{Collection: "todos", Record: crdt.SetField("b", "title", value(t, "far"), s(1_000_000+10*60_000))},
		{Collection: "bad name", Record: crdt.SetField("c", "title", value(t, "x"), s(999_000))},
		{Collection: "todos", Record: crdt.SetField("a", "title", value(t, "one"), s(999_000))},
	}
	res, err := e.Apply(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	want := []Status{StatusApplied, StatusRefused, StatusRefused, StatusDuplicate}
	for i, r := range res {
		if r.Status != want[i] {
			t.Errorf("change %d: got %v (%v), want %v", i, r.Status, r.Err, want[i])
		}
	}
	if !errors.Is(res[1].Err, crdt.ErrClockDrift) {
		t.Errorf("future stamp: got %v, want ErrClockDrift", res[1].Err)
	}
	if !errors.Is(res[2].Err, crdt.ErrInvalid) {
		t.Errorf("bad collection: got %v, want ErrInvalid", res[2].Err)
	}
	if res[0].Seq != 1 || res[3].Seq != 1 {
		t.Errorf("seqs: got %d and %d, want 1 and 1", res[0].Seq, res[3].Seq)
	}
	// The refused future stamp must not have moved the server clock.
	st, err := e.Now("todos")
	if err != nil {
		t.Fatal(err)
	}
	if st.Wall != 1_000_000 {
		t.Errorf("server stamp after refused change: got wall %d, want 1000000", st.Wall)
	}
	// Replaying the whole batch changes nothing.
	again, err := e.Apply(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	if again[0].Status != StatusDuplicate {
		t.Errorf("replay: got %v, want duplicate", again[0].Status)
	}
	if h, _ := e.Head(ctx, "todos"); h != 1 {
		t.Errorf("head after replay: got %d, want 1", h)
	}
}

func TestServerWritesOrderAfterObservedStamps(t *testing.T) {
	clk := &fakeClock{ms: 1_000}
	e := openEngine(t, "srv", clk)
	ctx := context.Background()
	// A client 2 minutes ahead writes; the server's own later write must win.
	ahead := crdt.Stamp{Wall: 1_000 + 120_000, Replica: "c1"}
	if _, err := e.Apply(ctx, []crdt.Change{{Collection: "t", Record: crdt.SetField("x", "f", value(t, "client"), ahead)}}); err != nil {
		t.Fatal(err)
	}
	if err := e.Update(ctx, "t", "x", Doc{"f": "server"}); err != nil {
		t.Fatal(err)
	}
	doc, err := e.Get(ctx, "t", "x")
	if err != nil {
		t.Fatal(err)
	}
	if doc["f"] != "server" {
		t.Fatalf("got %v, want the server's later write", doc["f"])
	}
}

func TestEmbeddingAPI(t *testing.T) {
	clk := &fakeClock{ms: 5_000}
	e := openEngine(t, "srv", clk)
	ctx := context.Background()
	if err := e.Put(ctx, "notes", "n1", Doc{"title": "hi", "n": int64(1)}); err != nil {
		t.Fatal(err)
	}
	clk.ms++
	if err := e.Put(ctx, "notes", "n1", Doc{"title": "hello"}); err != nil {
		t.Fatal(err)
	}
	doc, err := e.Get(ctx, "notes", "n1")
	if err != nil {
		t.Fatal(err)
	}
	if len(doc) != 1 || doc["title"] != "hello" {
		t.Fatalf("after Put replacing: got %v, want only title=hello", doc)
	}
	if err := e.Update(ctx, "notes", "n1", Doc{"done": true}); err != nil {
		t.Fatal(err)
	}
	if err := e.Unset(ctx, "notes", "n1", "title"); err != nil {
		t.Fatal(err)
	}
	doc, _ = e.Get(ctx, "notes", "n1")
	if len(doc) != 1 || doc["done"] != true {
		t.Fatalf("after Update+Unset: got %v, want only done=true", doc)
	}
	if err := e.Delete(ctx, "notes", "n1"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Get(ctx, "notes", "n1"); !errors.Is(err, stores.ErrNotFound) {
		t.Fatalf("after Delete: got %v, want ErrNotFound", err)
	}
	if err := e.Update(ctx, "notes", "n1", Doc{"title": "again"}); err != nil {
		t.Fatal(err)
	}
	doc, _ = e.Get(ctx, "notes", "n1")
	if len(doc) != 1 || doc["title"] != "again" {
		t.Fatalf("after re-create: got %v, want only title=again", doc)
	}
	if err := e.Update(ctx, "notes", "", Doc{"x": 1}); !errors.Is(err, crdt.ErrInvalid) {
		t.Fatalf("empty id: got %v, want ErrInvalid", err)
	}
}

func TestSubscribeCoalescesAndCatchesUp(t *testing.T) {
	clk := &fakeClock{ms: 5_000}
	e := openEngine(t, "srv", clk)
	ctx := context.Background()
	sub, err := e.Subscribe("todos")
	if err != nil {
		t.Fatal(err)
	}
	other, _ := e.Subscribe("other")
	for i := range 50 {
		clk.ms++
		if err := e.Update(ctx, "todos", "a", Doc{"n": i}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case got := <-sub.C():
		if got != 50 {
			t.Fatalf("coalesced head: got %d, want 50", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no notification")
	}
	select {
	case got := <-other.C():
		t.Fatalf("other collection notified with %d", got)
	default:
	}
	sub.Close()
	if _, ok := <-sub.C(); ok {
		t.Fatal("channel still open after Close")
	}
	e.Close()
	if _, ok := <-other.C(); ok {
		t.Fatal("channel still open after engine Close")
	}
}

// A SubscribeFunc callback is told every new head, nothing after Close,
// and once that the engine closed; on a closed engine before SubscribeFunc
// returns.
func TestSubscribeFunc(t *testing.T) {
	clk := &fakeClock{ms: 5_000}
	e := openEngine(t, "srv", clk)
	ctx := context.Background()
	type call struct {
		head uint64
		ok   bool
	}
	var mu sync.Mutex
	var calls, closedCalls []call
	sub, err := e.SubscribeFunc("todos", func(head uint64, ok bool) {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, call{head, ok})
	})
	if err != nil {
		t.Fatal(err)
	}
	if sub.C() != nil {
		t.Fatal("a callback subscription has a channel")
	}
	closed, _ := e.SubscribeFunc("todos", func(head uint64, ok bool) {
		mu.Lock()
		defer mu.Unlock()
		closedCalls = append(closedCalls, call{head, ok})
	})
	for i := range 3 {
		clk.ms++
		if err := e.Update(ctx, "todos", "a", Doc{"n": i}); err != nil {
			t.Fatal(err)
		}
	}
	closed.Close()
	if _, err := e.SubscribeFunc("Bad Name", func(uint64, bool) {}); err == nil {
		t.Fatal("an invalid collection was subscribed")
	}
	e.Close()
	mu.Lock()
	// The memory store notifies synchronously: every head, in order.
	want := []call{{1, true}, {2, true}, {3, true}, {0, false}}
	if !slices.Equal(calls, want) {
		t.Fatalf("calls %v, want %v", calls, want)
	}
	if !slices.Equal(closedCalls, want[:3]) {
		t.Fatalf("closed subscription: calls %v, want %v", closedCalls, want[:3])
	}
	mu.Unlock()
	var late []call
	if _, err := e.SubscribeFunc("todos", func(head uint64, ok bool) { late = append(late, call{head, ok}) }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(late, []call{{0, false}}) {
		t.Fatalf("on a closed engine: calls %v, want the close", late)
	}
}

// lossyStore drops every notification and reports a Resync on demand, like
// a Redis store whose pub/sub connection dropped.
type lossyStore struct {
	*memory.Store
	fn func(stores.Notification)
}

func (s *lossyStore) Watch(fn func(stores.Notification)) func() { s.fn = fn; return func() {} }

func TestResyncReadsHeads(t *testing.T) {
	st := &lossyStore{Store: memory.New()}
	e, err := Open(Config{Store: st, PollInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	sub, _ := e.Subscribe("todos")
	if err := e.Update(context.Background(), "todos", "a", Doc{"x": 1}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sub.C():
		t.Fatal("notification arrived though the store dropped it")
	case <-time.After(50 * time.Millisecond):
	}
	st.fn(stores.Notification{Resync: true})
	select {
	case got := <-sub.C():
		if got != 1 {
			t.Fatalf("after resync: got %d, want 1", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("resync did not notify")
	}
}

func TestPollFindsSilentChanges(t *testing.T) {
	st := &lossyStore{Store: memory.New()}
	e, err := Open(Config{Store: st, PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	sub, _ := e.Subscribe("todos")
	if err := e.Update(context.Background(), "todos", "a", Doc{"x": 1}); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-sub.C():
		if got != 1 {
			t.Fatalf("got %d, want 1", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("poll did not notify")
	}
}

// TestApplyRefusesOnlyTheOversizedChange: a store refuses a batch whole when
// one change would grow its record past crdt.MaxRecordBytes; the engine must
// report that change refused and apply the others.
func TestApplyRefusesOnlyTheOversizedChange(t *testing.T) {
	clk := &fakeClock{ms: 1_000_000}
	e := openEngine(t, "srv", clk)
	ctx := context.Background()
	big := func(b byte) []byte {
		v, err := crdt.EncodeValue(bytesOf(b, crdt.MaxValueBytes-16))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	s := crdt.Stamp{Wall: 999_000, Replica: "c1"}
	batch := []crdt.Change{
		{Collection: "docs", Record: crdt.SetField("r", "a", big('a'), s)},
		{Collection: "docs", Record: crdt.SetField("other", "x", value(t, 1), s)},
		{Collection: "docs", Record: crdt.SetField("r", "b", big('b'), s)},
		{Collection: "docs", Record: crdt.SetField("r", "c", big('c'), s)}, // three values exceed the record limit
		{Collection: "docs", Record: crdt.SetField("other", "y", value(t, 2), s)},
	}
	res, err := e.Apply(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	want := []Status{StatusApplied, StatusApplied, StatusApplied, StatusRefused, StatusApplied}
	for i, r := range res {
		if r.Status != want[i] {
			t.Errorf("change %d: got %v (%v), want %v", i, r.Status, r.Err, want[i])
		}
	}
	if !errors.Is(res[3].Err, stores.ErrTooLarge) {
		t.Errorf("refusal %v does not wrap stores.ErrTooLarge", res[3].Err)
	}
	doc, err := e.Get(ctx, "docs", "r")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := doc["c"]; ok || len(doc) != 2 {
		t.Errorf("record r has fields %d (c present: %v), want a and b only", len(doc), ok)
	}
}

func bytesOf(b byte, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = b
	}
	return p
}

// A value an embedding program encoded its own way is held canonically,
// and the caller's change is left as it was.
func TestApplyNormalizesValues(t *testing.T) {
	e := openEngine(t, "srv", &fakeClock{ms: 1_000_000})
	ctx := context.Background()
	half64 := []byte{0xfb, 0x3f, 0xe0, 0, 0, 0, 0, 0, 0} // 0.5 as a float64
	ch := crdt.Change{Collection: "todos", Record: crdt.SetField("a", "x", half64, crdt.Stamp{Wall: 999_000, Replica: "c1"})}
	res, err := e.Apply(ctx, []crdt.Change{ch})
	if err != nil || res[0].Status != StatusApplied {
		t.Fatalf("apply: %+v %v", res, err)
	}
	ent, err := e.GetRecord(ctx, "todos", "a")
	if err != nil {
		t.Fatal(err)
	}
	if got := ent.Record.Fields["x"].Value; !bytes.Equal(got, []byte{0xf9, 0x38, 0x00}) {
		t.Fatalf("stored %x, want f93800", got)
	}
	if !bytes.Equal(ch.Record.Fields["x"].Value, half64) {
		t.Fatal("the caller's change was modified")
	}
}

// A collection at its quota refuses changes that add data, with
// ErrQuotaExceeded, and still takes deletes and unsets; other collections
// are unaffected; a store that keeps no usage cannot have quotas.
func TestQuotas(t *testing.T) {
	ctx := context.Background()
	e, err := Open(Config{Store: memory.New(), Replica: "srv", PollInterval: -1,
		Quotas: []Quota{{Pattern: "t1.*", MaxRecords: 3}, {Pattern: "t2.*", MaxBytes: 200}}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	s := func(w int64) crdt.Stamp { return crdt.Stamp{Wall: w, Replica: "c1"} }
	set := func(coll, id string, w int64, v any) crdt.Change {
		return crdt.Change{Collection: coll, Record: crdt.SetField(id, "f", value(t, v), s(w))}
	}
	for i := range 3 {
		if res, err := e.Apply(ctx, []crdt.Change{set("t1.a", fmt.Sprint("r", i), 1, i)}); err != nil || res[0].Status != StatusApplied {
			t.Fatalf("write %d under the quota: %+v %v", i, res, err)
		}
	}
	res, err := e.Apply(ctx, []crdt.Change{
		set("t1.a", "r9", 2, 9),                                        // a new record: refused
		set("t1.a", "r0", 2, "more"),                                   // an edit that adds data: refused
		{Collection: "t1.a", Record: crdt.DeleteRecord("r1", s(3))},    // a delete: accepted
		{Collection: "t1.a", Record: crdt.UnsetField("r2", "f", s(3))}, // an unset: accepted
		set("t1.b", "r0", 2, 1),                                        // another collection: its own quota
		set("free", "r0", 2, 1),                                        // no quota
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []Status{StatusRefused, StatusRefused, StatusApplied, StatusApplied, StatusApplied, StatusApplied}
	for i, r := range res {
		if r.Status != want[i] {
			t.Errorf("change %d: %v (%v), want %v", i, r.Status, r.Err, want[i])
		}
	}
	if !errors.Is(res[0].Err, ErrQuotaExceeded) {
		t.Errorf("refusal: %v, want ErrQuotaExceeded", res[0].Err)
	}
	big := strings.Repeat("x", 300)
	if res, _ := e.Apply(ctx, []crdt.Change{set("t2.a", "big", 1, big)}); res[0].Status != StatusApplied {
		t.Fatalf("first write to t2.a: %+v", res)
	}
	if res, _ := e.Apply(ctx, []crdt.Change{set("t2.a", "more", 1, 1)}); res[0].Status != StatusRefused || !errors.Is(res[0].Err, ErrQuotaExceeded) {
		t.Fatalf("write past the byte quota: %+v", res)
	}
	if _, err := Open(Config{Store: noUsage{memory.New()}, Quotas: []Quota{{Pattern: "*", MaxRecords: 1}}}); err == nil {
		t.Fatal("quotas on a store without usage: no error")
	}
}

// A push is idempotent at a collection's quota too: a change the record
// holds already (a retry of a push whose answer was lost, after that push
// filled the quota) comes back duplicate, not refused; one that adds data,
// even to that record, is refused.
func TestQuotaRetryIsDuplicate(t *testing.T) {
	ctx := context.Background()
	e, err := Open(Config{Store: memory.New(), Replica: "srv", PollInterval: -1,
		Quotas: []Quota{{Pattern: "q.*", MaxRecords: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ch := crdt.Change{Collection: "q.a", Record: crdt.SetField("r0", "f", value(t, "v"), crdt.Stamp{Wall: 1, Replica: "c1"})}
	if res, err := e.Apply(ctx, []crdt.Change{ch}); err != nil || res[0].Status != StatusApplied {
		t.Fatalf("the write that fills the quota: %+v %v", res, err)
	}
	res, err := e.Apply(ctx, []crdt.Change{
		ch, // the same change again
		{Collection: "q.a", Record: crdt.SetField("r0", "f", value(t, "w"), crdt.Stamp{Wall: 2, Replica: "c1"})},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Status != StatusDuplicate {
		t.Errorf("the change again: %v (%v), want duplicate", res[0].Status, res[0].Err)
	}
	if res[1].Status != StatusRefused || !errors.Is(res[1].Err, ErrQuotaExceeded) {
		t.Errorf("a newer value: %v (%v), want refused with ErrQuotaExceeded", res[1].Status, res[1].Err)
	}
}

// noUsage hides a store's usage.
type noUsage struct{ stores.Store }
