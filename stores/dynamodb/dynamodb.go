package dynamodb

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

var (
	_ stores.Store            = (*Store)(nil)
	_ stores.EpochsBumperFrom = (*Store)(nil)
)

// Defaults for the zero values of Config.
const (
	// DefaultStreamReplica prefixes the replica id of the stamps of
	// captured foreign writes.
	DefaultStreamReplica = "ddb-stream"
	// DefaultPollInterval is how long the stream consumer waits before
	// reading a shard again after it returned no records. DynamoDB Streams
	// allows five GetRecords calls per shard per second.
	DefaultPollInterval = time.Second
	// DefaultShardRefresh is how often the consumer lists the stream's
	// shards to find new ones.
	DefaultShardRefresh = 10 * time.Second
	// DefaultMaxAttempts bounds the transactions one group of changes
	// tries before Apply gives up with ErrUnavailable.
	DefaultMaxAttempts = 50
	// DefaultAttemptTimeout bounds one attempt of one request.
	DefaultAttemptTimeout = 30 * time.Second
)

// Config configures a Store built from clients the caller made (New). Open
// builds the clients from an endpoint and region instead.
type Config struct {
	// Client talks to DynamoDB. Required. The store does not close it (SDK
	// clients hold nothing to close).
	Client *awsdynamodb.Client
	// Streams talks to DynamoDB Streams. Nil means no stream consumer: the
	// store then neither captures foreign writes nor hears of writes by
	// other store instances (the engine's polling still finds them).
	// Non-nil starts the consumer, which wakes watchers on writes by other
	// instances and hands foreign writes to the sink registered with
	// Capture; the table's stream must be enabled (CreateTable enables it).
	Streams *dynamodbstreams.Client
	// Table is the table's name. Required.
	Table string
	// Logger receives the store's logs. Nil discards them.
	Logger *slog.Logger
	// StreamReplica prefixes the replica id of stamps derived from foreign
	// writes: a valid replica id of at most 23 bytes. Every store instance
	// on one table must use the same prefix, so that their consumers derive
	// equal stamps for one stream record. Empty means DefaultStreamReplica.
	StreamReplica string
	// PollInterval is the consumer's pause after an empty read of a shard.
	// Zero means DefaultPollInterval.
	PollInterval time.Duration
	// ShardRefresh is how often the consumer looks for new shards. Zero
	// means DefaultShardRefresh.
	ShardRefresh time.Duration
	// AttemptTimeout bounds one attempt of one request: a request that
	// gets no answer in time is retried (transactions with the same token)
	// and then fails with ErrUnavailable, instead of hanging on a stuck
	// connection. Zero means DefaultAttemptTimeout.
	AttemptTimeout time.Duration
	// MaxAttempts bounds the transactions one group of changes tries
	// (conflicts with concurrent writers, throttling) before Apply fails with
	// ErrUnavailable. Zero means DefaultMaxAttempts.
	MaxAttempts int
	// DefaultShards is the number of log shards (stores.Sharder) of a
	// collection first written by this instance, 1 to stores.MaxShards.
	// Zero means 1. A collection's count is durable from its first write
	// on (see shards.go); every instance on a table should be configured
	// alike.
	DefaultShards int
	// Shards sets the shard count of particular collections, overriding
	// DefaultShards.
	Shards map[string]int
	// CommitTurn is how long one instance commits to a log that other
	// instances also write before it lets them (turn.go). Zero means
	// DefaultCommitTurn; negative turns them off (every instance commits
	// when it has changes, and they race on the head).
	CommitTurn time.Duration
	// Now is the clock epoch bumps read (stores.NextEpoch): a bump sets a
	// counter to the Unix time in seconds when that is more than the
	// counter plus one. Nil means time.Now.
	Now func() time.Time
	// Restoring says the table is opened to be marked restored (`convergo
	// store mark-restored`, which calls BumpEpochs next): a table holding
	// another table's store item (restored.go) is then what the caller
	// expects. New logs it at info instead of as an error and leaves the
	// new epoch to BumpEpochs, which records the table's incarnation in
	// the same update, so the procedure starts one epoch, not two, and a
	// command that ends before its bump leaves the copy for the servers to
	// notice.
	Restoring bool
}

