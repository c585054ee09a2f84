package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	st "github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// storeSink is a capture sink that applies captured changes with the
// store's own Apply, standing in for the engine in tests that have none. A
// batch the store refuses whole (ErrTooLarge, ErrInvalid) is applied change
// by change, so the refusal lands on the change that caused it, as the
// engine does.
func storeSink(s stores.Store) stores.CaptureSink {
	return stores.CaptureSink{Apply: func(ctx context.Context, changes []crdt.Change) ([]stores.CaptureResult, error) {
		out := make([]stores.CaptureResult, len(changes))
		refused := func(err error) bool {
			return errors.Is(err, stores.ErrTooLarge) || errors.Is(err, stores.ErrInvalid)
		}
		_, err := s.Apply(ctx, changes)
		if err == nil || !refused(err) {
			return out, err
		}
		for i, c := range changes {
			if _, err := s.Apply(ctx, []crdt.Change{c}); refused(err) {
				out[i].Err = err
			} else if err != nil {
				return nil, err
			}
		}
		return out, nil
	}}
}

// captureWithStore registers storeSink(s) as s's capture sink until the
// test ends.
func captureWithStore(t testing.TB, s *Store) {
	t.Helper()
	t.Cleanup(s.Capture(storeSink(s)))
}

// sinkStore is a Store with no table, enough for the consumer's handle.
func sinkStore() *Store {
	ctx, cancel := context.WithCancel(context.Background())
	return &Store{
		streams: dynamodbstreams.New(dynamodbstreams.Options{}),
		log:     slog.New(slog.DiscardHandler),
		replica: DefaultStreamReplica,
		runCtx:  ctx,
		cancel:  cancel,
		ledger:  &mapLedger{m: map[string]string{}, ats: map[string]crdt.Timestamp{}},
		now:     func() time.Time { return time.UnixMilli(1_700_000_100_000) },
	}
}

// mapLedger is the capture ledger in memory, for records that hold
// nothing.
type mapLedger struct {
	mu  sync.Mutex
	m   map[string]string // coll/id -> padded seq of the last claim
	ats map[string]crdt.Timestamp
}

func (l *mapLedger) held(context.Context, string, string) (crdt.Stamp, error) {
	return crdt.Stamp{}, nil
}

func (l *mapLedger) claim(_ context.Context, coll, id, seq40 string, at crdt.Timestamp) (claim, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := coll + "/" + id
	switch q, ok := l.m[k]; {
	case !ok || q < seq40:
		l.m[k], l.ats[k] = seq40, at
		return claim{at: at}, nil
	case q == seq40:
		return claim{at: l.ats[k]}, nil
	default:
		return claim{stale: true}, nil
	}
}

func foreignRecord(pk, seq, title string) st.Record {
	k := fkeys(pk, "0")
	r := streamRecord(st.OperationTypeInsert, seq, k, withKeys(k, map[string]st.AttributeValue{"title": &st.AttributeValueMemberS{Value: title}}), nil)
	r.Dynamodb.ApproximateCreationDateTime = ptr(time.UnixMilli(1_700_000_000_000))
	return r
}

func headRecord(coll string, head uint64) st.Record {
	k := fkeys(headPK(coll), "0")
	return streamRecord(st.OperationTypeModify, "9", k, withKeys(k, map[string]st.AttributeValue{attrHead: &st.AttributeValueMemberN{Value: fmt.Sprint(head)}}), nil)
}

