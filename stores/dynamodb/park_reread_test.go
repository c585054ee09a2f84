package dynamodb

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	st "github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// fakeStream serves one open shard ("s1") of a stream through the
// DynamoDB Streams API, its records given as the JSON of the API: an
// iterator names the index of the next record to read.
type fakeStream struct {
	mu      sync.Mutex
	records []map[string]any
}

func (f *fakeStream) add(r map[string]any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.records = append(f.records, r)
}

func (f *fakeStream) RoundTrip(req *http.Request) (*http.Response, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var in map[string]any
	body, _ := io.ReadAll(req.Body)
	_ = json.Unmarshal(body, &in)
	var out any
	switch op := req.Header.Get("X-Amz-Target"); {
	case strings.HasSuffix(op, ".DescribeStream"):
		out = map[string]any{"StreamDescription": map[string]any{"StreamArn": "arn", "StreamStatus": "ENABLED",
			"Shards": []any{map[string]any{"ShardId": "s1", "SequenceNumberRange": map[string]any{"StartingSequenceNumber": "100"}}}}}
	case strings.HasSuffix(op, ".GetShardIterator"):
		from := 0
		if in["ShardIteratorType"] == "AFTER_SEQUENCE_NUMBER" {
			for i, r := range f.records {
				if r["dynamodb"].(map[string]any)["SequenceNumber"] == in["SequenceNumber"] {
					from = i + 1
				}
			}
		}
		out = map[string]any{"ShardIterator": "it@" + strconv.Itoa(from)}
	case strings.HasSuffix(op, ".GetRecords"):
		from, _ := strconv.Atoi(strings.TrimPrefix(in["ShardIterator"].(string), "it@"))
		out = map[string]any{"Records": f.records[from:], "NextShardIterator": "it@" + strconv.Itoa(len(f.records))}
	default:
		return nil, fmt.Errorf("fake stream: unexpected %s", op)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, err
	}
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/x-amz-json-1.0"}},
		Body: io.NopCloser(bytes.NewReader(b)), Request: req}, nil
}

// fakeRecord is a stream record of foreign item pk in the API's JSON:
// MODIFY from old to new when old is not nil, else INSERT.
func fakeRecord(pk, seq string, old, new map[string]string) map[string]any {
	image := func(attrs map[string]string) map[string]any {
		out := map[string]any{attrPK: map[string]any{"S": pk}, attrSK: map[string]any{"N": "0"}}
		for k, v := range attrs {
			out[k] = map[string]any{"S": v}
		}
		return out
	}
	d := map[string]any{"ApproximateCreationDateTime": 1_700_000_000, "SequenceNumber": seq, "StreamViewType": "NEW_AND_OLD_IMAGES",
		"Keys": map[string]any{attrPK: map[string]any{"S": pk}, attrSK: map[string]any{"N": "0"}}, "NewImage": image(new)}
	event := "INSERT"
	if old != nil {
		event, d["OldImage"] = "MODIFY", image(old)
	}
	return map[string]any{"eventID": seq, "eventName": event, "eventSource": "aws:dynamodb", "dynamodb": d}
}

