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

// attemptTimeout bounds one HTTP attempt, reading the body included.
type attemptTimeout struct {
	next httpDoer
	d    time.Duration
}

func (a attemptTimeout) Do(r *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(r.Context(), a.d)
	resp, err := a.next.Do(r.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = cancelOnClose{resp.Body, cancel}
	return resp, nil
}

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
