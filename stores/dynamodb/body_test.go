package dynamodb

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// captureDoer stands for the SDK's HTTP client under attemptTimeout: it
// keeps the request it was handed and answers at once.
type captureDoer struct{ got *http.Request }

func (c *captureDoer) Do(r *http.Request) (*http.Response, error) {
	c.got = r
	return &http.Response{StatusCode: 200, Body: http.NoBody, Header: http.Header{}}, nil
}

// TestRequestBodyOutlivesTheSDKsClose replays a race that failed calls
// against DynamoDB Local under load with "use of closed network
// connection" (each SDK attempt, up to its three, can meet it). The SDK
// closes a request's body as soon as the HTTP client returns the
// response, whose body may still be arriving, and its body once closed
// answers a WriteTo with io.EOF. net/http's writer may not be done with
// that body yet: after the Content-Length bytes it copies what is left
// to io.Discard (to find a body longer than announced), by WriteTo. An
// error there makes it close the connection under the response being
// read. The body the store's HTTP client hands on must read as finished,
// not fail, once the SDK closed its own.
func TestRequestBodyOutlivesTheSDKsClose(t *testing.T) {
	payload := []byte(`{"TableName":"t"}`)
	sreq, err := smithyhttp.NewStackRequest().(*smithyhttp.Request).SetStream(bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	sreq.Method = http.MethodPost
	sreq.ContentLength = int64(len(payload))
	built := sreq.Build(context.Background())
	next := &captureDoer{}
	resp, err := attemptTimeout{next, time.Minute}.Do(built)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sent := next.got.Body
	// What net/http's writer does first: the announced bytes.
	var wire bytes.Buffer
	if _, err := io.Copy(&wire, io.LimitReader(sent, next.got.ContentLength)); err != nil || !bytes.Equal(wire.Bytes(), payload) {
		t.Fatalf("the body sent: %q, %v; want %q", wire.Bytes(), err, payload)
	}
	// The answer came: the SDK closes its body (smithy-go's ClientHandler).
	if err := built.Body.Close(); err != nil {
		t.Fatal(err)
	}
	// Then the writer's check for bytes past Content-Length.
	if n, err := io.Copy(io.Discard, sent); err != nil || n != 0 {
		t.Fatalf("the writer's check past Content-Length, after the SDK closed its body: %d bytes, %v; want 0 and no error (an error closes the connection under the answer)", n, err)
	}
}
