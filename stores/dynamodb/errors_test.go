package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"

	"github.com/convergo/convergo/stores"
)

func TestTranslate(t *testing.T) {
	live := context.Background()
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name        string
		ctx         context.Context
		err         error
		unavailable bool
		ctxErr      error
	}{
		{"throttled", live, &smithy.GenericAPIError{Code: "ThrottlingException"}, true, nil},
		{"over capacity", live, &types.ProvisionedThroughputExceededException{}, true, nil},
		{"server fault", live, &smithy.GenericAPIError{Code: "Whatever", Fault: smithy.FaultServer}, true, nil},
		{"missing table", live, &types.ResourceNotFoundException{}, true, nil},
		{"network", live, &net.OpError{Op: "dial", Err: errors.New("connection refused")}, true, nil},
		{"attempt timed out", live, fmt.Errorf("send: %w", context.DeadlineExceeded), true, nil},
		{"condition failed", live, &types.ConditionalCheckFailedException{}, false, nil},
		{"validation", live, &smithy.GenericAPIError{Code: "ValidationException"}, false, nil},
		{"caller cancelled", done, fmt.Errorf("send: %w", context.Canceled), false, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := translate(tc.ctx, "op", tc.err)
			if got := errors.Is(err, stores.ErrUnavailable); got != tc.unavailable {
				t.Fatalf("translate(%v) = %v: ErrUnavailable %v, want %v", tc.err, err, got, tc.unavailable)
			}
			if tc.ctxErr != nil && !errors.Is(err, tc.ctxErr) {
				t.Fatalf("translate(%v) = %v, want it to wrap %v", tc.err, err, tc.ctxErr)
			}
			if !errors.Is(err, tc.err) {
				t.Fatalf("translate lost the cause: %v", err)
			}
		})
	}
}

// TestUnreachable checks that a store whose endpoint answers nothing fails
// with ErrUnavailable instead of hanging.
func TestUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	endpoint := "http://" + l.Addr().String()
	l.Close() // nothing listens there now
	client := awsdynamodb.New(awsdynamodb.Options{
		Region:       "us-east-1",
		BaseEndpoint: &endpoint,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "x", SecretAccessKey: "x"}, nil
		}),
		RetryMaxAttempts: 1,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = New(ctx, Config{Client: client, Table: "unreachable"})
	if !errors.Is(err, stores.ErrUnavailable) {
		t.Fatalf("New against a closed port: %v, want ErrUnavailable", err)
	}
}
