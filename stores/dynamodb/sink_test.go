package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
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
	return func(ctx context.Context, changes []crdt.Change) ([]stores.CaptureResult, error) {
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
	}
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
	run := func(t *testing.T, sink stores.CaptureSink) (*Store, []stores.Notification, error) {
		s := sinkStore()
		t.Cleanup(func() { _ = s.Close() })
		var mu sync.Mutex
		var notes []stores.Notification
		s.Watch(func(n stores.Notification) { mu.Lock(); notes = append(notes, n); mu.Unlock() })
		if sink != nil {
			t.Cleanup(s.Capture(sink))
		}
		err := newConsumer(s, "arn").handle(context.Background(), records)
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
		if n := s.captureRefused.Load(); n != 1 {
			t.Fatalf("refused count %d, want 1", n)
		}
		if len(notes) != 1 || notes[0] != (stores.Notification{Collection: "todos", Seq: 7}) {
			t.Fatalf("notifications %+v, want todos at 7", notes)
		}
	})
	t.Run("sink error fails the call", func(t *testing.T) {
		s, notes, err := run(t, func(context.Context, []crdt.Change) ([]stores.CaptureResult, error) {
			return nil, stores.ErrUnavailable
		})
		if !errors.Is(err, stores.ErrUnavailable) {
			t.Fatalf("handle: %v, want the sink's error", err)
		}
		if len(notes) != 0 || s.streamRecords.Load() != 0 {
			t.Fatalf("a failed call notified %+v and counted %d records", notes, s.streamRecords.Load())
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
		if len(notes) != 1 || notes[0].Seq != 7 || s.streamRecords.Load() != int64(len(records)) {
			t.Fatalf("without a sink: notifications %+v, %d records; want the head and all records handled", notes, s.streamRecords.Load())
		}
	})
}

// TestCaptureStop checks that stop waits for a sink call in progress and
// cancels its context, and that a stopped or replaced sink is not called.
func TestCaptureStop(t *testing.T) {
	s := sinkStore()
	defer s.Close()
	entered, release := make(chan struct{}), make(chan struct{})
	stop := s.Capture(func(ctx context.Context, cs []crdt.Change) ([]stores.CaptureResult, error) {
		close(entered)
		<-ctx.Done()
		<-release
		return nil, ctx.Err()
	})
	c := newConsumer(s, "arn")
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
	stop1 := s.Capture(func(_ context.Context, cs []crdt.Change) ([]stores.CaptureResult, error) {
		first++
		return make([]stores.CaptureResult, len(cs)), nil
	})
	defer stop1()
	stop2 := s.Capture(func(_ context.Context, cs []crdt.Change) ([]stores.CaptureResult, error) {
		second++
		return make([]stores.CaptureResult, len(cs)), nil
	})
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
