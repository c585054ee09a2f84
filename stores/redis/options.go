package redis

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/convergo/convergo/stores"
)

// Defaults for the zero values of Options.
const (
	DefaultAddr         = "127.0.0.1:6379"
	DefaultClientName   = "convergo"
	DefaultDialTimeout  = 5 * time.Second
	DefaultReadTimeout  = 5 * time.Second
	DefaultWriteTimeout = 5 * time.Second
	DefaultMaxRetries   = 3
	DefaultHeartbeat    = time.Second
)

// Options configures a Store. Open uses every field; New, which is handed a
// client, uses only KeyPrefix, Logger, Heartbeat, DialTimeout, Now and
// the Capture settings.
//
// Hooks: on a Redis Cluster, Apply's merge calls and Purge's and Repair's
// commands go with the client of the node serving the collection's slot
// (so that no redirect takes them on to a node whose run the store did
// not check; package doc, # Group commit), not through the cluster
// client. A hook added to the cluster client handed to New
// (ClusterClient.AddHook, instrumentation) therefore does not see them,
// and go-redis gives no way to read a client's hooks, so the store cannot
// copy them. The node clients see every command, the cluster client's
// too: a caller that instruments a cluster adds its hooks to them instead
// (on both, a command through the cluster client is seen twice), with
// ClusterClient.OnNewNode(func(c *redis.Client) { c.AddHook(h) }) for the
// node clients made after it and ClusterClient.ForEachShard for those
// already made.
type Options struct {
	// Addrs are the host:port addresses of one Redis server, or of some
	// nodes of a Redis Cluster (the client discovers the rest). Empty means
	// DefaultAddr.
	Addrs []string
	// Cluster makes Open use a cluster client even for a single address (a
	// cluster's configuration endpoint). False means: a cluster client when
	// Addrs lists more than one address, else a single-node client. Open
	// refuses a single-node client pointed at a cluster node.
	Cluster bool
	// Username and Password authenticate with AUTH (ACL user or the default
	// user). Empty means no authentication.
	Username string
	Password string
	// DB selects the database of a single-node server. Zero means database
	// 0, the only one a cluster has; a non-zero DB with a cluster is an
	// error.
	DB int
	// KeyPrefix is put before every key and the notification channel, so
	// several deployments (or tests) can share one Redis without seeing each
	// other. Empty means no prefix. It must not contain '{' or '}', which
	// would change the keys' hash slot.
	KeyPrefix string
	// ClientName names the store's connections in CLIENT LIST (CLIENT
	// SETNAME), the subscriber's included. Empty means DefaultClientName.
	ClientName string
	// PoolSize is the number of connections per node. Zero means go-redis's
	// default, 10 per GOMAXPROCS.
	PoolSize int
	// DialTimeout bounds establishing a connection (each try of a call
	// dials once), and how long the first Watch waits for its
	// subscription. Zero means DefaultDialTimeout.
	DialTimeout time.Duration
	// ReadTimeout and WriteTimeout bound one socket read or write; a
	// call's context deadline bounds it too (Open enables go-redis's
	// ContextTimeoutEnabled), whichever is sooner. Zero means
	// DefaultReadTimeout and DefaultWriteTimeout; -1 means no timeout.
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// MaxRetries is how often go-redis retries a command that failed with a
	// network error or a retryable server error (LOADING, TRYAGAIN,
	// CLUSTERDOWN, ...). Retrying the merge script is safe because it is
	// idempotent. Zero means DefaultMaxRetries; negative means no retries.
	MaxRetries int
	// Heartbeat is how long the notification subscriber may hear nothing
	// before it checks its connection: it publishes a heartbeat to a
	// channel of its own, and when that does not come back within
	// Heartbeat either, it replaces the connection and reports a Resync.
	// This finds a connection that died silently (a crashed host, a
	// dropped NAT entry), which TCP notices only after many minutes,
	// within 2×Heartbeat of its last message (2 s by default). An idle
	// store costs one small PUBLISH per Heartbeat. Zero means
	// DefaultHeartbeat; negative turns the check off.
	Heartbeat time.Duration
	// Capture lists the plain hashes whose writes by other programs the
	// store captures into collections, and which of them it mirrors
	// merged records back into (doc.go, "# Capture"). Empty means no
	// capture. Capture runs while a sink is registered (the engine
	// registers one).
	Capture []CaptureRule
	// CaptureInterval is how often reconciliation scans the captured keys
	// for writes that keyspace notifications missed, and the mirror's
	// safety poll. Zero means DefaultCaptureInterval.
	CaptureInterval time.Duration
	// CaptureScanCount is the COUNT of each reconciliation SCAN step.
	// Zero means DefaultCaptureScanCount.
	CaptureScanCount int
	// WrittenCacheBytes, when positive, keeps a cache of the record
	// blobs that this store's merge script calls left stored, in one
	// arena of that many bytes allocated at Open (each entry its id, its
	// collection's name, its blob and 8 bytes: about 130 bytes for a
	// record of one short field; the oldest are overwritten first), and
	// an index of about 20–40 bytes per entry. With it the read before a
	// round trip of Apply skips the records it holds (doc.go, "# Merging
	// in Go"): it trades Go's CPU for Redis's (docs/benchmarks.md). Zero
	// (the default) or negative means no cache.
	WrittenCacheBytes int
	// Now is the clock epoch bumps read (stores.NextEpoch): a bump sets a
	// counter to the Unix time in seconds when that is more than the
	// counter plus one. Nil means time.Now.
	Now func() time.Time
	// Logger receives the store's few log lines (the subscriber's
	// reconnections and unreadable notifications). Nil means no logging.
	Logger *slog.Logger
	// Existing makes Open refuse, before it writes anything, a store that
	// has no identity yet: one no server ever used under this prefix and
	// database (a mistyped URL). The operator's tools set it (convergo
	// deny, store, repair), so that they act on no store but a served one.
	Existing bool
}

