package redis

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/internal/bug"
	"github.com/convergo/convergo/stores"
)

var _ stores.Capturer = (*Store)(nil)

// CaptureReplica is the replica id of the stamps of captured changes. It
// is not a client-ownable id (those are 16 base32 characters, '_' and a
// device), so no client can write with it.
const CaptureReplica = "cap-redis"

// Defaults of the capture settings.
const (
	// DefaultCaptureInterval is how often reconciliation scans the app's
	// keys for writes that notifications missed.
	DefaultCaptureInterval = 30 * time.Second
	// DefaultCaptureScanCount is the COUNT of each SCAN step, and so
	// about how many keys one step queues.
	DefaultCaptureScanCount = 500
)

// CaptureRule makes the store capture writes that other programs make to
// plain Redis hashes into a collection (see doc.go, "# Capture").
type CaptureRule struct {
	// Collection is the collection the hashes' records belong to.
	Collection string
	// KeyPattern is the keys' pattern with exactly one '*', which stands
	// for the record id: "app:todo:*" captures app:todo:42 as record 42.
	// The id must be a valid record id, and no key of the store's own may
	// match: the text before '*' must not be "<KeyPrefix>{", begin with
	// it, or be a prefix of it (so "*:todo" and "<KeyPrefix>*" are
	// refused). Nor may a key match the patterns of two rules
	// (CaptureRule.overlaps): "app:*" beside "app:note:*" is refused.
	// Keys with a hash tag ("app:{todo}:*") keep their shadows in that
	// slot.
	KeyPattern string
	// Mirror writes every merged record of Collection back into its hash
	// (creating, updating and deleting fields and keys), so the app reads
	// what clients write. False means capture only.
	Mirror bool
}