// TestParkedOverflowReadAgainBeforeLaterWrites: a write of a parked
// collection left to the stream at the bound must be offered again before
// any later write of its item. The consumer read the stream again only at
// the step after the one whose retry drained the queue; that step went on
// reading the shards from where they were, so a later write of the item
// was captured first, the ledger then held it, and the write left to the
// stream, read again, was passed over as captured before: its field (a
// MODIFY carries only what it changed) was lost without a word.
func TestParkedOverflowReadAgainBeforeLaterWrites(t *testing.T) {
	stream := &fakeStream{}
	s := sinkStore()
	defer s.Close()
	s.streams = dynamodbstreams.New(dynamodbstreams.Options{
		Region: "us-east-1", BaseEndpoint: aws.String("http://streams.test"),
		Credentials: aws.AnonymousCredentials{}, HTTPClient: &http.Client{Transport: stream},
	})
	s.streamOpt = func(*dynamodbstreams.Options) {}
	s.refresh = time.Hour
	var fenced atomic.Bool
	fenced.Store(true)
	var mu sync.Mutex
	fields := map[string]string{} // what the sink holds of todos/1
	defer s.Capture(stores.CaptureSink{Apply: func(_ context.Context, cs []crdt.Change) ([]stores.CaptureResult, error) {
		if fenced.Load() {
			return nil, fmt.Errorf("%w: todos is fenced", stores.ErrUnavailable)
		}
		mu.Lock()
		defer mu.Unlock()
		for _, c := range cs {
			for name, f := range c.Record.Fields {
				var v any
				if err := crdt.DecodeValue(f.Value, &v); err != nil {
					t.Error(err)
				}
				fields[name] = fmt.Sprint(v)
			}
		}
		return make([]stores.CaptureResult, len(cs)), nil
	}})()
	c := newConsumer(s, "arn", "")
	ctx := context.Background()

	stream.add(fakeRecord("todos#1", "101", nil, map[string]string{"title": "a"}))
	w1, _, err := readForeign(mustRecord(t, stream.records[0]))
	if err != nil {
		t.Fatal(err)
	}
	c.maxParked = parkedSize(w1) // room for the first write alone
	stream.add(fakeRecord("todos#1", "102", map[string]string{"title": "a"}, map[string]string{"title": "a", "done": "yes"}))
	if _, err := c.step(ctx); err != nil {
		t.Fatal(err)
	}
	if st := s.CaptureStats(); st.Parked != 1 || st.Overflowed != 1 {
		t.Fatalf("stats %+v, want the first write parked and the second left to the stream", st)
	}

	// The fence lifts, and the app writes the item again.
	fenced.Store(false)
	stream.add(fakeRecord("todos#1", "103", map[string]string{"title": "a", "done": "yes"}, map[string]string{"title": "b", "done": "yes"}))
	s.now = func() time.Time { return time.UnixMilli(1_700_000_100_000).Add(time.Minute) }
	for range 3 {
		if _, err := c.step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if fields["title"] != "b" || fields["done"] != "yes" {
		t.Fatalf("the sink holds %v of todos/1, want title b and done yes (the write left to the stream applied before the later one)", fields)
	}
}

// mustRecord reads a fakeRecord as the SDK would.
func mustRecord(t *testing.T, r map[string]any) st.Record {
	t.Helper()
	stream := &fakeStream{records: []map[string]any{r}}
	cl := dynamodbstreams.New(dynamodbstreams.Options{
		Region: "us-east-1", BaseEndpoint: aws.String("http://streams.test"),
		Credentials: aws.AnonymousCredentials{}, HTTPClient: &http.Client{Transport: stream},
	})
	out, err := cl.GetRecords(context.Background(), &dynamodbstreams.GetRecordsInput{ShardIterator: aws.String("it@0")})
	if err != nil || len(out.Records) != 1 {
		t.Fatal(err)
	}
	return out.Records[0]
}

// TestParkedOverflowedEmptyQueueStaysParked: a collection parked when the
// parked bytes are at their bound keeps none of its writes (all are left
// to the stream). Its retry found its queue empty and took that for the
// sink having taken it: the collection left the parked state ("applied;
// capturing it again", while it still failed) and the whole stream was
// read again, to fail and park it again, over and over at the shortest
// pause. It stays parked until there is room to queue its writes again
// from the stream, and is then tried as any other.
func TestParkedOverflowedEmptyQueueStaysParked(t *testing.T) {
	s := sinkStore()
	defer s.Close()
	logs := &syncBuffer{}
	s.log = slog.New(slog.NewTextHandler(logs, nil))
	var fenced atomic.Bool
	fenced.Store(true)
	var mu sync.Mutex
	var applied []string
	defer s.Capture(stores.CaptureSink{Apply: func(_ context.Context, cs []crdt.Change) ([]stores.CaptureResult, error) {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range cs {
			if fenced.Load() {
				return nil, fmt.Errorf("%w: %s is fenced", stores.ErrUnavailable, c.Collection)
			}
		}
		for _, c := range cs {
			applied = append(applied, c.Collection+"/"+c.Record.ID)
		}
		return make([]stores.CaptureResult, len(cs)), nil
	}})()
	c := newConsumer(s, "arn", "")
	c.maxParked = parkedSize(mustForeign(t, foreignRecord("todos#1", "101", "a")))
	ctx := context.Background()
	recs := []st.Record{foreignRecord("notes#1", "101", "a"), foreignRecord("todos#1", "102", "b")}
	if err := c.handle(ctx, recs); err != nil {
		t.Fatal(err)
	}
	if !c.isParked("notes") || !c.isParked("todos") || len(c.parked["todos"].writes) != 0 {
		t.Fatalf("parked %v, want notes with its write and todos with none (at the bound)", c.parked)
	}
	for i := range 3 {
		s.now = func() time.Time { return time.UnixMilli(1_700_000_100_000).Add(time.Duration(i+1) * time.Minute) }
		if _, err := c.retryParked(ctx); err != nil {
			t.Fatal(err)
		}
		if !c.isParked("todos") || c.reread {
			t.Fatalf("try %d, still fenced: todos parked %v, stream read again %v; want it parked and the stream left", i, c.isParked("todos"), c.reread)
		}
	}
	if strings.Contains(logs.String(), "parked foreign writes of a collection applied") {
		t.Fatalf("a collection that still fails was said applied:\n%s", logs)
	}

	// The fence lifts: notes drains, which leaves room; todos's writes are
	// queued again from the stream, and applied.
	fenced.Store(false)
	for i := range 4 {
		s.now = func() time.Time { return time.UnixMilli(1_700_000_100_000).Add(time.Duration(i+10) * time.Minute) }
		if _, err := c.retryParked(ctx); err != nil {
			t.Fatal(err)
		}
		if c.reread {
			c.readAgain()
			if err := c.handle(ctx, recs); err != nil {
				t.Fatal(err)
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Contains(applied, "notes/1") || !slices.Contains(applied, "todos/1") || len(c.parked) != 0 {
		t.Fatalf("applied %v, parked %v; want both applied and nothing parked", applied, c.parked)
	}
}
