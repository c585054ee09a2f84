package dynamodb

import (
	"context"
	"errors"
	"testing"
	"time"

	st "github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// TestHandleStampsNothingWhileTheSinkSaysNotNow: a sink that answers
// "not now" (the engine's, while its clock is off its store's) is asked
// before a foreign write is stamped through the ledger: the call fails,
// the ledger holds no claim, and the records read again later are stamped
// by the clock of the call the sink takes them in.
func TestHandleStampsNothingWhileTheSinkSaysNotNow(t *testing.T) {
	s := sinkStore()
	defer s.Close()
	held := true
	var got []crdt.Change
	notNow := func(context.Context) error {
		if held {
			return errors.New("not now")
		}
		return nil
	}
	defer s.Capture(stores.CaptureSink{Ready: notNow, Apply: func(ctx context.Context, cs []crdt.Change) ([]stores.CaptureResult, error) {
		if err := notNow(ctx); err != nil {
			return nil, err
		}
		got = append(got, cs...)
		return make([]stores.CaptureResult, len(cs)), nil
	}})()
	c := newConsumer(s, "arn", "")
	recs := []st.Record{headRecord("todos", 7), foreignRecord("todos#1", "101", "a")}
	if err := c.handle(context.Background(), recs); err == nil {
		t.Fatal("handle succeeded while the sink said not now")
	}
	if l := s.ledger.(*mapLedger); len(l.m) != 0 {
		t.Fatalf("ledger claims %v while the sink said not now, want none", l.m)
	}
	held = false
	s.now = func() time.Time { return time.UnixMilli(1_700_000_200_000) }
	if err := c.handle(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("sink got %d changes, want 1", len(got))
	}
	if w, want := got[0].Record.Fields["title"].Stamp.Wall, s.now().UnixMilli(); w != want {
		t.Fatalf("stamped at %d, want %d: the clock of the call the sink took it in", w, want)
	}
}
