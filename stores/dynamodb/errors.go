package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"net"

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

// translate wraps an SDK error for op, mapping throttling, server and
// network errors to stores.ErrUnavailable. Context errors pass through
// unchanged so callers can tell a deadline from an outage.
func translate(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", op, err)
	}
	if unavailable(err) {
		return fmt.Errorf("%s: %w: %w", op, stores.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func unavailable(err error) bool {
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
