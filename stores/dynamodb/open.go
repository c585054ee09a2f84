package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"

	"github.com/convergo/convergo/stores"
)

// Options configures Open, which builds the SDK clients itself. Credentials
// come from the SDK's default chain (AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY, a shared profile, an instance role); DynamoDB Local
// accepts any.
type Options struct {
	// Table is the table's name. Required.
	Table string
	// Region is the AWS region. Empty means the SDK's default chain
	// (AWS_REGION, the shared config).
	Region string
	// Endpoint overrides the service endpoint of both DynamoDB and
	// DynamoDB Streams, e.g. "http://127.0.0.1:8765" for DynamoDB Local.
	// Empty means AWS's endpoint for the region.
	Endpoint string
	// CreateTable makes Open create the table (with its stream) when it
	// does not exist. Leave it off in production, where tables are
	// provisioned on purpose.
	CreateTable bool
	// Capture starts the stream consumer: writes through other store
	// instances wake this one's watchers, and foreign writes become changes
	// handed to the sink registered with Store.Capture.
	Capture bool
	// PollInterval is Config.PollInterval.
	PollInterval time.Duration
	// DefaultShards is Config.DefaultShards: the log shards of a
	// collection first written through this store; zero means 1.
	DefaultShards int
	// Shards is Config.Shards: the log shards of particular collections.
	Shards map[string]int
	// CommitTurn is Config.CommitTurn (negative: no commit turns).
	CommitTurn time.Duration
	// Now is Config.Now: the clock epoch bumps read; nil means time.Now.
	Now func() time.Time
	// Restoring is Config.Restoring: the table is opened to be marked
	// restored.
	Restoring bool
	// Logger receives the store's logs. Nil discards them.
	Logger *slog.Logger
}

// Open builds clients for opts.Region and opts.Endpoint, creates the table
// if asked to, and returns New's store on it.
func Open(ctx context.Context, opts Options) (*Store, error) {
	var loads []func(*config.LoadOptions) error
	if opts.Region != "" {
		loads = append(loads, config.WithRegion(opts.Region))
	}
	cfg, err := config.LoadDefaultConfig(ctx, loads...)
	if err != nil {
		return nil, fmt.Errorf("dynamodb: load AWS config: %w", err)
	}
	if cfg.Region == "" {
		return nil, errors.New("dynamodb: no region: set Options.Region or AWS_REGION")
	}
	client := awsdynamodb.NewFromConfig(cfg, func(o *awsdynamodb.Options) {
		if opts.Endpoint != "" {
			o.BaseEndpoint = &opts.Endpoint
			// DynamoDB Local sends an x-amz-crc32 that does not match some
			// responses; the SDK then logs and drops the connection, and
			// every such request pays a new one (measured: 5× slower).
			o.DisableValidateResponseChecksum = true
		}
	})
	var streams *dynamodbstreams.Client
	if opts.Capture {
		streams = dynamodbstreams.NewFromConfig(cfg, func(o *dynamodbstreams.Options) {
			if opts.Endpoint != "" {
				o.BaseEndpoint = &opts.Endpoint
			}
		})
	}
	if opts.CreateTable {
		if err := CreateTable(ctx, client, opts.Table); err != nil {
			return nil, err
		}
	}
	return New(ctx, Config{
		Client:        client,
		Streams:       streams,
		Table:         opts.Table,
		Logger:        opts.Logger,
		PollInterval:  opts.PollInterval,
		DefaultShards: opts.DefaultShards,
		CommitTurn:    opts.CommitTurn,
		Shards:        opts.Shards,
		Now:           opts.Now,
		Restoring:     opts.Restoring,
	})
}

