package dynamodb

import (
	"context"
	"testing"

	st "github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// TestRejectedOnceWhenReadAgain: the consumer reads the stream again from
// its oldest record when a new sink registers and when a parked
// collection's overflow drains. A foreign write that maps to no change is
// counted (CaptureCounts.Unmappable counts writes), logged and listed
// once, not again at each reading of the same stream record.
func TestRejectedOnceWhenReadAgain(t *testing.T) {
	s := sinkStore()
	t.Cleanup(func() { _ = s.Close() })
	t.Cleanup(s.Capture(stores.CaptureSink{Apply: func(_ context.Context, cs []crdt.Change) ([]stores.CaptureResult, error) {
		return make([]stores.CaptureResult, len(cs)), nil
	}}))
	k := fkeys("todos#1", "0")
	noOld := streamRecord(st.OperationTypeModify, "101", k, withKeys(k, map[string]st.AttributeValue{"title": &st.AttributeValueMemberS{Value: "a"}}), nil)
	recs := []st.Record{noOld, foreignRecord("todos#2", "102", "b")}
	for range 3 { // the first reading and two more
		if err := newConsumer(s, "arn", "").handle(context.Background(), recs); err != nil {
			t.Fatal(err)
		}
	}
	if n, rej := s.CaptureStats().Rejected, s.RejectedCaptures(); n != 1 || len(rej) != 1 {
		t.Fatalf("after three readings of one unmappable stream record: Rejected %d, RejectedCaptures %+v; want 1 and one", n, rej)
	}
	if c := s.CaptureCounts(); c.Unmappable != 1 {
		t.Fatalf("capture counts %+v; want Unmappable 1", c)
	}
}
