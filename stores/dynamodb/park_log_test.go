package dynamodb

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	st "github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// TestParkedLogLevels: a collection parked by a one-off failure of the
// sink, taken on its first retry, logs no warning (the parked state shows
// at once in the counts all the same); one that still fails on its first
// retry logs one warning then, and none on later retries.
func TestParkedLogLevels(t *testing.T) {
	for _, failures := range []int{1, 4} {
		t.Run(fmt.Sprintf("failures=%d", failures), func(t *testing.T) {
			s := sinkStore()
			defer s.Close()
			logs := &syncBuffer{}
			s.log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			var mu sync.Mutex
			left := failures
			defer s.Capture(stores.CaptureSink{Apply: func(_ context.Context, cs []crdt.Change) ([]stores.CaptureResult, error) {
				mu.Lock()
				defer mu.Unlock()
				if left > 0 {
					left--
					return nil, fmt.Errorf("%w: todos is fenced", stores.ErrUnavailable)
				}
				return make([]stores.CaptureResult, len(cs)), nil
			}})()
			c := newConsumer(s, "arn", "")
			ctx := context.Background()
			if err := c.handle(ctx, []st.Record{foreignRecord("todos#1", "101", "a"), foreignRecord("todos#2", "102", "b")}); err != nil {
				t.Fatal(err)
			}
			if n, st := s.ParkedCount(), s.CaptureStats(); n != 2 || st.Parked != 2 || st.ParkedBytes == 0 {
				t.Fatalf("after the failure: ParkedCount %d, stats %+v; want both writes parked and shown at once", n, st)
			}
			if strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), `level=INFO msg="foreign writes of a collection parked`) {
				t.Fatalf("logs on parking, want the parked state at info and no warning:\n%s", logs)
			}
			for try := 1; try <= failures; try++ {
				at := time.UnixMilli(1_700_000_100_000).Add(time.Duration(try) * time.Minute)
				s.now = func() time.Time { return at }
				if _, err := c.retryParked(ctx); err != nil {
					t.Fatal(err)
				}
				c.publishParked()
				warns := strings.Count(logs.String(), "level=WARN")
				switch {
				case try < failures && warns != 1:
					t.Fatalf("%d warnings after failed retry %d, want 1 (on the first failed retry only):\n%s", warns, try, logs)
				case try < failures && !strings.Contains(logs.String(), `level=WARN msg="foreign writes of a collection still parked`):
					t.Fatalf("no warning of the collection still parked after a failed retry:\n%s", logs)
				case try == failures && warns != min(failures-1, 1):
					t.Fatalf("%d warnings once the retry was taken, want %d:\n%s", warns, min(failures-1, 1), logs)
				}
			}
			if st := s.CaptureStats(); st.Parked != 0 || st.ParkedBytes != 0 || st.Captured != 2 {
				t.Fatalf("stats %+v; want both writes captured and nothing parked", st)
			}
			if !strings.Contains(logs.String(), `level=INFO msg="parked foreign writes of a collection applied`) {
				t.Fatalf("no log of the parked writes applied:\n%s", logs)
			}
		})
	}
}
