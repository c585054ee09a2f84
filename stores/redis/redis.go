package redis

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

var (
	_ stores.Store            = (*Store)(nil)
	_ stores.EpochsBumperFrom = (*Store)(nil)
)

// MaxSeq is the largest sequence number the store hands out: 2^53, the
// largest integer a ZSET score (a float64) holds exactly. The merge script
// refuses a batch that would pass it.
const MaxSeq = 1 << 53

var (
	//go:embed merge.lua
	mergeSource string
	//go:embed read.lua
	readSource string
	//go:embed size.lua
	sizeSource string

	// The scripts are shared by every Store: a Script only caches its SHA1.
	mergeScript = goredis.NewScript(withPrelude(mergeSource, sizeSource))
	readScript  = goredis.NewScript(withPrelude(readSource, sizeSource))
)

// withPrelude returns script with prelude inserted after its first line,
// the shebang that Redis requires first: both scripts share size.lua's
// record size arithmetic, written once.
func withPrelude(script, prelude string) string {
	shebang, body, _ := strings.Cut(script, "\n")
	return shebang + "\n" + prelude + body
}

// Store is a stores.Store on Redis or Redis Cluster. Create it with Open or
// New; it is safe for concurrent use.
type Store struct {
	client    goredis.UniversalClient
	ownClient bool
	prefix    string
	channel   string
	log       *slog.Logger
	// now is the clock epoch bumps read (Options.Now).
	now func() time.Time

	// maxRecordBytes is crdt.MaxRecordBytes; tests lower it to probe the
	// script's size computation.
	maxRecordBytes int
	// written is the cache of the blobs the store's script calls left
	// stored (written.go); nil unless Options.WrittenCacheBytes is positive.
	written *writtenCache
	// mergeInScript (tests) sends every change to the merge script to
	// merge, as before Go merged them (cas.go).
	mergeInScript bool

	closed     atomic.Bool
	watchers   stores.Watchers
	stats      counters
	corruptLog corruptLog
	// commits gathers concurrent Apply calls into pipelined round trips
	// (apply.go).
	commits committer
	// capture is nil without capture rules.
	capture *capturer
	// needCheck says a check of the servers' run (checkRun) is owed: at
	// first, and after a check failed.
	needCheck atomic.Bool
	// known holds the keys (run.key) of the masters the last check of the
	// servers' run found, and probed when the run of each node was last
	// compared with them before a round trip (probeRun).
	known   atomic.Pointer[map[string]bool]
	probeMu sync.Mutex
	probed  map[string]time.Time

	// subscribeWait bounds how long Watch waits for the first subscription.
	subscribeWait time.Duration

	// heartbeat is how long the subscriber hears nothing before it checks
	// its connection (0: never); heartbeatChannel is this store's own.
	heartbeat        time.Duration
	heartbeatChannel string

	mu       sync.Mutex         // guards the subscriber's fields against Close
	stopSub  context.CancelFunc // nil until the subscriber starts
	subReady chan struct{}      // closed at the first subscription
	subDone  <-chan struct{}    // closed when the subscriber is told to stop
	watchWG  sync.WaitGroup
}