// dbAPI is the part of the DynamoDB client the store uses: the SDK's
// client, or in tests a model of the table (model_test.go).
type dbAPI interface {
	BatchGetItem(context.Context, *awsdynamodb.BatchGetItemInput, ...func(*awsdynamodb.Options)) (*awsdynamodb.BatchGetItemOutput, error)
	DescribeTable(context.Context, *awsdynamodb.DescribeTableInput, ...func(*awsdynamodb.Options)) (*awsdynamodb.DescribeTableOutput, error)
	GetItem(context.Context, *awsdynamodb.GetItemInput, ...func(*awsdynamodb.Options)) (*awsdynamodb.GetItemOutput, error)
	Query(context.Context, *awsdynamodb.QueryInput, ...func(*awsdynamodb.Options)) (*awsdynamodb.QueryOutput, error)
	TransactGetItems(context.Context, *awsdynamodb.TransactGetItemsInput, ...func(*awsdynamodb.Options)) (*awsdynamodb.TransactGetItemsOutput, error)
	TransactWriteItems(context.Context, *awsdynamodb.TransactWriteItemsInput, ...func(*awsdynamodb.Options)) (*awsdynamodb.TransactWriteItemsOutput, error)
	UpdateItem(context.Context, *awsdynamodb.UpdateItemInput, ...func(*awsdynamodb.Options)) (*awsdynamodb.UpdateItemOutput, error)
	Scan(context.Context, *awsdynamodb.ScanInput, ...func(*awsdynamodb.Options)) (*awsdynamodb.ScanOutput, error)
}

// Store is a stores.Store on one DynamoDB table. Create it with New or Open
// and Close it when done.
type Store struct {
	db          dbAPI
	streams     *dynamodbstreams.Client
	table       string
	log         *slog.Logger
	replica     string
	poll        time.Duration
	refresh     time.Duration
	maxAttempts int
	nonce       [12]byte // makes this instance's transaction tokens its own
	// Per-request options: the attempt timeout.
	dbOpt     func(*awsdynamodb.Options)
	streamOpt func(*dynamodbstreams.Options)

	watchers stores.Watchers
	closed   atomic.Bool
	commits  commitState // group commit per collection (commit.go)
	// shards caches collections' shard counts (shards.go); shardConf and
	// defaultShards are the configured ones.
	shards        shardCache
	shardConf     map[string]int
	defaultShards int
	shardWarned   sync.Map
	// txCommitted and txCancelled count this instance's transactions.
	txCommitted, txCancelled atomic.Int64
	// turn is Config.CommitTurn; turnWaits and turnYields count its pauses.
	turn                  time.Duration
	turnWaits, turnYields atomic.Int64
	// counters are the consumer's CaptureStats and RejectedCaptures.
	counters captureCounters
	capture  captureState
	ledger   ledger           // stamps of captured foreign writes
	now      func() time.Time // the clock that stamps foreign writes (after what their records hold)
	epochNow func() time.Time // the clock epoch bumps read (Config.Now)
	runCtx   context.Context  // ends at Close
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	closeMu  sync.Once

	// restoring is Config.Restoring; restoredInc, set by New when it
	// found a copy while restoring, is the table's incarnation, which
	// BumpEpochs records.
	restoring   bool
	restoredInc string
	// tableGone says the table was found missing since it was last checked
	// (tableWatch): Meta checks it again first (recheckTable).
	tableGone atomic.Bool
}

// New returns a store on cfg.Table and, when cfg.Streams is set, starts its
// stream consumer. It checks that the table exists with the layout's key
// schema; it never creates it (see CreateTable). It compares the table's
// incarnation with the one the store item records, and starts a new epoch
// of every collection when they differ: the table holds a copy of another
// table's items, a restore (restored.go).
func New(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Client == nil {
		return nil, errors.New("dynamodb: Config.Client is required")
	}
	return newStore(ctx, cfg, cfg.Client)
}