// ParseURL parses a store URL of the form
//
//	dynamodb://TABLE?region=REGION&endpoint=URL&create=1&capture=0&shards=4,todos:16&turn=200ms
//
// into Options. Capture is on unless capture=0; create is off unless
// create=1. shards lists the log shards of collections first written
// through the store: a number alone is the default (DefaultShards),
// COLL:N sets one collection's (Shards). turn is CommitTurn: a duration,
// or off for none.
func ParseURL(raw string) (Options, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Options{}, fmt.Errorf("dynamodb: store URL: %w", err)
	}
	if u.Scheme != "dynamodb" || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return Options{}, fmt.Errorf("dynamodb: store URL %q: want dynamodb://TABLE?region=...&endpoint=...", raw)
	}
	q := u.Query()
	opts := Options{Table: u.Host, Region: q.Get("region"), Endpoint: q.Get("endpoint"), Capture: true}
	for name, dst := range map[string]*bool{"create": &opts.CreateTable, "capture": &opts.Capture} {
		if v := q.Get(name); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return Options{}, fmt.Errorf("dynamodb: store URL: %s=%q is not a boolean", name, v)
			}
			*dst = b
		}
	}
	if v := q.Get("poll"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return Options{}, fmt.Errorf("dynamodb: store URL: poll=%q is not a positive duration", v)
		}
		opts.PollInterval = d
	}
	if v := q.Get("turn"); v != "" {
		d, err := time.ParseDuration(v)
		switch {
		case v == "off":
			opts.CommitTurn = -1
		case err != nil || d <= 0:
			return Options{}, fmt.Errorf("dynamodb: store URL: turn=%q is neither a positive duration nor off", v)
		default:
			opts.CommitTurn = d
		}
	}
	if v := q.Get("shards"); v != "" {
		for _, part := range strings.Split(v, ",") {
			coll, num, named := strings.Cut(part, ":")
			if !named {
				num = coll
			}
			k, err := strconv.Atoi(num)
			if err != nil || stores.CheckShards(k) != nil || (named && stores.CheckCollection(coll) != nil) {
				return Options{}, fmt.Errorf("dynamodb: store URL: shards=%q: want N or COLL:N, N from 1 to %d", v, stores.MaxShards)
			}
			if !named {
				opts.DefaultShards = k
				continue
			}
			if opts.Shards == nil {
				opts.Shards = map[string]int{}
			}
			opts.Shards[coll] = k
		}
	}
	for name, vs := range q {
		if len(vs) > 1 {
			return Options{}, fmt.Errorf("dynamodb: store URL: parameter %q given twice", name)
		}
		switch name {
		case "region", "endpoint", "create", "capture", "poll", "shards", "turn":
		default:
			return Options{}, fmt.Errorf("dynamodb: store URL: unknown parameter %q", name)
		}
	}
	return opts, nil
}

// CreateTable creates the store's table, on-demand billing and with its
// stream on (NEW_AND_OLD_IMAGES: capture turns removed attributes of
// foreign items into unsets), and waits until it is active. A table that
// already exists with the store's key schema is left as it is.
func CreateTable(ctx context.Context, client *awsdynamodb.Client, table string) error {
	return createTable(ctx, client, table, true)
}

// createTable creates the table, with its stream or (for tests of the store
// without capture: DynamoDB Local spends tens of milliseconds per written
// item on a stream) without.
func createTable(ctx context.Context, client *awsdynamodb.Client, table string, stream bool) error {
	var spec *types.StreamSpecification
	if stream {
		spec = &types.StreamSpecification{StreamEnabled: ptr(true), StreamViewType: types.StreamViewTypeNewAndOldImages}
	}
	_, err := client.CreateTable(ctx, &awsdynamodb.CreateTableInput{
		TableName: &table,
		AttributeDefinitions: []types.AttributeDefinition{
			{AttributeName: ptr(attrPK), AttributeType: types.ScalarAttributeTypeS},
			{AttributeName: ptr(attrSK), AttributeType: types.ScalarAttributeTypeN},
		},
		KeySchema: []types.KeySchemaElement{
			{AttributeName: ptr(attrPK), KeyType: types.KeyTypeHash},
			{AttributeName: ptr(attrSK), KeyType: types.KeyTypeRange},
		},
		BillingMode:         types.BillingModePayPerRequest,
		StreamSpecification: spec,
	})
	var inUse *types.ResourceInUseException
	switch {
	case errors.As(err, &inUse):
		out, err := client.DescribeTable(ctx, &awsdynamodb.DescribeTableInput{TableName: &table})
		if err != nil {
			return translate(ctx, "create table "+table, err)
		}
		if err := checkSchema(out.Table); err != nil {
			return err
		}
	case err != nil:
		return translate(ctx, "create table "+table, err)
	}
	w := awsdynamodb.NewTableExistsWaiter(client, func(o *awsdynamodb.TableExistsWaiterOptions) {
		o.MinDelay = 100 * time.Millisecond
		o.MaxDelay = 2 * time.Second
	})
	if err := w.Wait(ctx, &awsdynamodb.DescribeTableInput{TableName: &table}, 5*time.Minute); err != nil {
		return translate(ctx, "create table "+table+": wait until active", err)
	}
	return nil
}
