package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/convergo/convergo/stores"
)

// unavailableCodes are the DynamoDB and DynamoDB Streams error codes that
// mean "not now": retrying later may succeed.
var unavailableCodes = map[string]bool{
	"ProvisionedThroughputExceededException": true,
	"ThrottlingException":                    true,
	"RequestLimitExceeded":                   true,
	"InternalServerError":                    true,
	"ServiceUnavailable":                     true,
	"LimitExceededException":                 true,
	"TransactionInProgressException":         true,
	"ResourceNotFoundException":              true, // the table is missing or being deleted
}

// translate wraps an SDK error for op, mapping throttling, server, network
// errors and attempts that timed out to stores.ErrUnavailable. When ctx is
// done the error passes through unchanged, so callers can tell their own
// deadline from an outage.
func translate(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if unavailable(err) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w: %w", op, stores.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// httpDoer is the SDK clients' HTTP client.
type httpDoer interface {
	Do(*http.Request) (*http.Response, error)
}

// attemptTimeout bounds one HTTP attempt, reading the body included, and
// hands the request's body on as a plainBody.
type attemptTimeout struct {
	next httpDoer
	d    time.Duration
}

func (a attemptTimeout) Do(r *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(r.Context(), a.d)
	r = r.WithContext(ctx)
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = plainBody{r.Body}
	}
	resp, err := a.next.Do(r)
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = cancelOnClose{resp.Body, cancel}
	return resp, nil
}

// plainBody is a request body with Read and Close only. The SDK closes
// its request body as soon as the HTTP client returns the response,
// whose body may still be arriving, and its body once closed answers a
// WriteTo with io.EOF, a Read with 0 and io.EOF. net/http's writer may
// not be done with it yet: after the Content-Length bytes it copies the
// rest to io.Discard (a body longer than announced is an error), by
// WriteTo when the body has one; that io.EOF made it close the
// connection under the response being read, which failed with "use of
// closed network connection" (aws-sdk-go-v2 issue 2737). The SDK retries
// that, but each of its attempts can meet it again: under load, calls
// with large answers failed. Read alone ends that copy cleanly.
type plainBody struct{ rc io.ReadCloser }

func (b plainBody) Read(p []byte) (int, error) { return b.rc.Read(p) }
func (b plainBody) Close() error               { return b.rc.Close() }

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

func unavailable(err error) bool {
	if errors.Is(err, stores.ErrUnavailable) {
		return true
	}
	var api smithy.APIError
	if errors.As(err, &api) {
		return unavailableCodes[api.ErrorCode()] || api.ErrorFault() == smithy.FaultServer
	}
	var maxAttempts *retry.MaxAttemptsError
	var send *smithyhttp.RequestSendError
	var netErr net.Error
	var resp *smithyhttp.ResponseError
	switch {
	case errors.As(err, &maxAttempts), errors.As(err, &send), errors.As(err, &netErr):
		return true
	case errors.As(err, &resp):
		return resp.HTTPStatusCode() >= 500
	}
	return false
}

// apiCode returns the error code of an API error, or "".
func apiCode(err error) string {
	var api smithy.APIError
	if errors.As(err, &api) {
		return api.ErrorCode()
	}
	return ""
}