// newStore is New on db, the client or a model of the table.
func newStore(ctx context.Context, cfg Config, db dbAPI) (*Store, error) {
	if len(cfg.Table) < 3 || len(cfg.Table) > 255 {
		return nil, fmt.Errorf("dynamodb: table name %q must be 3 to 255 characters", cfg.Table)
	}
	if cfg.StreamReplica == "" {
		cfg.StreamReplica = DefaultStreamReplica
	}
	if err := crdt.ValidateReplica(cfg.StreamReplica); err != nil || len(cfg.StreamReplica)+1+seqDigits > crdt.MaxReplicaBytes {
		return nil, fmt.Errorf("dynamodb: StreamReplica %q must be a replica id of at most %d bytes", cfg.StreamReplica, crdt.MaxReplicaBytes-1-seqDigits)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.ShardRefresh <= 0 {
		cfg.ShardRefresh = DefaultShardRefresh
	}
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = DefaultAttemptTimeout
	}
	if cfg.CommitTurn == 0 {
		cfg.CommitTurn = DefaultCommitTurn
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.DefaultShards == 0 {
		cfg.DefaultShards = 1
	}
	if err := stores.CheckShards(cfg.DefaultShards); err != nil {
		return nil, fmt.Errorf("dynamodb: DefaultShards: %w", err)
	}
	for coll, k := range cfg.Shards {
		if err := stores.CheckCollection(coll); err != nil {
			return nil, fmt.Errorf("dynamodb: Shards: %w", err)
		}
		if err := stores.CheckShards(k); err != nil {
			return nil, fmt.Errorf("dynamodb: Shards[%s]: %w", coll, err)
		}
	}
	st := &Store{
		db:            db,
		streams:       cfg.Streams,
		table:         cfg.Table,
		log:           cfg.Logger.With("component", "store", "store", "dynamodb", "table", cfg.Table),
		replica:       cfg.StreamReplica,
		poll:          cfg.PollInterval,
		refresh:       cfg.ShardRefresh,
		maxAttempts:   cfg.MaxAttempts,
		now:           time.Now,
		epochNow:      cfg.Now,
		restoring:     cfg.Restoring,
		turn:          cfg.CommitTurn,
		shardConf:     cfg.Shards,
		defaultShards: cfg.DefaultShards,
	}
	st.db = tableWatch{dbAPI: db, gone: &st.tableGone}
	st.ledger = tableLedger{st}
	st.dbOpt = func(o *awsdynamodb.Options) { o.HTTPClient = attemptTimeout{o.HTTPClient, cfg.AttemptTimeout} }
	st.streamOpt = func(o *dynamodbstreams.Options) { o.HTTPClient = attemptTimeout{o.HTTPClient, cfg.AttemptTimeout} }
	if _, err := rand.Read(st.nonce[:]); err != nil {
		return nil, fmt.Errorf("dynamodb: token nonce: %w", err)
	}
	desc, err := st.describe(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkSchema(desc); err != nil {
		return nil, err
	}
	if err := st.checkIncarnation(ctx, desc); err != nil {
		return nil, fmt.Errorf("dynamodb: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	st.runCtx, st.cancel = runCtx, cancel
	if st.streams != nil {
		arn, err := st.tableStream(desc)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("dynamodb: %w", err)
		}
		if desc.StreamSpecification.StreamViewType == types.StreamViewTypeNewImage {
			st.log.Warn("the table's stream shows NEW_IMAGE only: foreign inserts and deletes are captured, foreign updates are rejected (capture needs NEW_AND_OLD_IMAGES to tell what an update changed)")
		}
		c := newConsumer(st, arn, incarnation(desc))
		st.wg.Add(1)
		go func() {
			defer st.wg.Done()
			c.run(runCtx)
		}()
	}
	return st, nil
}

// tableStream returns the ARN of the table's stream, which the consumer
// reads, or why the consumer cannot read it (New and the consumer's follow
// check the table with it).
func (st *Store) tableStream(desc *types.TableDescription) (string, error) {
	spec := desc.StreamSpecification
	if desc.LatestStreamArn == nil || *desc.LatestStreamArn == "" || spec == nil || spec.StreamEnabled == nil || !*spec.StreamEnabled {
		return "", fmt.Errorf("table %s has no enabled stream, which capture needs (CreateTable enables it; a restored table has none until it is enabled with NEW_AND_OLD_IMAGES)", st.table)
	}
	switch spec.StreamViewType {
	case types.StreamViewTypeNewAndOldImages, types.StreamViewTypeNewImage:
	default:
		return "", fmt.Errorf("table %s streams %s; the consumer needs NEW_AND_OLD_IMAGES (or NEW_IMAGE, without capture of updates)", st.table, spec.StreamViewType)
	}
	return *desc.LatestStreamArn, nil
}

// StoreTime reads DynamoDB's clock from the Date header of the answer to
// a DescribeTable of the store's table (a call Open makes anyway, needing
// no other permission), to the second: the engine checks the server
// instance's clock against it (engine.StoreClock).
func (st *Store) StoreTime(ctx context.Context) (time.Time, time.Duration, error) {
	op := "describe table " + st.table + " for its clock"
	out, err := st.db.DescribeTable(ctx, &awsdynamodb.DescribeTableInput{TableName: &st.table}, st.dbOpt)
	if err != nil {
		return time.Time{}, 0, translate(ctx, op, err)
	}
	at, ok := awsmiddleware.GetServerTime(out.ResultMetadata)
	if !ok || at.IsZero() {
		return time.Time{}, 0, fmt.Errorf("%s: the answer has no Date header", op)
	}
	return at, time.Second, nil
}

func (st *Store) describe(ctx context.Context) (*types.TableDescription, error) {
	out, err := st.db.DescribeTable(ctx, &awsdynamodb.DescribeTableInput{TableName: &st.table}, st.dbOpt)
	if err != nil {
		return nil, translate(ctx, "describe table "+st.table, err)
	}
	return out.Table, nil
}

// checkSchema checks that a table is one the store runs on: the layout's
// key schema, and not a global table. The replicas of a global table have
// TableIds of their own and replicate one store item, so each region's
// servers would take the others' incarnation for a restore and start new
// epochs at every open (restored.go): the store refuses them rather than
// reset every reader again and again.
func checkSchema(t *types.TableDescription) error {
	if len(t.Replicas) > 0 || str(t.GlobalTableVersion) != "" {
		regions := make([]string, 0, len(t.Replicas))
		for _, r := range t.Replicas {
			regions = append(regions, str(r.RegionName))
		}
		return fmt.Errorf("dynamodb: table %s is a global table (version %q, replicas %v); the store does not support global tables: use a table without replicas", str(t.TableName), str(t.GlobalTableVersion), regions)
	}
	types_ := map[string]types.ScalarAttributeType{}
	for _, a := range t.AttributeDefinitions {
		if a.AttributeName != nil {
			types_[*a.AttributeName] = a.AttributeType
		}
	}
	var hash, rng string
	for _, k := range t.KeySchema {
		if k.AttributeName == nil {
			continue
		}
		switch k.KeyType {
		case types.KeyTypeHash:
			hash = *k.AttributeName
		case types.KeyTypeRange:
			rng = *k.AttributeName
		}
	}
	if hash != attrPK || rng != attrSK || types_[attrPK] != types.ScalarAttributeTypeS || types_[attrSK] != types.ScalarAttributeTypeN {
		return fmt.Errorf("dynamodb: table %s does not have the store's key schema (pk: S hash key, sk: N range key)", str(t.TableName))
	}
	return nil
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func (st *Store) check(ctx context.Context) error {
	if st.closed.Load() {
		return stores.ErrClosed
	}
	return ctx.Err()
}

// Pull implements stores.Store with strongly consistent Queries of the
// collection's log partition, cut at limit as it goes. Each Query's Limit is
// sized to the byte budget left, so that the store reads about the page and
// one record more, not a full 1 MB response of large records: the first
// takes as many items as fit the budget at crdt.MaxRecordBytes each (plus
// one), later ones as many as fit at the average size read so far. A page
// of many small records thus takes two Queries; a page of large ones reads
// about one record beyond the budget.
func (st *Store) Pull(ctx context.Context, collection string, after uint64, limit stores.PageLimit) (stores.Page, error) {
	if err := st.check(ctx); err != nil {
		return stores.Page{}, err
	}
	if err := stores.CheckPull(collection, limit); err != nil {
		return stores.Page{}, err
	}
	i, err := st.knownShards(ctx, collection)
	if err != nil {
		return stores.Page{}, err
	}
	if i.k > 1 {
		return stores.Page{}, fmt.Errorf("pull %s: %w: the log has %d shards (PullShard)", collection, stores.ErrInvalid, i.k)
	}
	return st.pullLog(ctx, logRef{coll: collection, shards: 1}, after, limit)
}

// pullLog reads a page of one log (a collection's, or one shard's).
func (st *Store) pullLog(ctx context.Context, ref logRef, after uint64, limit stores.PageLimit) (stores.Page, error) {
	collection := ref.String()
	page := stores.Page{Next: after}
	var start map[string]types.AttributeValue
	used := 0
	sizes := map[string]int{} // of the page's records, by id
	read := pageRead{seen: map[uint64]int{}, txs: map[uint64]*txRead{}}
	for {
		want := queryLimit(limit, len(page.Entries), used)
		out, err := st.db.Query(ctx, &awsdynamodb.QueryInput{
			TableName:                 &st.table,
			ConsistentRead:            ptr(true),
			KeyConditionExpression:    ptr("#k = :pk AND #s > :after"),
			ExpressionAttributeNames:  map[string]string{"#k": attrPK, "#s": attrSK},
			ExpressionAttributeValues: map[string]types.AttributeValue{":pk": s(ref.logPK()), ":after": n(after)},
			Limit:                     &want,
			ExclusiveStartKey:         start,
		}, st.dbOpt)
		if err != nil {
			return stores.Page{}, translate(ctx, "pull "+collection, err)
		}
		for _, item := range out.Items {
			id, _ := item[attrID].(*types.AttributeValueMemberS)
			if id == nil {
				return stores.Page{}, fmt.Errorf("pull %s: log item without a record id", collection)
			}
			// The item holds the record's encoding, whose length is the
			// record's size in the page.
			size := 0
			if raw, ok := item[attrRec].(*types.AttributeValueMemberB); ok {
				size = len(raw.Value)
			}
			if !stores.PageFits(limit, len(page.Entries), used, size) {
				page.More = true
				return st.fillHoles(ctx, ref, after, page, read, limit)
			}
			e, err := decodeEntry(item, id.Value, attrSK)
			if err != nil {
				return stores.Page{}, fmt.Errorf("pull %s: log item of %q: %w", collection, id.Value, err)
			}
			tx, err := txSeqs(item)
			if err != nil {
				return stores.Page{}, fmt.Errorf("pull %s: log item of %q: %w", collection, id.Value, err)
			}
			read.seen[e.Seq] = size
			if len(tx) > 1 {
				read.saw(tx, e)
			}
			if was, dup := sizes[e.Record.ID]; dup {
				// The page's Queries are not one snapshot: a commit
				// between two moved the record from an entry the page
				// already holds to this later one. The later state
				// replaces it (dropping this one instead would move the
				// cursor past the record's latest change).
				page.Entries = slices.DeleteFunc(page.Entries, func(x stores.Entry) bool { return x.Record.ID == e.Record.ID })
				used -= was
			}
			used += size
			sizes[e.Record.ID] = size
			page.Entries = append(page.Entries, e)
			page.Next = e.Seq
		}
		if out.LastEvaluatedKey == nil {
			return st.fillHoles(ctx, ref, after, page, read, limit)
		}
		start = out.LastEvaluatedKey
	}
}

// queryLimit is the Limit of the next Query of a page that holds n records
// of used bytes: one more item than can still join the page (to learn More),
// counting the items that fit the bytes left at crdt.MaxRecordBytes each for
// the first Query and at the average size read so far after it. Every Query
// returns at least one item, so the page always makes progress.
func queryLimit(limit stores.PageLimit, n, used int) int32 {
	per := crdt.MaxRecordBytes
	if n > 0 {
		per = max(used/n, 1)
	}
	fit := max(limit.Bytes-used, 0) / per
	return int32(min(limit.Records-n, fit) + 1)
}

// Get implements stores.Store.
func (st *Store) Get(ctx context.Context, collection, id string) (stores.Entry, error) {
	if err := st.check(ctx); err != nil {
		return stores.Entry{}, err
	}
	if err := stores.CheckKey(collection, id); err != nil {
		return stores.Entry{}, err
	}
	out, err := st.db.GetItem(ctx, &awsdynamodb.GetItemInput{
		TableName:      &st.table,
		Key:            key(recordPK(collection, id), 0),
		ConsistentRead: ptr(true),
	}, st.dbOpt)
	if err != nil {
		return stores.Entry{}, translate(ctx, fmt.Sprintf("get %s/%s", collection, id), err)
	}
	if out.Item == nil {
		return stores.Entry{}, fmt.Errorf("get %s/%s: %w", collection, id, stores.ErrNotFound)
	}
	e, err := decodeEntry(out.Item, id, attrSeq)
	if err != nil {
		return stores.Entry{}, fmt.Errorf("get %s/%s: %w", collection, id, err)
	}
	return e, nil
}

// batchGet reads the items of keys with strongly consistent BatchGetItems:
// keys DynamoDB leaves unprocessed (it does under throttling) are read
// again after a backoff, up to the store's MaxAttempts, then it fails with
// ErrUnavailable. Absent items are missing from what it returns. Every
// batch read of the store's goes through it.
func (st *Store) batchGet(ctx context.Context, op string, keys []map[string]types.AttributeValue) ([]map[string]types.AttributeValue, error) {
	var items []map[string]types.AttributeValue
	if len(keys) == 0 {
		return nil, nil
	}
	req := map[string]types.KeysAndAttributes{st.table: {Keys: keys, ConsistentRead: ptr(true)}}
	for attempt := 1; len(req) > 0; attempt++ {
		out, err := st.db.BatchGetItem(ctx, &awsdynamodb.BatchGetItemInput{RequestItems: req}, st.dbOpt)
		if err != nil {
			return nil, translate(ctx, op, err)
		}
		items = append(items, out.Responses[st.table]...)
		req = out.UnprocessedKeys
		if len(req) > 0 {
			if attempt >= st.maxAttempts {
				return nil, fmt.Errorf("%s: %w: keys still unprocessed after %d attempts", op, stores.ErrUnavailable, attempt)
			}
			if err := sleep(ctx, backoff(attempt)); err != nil {
				return nil, err
			}
		}
	}
	return items, nil
}

// Head implements stores.Store.
func (st *Store) Head(ctx context.Context, collection string) (uint64, error) {
	if err := st.check(ctx); err != nil {
		return 0, err
	}
	if err := crdt.ValidateCollection(collection); err != nil {
		return 0, fmt.Errorf("head: %w", err) // crdt.ErrInvalid is stores.ErrInvalid
	}
	i, err := st.knownShards(ctx, collection)
	if err != nil {
		return 0, err
	}
	if i.k > 1 {
		heads, err := st.ShardHeads(ctx, collection)
		if err != nil {
			return 0, err
		}
		var sum uint64
		for _, h := range heads {
			sum += h
		}
		return sum, nil
	}
	out, err := st.db.GetItem(ctx, &awsdynamodb.GetItemInput{
		TableName:      &st.table,
		Key:            key(headPK(collection), 0),
		ConsistentRead: ptr(true),
	}, st.dbOpt)
	if err != nil {
		return 0, translate(ctx, "head "+collection, err)
	}
	if out.Item == nil {
		return 0, nil
	}
	h, err := headValue(out.Item, logRef{coll: collection, shards: 1})
	if errors.Is(err, errOtherShards) {
		// Sharded since this instance looked: read the table's K, once.
		st.forgetShards(collection)
		if i, kerr := st.knownShards(ctx, collection); kerr == nil && i.k > 1 {
			return st.Head(ctx, collection)
		}
	}
	if err != nil {
		return 0, fmt.Errorf("head %s: %w", collection, err)
	}
	return h, nil
}

// Watch implements stores.Store. Notifications come from this instance's
// own Apply calls and, with capture on, from the table's stream: writes by
// other instances and foreign writes.
func (st *Store) Watch(fn func(stores.Notification)) (stop func()) { return st.watchers.Add(fn) }

// Close stops the stream consumer and ends Watch registrations. It is
// idempotent.
func (st *Store) Close() error {
	st.closeMu.Do(func() {
		st.closed.Store(true)
		st.stopCommits()
		if st.cancel != nil {
			st.cancel()
		}
		st.wg.Wait()
		st.watchers.Close()
	})
	return nil
}

func ptr[T any](v T) *T { return &v }
