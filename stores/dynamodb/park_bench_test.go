package dynamodb

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	st "github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// BenchmarkParkBehind measures handling a foreign write of a collection
// with a long parked queue: it joins the queue, and what CaptureStats
// shows is updated. The cost must not grow with the queue (it did when
// every handle that parked rebuilt the whole parked list: quadratic over
// tens of thousands of parked writes).
func BenchmarkParkBehind(b *testing.B) {
	for _, queued := range []int{1_000, 20_000} {
		b.Run(fmt.Sprintf("queued=%d", queued), func(b *testing.B) {
			s := sinkStore()
			defer s.Close()
			defer s.Capture(stores.CaptureSink{Apply: func(context.Context, []crdt.Change) ([]stores.CaptureResult, error) {
				return nil, fmt.Errorf("%w: todos is fenced", stores.ErrUnavailable)
			}})()
			c := newConsumer(s, "arn", "")
			ctx := context.Background()
			seq := 100
			record := func() st.Record {
				seq++
				return foreignRecord(fmt.Sprintf("todos#%d", seq%500), fmt.Sprint(seq), "t")
			}
			backlog := make([]st.Record, queued)
			for i := range backlog {
				backlog[i] = record()
			}
			if err := c.handle(ctx, backlog); err != nil {
				b.Fatal(err)
			}
			later := make([]st.Record, b.N)
			for i := range later {
				later[i] = record()
			}
			b.ResetTimer()
			for i := range b.N {
				if err := c.handle(ctx, later[i:i+1]); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if got := s.CaptureStats().Parked; got != int64(queued+b.N) {
				b.Fatalf("parked %d, want %d", got, queued+b.N)
			}
		})
	}
}

// TestParkedCapturesWhileParking reads the parked list from another
// goroutine while the consumer parks and drains writes (ParkedCaptures
// builds it from the consumer's queues: run under -race).
func TestParkedCapturesWhileParking(t *testing.T) {
	s := sinkStore()
	defer s.Close()
	var fenced atomic.Bool
	fenced.Store(true)
	defer s.Capture(stores.CaptureSink{Apply: func(_ context.Context, cs []crdt.Change) ([]stores.CaptureResult, error) {
		if fenced.Load() {
			return nil, fmt.Errorf("%w: todos is fenced", stores.ErrUnavailable)
		}
		return make([]stores.CaptureResult, len(cs)), nil
	}})()
	c := newConsumer(s, "arn", "")
	ctx := context.Background()
	done := make(chan struct{})
	var most atomic.Int64
	go func() {
		defer close(done)
		for s.CaptureStats().Parked < 200 {
			most.Store(max(most.Load(), int64(len(s.ParkedCaptures()))))
		}
	}()
	for i := range 200 {
		if err := c.handle(ctx, []st.Record{foreignRecord(fmt.Sprintf("todos#%d", i%7), fmt.Sprint(101+i), "t")}); err != nil {
			t.Fatal(err)
		}
	}
	<-done
	list := s.ParkedCaptures()
	if len(list) != 200 || list[0].Position != "101" || list[199].Position != "300" || most.Load() > 200 {
		t.Fatalf("parked %d writes (first %+v), most seen %d; want 200 in stream order", len(list), list[0], most.Load())
	}
	fenced.Store(false)
	s.now = func() time.Time { return time.UnixMilli(1_700_000_100_000).Add(time.Minute) }
	if _, err := c.retryParked(ctx); err != nil {
		t.Fatal(err)
	}
	if n, st := len(s.ParkedCaptures()), s.CaptureStats(); n != 0 || st.Parked != 0 || st.ParkedBytes != 0 || s.ParkedCount() != 0 {
		t.Fatalf("after the retry: %d listed, stats %+v", n, st)
	}
}