// TestHandleCapture checks what the consumer does with a batch of stream
// records: foreign writes go to the sink in order, a refusal is final (the
// call succeeds, the change is counted and skipped), an error of the sink
// fails the call, and without a sink foreign writes are passed over while
// heads still wake watchers.
func TestHandleCapture(t *testing.T) {
	records := []st.Record{
		foreignRecord("todos#1", "101", "a"),
		headRecord("todos", 7),
		foreignRecord("todos#2", "102", "b"),
		foreignRecord("notes#3", "103", "c"),
	}
	type call struct{ ids []string }
	run := func(t *testing.T, apply func(context.Context, []crdt.Change) ([]stores.CaptureResult, error)) (*Store, []stores.Notification, error) {
		s := sinkStore()
		t.Cleanup(func() { _ = s.Close() })
		var mu sync.Mutex
		var notes []stores.Notification
		s.Watch(func(n stores.Notification) { mu.Lock(); notes = append(notes, n); mu.Unlock() })
		if apply != nil {
			t.Cleanup(s.Capture(stores.CaptureSink{Apply: apply}))
		}
		err := newConsumer(s, "arn", "").handle(context.Background(), records)
		return s, notes, err
	}
	ids := func(cs []crdt.Change) []string {
		var out []string
		for _, c := range cs {
			out = append(out, c.Collection+"/"+c.Record.ID)
		}
		return out
	}

	t.Run("refusal is final", func(t *testing.T) {
		var got []string
		s, notes, err := run(t, func(_ context.Context, cs []crdt.Change) ([]stores.CaptureResult, error) {
			got = append(got, ids(cs)...)
			out := make([]stores.CaptureResult, len(cs))
			out[1].Err = fmt.Errorf("%w: too big", stores.ErrTooLarge)
			return out, nil
		})
		if err != nil {
			t.Fatalf("handle: %v, want nil (a refusal is not a failure)", err)
		}
		if want := []string{"todos/1", "todos/2", "notes/3"}; !slices.Equal(got, want) {
			t.Fatalf("sink got %v, want %v", got, want)
		}
		if n := s.CaptureStats().Refused; n != 1 {
			t.Fatalf("refused count %d, want 1", n)
		}
		// What the server exports: the two taken, the one refused.
		if c := s.CaptureCounts(); c != (stores.CaptureCounts{Applied: 2, Refused: 1}) {
			t.Fatalf("capture counts %+v, want 2 applied and 1 refused", c)
		}
		if len(notes) != 1 || notes[0] != (stores.Notification{Collection: "todos", Seq: 7}) {
			t.Fatalf("notifications %+v, want todos at 7", notes)
		}
	})
	t.Run("sink not ready fails the call", func(t *testing.T) {
		s := sinkStore()
		t.Cleanup(func() { _ = s.Close() })
		var notes []stores.Notification
		s.Watch(func(n stores.Notification) { notes = append(notes, n) })
		called := false
		t.Cleanup(s.Capture(stores.CaptureSink{
			Apply: func(context.Context, []crdt.Change) ([]stores.CaptureResult, error) {
				called = true
				return nil, stores.ErrUnavailable
			},
			Ready: func(context.Context) error { return stores.ErrUnavailable },
		}))
		err := newConsumer(s, "arn", "").handle(context.Background(), records)
		if !errors.Is(err, stores.ErrUnavailable) {
			t.Fatalf("handle: %v, want the sink's error", err)
		}
		if called || len(notes) != 0 || s.CaptureStats().Records != 0 || s.CaptureStats().Parked != 0 {
			t.Fatalf("a failed call applied (%v), notified %+v, counted %d records, parked %d", called, notes, s.CaptureStats().Records, s.CaptureStats().Parked)
		}
	})
	t.Run("sink error parks the collection", func(t *testing.T) {
		var got []string
		s, notes, err := run(t, func(_ context.Context, cs []crdt.Change) ([]stores.CaptureResult, error) {
			for _, c := range cs {
				if c.Collection == "todos" {
					return nil, fmt.Errorf("%w: todos is fenced", stores.ErrUnavailable)
				}
			}
			got = append(got, ids(cs)...)
			return make([]stores.CaptureResult, len(cs)), nil
		})
		if err != nil {
			t.Fatalf("handle: %v, want nil (one collection's failure parks it)", err)
		}
		if want := []string{"notes/3"}; !slices.Equal(got, want) {
			t.Fatalf("sink applied %v, want %v", got, want)
		}
		parked := s.ParkedCaptures()
		if len(parked) != 2 || parked[0].Key != "todos#1" || parked[1].Key != "todos#2" || !strings.Contains(parked[0].Reason, "todos is fenced") {
			t.Fatalf("parked %+v, want todos#1 and todos#2 with the sink's error", parked)
		}
		if st := s.CaptureStats(); st.Parked != 2 || st.ParkedBytes <= 0 || st.Records != int64(len(records)) {
			t.Fatalf("stats %+v", st)
		}
		if c, st := s.CaptureCounts(), s.CaptureStats(); c != (stores.CaptureCounts{Applied: 1, ParkedBytes: uint64(st.ParkedBytes)}) {
			t.Fatalf("capture counts %+v, want 1 applied and the parked bytes of %+v", c, st)
		}
		if len(notes) != 1 || notes[0].Seq != 7 {
			t.Fatalf("notifications %+v, want todos at 7", notes)
		}
	})
	t.Run("wrong number of results", func(t *testing.T) {
		_, _, err := run(t, func(context.Context, []crdt.Change) ([]stores.CaptureResult, error) {
			return []stores.CaptureResult{{}}, nil
		})
		if err == nil {
			t.Fatal("handle accepted one result for three changes")
		}
	})
	t.Run("no sink", func(t *testing.T) {
		s, notes, err := run(t, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(notes) != 1 || notes[0].Seq != 7 || s.CaptureStats().Records != int64(len(records)) {
			t.Fatalf("without a sink: notifications %+v, %d records; want the head and all records handled", notes, s.CaptureStats().Records)
		}
	})
}

// TestCaptureStop checks that stop waits for a sink call in progress and
// cancels its context, and that a stopped or replaced sink is not called.
func TestCaptureStop(t *testing.T) {
	s := sinkStore()
	defer s.Close()
	entered, release := make(chan struct{}), make(chan struct{})
	stop := s.Capture(stores.CaptureSink{Apply: func(ctx context.Context, cs []crdt.Change) ([]stores.CaptureResult, error) {
		close(entered)
		<-ctx.Done()
		<-release
		return nil, ctx.Err()
	}})
	c := newConsumer(s, "arn", "")
	errc := make(chan error, 1)
	go func() { errc <- c.handle(context.Background(), []st.Record{foreignRecord("todos#1", "1", "a")}) }()
	<-entered
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("stop returned while the sink was still running")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	<-stopped
	if err := <-errc; !errors.Is(err, errSinkGone) {
		t.Fatalf("handle after stop: %v, want errSinkGone", err)
	}
	// A replaced sink is never called again; the new one is.
	var first, second int
	stop1 := s.Capture(stores.CaptureSink{Apply: func(_ context.Context, cs []crdt.Change) ([]stores.CaptureResult, error) {
		first++
		return make([]stores.CaptureResult, len(cs)), nil
	}})
	defer stop1()
	stop2 := s.Capture(stores.CaptureSink{Apply: func(_ context.Context, cs []crdt.Change) ([]stores.CaptureResult, error) {
		second++
		return make([]stores.CaptureResult, len(cs)), nil
	}})
	if err := c.handle(context.Background(), []st.Record{foreignRecord("todos#1", "1", "a")}); err != nil {
		t.Fatal(err)
	}
	stop1() // stopping the replaced one leaves the new one registered
	if err := c.handle(context.Background(), []st.Record{foreignRecord("todos#1", "1", "a")}); err != nil {
		t.Fatal(err)
	}
	stop2()
	if err := c.handle(context.Background(), []st.Record{foreignRecord("todos#1", "1", "a")}); err != nil {
		t.Fatal(err)
	}
	if first != 0 || second != 2 {
		t.Fatalf("replaced sink called %d times, new one %d; want 0 and 2", first, second)
	}
}

// TestHandleLedger checks how the consumer stamps foreign writes through the
// capture ledger: with the capturing clock (never before the stream's
// time), one write per item in a sink batch, the same stamp when a record
// is delivered again, and records older than the last captured one of
// their item skipped.
func TestHandleLedger(t *testing.T) {
	s := sinkStore()
	defer s.Close()
	var calls [][]crdt.Change
	defer s.Capture(stores.CaptureSink{Apply: func(_ context.Context, cs []crdt.Change) ([]stores.CaptureResult, error) {
		calls = append(calls, slices.Clone(cs))
		return make([]stores.CaptureResult, len(cs)), nil
	}})()
	c := newConsumer(s, "arn", "")
	recs := []st.Record{foreignRecord("todos#1", "101", "a"), foreignRecord("todos#2", "102", "b"), foreignRecord("todos#1", "103", "c")}
	if err := c.handle(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 2 || len(calls[0]) != 2 || len(calls[1]) != 1 {
		t.Fatalf("sink batches %v; want [todos/1 todos/2] then [todos/1]", calls)
	}
	first := calls[0][0].Record.Fields["title"].Stamp
	if want := s.now().UnixMilli(); first.Wall != want {
		t.Fatalf("stamped at %d, want the capturing clock %d (the stream says %d)", first.Wall, want, recs[0].Dynamodb.ApproximateCreationDateTime.UnixMilli())
	}
	// A stream time after the clock wins: never earlier than the stream.
	// The last record again, later: the same stamp. The first: skipped.
	s.now = func() time.Time { return time.UnixMilli(1_700_000_200_000) }
	ahead := foreignRecord("todos#3", "104", "d")
	ahead.Dynamodb.ApproximateCreationDateTime = ptr(s.now().Add(time.Minute))
	calls = nil
	if err := c.handle(context.Background(), []st.Record{recs[0], recs[2], ahead}); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 1 || len(calls[0]) != 2 {
		t.Fatalf("replay: sink got %v, want the last record of todos/1 and todos/3", calls)
	}
	if got := calls[0][0].Record.Fields["title"].Stamp; got.Wall != first.Wall {
		t.Fatalf("a record delivered again was stamped %v, first %v", got, first)
	}
	if got := calls[0][1].Record.Fields["title"].Stamp.Wall; got != ahead.Dynamodb.ApproximateCreationDateTime.UnixMilli() {
		t.Fatalf("stamped %d before the stream's time %d", got, ahead.Dynamodb.ApproximateCreationDateTime.UnixMilli())
	}
	if st := s.CaptureStats(); st.Replayed != 1 || st.Captured != 5 {
		t.Fatalf("stats %+v; want 1 replayed, 5 captured", st)
	}
}

// TestParkedRetry checks the parked queue of a collection whose changes
// the sink fails: a later write of a parked collection joins the queue
// (unstamped, so the ledger never reads the parked one as handled), nothing
// is retried before its pause, and once the sink takes the collection
// again the queue is applied from its head in stream order, one write per
// item in a batch, and the collection leaves the parked state. A change
// the sink fails for good (ErrTooLarge for the whole batch) is found
// alone, reported with its key and reason, and not retried.
func TestParkedRetry(t *testing.T) {
	s := sinkStore()
	defer s.Close()
	var mu sync.Mutex
	fenced := true
	var calls [][]crdt.Change
	defer s.Capture(stores.CaptureSink{Apply: func(_ context.Context, cs []crdt.Change) ([]stores.CaptureResult, error) {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range cs {
			switch {
			case c.Collection == "todos" && fenced:
				return nil, fmt.Errorf("%w: todos is fenced", stores.ErrUnavailable)
			case c.Record.ID == "9":
				return nil, fmt.Errorf("%w: record 9", stores.ErrTooLarge)
			}
		}
		calls = append(calls, slices.Clone(cs))
		return make([]stores.CaptureResult, len(cs)), nil
	}})()
	c := newConsumer(s, "arn", "")
	ctx := context.Background()
	if err := c.handle(ctx, []st.Record{foreignRecord("todos#1", "101", "a"), foreignRecord("notes#5", "102", "n")}); err != nil {
		t.Fatal(err)
	}
	if err := c.handle(ctx, []st.Record{foreignRecord("todos#1", "103", "b"), foreignRecord("todos#9", "104", "big"), foreignRecord("todos#2", "105", "c")}); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 1 || calls[0][0].Collection != "notes" {
		t.Fatalf("sink applied %v, want notes/5 alone", calls)
	}
	var keys []string
	for _, p := range s.ParkedCaptures() {
		keys = append(keys, p.Key+"@"+p.Position)
	}
	if want := []string{"todos#1@101", "todos#1@103", "todos#9@104", "todos#2@105"}; !slices.Equal(keys, want) {
		t.Fatalf("parked %v, want %v", keys, want)
	}
	// The later write of todos/1 is not in the ledger: the parked one
	// would read as handled.
	if q := s.ledger.(*mapLedger).m["todos/1"]; q != seq40Of(t, "101") {
		t.Fatalf("ledger holds %q for todos/1, want the parked write's %q", q, seq40Of(t, "101"))
	}

	// Not before its pause, even once the sink takes it again.
	mu.Lock()
	fenced = false
	mu.Unlock()
	if _, err := c.retryParked(ctx); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 1 || s.CaptureStats().Parked != 4 {
		t.Fatalf("retried before the pause: calls %v, stats %+v", calls, s.CaptureStats())
	}
	s.now = func() time.Time { return time.UnixMilli(1_700_000_100_000).Add(time.Minute) }
	if _, err := c.retryParked(ctx); err != nil {
		t.Fatal(err)
	}
	var batches [][]string
	for _, cs := range calls[1:] {
		var b []string
		for _, ch := range cs {
			b = append(b, ch.Record.ID+"="+string(ch.Record.Fields["title"].Value))
		}
		batches = append(batches, b)
	}
	a, b, cv := string(val(t, "a")), string(val(t, "b")), string(val(t, "c"))
	if want := [][]string{{"1=" + a}, {"1=" + b}, {"2=" + cv}}; !slices.EqualFunc(batches, want, slices.Equal) {
		t.Fatalf("retry applied %q, want %q (stream order, one write per item in a batch, record 9 found alone and refused)", batches, want)
	}
	if first, second := calls[1][0].Record.Fields["title"].Stamp, calls[2][0].Record.Fields["title"].Stamp; second.Compare(first) <= 0 {
		t.Fatalf("the later write of todos/1 stamped %v, not after the earlier one's %v", second, first)
	}
	rej := s.RejectedCaptures()
	if len(rej) != 1 || rej[0].Key != "todos#9" || !strings.Contains(rej[0].Reason, "record 9") {
		t.Fatalf("rejected %+v, want todos#9 with the sink's reason", rej)
	}
	if st := s.CaptureStats(); st.Parked != 0 || st.ParkedBytes != 0 || st.Refused != 1 || len(s.ParkedCaptures()) != 0 || len(c.parked) != 0 {
		t.Fatalf("after the retry: stats %+v, parked %+v", st, s.ParkedCaptures())
	}
}

func seq40Of(t *testing.T, seq string) string {
	t.Helper()
	w, ok, err := readForeign(foreignRecord("todos#1", seq, "x"))
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	return w.seq40
}

// TestParkedBounds checks the limits of parking: a write of a parked
// collection that does not fit the parked bytes' bound is left to the
// stream (counted, logged at error once), and so is every later write of
// the collection, so that none overtakes it; once the queue drains the
// consumer reads the stream again from its oldest record, which offers
// them again. A write parked longer than the stream's retention is said,
// at error, to be held in memory alone.
func TestParkedBounds(t *testing.T) {
	s := sinkStore()
	defer s.Close()
	logs := &syncBuffer{}
	s.log = slog.New(slog.NewTextHandler(logs, nil))
	var fenced atomic.Bool
	fenced.Store(true)
	var applied []string
	defer s.Capture(stores.CaptureSink{Apply: func(_ context.Context, cs []crdt.Change) ([]stores.CaptureResult, error) {
		if fenced.Load() {
			return nil, fmt.Errorf("%w: todos is fenced", stores.ErrUnavailable)
		}
		for _, c := range cs {
			applied = append(applied, c.Record.ID)
		}
		return make([]stores.CaptureResult, len(cs)), nil
	}})()
	c := newConsumer(s, "arn", "")
	one := parkedSize(mustForeign(t, foreignRecord("todos#1", "101", "a")))
	c.maxParked = 2 * one
	ctx := context.Background()
	recs := []st.Record{foreignRecord("todos#1", "101", "a"), foreignRecord("todos#2", "102", "b"), foreignRecord("todos#3", "103", "c"), foreignRecord("todos#4", "104", "d")}
	if err := c.handle(ctx, recs); err != nil {
		t.Fatal(err)
	}
	if st := s.CaptureStats(); st.Parked != 2 || st.Overflowed != 2 || st.ParkedBytes != int64(2*one) {
		t.Fatalf("stats %+v, want 2 parked (%d bytes) and 2 left to the stream", st, 2*one)
	}
	if c := s.CaptureCounts(); c.Overflowed != 2 || c.ParkedBytes != uint64(2*one) {
		t.Fatalf("capture counts %+v, want 2 overflowed and %d bytes parked", c, 2*one)
	}
	if n := strings.Count(logs.String(), "parked foreign writes are at their bound"); n != 1 {
		t.Fatalf("%d error logs of the bound, want 1:\n%s", n, logs)
	}

	// A day later, still fenced: the parked writes outlived the stream.
	s.now = func() time.Time { return time.UnixMilli(1_700_000_000_000).Add(streamRetention + time.Minute) }
	for range 2 {
		if _, err := c.retryParked(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(logs.String(), "level=ERROR msg=\"parked foreign writes are older than the stream's 24-hour retention"); n != 1 {
		t.Fatalf("%d error logs of the retention, want 1:\n%s", n, logs)
	}

	fenced.Store(false)
	s.now = func() time.Time { return time.UnixMilli(1_700_000_000_000).Add(streamRetention + time.Hour) }
	if _, err := c.retryParked(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(applied, []string{"1", "2"}) || !c.reread || s.CaptureStats().Parked != 0 {
		t.Fatalf("after the fence lifted: applied %v, reread %v, stats %+v; want 1 and 2 applied and the stream read again", applied, c.reread, s.CaptureStats())
	}
	// Read again, the writes left to the stream are applied (1 and 2,
	// the last captured writes of their items, are offered again with
	// their stamps: a no-op).
	if err := c.handle(ctx, recs); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(applied, []string{"1", "2", "1", "2", "3", "4"}) {
		t.Fatalf("after reading the stream again: applied %v, want 1 and 2 again, then 3 and 4", applied)
	}
}

func mustForeign(t *testing.T, rec st.Record) foreignWrite {
	t.Helper()
	w, ok, err := readForeign(rec)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	return w
}