func (r CaptureRule) validate(prefix string) error {
	if err := crdt.ValidateCollection(r.Collection); err != nil {
		return fmt.Errorf("capture rule %q: %w", r.KeyPattern, err)
	}
	if strings.Count(r.KeyPattern, "*") != 1 || strings.ContainsAny(r.KeyPattern, `?[]\`) {
		return fmt.Errorf("%w: capture key pattern %q: want exactly one '*' and no other glob characters", stores.ErrInvalid, r.KeyPattern)
	}
	// Every key of the store's own starts with <prefix>{. A pattern whose
	// text before '*' is a prefix of that ("*:x", "<prefix>*", a part of
	// the prefix) matches such keys too, with a '*' that begins inside
	// them: capture would read the store's hashes (another collection's
	// records, the shadows, recursively) as the app's, and the mirror
	// would write a record whose id a client chose ("{notes}:r") into
	// one of them.
	before, _, _ := strings.Cut(r.KeyPattern, "*")
	if own := prefix + "{"; strings.HasPrefix(own, before) || strings.HasPrefix(before, own) || strings.HasPrefix(r.KeyPattern, prefix+"convergo:") {
		return fmt.Errorf("%w: capture key pattern %q would match the store's own keys (%s...)", stores.ErrInvalid, r.KeyPattern, prefix+"{")
	}
	return nil
}

// overlaps reports whether some key matches both r's and q's patterns:
// their texts before '*' begin alike (one is a prefix of the other) and
// their texts after it end alike. Such a key would belong to two
// collections: capture gives it to the first rule, while the mirror of
// the other writes into it a record whose id a client chose ("note:1"
// of todos=app:*;mirror is app:note:1 of notes=app:note:*), so a writer of
// one collection would write another's data. Options.validate refuses
// such rules.
func (r CaptureRule) overlaps(q CaptureRule) bool {
	rb, ra, _ := strings.Cut(r.KeyPattern, "*")
	qb, qa, _ := strings.Cut(q.KeyPattern, "*")
	return (strings.HasPrefix(rb, qb) || strings.HasPrefix(qb, rb)) &&
		(strings.HasSuffix(ra, qa) || strings.HasSuffix(qa, ra))
}

// id returns the record id of key, or false when key does not match.
func (r CaptureRule) id(key string) (string, bool) {
	before, after, _ := strings.Cut(r.KeyPattern, "*")
	if len(key) < len(before)+len(after) || !strings.HasPrefix(key, before) || !strings.HasSuffix(key, after) {
		return "", false
	}
	return key[len(before) : len(key)-len(after)], true
}

func (r CaptureRule) key(id string) string { return strings.Replace(r.KeyPattern, "*", id, 1) }

//go:embed capture.lua
var captureSource string

var captureScript = goredis.NewScript(captureSource)

// hashTag returns what a key hashes by in a cluster: the text between its
// first '{' and the next '}' when not empty, else the whole key; and false
// for a key whose shadow cannot share its slot (no hash tag, and a '}').
func hashTag(key string) (string, bool) {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j], true
		}
	}
	if strings.IndexByte(key, '}') >= 0 {
		return "", false
	}
	return key, true
}

// shadowKey is <prefix>{<tag>}:cs:<key>, in the key's slot.
func (s *Store) shadowKey(key string) (string, bool) {
	tag, ok := hashTag(key)
	if !ok {
		return "", false
	}
	return s.prefix + "{" + tag + "}:cs:" + key, true
}

// capturer is the capture machinery of a store with capture rules.
type capturer struct {
	s        *Store
	rules    []CaptureRule
	interval time.Duration
	count    int

	mu  sync.Mutex
	reg *sinkReg
	// queue holds the keys to capture; true for a key whose captured
	// fields are to be offered again whatever the sink acknowledged
	// (reoffer).
	queue   map[string]bool
	wake    chan struct{} // a key was queued
	scan    chan struct{} // a reconciliation pass is wanted
	mirror  chan struct{} // a mirrored collection advanced
	started bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	now     func() time.Time

	// parked holds the parked collections (park.go), under mu.
	parked map[string]*parkedColl

	// lost is, per captured collection, its Meta.Lost as the last
	// reconciliation pass read it (scanLoop's alone).
	lost map[string]uint64

	// unmappable holds, under mu, the keys counted and logged as mapping
	// to no valid change, with the reason: a pass that meets one again
	// unchanged neither counts nor logs it (stores.CaptureCounts counts
	// writes, and a pass is none). A keyspace notification of a write to
	// it, or its capture, forgets it (written). Cleared when it reaches
	// maxUnmappableKeys: a key then counts once more.
	unmappable map[string]string
}

// maxUnmappableKeys bounds capturer.unmappable.
const maxUnmappableKeys = 1 << 16

// skipUnmappable reports whether key, which maps to no valid change for
// reason, is to be counted and logged: not when it was already, for the
// same reason, and not written since.
func (c *capturer) skipUnmappable(key, reason string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.unmappable[key] == reason {
		return false
	}
	if c.unmappable == nil || len(c.unmappable) >= maxUnmappableKeys {
		c.unmappable = map[string]string{}
	}
	c.unmappable[key] = reason
	return true
}

// written forgets that key was counted unmappable: it was written (a
// keyspace notification) or captured, and its next skip is a new write's.
func (c *capturer) written(key string) {
	c.mu.Lock()
	delete(c.unmappable, key)
	c.mu.Unlock()
}

// sinkReg is one registration of a sink.
type sinkReg struct {
	sink   stores.CaptureSink
	ctx    context.Context
	cancel context.CancelFunc
	calls  sync.WaitGroup
}

// ready asks the sink whether it takes changes now
// (stores.CaptureSink.CheckReady). Every pass that runs the capture
// script (a delivery, a mirror pass) asks it first, and on an error
// stamps nothing: a write stamped while the sink would not take it would
// keep that stamp.
func (r *sinkReg) ready() error {
	return r.sink.CheckReady(r.ctx)
}

// errNoSink fails a mirror pass while no sink is registered: it would
// capture what the app wrote with no sink to ask.
var errNoSink = errors.New("no capture sink registered")

// sinkReady asks the registered sink, as a sink call that stop waits
// for, whether it takes changes now; errNoSink when none is registered.
func (c *capturer) sinkReady() error {
	reg := c.acquire()
	if reg == nil {
		return errNoSink
	}
	defer reg.calls.Done()
	return reg.ready()
}

// acquire returns the registered sink, counted as a sink call that stop
// waits for until the caller calls reg.calls.Done(); nil when none is
// registered.
func (c *capturer) acquire() *sinkReg {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reg != nil {
		c.reg.calls.Add(1)
	}
	return c.reg
}

func newCapturer(s *Store, o Options) *capturer {
	return &capturer{
		s: s, rules: o.Capture, interval: o.CaptureInterval, count: o.CaptureScanCount,
		queue: map[string]bool{}, parked: map[string]*parkedColl{}, wake: make(chan struct{}, 1), scan: make(chan struct{}, 1),
		mirror: make(chan struct{}, 1), now: time.Now,
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Capture implements stores.Capturer. A store without capture rules
// captures nothing. The first registration starts the capture machinery
// (keyspace subscriptions on every master, reconciliation, the mirror);
// every registration runs a reconciliation pass, so writes made while no
// sink was registered are offered.
func (s *Store) Capture(sink stores.CaptureSink) (stop func()) {
	c := s.capture
	if sink.Apply == nil || c == nil || s.closed.Load() {
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	reg := &sinkReg{sink: sink, ctx: ctx, cancel: cancel}
	c.mu.Lock()
	old := c.reg
	c.reg = reg
	if !c.started {
		c.started = true
		rctx, rcancel := context.WithCancel(context.Background())
		c.cancel = rcancel
		c.wg.Add(3)
		go c.deliverLoop(rctx)
		go c.scanLoop(rctx)
		go c.mirrorLoop(rctx)
	}
	c.mu.Unlock()
	if old != nil {
		old.cancel()
	}
	signal(c.scan)
	signal(c.mirror) // a mirror pass held back while no sink was registered
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			if c.reg == reg {
				c.reg = nil
			}
			c.mu.Unlock()
			reg.cancel()
			reg.calls.Wait()
		})
	}
}

// close stops the machinery and waits for it.
func (c *capturer) close() {
	c.mu.Lock()
	cancel := c.cancel
	reg := c.reg
	c.reg = nil
	c.mu.Unlock()
	if reg != nil {
		reg.cancel()
	}
	if cancel != nil {
		cancel()
		c.wg.Wait()
	}
}

// enqueue queues app keys for capture.
func (c *capturer) enqueue(keys ...string) {
	c.mu.Lock()
	for _, k := range keys {
		if _, ok := c.queue[k]; !ok {
			c.queue[k] = false
		}
	}
	c.mu.Unlock()
	signal(c.wake)
}

// enqueueAgain queues app keys for capture, to offer again every field
// their shadows hold, acknowledged or not (reoffer).
func (c *capturer) enqueueAgain(keys ...string) {
	c.mu.Lock()
	for _, k := range keys {
		c.queue[k] = true
	}
	c.mu.Unlock()
	signal(c.wake)
}

func (c *capturer) queued() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue)
}

// take removes up to n keys from the queue, and returns those to offer
// again in again. A key of a parked collection joins its parked keys
// instead (park.go).
func (c *capturer) take(n int) (keys []string, again map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	keys = make([]string, 0, min(n, len(c.queue)))
	for k, re := range c.queue {
		if len(keys) == n {
			break
		}
		if c.divert(k, re) {
			delete(c.queue, k)
			continue
		}
		keys = append(keys, k)
		if re {
			if again == nil {
				again = map[string]bool{}
			}
			again[k] = true
		}
		delete(c.queue, k)
	}
	return keys, again
}

func (c *capturer) rule(key string) (CaptureRule, string, bool) {
	for _, r := range c.rules {
		if id, ok := r.id(key); ok {
			return r, id, true
		}
	}
	return CaptureRule{}, "", false
}

// pending is a captured change waiting for the sink: its key and the
// stamp to acknowledge.
type pending struct {
	key, shadow, token string
	change             crdt.Change
}

// captureFloor is the stamp (a time, no replica id) below which nothing
// the app wrote to the hash of a record holding held (its largest stamp)
// is stamped: the next time after it at the capturing server's wall time
// (crdt.Timestamp.Next), which the capture script raises further above
// what the shadow holds. A client's stamps may run up to the drift bound
// ahead of the server's clock; stamped with that clock alone, a plain
// write made after such a client write would lose to it.
func (c *capturer) captureFloor(held crdt.Stamp) (string, error) {
	at, err := held.Time().Next(c.now().UnixMilli())
	if err != nil {
		return "", err
	}
	return stampBytes(crdt.Stamp{Wall: at.Wall, Logical: at.Logical}), nil
}

// heldStamps reads the largest stamp each record of recs (collection and
// id) holds, in one round trip; the zero stamp for a record absent. A
// record that does not decode is reported corrupt and counts as absent:
// its capture is stamped with the clock and the shadow alone, as before
// the record was read, and the sink meets the corruption.
func (c *capturer) heldStamps(ctx context.Context, recs [][2]string) ([]crdt.Stamp, error) {
	s := c.s
	out := make([]crdt.Stamp, len(recs))
	if len(recs) == 0 {
		return out, nil
	}
	pipe := s.client.Pipeline()
	cmds := make([]*goredis.StringCmd, len(recs))
	for i, r := range recs {
		cmds[i] = pipe.HGet(ctx, s.recKey(r[0]), r[1])
	}
	_, _ = pipe.Exec(ctx)
	for i, cmd := range cmds {
		blob, err := cmd.Bytes()
		if errors.Is(err, goredis.Nil) {
			continue
		}
		if err != nil {
			return nil, s.fail(ctx, "capture: read "+recs[i][0]+"/"+recs[i][1], err)
		}
		_, rec, err := decodeBlob(recs[i][1], blob)
		if err != nil {
			s.corrupt(recs[i][0], recs[i][1], err)
			continue
		}
		out[i] = rec.MaxStamp()
	}
	return out, nil
}

// captureKeys runs the capture script on keys (mode c, or r for those in
// again), each stamping after what its record holds (captureFloor), and
// returns the changes pending for the sink.
func (c *capturer) captureKeys(ctx context.Context, keys []string, again map[string]bool) ([]pending, error) {
	s := c.s
	type call struct {
		key, shadow string
		rule        CaptureRule
		id, mode    string
		floor       string
		cmd         *goredis.Cmd
	}
	var calls []call
	var recs [][2]string
	for _, k := range keys {
		r, id, ok := c.rule(k)
		if !ok {
			continue
		}
		sh, ok := s.shadowKey(k)
		if !ok || crdt.ValidateID(id) != nil {
			if c.skipUnmappable(k, "id") {
				s.stats.captureSkips.Add(1)
				s.log.Warn("capture: key skipped: its record id is invalid or its shadow cannot share its cluster slot", "key", k)
			}
			continue
		}
		mode := "c"
		if again[k] {
			mode = "r"
		}
		calls = append(calls, call{key: k, shadow: sh, rule: r, id: id, mode: mode})
		recs = append(recs, [2]string{r.Collection, id})
	}
	if len(calls) == 0 {
		return nil, nil
	}
	held, err := c.heldStamps(ctx, recs)
	if err != nil {
		return nil, err
	}
	pipe := s.client.Pipeline()
	for i := range calls {
		cl := &calls[i]
		if cl.floor, err = c.captureFloor(held[i]); err != nil {
			return nil, fmt.Errorf("capture %s: %w", cl.key, err)
		}
		cl.cmd = captureScript.EvalSha(ctx, pipe, []string{cl.key, cl.shadow}, cl.floor, cl.rule.Collection, CaptureReplica, cl.mode)
	}
	_, _ = pipe.Exec(ctx)
	var out []pending
	for _, cl := range calls {
		res, err := cl.cmd.Slice()
		if err != nil && goredis.HasErrorPrefix(err, "NOSCRIPT") {
			res, err = captureScript.Run(ctx, s.client, []string{cl.key, cl.shadow}, cl.floor, cl.rule.Collection, CaptureReplica, cl.mode).Slice()
		}
		if err != nil {
			return nil, s.fail(ctx, "capture "+cl.key, err)
		}
		p, ok := c.pendingOf(cl.key, cl.shadow, cl.rule.Collection, cl.id, res)
		if ok {
			out = append(out, p)
		}
	}
	return out, nil
}

// pendingOf reads the capture script's reply into a pending change.
func (c *capturer) pendingOf(key, shadow, coll, id string, res []any) (pending, bool) {
	s := c.s
	if len(res) >= 2 && res[0] == "skip" {
		if c.skipUnmappable(key, "type") {
			s.stats.captureSkips.Add(1)
			s.log.Warn("capture: key skipped: not a hash", "key", key, "type", res[1])
		}
		return pending{}, false
	}
	c.written(key) // a hash now: a later skip is a new write's
	if len(res) < 3 {
		return pending{}, false
	}
	token, _ := res[1].(string)
	if token == "" {
		return pending{}, false
	}
	del, _ := res[2].(string)
	rec := crdt.Record{ID: id, Deleted: readStamp(del)}
	for i := 3; i+2 < len(res); i += 3 {
		name, _ := res[i].(string)
		raw, _ := res[i+1].(string)
		st := readStamp(raw)
		if err := crdt.ValidateFieldName(name); err != nil {
			s.stats.captureSkips.Add(1)
			s.log.Warn("capture: field skipped: invalid name", "key", key, "field", name)
			continue
		}
		f := crdt.Field{Stamp: st}
		if v, ok := res[i+2].(string); ok {
			var enc []byte
			var err error
			if utf8.ValidString(v) {
				enc, err = crdt.EncodeValue(v)
			} else {
				enc, err = crdt.EncodeValue([]byte(v))
			}
			if err != nil {
				continue
			}
			f.Value = enc
		}
		if rec.Fields == nil {
			rec.Fields = map[string]crdt.Field{}
		}
		rec.Fields[name] = f
	}
	return pending{key: key, shadow: shadow, token: token, change: crdt.Change{Collection: coll, Record: rec}}, true
}

func readStamp(b string) crdt.Stamp {
	r := blobReader{b: []byte(b)}
	st := r.stamp()
	if r.err != nil {
		return crdt.Stamp{}
	}
	return st
}

// deliverLoop takes queued keys, captures them and hands the pending
// changes to the sink; a key whose delivery failed is queued again.
func (c *capturer) deliverLoop(ctx context.Context) {
	defer c.wg.Done()
	backoff := 100 * time.Millisecond
	for {
		due := c.tryParked()
		if c.queued() == 0 {
			var retry <-chan time.Time
			var timer *time.Timer
			if due > 0 {
				timer = time.NewTimer(due) // a parked collection's next try
				retry = timer.C
			}
			select {
			case <-ctx.Done():
			case <-c.wake:
			case <-retry:
			}
			if timer != nil {
				timer.Stop()
			}
			if ctx.Err() != nil {
				return
			}
			continue
		}
		reg := c.acquire()
		if reg == nil {
			select { // no sink: wait for one (Capture signals scan, which queues)
			case <-ctx.Done():
				return
			case <-c.wake:
			}
			continue
		}
		keys, again := c.take(stores.MaxBatch)
		if len(keys) == 0 {
			reg.calls.Done()
			continue // every key taken was parked
		}
		// A bug (a panic) met on what the app wrote fails the delivery
		// as a Redis error does, on this goroutine no one else recovers:
		// the keys are delivered again, never dropped.
		err := bug.Recovered(func() error { return c.deliver(reg, keys, again) })
		reg.calls.Done()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, bug.ErrPanic) {
				c.s.log.Error("capture: delivery failed (a bug); retrying", "keys", len(keys), "err", err)
			} else {
				c.s.log.Warn("capture: delivery failed; retrying", "keys", len(keys), "err", err)
			}
			for _, k := range keys {
				if again[k] {
					c.enqueueAgain(k)
				} else {
					c.enqueue(k)
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
	}
}

// deliver captures keys and offers their changes to the sink of reg: for
// the keys in again, every field their shadows hold.
func (c *capturer) deliver(reg *sinkReg, keys []string, again map[string]bool) error {
	ctx := reg.ctx
	// Stamp nothing the sink would not take now (stores.CaptureSink):
	// the keys are queued again, their writes left in the hashes.
	if err := reg.ready(); err != nil {
		return err
	}
	ps, err := c.captureKeys(ctx, keys, again)
	if err != nil {
		return err
	}
	// The parked collections being tried whose keys the sink takes now
	// (or that gave no change) leave the parked state.
	colls := map[string]bool{}
	for _, k := range keys {
		if r, _, ok := c.rule(k); ok {
			colls[r.Collection] = true
		}
	}
	if len(ps) == 0 {
		c.unpark(colls)
		return nil
	}
	changes := make([]crdt.Change, len(ps))
	for i, p := range ps {
		changes[i] = p.change
	}
	res, err := reg.sink.Apply(ctx, changes)
	if err != nil {
		if ctx.Err() != nil || reg.ready() != nil {
			return err // not now for every collection: the keys are queued again
		}
		if err := c.split(ctx, reg, ps, again, err); err != nil {
			return err
		}
		c.mu.Lock()
		for coll := range colls {
			if p := c.parked[coll]; p != nil && !p.trying {
				delete(colls, coll) // failed again
			}
		}
		c.mu.Unlock()
		c.unpark(colls)
		return nil
	}
	if len(res) != len(ps) {
		return fmt.Errorf("capture sink returned %d results for %d changes", len(res), len(ps))
	}
	if err := c.acknowledge(ctx, ps, res); err != nil {
		return err
	}
	c.unpark(colls)
	return nil
}

// acknowledge counts and logs the sink's results for ps and acknowledges
// their stamps in the shadows.
func (c *capturer) acknowledge(ctx context.Context, ps []pending, res []stores.CaptureResult) error {
	pipe := c.s.client.Pipeline()
	for i, p := range ps {
		if res[i].Err != nil {
			c.s.stats.captureRefused.Add(1)
			c.s.log.Warn("capture: change refused; skipped", "key", p.key, "collection", p.change.Collection, "record", p.change.Record.ID, "err", res[i].Err)
		} else {
			c.s.stats.captured.Add(1)
		}
		captureScript.EvalSha(ctx, pipe, []string{p.key, p.shadow}, 0, "", "", "a", p.token)
	}
	cmds, _ := pipe.Exec(ctx)
	for i, cmd := range cmds {
		if err := cmd.Err(); err != nil {
			if goredis.HasErrorPrefix(err, "NOSCRIPT") {
				p := ps[i]
				err = captureScript.Run(ctx, c.s.client, []string{p.key, p.shadow}, 0, "", "", "a", p.token).Err()
			}
			if err != nil {
				return c.s.fail(ctx, "acknowledge capture", err) // offered again: a no-op
			}
		}
	}
	return nil
}

// masters calls fn on the server, or on every master of a cluster.
func (s *Store) masters(ctx context.Context, fn func(ctx context.Context, c *goredis.Client) error) error {
	switch c := s.client.(type) {
	case *goredis.ClusterClient:
		return c.ForEachMaster(ctx, fn)
	case *goredis.Client:
		return fn(ctx, c)
	}
	return errors.New("the store needs a *redis.Client or *redis.ClusterClient here")
}

// scanLoop keeps a keyspace subscription on every master and runs a
// reconciliation pass at start, every interval, after any subscription
// (re)subscribed, and when Capture asks.
func (c *capturer) scanLoop(ctx context.Context) {
	defer c.wg.Done()
	subs := map[string]context.CancelFunc{}
	var subsMu sync.Mutex
	var subWG sync.WaitGroup
	defer func() {
		for _, cancel := range subs {
			cancel()
		}
		subWG.Wait()
	}()
	// A new epoch is told as a Resync: a pass then finds the collections
	// that lost history (reconcile).
	stop := c.s.watchers.Add(func(n stores.Notification) {
		if n.Resync {
			signal(c.scan)
		}
	})
	defer stop()
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		// Subscribe on masters not yet subscribed (a cluster may have
		// gained some).
		// (ForEachMaster calls fn concurrently.)
		_ = c.s.masters(ctx, func(_ context.Context, node *goredis.Client) error {
			addr := node.Options().Addr
			subsMu.Lock()
			defer subsMu.Unlock()
			if _, ok := subs[addr]; ok {
				return nil
			}
			c.enableNotifications(ctx, node)
			sctx, cancel := context.WithCancel(ctx)
			subs[addr] = cancel
			subWG.Add(1)
			go func() {
				defer subWG.Done()
				defer cancel()
				c.keyspace(sctx, node)
			}()
			return nil
		})
		if err := c.reconcile(ctx); err != nil && ctx.Err() == nil {
			c.s.log.Warn("capture: reconciliation failed; next pass at the interval", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.scan:
		}
	}
}

// keyspaceFlags are the notify-keyspace-events classes capture needs:
// keyspace events (K) for generic commands (g: DEL, RENAME, ...), hashes
// (h), expiry (x) and eviction (e).
const keyspaceFlags = "Kghxe"

// enableNotifications adds what capture needs to the node's
// notify-keyspace-events. Where CONFIG is forbidden the operator sets it;
// without it, reconciliation alone captures, at its interval.
func (c *capturer) enableNotifications(ctx context.Context, node *goredis.Client) {
	cur, err := node.ConfigGet(ctx, "notify-keyspace-events").Result()
	if err != nil {
		c.s.log.Warn("capture: cannot read notify-keyspace-events; set it to include "+keyspaceFlags+", or changes wait for reconciliation", "node", node.Options().Addr, "err", err)
		return
	}
	flags := cur["notify-keyspace-events"]
	want := flags
	for _, f := range keyspaceFlags {
		if f != 'K' && strings.ContainsRune(flags, 'A') {
			continue
		}
		if !strings.ContainsRune(want, f) {
			want += string(f)
		}
	}
	if want == flags {
		return
	}
	if err := node.ConfigSet(ctx, "notify-keyspace-events", want).Err(); err != nil {
		c.s.log.Warn("capture: cannot set notify-keyspace-events; set it to include "+keyspaceFlags+", or changes wait for reconciliation", "node", node.Options().Addr, "err", err)
		return
	}
	c.s.log.Info("capture: enabled keyspace notifications", "node", node.Options().Addr, "was", flags, "now", want)
}

// keyspace subscribes to the keyspace events of the rules' keys on one
// node until ctx is done. Every (re)subscription asks for a
// reconciliation pass: events are at-most-once.
func (c *capturer) keyspace(ctx context.Context, node *goredis.Client) {
	db := node.Options().DB
	chPrefix := fmt.Sprintf("__keyspace@%d__:", db)
	patterns := make([]string, len(c.rules))
	for i, r := range c.rules {
		patterns[i] = chPrefix + r.KeyPattern
	}
	ps := node.PSubscribe(ctx, patterns...)
	defer ps.Close()
	// The first reply is read here, where a refusal can be told (the
	// channel below drops errors): an ACL user without PSUBSCRIBE or the
	// channel of a pattern as written is refused, and captured writes
	// then wait for reconciliation.
	first := true
	confirmed := func(m *goredis.Subscription) {
		if m.Kind != "psubscribe" || m.Count != len(patterns) {
			return
		}
		if !first {
			// A re-subscription: the server may have restarted and
			// forgotten notify-keyspace-events.
			c.enableNotifications(ctx, node)
		}
		first = false
		// The node may have restarted, or be a replica that took over,
		// and lost writes: the app's hashes and shadows it holds, or
		// records of collections whose keys live there. No other
		// connection of the store need break (on a cluster the
		// notification subscription and the collections' keys may be on
		// other masters), so the servers' run is checked here, and a
		// new epoch makes the pass below offer captured changes again
		// and the mirror walk its collections again (reconcile,
		// mirrorLoop).
		if err := c.s.checkRun(ctx); err != nil && ctx.Err() == nil {
			c.s.log.Warn("capture: check the servers' run after subscribing to keyspace notifications", "node", node.Options().Addr, "err", err)
		}
		// Writes went unnotified until now: before a re-subscription,
		// and on the first one between the pass that may have run before
		// it was confirmed and its confirmation.
		signal(c.scan)
	}
	switch m, err := ps.Receive(ctx); {
	case err != nil && ctx.Err() == nil:
		c.s.log.Warn("capture: subscribing to keyspace notifications failed; changes wait for reconciliation (an ACL user needs psubscribe and the channel of each pattern as written, docs/redis.md)",
			"node", node.Options().Addr, "patterns", patterns, "err", err)
	case err == nil:
		if sub, ok := m.(*goredis.Subscription); ok {
			confirmed(sub)
		}
	}
	msgs := ps.ChannelWithSubscriptions(goredis.WithChannelSize(subscriberBuffer))
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-msgs:
			if !ok {
				return
			}
			switch m := m.(type) {
			case *goredis.Subscription:
				confirmed(m)
			case *goredis.Message:
				if k, ok := strings.CutPrefix(m.Channel, chPrefix); ok {
					c.written(k)
					c.enqueue(k)
				}
			}
		}
	}
}

// reconcile scans every master for the rules' keys and for shadows (whose
// key may be gone) and queues them; it waits while the queue is long, so
// one pass never holds more than a few thousand keys.
//
// A collection that lost history since the last pass (its Meta.Lost
// moved: a restart or failover that lost writes, a restore) may have lost
// captured changes that the sink acknowledged, while the app's hashes,
// and their shadows, still hold them: on a cluster the shadows live in
// the keys' slots, on other masters than the collection's. So its keys
// are queued to offer again every field their shadows hold; the changes
// the collection kept are no-ops.
func (c *capturer) reconcile(ctx context.Context) error {
	lost, again, err := c.lostSince(ctx)
	if err != nil {
		// The pass captures all the same; the collections that lost
		// history are found by the next pass that reads their epochs.
		c.s.log.Warn("capture: reconciliation cannot tell which collections lost history; next pass at the interval", "err", err)
	}
	queue := func(keys []string) {
		var re, plain []string
		for _, k := range keys {
			if r, _, ok := c.rule(k); ok && again[r.Collection] {
				re = append(re, k)
			} else {
				plain = append(plain, k)
			}
		}
		c.enqueueAgain(re...)
		c.enqueue(plain...)
	}
	shadowMatch := globEscape(c.s.prefix) + "{*}:cs:*"
	err = c.s.masters(ctx, func(ctx context.Context, node *goredis.Client) error {
		for _, match := range append([]string{shadowMatch}, c.patterns()...) {
			var cursor uint64
			for {
				keys, next, err := node.Scan(ctx, cursor, match, int64(c.count)).Result()
				if err != nil {
					return err
				}
				for i, k := range keys {
					if match == shadowMatch {
						_, app, _ := strings.Cut(k, "}:cs:")
						keys[i] = app
					}
				}
				queue(keys)
				for c.queued() > 4*stores.MaxBatch {
					select {
					case <-ctx.Done():
						return ctx.Err()
					case <-time.After(10 * time.Millisecond):
					}
				}
				cursor = next
				if cursor == 0 {
					break
				}
			}
		}
		return nil
	})
	if err != nil {
		return err // the next pass offers again what this one may not have queued
	}
	if lost != nil {
		c.lost = lost
	}
	return nil
}

// lostSince reads Meta.Lost of every captured collection and returns it,
// and the collections whose Lost moved since the last pass read it.
func (c *capturer) lostSince(ctx context.Context) (lost map[string]uint64, again map[string]bool, err error) {
	lost = map[string]uint64{}
	for _, r := range c.rules {
		if _, ok := lost[r.Collection]; ok {
			continue
		}
		m, err := c.s.Meta(ctx, r.Collection)
		if err != nil {
			return nil, nil, fmt.Errorf("capture: read the epoch of %s: %w", r.Collection, err)
		}
		lost[r.Collection] = m.Lost
		if was, ok := c.lost[r.Collection]; ok && was != m.Lost {
			if again == nil {
				again = map[string]bool{}
			}
			again[r.Collection] = true
		}
	}
	return lost, again, nil
}

func (c *capturer) patterns() []string {
	out := make([]string, len(c.rules))
	for i, r := range c.rules {
		out[i] = r.KeyPattern
	}
	return out
}

// mirrorLoop writes the merged records of mirrored collections back into
// their hashes: it pulls each such collection from its cursor whenever the
// store's watchers hear it advanced (and at start, from 0).
func (c *capturer) mirrorLoop(ctx context.Context) {
	defer c.wg.Done()
	mirrored := map[string]CaptureRule{}
	for _, r := range c.rules {
		if r.Mirror {
			mirrored[r.Collection] = r
		}
	}
	if len(mirrored) == 0 {
		return
	}
	stop := c.s.watchers.Add(func(n stores.Notification) {
		if _, ok := mirrored[n.Collection]; ok || n.Resync {
			signal(c.mirror)
		}
	})
	defer stop()
	cursors := map[string]uint64{}
	// lost is each collection's Meta.Lost as last read: when it moves
	// the collection lost history, and the hashes may have lost what was
	// mirrored into them (on a cluster they live on other masters than
	// the collection), so the mirror walks it again from the start.
	lost := map[string]uint64{}
	tick := time.NewTicker(c.interval)
	defer tick.Stop()
	for {
		for coll, r := range mirrored {
			m, err := c.s.Meta(ctx, coll)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				c.s.log.Warn("mirror: read the epoch; retrying", "collection", coll, "err", err)
				continue
			}
			if was, ok := lost[coll]; ok && was != m.Lost {
				cursors[coll] = 0
			}
			lost[coll] = m.Lost
			// A bug (a panic) met on what clients wrote fails the pass as
			// a Redis error does: the collection is mirrored again from
			// where it was.
			var next uint64
			err = bug.Recovered(func() (err error) {
				next, err = c.mirrorCollection(ctx, r, cursors[coll])
				return err
			})
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				switch {
				case errors.Is(err, errNoSink):
					// Mirrored again once a sink registers (Capture signals).
				case errors.Is(err, bug.ErrPanic):
					c.s.log.Error("mirror: failed (a bug); retrying", "collection", coll, "err", err)
				default:
					c.s.log.Warn("mirror: failed; retrying", "collection", coll, "err", err)
				}
				continue
			}
			cursors[coll] = next
		}
		select {
		case <-ctx.Done():
			return
		case <-c.mirror:
		case <-tick.C:
		}
	}
}

// mirrorCollection mirrors the records of r's collection after cursor and
// returns the new cursor.
func (c *capturer) mirrorCollection(ctx context.Context, r CaptureRule, cursor uint64) (uint64, error) {
	s := c.s
	if head, err := s.Head(ctx, r.Collection); err != nil {
		return cursor, err
	} else if head < cursor {
		cursor = 0 // the log went back: mirror everything again
	}
	for {
		page, err := s.Pull(ctx, r.Collection, cursor, stores.PageLimit{Records: 256, Bytes: stores.DefaultPageBytes})
		if err != nil {
			return cursor, err
		}
		// The script captures what the app wrote to a hash before it
		// mirrors into it: stamp nothing the sink would not take now.
		// The pass fails and is retried from cursor at the next one
		// (CaptureInterval, or when the collection advances); the app's
		// writes stay in their hashes, for the capture to stamp once the
		// sink takes them.
		if err := c.sinkReady(); err != nil {
			return cursor, fmt.Errorf("mirror %s: held back: %w", r.Collection, err)
		}
		for _, e := range page.Entries {
			key := r.key(e.Record.ID)
			sh, ok := s.shadowKey(key)
			if !ok {
				continue
			}
			floor, err := c.captureFloor(e.Record.MaxStamp())
			if err != nil {
				return cursor, fmt.Errorf("mirror %s: %w", key, err)
			}
			args := []any{floor, r.Collection, CaptureReplica, "m", stampBytes(e.Record.Deleted)}
			for name, f := range e.Record.Fields {
				v := "0"
				if f.Value != nil {
					v = "1" + mirrorValue(f.Value)
				}
				args = append(args, name, stampBytes(f.Stamp), v)
			}
			res, err := captureScript.Run(ctx, s.client, []string{key, sh}, args...).Slice()
			if err != nil {
				return cursor, s.fail(ctx, "mirror "+key, err)
			}
			s.stats.mirrored.Add(1)
			if len(res) >= 2 && res[1] != "" {
				c.enqueue(key) // the app wrote meanwhile: captured, deliver it
			}
			cursor = e.Seq
		}
		if !page.More {
			return cursor, nil
		}
	}
}

func stampBytes(st crdt.Stamp) string { return string(appendStamp(nil, st)) }

// mirrorValue is the text a value is mirrored as: text and bytes as they
// are, anything else (numbers, booleans, null, arrays, maps) as JSON.
func mirrorValue(v []byte) string {
	var x any
	if err := crdt.DecodeValue(v, &x); err != nil {
		return string(v)
	}
	switch x := x.(type) {
	case string:
		return x
	case []byte:
		return string(x)
	}
	b, err := json.Marshal(x)
	if err != nil {
		return string(v)
	}
	return string(b)
}

// globEscape escapes the glob characters of s for SCAN MATCH.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