// Open connects to Redis as opts says and returns a store that owns the
// connection: Close closes it. It checks that the server answers, runs
// Redis 7 or later (the scripts use 7.0's shebang flags) and is in the mode
// opts asks for, checks the store's format mark (writing this build's on a
// store that has none; a later format is refused with
// stores.ErrNewerFormat), and loads the scripts.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if err := opts.validateOpen(); err != nil {
		return nil, fmt.Errorf("open redis store: %w", err)
	}
	o := opts.withDefaults()
	client := goredis.NewUniversalClient(&goredis.UniversalOptions{
		Addrs:         o.Addrs,
		IsClusterMode: o.Cluster,
		ClientName:    o.ClientName,
		DB:            o.DB,
		Username:      o.Username,
		Password:      o.Password,
		PoolSize:      o.PoolSize,
		DialTimeout:   o.DialTimeout,
		ReadTimeout:   o.ReadTimeout,
		WriteTimeout:  o.WriteTimeout,
		MaxRetries:    o.MaxRetries,
		// One dial per try: go-redis otherwise dials up to five times,
		// 100 ms apart and each given DialTimeout, before a try fails,
		// which multiplies MaxRetries and DialTimeout by five (a call
		// with Redis down took seconds although its port refuses at
		// once). MaxRetries alone decides how often a call tries again.
		DialerRetries: 1,
		// Without it go-redis bounds calls only by its socket timeouts and
		// ignores the caller's context deadline.
		ContextTimeoutEnabled: true,
	})
	s, err := New(client, o)
	if err != nil {
		_ = client.Close()
		return nil, err
	}
	s.ownClient = true
	if err := s.checkServer(ctx, o.cluster()); err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("open redis store at %s: %w", strings.Join(o.Addrs, ","), err)
	}
	if o.Existing {
		n, err := s.client.Exists(ctx, s.identityKey()).Result()
		if err != nil {
			_ = client.Close()
			return nil, fmt.Errorf("open redis store at %s: %w", strings.Join(o.Addrs, ","), s.fail(ctx, "identity", err))
		}
		if n == 0 {
			_ = client.Close()
			return nil, fmt.Errorf("open redis store at %s: %w: no store under prefix %q in database %d (no identity key %s): no server used it; check the URL",
				strings.Join(o.Addrs, ","), stores.ErrNotFound, o.KeyPrefix, o.DB, s.identityKey())
		}
	}
	if err := s.checkFormat(ctx); err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("open redis store at %s: %w", strings.Join(o.Addrs, ","), err)
	}
	if err := s.loadScripts(ctx); err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("open redis store at %s: %w", strings.Join(o.Addrs, ","), err)
	}
	if err := s.checkRun(ctx); err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("open redis store at %s: %w", strings.Join(o.Addrs, ","), err)
	}
	return s, nil
}

// loadScripts loads the scripts into the script cache of the server, or of
// every master of a cluster, so the first calls need no EVAL fallback and a
// script the server cannot compile fails Open. Servers forget scripts on
// restart; Script.Run then falls back to EVAL. A user whose ACL forbids
// SCRIPT LOAD relies on that fallback from the start.
//
// Masters only, never their replicas (go-redis's cluster ScriptLoad loads
// on every node): Redis does not replicate SCRIPT LOAD, and a replica
// keeps its script cache when it is promoted. A replica that takes over
// then answers the first merge call with NOSCRIPT, which is how a store
// whose subscription is on another master learns of the failover before
// it writes there (roundTrip checks the servers' run).
func (s *Store) loadScripts(ctx context.Context) error {
	err := s.masters(ctx, func(ctx context.Context, c *goredis.Client) error {
		for _, sc := range []*goredis.Script{mergeScript, readScript, usageScript, purgeScript} {
			if err := sc.Load(ctx, c).Err(); err != nil {
				return err
			}
		}
		return nil
	})
	if goredis.HasErrorPrefix(err, "NOPERM") {
		s.log.Debug("SCRIPT LOAD not permitted; scripts load on first use", "err", err)
		return nil
	}
	if err != nil {
		return s.fail(ctx, "load scripts", err)
	}
	return nil
}

