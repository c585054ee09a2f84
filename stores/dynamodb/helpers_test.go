package dynamodb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores/storetest"
)

const endpointEnv = "CONVERGO_DYNAMODB_ENDPOINT"

// testClients returns clients for DynamoDB Local at the endpoint named by
// CONVERGO_DYNAMODB_ENDPOINT, or skips the test.
func testClients(t testing.TB) (*awsdynamodb.Client, *dynamodbstreams.Client, string) {
	t.Helper()
	return clientsVia(t, nil)
}

// clientsVia is testClients with the clients' requests through rt (nil:
// the SDK's default HTTP client).
func clientsVia(t testing.TB, rt http.RoundTripper) (*awsdynamodb.Client, *dynamodbstreams.Client, string) {
	t.Helper()
	endpoint := storetest.Endpoint(t, endpointEnv)
	region := os.Getenv("AWS_REGION")
	if region == "" {
		region = "us-east-1"
	}
	opts := []func(*config.LoadOptions) error{config.WithRegion(region)}
	if os.Getenv("AWS_ACCESS_KEY_ID") == "" {
		// DynamoDB Local takes any credentials but wants some.
		opts = append(opts, config.WithCredentialsProvider(aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "local", SecretAccessKey: "local", Source: "test"}, nil
		})))
	}
	cfg, err := config.LoadDefaultConfig(context.Background(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	db := awsdynamodb.NewFromConfig(cfg, func(o *awsdynamodb.Options) {
		o.BaseEndpoint = &endpoint
		o.DisableValidateResponseChecksum = true // see Open
		if rt != nil {
			o.HTTPClient = &http.Client{Transport: rt}
		}
	})
	streams := dynamodbstreams.NewFromConfig(cfg, func(o *dynamodbstreams.Options) {
		o.BaseEndpoint = &endpoint
		if rt != nil {
			o.HTTPClient = &http.Client{Transport: rt}
		}
	})
	return db, streams, endpoint
}

// testTable creates a table with a unique name and its stream, and deletes
// it when the test ends.
func testTable(t testing.TB, db *awsdynamodb.Client) string {
	t.Helper()
	return newTestTable(t, db, true)
}

// plainTable is testTable without the stream, for stores without capture:
// DynamoDB Local spends about 80 ms per written item on a stream, which
// would make the conformance suite take many minutes.
func plainTable(t testing.TB, db *awsdynamodb.Client) string {
	t.Helper()
	return newTestTable(t, db, false)
}

func newTestTable(t testing.TB, db *awsdynamodb.Client, stream bool) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "cvg-test-" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := createTable(ctx, db, name, stream); err != nil {
		t.Fatalf("create table: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := db.DeleteTable(ctx, &awsdynamodb.DeleteTableInput{TableName: &name}); err != nil {
			t.Logf("delete table %s: %v", name, err)
		}
	})
	return name
}

// openTest returns a store on table; with capture, its consumer polls
// quickly. It is closed when the test ends.
func openTest(t testing.TB, db *awsdynamodb.Client, streams *dynamodbstreams.Client, table string) *Store {
	t.Helper()
	s, err := New(context.Background(), Config{
		Client:       db,
		Streams:      streams,
		Table:        table,
		PollInterval: 50 * time.Millisecond,
		ShardRefresh: time.Second,
	})
	if err != nil {
		t.Fatalf("new store: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func val(t testing.TB, v any) []byte {
	t.Helper()
	b, err := crdt.EncodeValue(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func stamp(wall int64, replica string) crdt.Stamp {
	return crdt.Stamp{Wall: wall, Replica: replica}
}

// openShards is openTest with every collection in k log shards.
func openShards(t testing.TB, db *awsdynamodb.Client, streams *dynamodbstreams.Client, table string, k int) *Store {
	t.Helper()
	s, err := New(context.Background(), Config{
		Client:        db,
		Streams:       streams,
		Table:         table,
		PollInterval:  50 * time.Millisecond,
		ShardRefresh:  time.Second,
		DefaultShards: k,
	})
	if err != nil {
		t.Fatalf("new store: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}