func (o Options) withDefaults() Options {
	if len(o.Addrs) == 0 {
		o.Addrs = []string{DefaultAddr}
	}
	if o.ClientName == "" {
		o.ClientName = DefaultClientName
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.ReadTimeout == 0 {
		o.ReadTimeout = DefaultReadTimeout
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	switch {
	case o.MaxRetries == 0:
		o.MaxRetries = DefaultMaxRetries
	case o.MaxRetries < 0:
		o.MaxRetries = -1 // go-redis: no retries
	}
	if o.Heartbeat == 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.CaptureInterval <= 0 {
		o.CaptureInterval = DefaultCaptureInterval
	}
	if o.CaptureScanCount <= 0 {
		o.CaptureScanCount = DefaultCaptureScanCount
	}
	return o
}

func (o Options) cluster() bool { return o.Cluster || len(o.Addrs) > 1 }

// validate checks the fields New uses.
func (o Options) validate() error {
	if strings.ContainsAny(o.KeyPrefix, "{}") {
		return fmt.Errorf("%w: redis key prefix %q contains a brace", stores.ErrInvalid, o.KeyPrefix)
	}
	for i, r := range o.Capture {
		if err := r.validate(o.KeyPrefix); err != nil {
			return err
		}
		for _, q := range o.Capture[:i] {
			if q.overlaps(r) {
				return fmt.Errorf("%w: capture key patterns %q and %q both match some keys", stores.ErrInvalid, q.KeyPattern, r.KeyPattern)
			}
		}
	}
	return nil
}

// validateOpen checks the fields Open uses.
func (o Options) validateOpen() error {
	if err := o.validate(); err != nil {
		return err
	}
	if o.DB < 0 {
		return fmt.Errorf("%w: redis DB %d is negative", stores.ErrInvalid, o.DB)
	}
	if o.DB != 0 && o.cluster() {
		return fmt.Errorf("%w: redis DB %d with a cluster, which has only database 0", stores.ErrInvalid, o.DB)
	}
	if o.PoolSize < 0 {
		return fmt.Errorf("%w: redis PoolSize %d is negative", stores.ErrInvalid, o.PoolSize)
	}
	if o.DialTimeout < 0 {
		return fmt.Errorf("%w: redis DialTimeout %s is negative", stores.ErrInvalid, o.DialTimeout)
	}
	for _, t := range []time.Duration{o.ReadTimeout, o.WriteTimeout} {
		if t < 0 && t != -1 {
			return fmt.Errorf("%w: redis read/write timeout %s: want positive, zero or -1", stores.ErrInvalid, t)
		}
	}
	return nil
}