// New returns a store on a client the caller owns and keeps open until after
// Close. It does no I/O, so it neither writes nor checks the store's format
// mark: Open does. Of opts it uses KeyPrefix, Logger, Heartbeat,
// DialTimeout (how long Watch waits for its subscription), Now and the
// Capture settings. The client should have ContextTimeoutEnabled set, or
// contexts will not bound calls. On a cluster, hooks added to the cluster
// client do not see the calls that go through the node clients (Options,
// Hooks).
func New(client goredis.UniversalClient, opts Options) (*Store, error) {
	if client == nil {
		return nil, fmt.Errorf("new redis store: %w: nil client", stores.ErrInvalid)
	}
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("new redis store: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var id [8]byte
	_, _ = rand.Read(id[:]) // never fails (crypto/rand)
	d := opts.withDefaults()
	s := &Store{
		client:           client,
		prefix:           opts.KeyPrefix,
		channel:          opts.KeyPrefix + "convergo:notify",
		log:              log.With("component", "stores/redis"),
		now:              d.Now,
		maxRecordBytes:   crdt.MaxRecordBytes,
		subscribeWait:    d.DialTimeout,
		heartbeat:        max(d.Heartbeat, 0),
		heartbeatChannel: opts.KeyPrefix + "convergo:heartbeat:" + hex.EncodeToString(id[:]),
	}
	if opts.WrittenCacheBytes > 0 {
		s.written = newWrittenCache(opts.WrittenCacheBytes)
	}
	s.needCheck.Store(true)
	_, s.commits.slotted = client.(*goredis.ClusterClient)
	if len(d.Capture) > 0 {
		s.capture = newCapturer(s, d)
	}
	return s, nil
}

// checkServer pings the server and checks its version and mode.
func (s *Store) checkServer(ctx context.Context, cluster bool) error {
	if err := s.client.Ping(ctx).Err(); err != nil {
		return s.fail(ctx, "ping", err)
	}
	info, err := s.client.Info(ctx, "server", "cluster").Result()
	if err != nil {
		return nil // INFO may be renamed or forbidden; the scripts will tell
	}
	if v := infoField(info, "redis_version"); v != "" {
		if major, _, _ := strings.Cut(v, "."); major != "" {
			if n, err := strconv.Atoi(major); err == nil && n < 7 {
				return fmt.Errorf("%w: redis %s, need 7.0 or later", stores.ErrInvalid, v)
			}
		}
	}
	if !cluster && infoField(info, "cluster_enabled") == "1" {
		return fmt.Errorf("%w: the server is a cluster node: set Options.Cluster or list several nodes", stores.ErrInvalid)
	}
	return nil
}

func infoField(info, name string) string {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// StoreTime reads the Redis server's clock (TIME; on a cluster, of the
// node the command reaches), to the microsecond: the engine checks the
// server instance's clock against it (engine.StoreClock).
func (s *Store) StoreTime(ctx context.Context) (time.Time, time.Duration, error) {
	t, err := s.client.Time(ctx).Result()
	if err != nil {
		return time.Time{}, 0, s.fail(ctx, "time", err)
	}
	return t, time.Microsecond, nil
}

// Keys. The collection name sits in a hash tag, so all keys of a
// collection are in one cluster slot; crdt.ValidateCollection refuses
// braces and colons, so names cannot break out of it.
func (s *Store) seqKey(coll string) string { return s.prefix + "{" + coll + "}:seq" }
func (s *Store) logKey(coll string) string { return s.prefix + "{" + coll + "}:log" }
func (s *Store) recKey(coll string) string { return s.prefix + "{" + coll + "}:r" }
func (s *Store) usageKey(coll string) string {
	return s.prefix + "{" + coll + "}:usage"
}

// writeKeys are the keys the merge and repair scripts take.
func (s *Store) writeKeys(coll string) []string {
	return []string{s.seqKey(coll), s.logKey(coll), s.recKey(coll), s.usageKey(coll)}
}

func (s *Store) begin(ctx context.Context) error {
	if s.closed.Load() {
		return stores.ErrClosed
	}
	return ctx.Err()
}

// Pull implements stores.Store. The read script takes the page of the log
// and its records in one atomic step, so every record is the state that
// holds the sequence number it is listed under.
func (s *Store) Pull(ctx context.Context, collection string, after uint64, limit stores.PageLimit) (stores.Page, error) {
	if err := s.begin(ctx); err != nil {
		return stores.Page{}, err
	}
	if err := stores.CheckPull(collection, limit); err != nil {
		return stores.Page{}, err
	}
	page := stores.Page{Next: after}
	if after >= MaxSeq {
		return page, nil // no sequence number is larger
	}
	keys := []string{s.logKey(collection), s.recKey(collection)}
	out, err := readScript.Run(ctx, s.client, keys, strconv.FormatUint(after, 10), limit.Records, limit.Bytes).Slice()
	if err != nil {
		return stores.Page{}, s.fail(ctx, "pull "+collection, err)
	}
	if len(out)%2 != 1 || len(out)/2 > limit.Records {
		return stores.Page{}, fmt.Errorf("pull %s: read script returned %d items", collection, len(out))
	}
	more, _ := out[0].(int64)
	out = out[1:]
	n := len(out) / 2
	page.More = more == 1
	page.Entries = make([]stores.Entry, 0, n)
	for i := range n {
		id, _ := out[2*i].(string)
		var err error
		blob, ok := out[2*i+1].(string)
		var seq uint64
		var rec crdt.Record
		if !ok {
			err = fmt.Errorf("the log lists %q, which has no record", id)
		} else if seq, rec, err = decodeBlob(id, []byte(blob)); err != nil {
			err = fmt.Errorf("record %q: %w", id, err)
		} else if seq <= page.Next {
			err = fmt.Errorf("record %q has seq %d, not after %d", id, seq, page.Next)
		}
		if err != nil {
			// A damaged entry ends the page: the reader gets what comes
			// before it, and the error when its cursor reaches it.
			s.corrupt(collection, id, err)
			if len(page.Entries) > 0 {
				page.More = true
				return page, nil
			}
			return stores.Page{}, fmt.Errorf("pull %s: %w: %w", collection, stores.ErrCorrupt, err)
		}
		page.Entries = append(page.Entries, stores.Entry{Seq: seq, Record: rec})
		page.Next = seq
	}
	return page, nil
}

// Get implements stores.Store.
func (s *Store) Get(ctx context.Context, collection, id string) (stores.Entry, error) {
	if err := s.begin(ctx); err != nil {
		return stores.Entry{}, err
	}
	if err := stores.CheckKey(collection, id); err != nil {
		return stores.Entry{}, err
	}
	blob, err := s.client.HGet(ctx, s.recKey(collection), id).Bytes()
	if err != nil {
		return stores.Entry{}, s.fail(ctx, "get "+collection+"/"+id, err)
	}
	seq, rec, err := decodeBlob(id, blob)
	if err != nil {
		s.corrupt(collection, id, err)
		return stores.Entry{}, fmt.Errorf("get %s/%s: %w: %w", collection, id, stores.ErrCorrupt, err)
	}
	return stores.Entry{Seq: seq, Record: rec}, nil
}

// Head implements stores.Store. It reads the head and the highest seq in
// the log in one script (headScript) and returns the larger: a head that
// something set back or made unreadable is repaired there, counted and
// logged, and the collection starts a new epoch (see checkHead).
func (s *Store) Head(ctx context.Context, collection string) (uint64, error) {
	if err := s.begin(ctx); err != nil {
		return 0, err
	}
	if err := crdt.ValidateCollection(collection); err != nil {
		return 0, fmt.Errorf("%w: %v", stores.ErrInvalid, err)
	}
	out, err := headScript.Run(ctx, s.client, []string{s.seqKey(collection), s.logKey(collection)}).Slice()
	if err != nil {
		return 0, s.fail(ctx, "head "+collection, err)
	}
	if len(out) != 3 {
		return 0, fmt.Errorf("head %s: head script returned %v", collection, out)
	}
	head, ok1 := out[0].(int64)
	state, ok2 := out[1].(int64)
	raw, _ := out[2].(string)
	if !ok1 || !ok2 || head < 0 {
		return 0, fmt.Errorf("head %s: head script returned %v", collection, out)
	}
	s.checkHead(ctx, collection, state, raw, uint64(head))
	return uint64(head), nil
}

// Close implements stores.Store. It stops capture and the subscriber and
// waits for them, and closes the client if Open created it.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if s.capture != nil {
		s.capture.close()
	}
	s.commits.close()
	s.mu.Lock()
	stop := s.stopSub
	s.mu.Unlock()
	if stop != nil {
		stop()
		s.watchWG.Wait()
	}
	s.watchers.Close()
	if s.ownClient {
		if err := s.client.Close(); err != nil && !errors.Is(err, goredis.ErrClosed) {
			return fmt.Errorf("close redis store: %w", err)
		}
	}
	return nil
}

