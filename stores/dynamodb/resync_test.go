package dynamodb

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// faultyHTTP passes requests to DynamoDB Local, except those that inject
// picks a fault for: failures a real service produces rarely or only after
// hours (a dropped connection, trimmed stream data), injected at the HTTP
// layer so that everything above it, the SDK included, runs for real.
type faultyHTTP struct {
	next   httpDoer
	mu     sync.Mutex
	inject func(target string) (*http.Response, error) // nil, nil: pass
}

func (f *faultyHTTP) Do(r *http.Request) (*http.Response, error) {
	f.mu.Lock()
	inject := f.inject
	f.mu.Unlock()
	if inject != nil {
		if resp, err := inject(r.Header.Get("X-Amz-Target")); resp != nil || err != nil {
			if resp != nil {
				resp.Request = r
			}
			return resp, err
		}
	}
	return f.next.Do(r)
}

func (f *faultyHTTP) set(inject func(target string) (*http.Response, error)) {
	f.mu.Lock()
	f.inject = inject
	f.mu.Unlock()
}

// apiError is the response DynamoDB Streams gives for error type code.
func apiError(code string) *http.Response {
	body := `{"__type":"com.amazonaws.dynamodb.v20120810#` + code + `","message":"injected by the test"}`
	return &http.Response{
		StatusCode: 400, Status: "400 Bad Request", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": []string{"application/x-amz-json-1.0"}},
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)),
	}
}

// TestConsumerResync checks that the stream consumer tells watchers to
// resync after it recovers from failures and after it fell behind the
// stream's retention, and that it keeps delivering afterwards.
func TestConsumerResync(t *testing.T) {
	db, _, endpoint := testClients(t)
	table := testTable(t, db)
	faulty := &faultyHTTP{next: awshttp.NewBuildableClient()}
	// Every stream call fails until the test says otherwise.
	faulty.set(func(target string) (*http.Response, error) {
		return nil, errors.New("injected: connection reset")
	})
	_, streams0, _ := testClients(t)
	streams := dynamodbstreams.New(streams0.Options(), func(o *dynamodbstreams.Options) {
		o.BaseEndpoint = &endpoint
		o.HTTPClient = faulty
		o.RetryMaxAttempts = 1
	})
	s := openTest(t, db, streams, table)
	other := openTest(t, db, nil, table) // a second server, no consumer
	ctx := context.Background()

	notes := make(chan stores.Notification, 256)
	stop := s.Watch(func(n stores.Notification) {
		select {
		case notes <- n:
		default:
		}
	})
	defer stop()
	awaitNote := func(what string, ok func(stores.Notification) bool) {
		t.Helper()
		deadline := time.After(time.Minute)
		for {
			select {
			case n := <-notes:
				if ok(n) {
					return
				}
			case <-deadline:
				t.Fatalf("no notification: %s", what)
			}
		}
	}

	time.Sleep(300 * time.Millisecond) // a few failed rounds
	faulty.set(nil)
	awaitNote("Resync after the consumer recovered", func(n stores.Notification) bool { return n.Resync })

	res, err := other.Apply(ctx, []crdt.Change{{Collection: "rs", Record: crdt.SetField("a", "f", val(t, 1), stamp(1, "c"))}})
	if err != nil {
		t.Fatal(err)
	}
	awaitNote("head of the other server's write", func(n stores.Notification) bool { return n.Collection == "rs" && n.Seq >= res[0].Seq })

	// The next read of the stream finds its data trimmed.
	var once sync.Once
	faulty.set(func(target string) (*http.Response, error) {
		var resp *http.Response
		if strings.HasSuffix(target, ".GetRecords") {
			once.Do(func() { resp = apiError("TrimmedDataAccessException") })
		}
		return resp, nil
	})
	awaitNote("Resync after TrimmedDataAccessException", func(n stores.Notification) bool { return n.Resync })
	faulty.set(nil)

	res, err = other.Apply(ctx, []crdt.Change{{Collection: "rs", Record: crdt.SetField("b", "f", val(t, 2), stamp(2, "c"))}})
	if err != nil {
		t.Fatal(err)
	}
	awaitNote("head after the consumer restarted the shard", func(n stores.Notification) bool { return n.Collection == "rs" && n.Seq >= res[0].Seq })
}