// fail translates a go-redis error at the edge: redis.Nil to ErrNotFound, a
// closed client to ErrClosed, a done context to its error, connection
// failures and retryable server states to ErrUnavailable, and the script's
// size refusal to ErrTooLarge. Every result reads op first.
func (s *Store) fail(ctx context.Context, op string, err error) error {
	switch {
	case errors.Is(err, goredis.Nil):
		return fmt.Errorf("%s: %w", op, stores.ErrNotFound)
	case errors.Is(err, goredis.ErrClosed) || s.closed.Load():
		return fmt.Errorf("%s: %w", op, stores.ErrClosed)
	case ctx.Err() != nil:
		return fmt.Errorf("%s: %w (%v)", op, ctx.Err(), err)
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", op, err)
	case scriptMarker(err) == markerCorrupt:
		msg := scriptMessage(err, markerCorrupt)
		s.corrupt("", "", errors.New(msg))
		return fmt.Errorf("%s: %w: %s", op, stores.ErrCorrupt, msg)
	case scriptMarker(err) == markerTooLarge:
		return fmt.Errorf("%s: %w: %s", op, stores.ErrTooLarge, scriptMessage(err, markerTooLarge))
	case unavailable(err):
		return fmt.Errorf("%s: %w: %w", op, stores.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// The markers the scripts begin their refusals with (error('convergo:...')).
const (
	markerCorrupt  = "convergo:corrupt"
	markerTooLarge = "convergo:too-large"
)

// scriptMarker returns the marker a script's refusal begins with, or "".
// A refusal quotes record ids after its marker, and a client chooses
// those: an id that spells another marker ("convergo:corrupt") comes after
// the real one, so the first marker in the text is the script's.
func scriptMarker(err error) string {
	msg := err.Error()
	marker, at := "", -1
	for _, m := range []string{markerCorrupt, markerTooLarge} {
		if i := strings.Index(msg, m); i >= 0 && (at < 0 || i < at) {
			marker, at = m, i
		}
	}
	return marker
}

// scriptMessage cuts the message the script raised out of Redis's error
// text ("ERR user_script:1: <message> script: <sha>, on @user_script:1."),
// from its first marker to the last " script: " (a quoted id may hold
// one too).
func scriptMessage(err error, marker string) string {
	msg := err.Error()
	if i := strings.Index(msg, marker); i >= 0 {
		msg = msg[i+len(marker):]
	}
	if i := strings.LastIndex(msg, " script: "); i >= 0 {
		msg = msg[:i]
	}
	return strings.TrimSpace(msg)
}

// unavailablePrefixes are server errors that say "not now": the store
// cannot serve the call at the moment, and a later retry may succeed.
var unavailablePrefixes = []string{
	"LOADING", "BUSY", "CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN", "READONLY",
	"NOREPLICAS", "OOM", "max number of clients", // HasErrorPrefix drops "ERR "
}

func unavailable(err error) bool {
	var netErr net.Error
	switch {
	case errors.As(err, &netErr),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, goredis.ErrPoolTimeout):
		return true
	}
	for _, p := range unavailablePrefixes {
		if goredis.HasErrorPrefix(err, p) {
			return true
		}
	}
	return false
}
