package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/internal/bug"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/transport/proto"
)

// DefaultPollInterval is how often the engine checks the heads of subscribed
// collections when no notification arrives.
const DefaultPollInterval = 5 * time.Second

// Config configures an Engine.
type Config struct {
	// Store holds the state. Required. The engine does not close it.
	Store stores.Store
	// Replica is the id the engine stamps its own writes with. Empty means a
	// random id "srv-" + 12 hex digits; server instances sharing one store
	// must not share an id.
	Replica string
	// MaxDrift bounds how far ahead of the server's clock an incoming stamp
	// may be. Zero means crdt.DefaultMaxDrift.
	MaxDrift time.Duration
	// Now reads the wall clock. Nil means time.Now.
	Now func() time.Time
	// PollInterval is how often subscribed collections' heads are checked
	// when no notification arrives. Zero means DefaultPollInterval; negative
	// disables polling.
	PollInterval time.Duration
	// Logger receives the engine's logs. Nil discards them.
	Logger *slog.Logger
	// Quotas bound what collections may hold (Quota); empty means none.
	// They need a store that keeps usage (stores.Usager): Open fails
	// otherwise.
	Quotas []Quota
	// Rules are the collection rules (Rule, ParseRules): read and write
	// scopes for the layer that knows principals, schemas and validation
	// functions that Apply enforces. Empty means none.
	Rules []Rule
	// CollectEvery is how often the tombstone collection job runs
	// (Collect) when a rule has a MaxOffline. Zero means
	// DefaultCollectEvery; negative never runs it (Collect may still be
	// called).
	CollectEvery time.Duration
	// CollectGrace is how long Collect waits between publishing a horizon
	// and purging under it, so that every instance on the store enforces
	// it first: each reads a published horizon again at least every
	// DefaultPollInterval. Zero means twice DefaultPollInterval; negative
	// means no wait (one instance alone, tests). A positive grace below
	// twice DefaultPollInterval is not enough for instances that read a
	// horizon that often: only for one instance, or tests.
	CollectGrace time.Duration
	// MaxLeasesPerSubject bounds the live leases one subject (the owner
	// of the replicas, proto.PrefixOf) holds on one collection: a
	// collection run keeps its most recently seen ones and removes the
	// others, and between runs the engine writes at most as many new
	// leases of it per collection and CollectEvery (NoteLease). Zero
	// means proto.DefaultMaxLeasesPerSubject; it must not be negative.
	// Leases of collections never written are also held, across them, to
	// proto.MaxUnwrittenLeasesPerSubject, which is not configurable.
	MaxLeasesPerSubject int
	// ClockCheckEvery is how often the engine checks its clock (Now)
	// against the store's, on a store with one (StoreClock, CheckClock):
	// Open checks once (waiting at most clockCheckTimeout for the store),
	// then every ClockCheckEvery. Zero means
	// DefaultClockCheckEvery; negative means no check but CheckClock's
	// (tests that run the engine on a clock of their own).
	ClockCheckEvery time.Duration
}

// Status is the outcome of one change of an Apply call, numbered as on the
// wire (proto.Status): applied, duplicate, superseded or refused.
type Status = proto.Status

// The statuses of a Result.
const (
	// StatusApplied means the change altered its record; Result.Lost lists
	// fields of it that newer writes beat.
	StatusApplied = proto.StatusApplied
	// StatusDuplicate means the record already held every stamp of the
	// change.
	StatusDuplicate = proto.StatusDuplicate
	// StatusSuperseded means the change altered nothing because newer
	// writes won; Result.Lost lists the fields of it that lost.
	StatusSuperseded = proto.StatusSuperseded
	// StatusRefused means the change was not applied; Result.Err says why.
	StatusRefused = proto.StatusRefused
)

// Result is the outcome of one change.
type Result struct {
	Status Status
	// Seq is the record's sequence number after the change (applied,
	// duplicate or superseded).
	Seq uint64
	// Lost names, sorted, the fields of the change that newer writes beat
	// (stores.Result.Lost).
	Lost []string
	// Err says why a change was refused; it wraps crdt.ErrClockDrift,
	// ErrInvalid, ErrTooLarge (the same errors as crdt's and the stores'),
	// ErrQuotaExceeded, ErrOutOfScope, ErrSchema or ErrCollected.
	Err error
}

// Engine applies, serves and announces changes on one store. It is safe for
// concurrent use.
type Engine struct {
	store    stores.Store
	now      func() time.Time
	log      *slog.Logger
	poll     time.Duration
	mu       sync.Mutex             // guards clocks
	clocks   map[string]*crdt.Clock // one per collection; see clockOf
	replica  string
	maxDrift time.Duration
	commits  commitHealth
	// migrationDrops counts fields translations of stored records left
	// out (MigrationDrops).
	migrationDrops atomic.Uint64
	// wentBackCount counts the new epochs wentBack started (StoreWentBack).
	wentBackCount atomic.Uint64
	served        servedHistories
	quotas        []Quota
	usager        stores.Usager
	// counted holds collections known counted under their quota's
	// MaxCollections (countCollection).
	countedMu sync.Mutex
	counted   map[string]bool
	rules     []Rule
	subsMu    sync.Mutex
	subs      map[string]map[*Subscription]struct{}
	stopWat   func()
	// stopCapture ends the store's capture of other programs' writes, which
	// the engine admits like any push (applyCaptured); nil without one.
	stopCapture func()
	resync      chan struct{}
	// hist caches the store's identity and epochs and notes heads, to
	// reset readers of another history (reset.go).
	hist history
	// witnessMu makes the proofs that the store went back (wentBack)
	// take turns, so that readers coming back at once start one new
	// epoch, not one each.
	witnessMu sync.Mutex
	// hz caches published horizons and written leases (horizon.go).
	hz horizons
	// reads shares the identical store reads of pulls at once (logreads.go).
	reads        logReads
	grace        time.Duration
	collectEvery time.Duration
	maxLeases    int // Config.MaxLeasesPerSubject
	// clockEvery is Config.ClockCheckEvery; clock what the last check
	// found (clock.go).
	clockEvery time.Duration
	clockMu    sync.Mutex
	clock      clockState
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	closeMu    sync.Once
	closedCh   chan struct{}
}

// Open starts an engine on cfg.Store.
func Open(cfg Config) (*Engine, error) {
	if cfg.Store == nil {
		return nil, errors.New("engine: Config.Store is required")
	}
	if cfg.Replica == "" {
		var b [6]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("engine: replica id: %w", err)
		}
		cfg.Replica = "srv-" + hex.EncodeToString(b[:])
	}
	if cfg.MaxDrift == 0 {
		cfg.MaxDrift = crdt.DefaultMaxDrift
	}
	if _, err := crdt.NewClock(crdt.ClockConfig{Replica: cfg.Replica, MaxDrift: cfg.MaxDrift}); err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	usager, err := validateQuotas(cfg.Quotas, cfg.Store)
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	if err := validateRules(cfg.Rules); err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	switch {
	case cfg.CollectGrace == 0:
		cfg.CollectGrace = 2 * historyTTL
	case cfg.CollectGrace < 0:
		cfg.CollectGrace = 0
	}
	if cfg.CollectEvery == 0 {
		cfg.CollectEvery = DefaultCollectEvery
	}
	switch {
	case cfg.MaxLeasesPerSubject == 0:
		cfg.MaxLeasesPerSubject = proto.DefaultMaxLeasesPerSubject
	case cfg.MaxLeasesPerSubject < 0:
		return nil, fmt.Errorf("engine: MaxLeasesPerSubject %d: negative", cfg.MaxLeasesPerSubject)
	}
	if cfg.ClockCheckEvery == 0 {
		cfg.ClockCheckEvery = DefaultClockCheckEvery
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Engine{
		store:    cfg.Store,
		now:      cfg.Now,
		log:      cfg.Logger.With("component", "engine"),
		poll:     cfg.PollInterval,
		clocks:   map[string]*crdt.Clock{},
		replica:  cfg.Replica,
		maxDrift: cfg.MaxDrift,
		quotas:   cfg.Quotas,
		usager:   usager,
		rules:    cfg.Rules,
		subs:     map[string]map[*Subscription]struct{}{},
		resync:   make(chan struct{}, 1),
		cancel:   cancel,
		closedCh: make(chan struct{}),

		grace:        cfg.CollectGrace,
		collectEvery: cfg.CollectEvery,
		maxLeases:    cfg.MaxLeasesPerSubject,
		clockEvery:   cfg.ClockCheckEvery,
	}
	// The clock is checked before anything is served: an instance whose
	// clock is off says so from its first request.
	if every := e.ClockCheckEvery(); every > 0 {
		e.checkClockNow(ctx)
		e.every(ctx, every, e.checkClockNow)
	} else if _, ok := cfg.Store.(StoreClock); !ok {
		e.log.Info("the store runs in this process, on its clock: the server's clock is not checked against it")
	}
	e.stopWat = cfg.Store.Watch(e.storeNotified)
	if c, ok := cfg.Store.(stores.Capturer); ok {
		e.stopCapture = c.Capture(stores.CaptureSink{Apply: e.applyCaptured, Ready: e.takesCaptured})
	}
	e.wg.Add(1)
	go e.watchLoop(ctx)
	if e.collectEvery > 0 && e.collecting() {
		e.every(ctx, e.collectEvery, e.collectOnce)
	}
	return e, nil
}

// Close stops the engine's goroutines and closes every subscription. It
// does not close the store.
func (e *Engine) Close() error {
	e.closeMu.Do(func() {
		if e.stopCapture != nil {
			e.stopCapture()
		}
		close(e.closedCh)
		e.stopWat()
		e.cancel()
		e.wg.Wait()
		e.subsMu.Lock()
		var subs []*Subscription
		for _, set := range e.subs {
			for s := range set {
				subs = append(subs, s)
			}
		}
		e.subs = map[string]map[*Subscription]struct{}{}
		e.subsMu.Unlock()
		for _, s := range subs {
			s.end(true) // a callback is called without subsMu
		}
	})
	return nil
}

// ParkedCaptures returns the captured writes the store holds back now
// (stores.CaptureParker): writes of collections whose changes Apply fails
// for now, a reshard's fence say, retried by the store while capture goes
// on for the others. Nil when the store parks nothing or cannot.
func (e *Engine) ParkedCaptures() []stores.ParkedCapture {
	if p, ok := e.store.(stores.CaptureParker); ok {
		return p.ParkedCaptures()
	}
	return nil
}

// ParkedCount is len(ParkedCaptures()), without building the list: for
// metrics and /readyz.
func (e *Engine) ParkedCount() int {
	if p, ok := e.store.(stores.CaptureParker); ok {
		return p.ParkedCount()
	}
	return 0
}

// CaptureCounts returns what the store's capture did since it opened
// (stores.CaptureCounter), for metrics: zero when the store captures
// nothing or does not count.
func (e *Engine) CaptureCounts() stores.CaptureCounts {
	if c, ok := e.store.(stores.CaptureCounter); ok {
		return c.CaptureCounts()
	}
	return stores.CaptureCounts{}
}

// SharedPulls returns how many store reads of a log pulls have not made
// since Open because they shared an identical read another pull began
// (the live subscribers of a collection under many scopes, woken by one
// write: logReads).
func (e *Engine) SharedPulls() uint64 { return e.reads.shared.Load() }

// Replica returns the id the engine stamps its own writes with.
func (e *Engine) Replica() string { return e.replica }

func (e *Engine) wall() int64 { return e.now().UnixMilli() }

// maxClocks bounds the collections whose clocks the engine keeps.
const maxClocks = 1 << 16

// clockOf returns the clock of collection. Each collection has its own, so
// a stamp accepted in one collection (a minute ahead, say, within
// MaxDrift) moves only that collection's clock: the server's own writes to
// other collections, which may be another tenant's, keep wall time. Past
// maxClocks collections an arbitrary clock is dropped; its collection
// starts a new one at wall time, which costs nothing but order: a server
// write there may then sort below a stamp the dropped clock had observed,
// exactly as a write from another server instance on the same store may.
// Called with e.mu held.
func (e *Engine) clockOf(collection string) *crdt.Clock {
	if c, ok := e.clocks[collection]; ok {
		return c
	}
	if len(e.clocks) >= maxClocks {
		for k := range e.clocks {
			delete(e.clocks, k)
			break
		}
	}
	c, _ := crdt.NewClock(crdt.ClockConfig{Replica: e.replica, MaxDrift: e.maxDrift}) // validated in Open
	e.clocks[collection] = c
	return c
}

// Now issues a stamp for a write the server itself makes to collection.
func (e *Engine) Now(collection string) (crdt.Stamp, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.clockOf(collection).Now(e.wall())
}

// ServerTime returns the server's wall time in milliseconds, for clients
// correcting their clock skew.
func (e *Engine) ServerTime() int64 { return e.wall() }

// MaxDrift returns the bound on incoming stamps.
func (e *Engine) MaxDrift() time.Duration { return e.maxDrift }

// Apply applies changes, any number of them. Each change is checked and its
// stamps observed on its own: a refused change (a stamp beyond MaxDrift, an
// invalid name, a record that would grow past a limit) is reported in its
// Result while the rest apply. The error is for the call as a whole (a store
// failure, a cancelled context); after it the caller retries the call, which
// is safe: Apply is idempotent.
//
// The engine is the one place that fits changes to a store: it cuts them
// into batches of at most stores.MaxBatch and, when a store refuses a batch
// whole (stores.ErrTooLarge, stores.ErrInvalid), splits it until the
// refusal lands on the change that caused it. Transport and clients rely on
// this and never split on a store's account.
//
// Before a change reaches the store, the collection's rules are checked
// against the record it would leave (checkRules): the write scope given
// by WithWriteScope, the schemas and validation functions of Config.Rules.
// A change they refuse is reported in its Result (ErrOutOfScope,
// ErrSchema) while the rest apply. Changes written under an older schema
// version (WithVersions) are translated up to the current one first
// (ErrUntranslatable when they cannot be).
func (e *Engine) Apply(ctx context.Context, changes []crdt.Change, opts ...ApplyOption) ([]Result, error) {
	var cfg applyConfig
	for _, o := range opts {
		o(&cfg)
	}
	results := make([]Result, len(changes))
	accepted := make([]crdt.Change, 0, len(changes))
	index := make([]int, 0, len(changes))
	// Changes written under an older schema version are translated up
	// first: every check below sees the current shape (migrations.go).
	translated, tindex, err := e.translateChanges(ctx, changes, cfg.versions, results)
	if err != nil {
		return nil, fmt.Errorf("apply: %w", err)
	}
	read := time.Now()
	horizons, err := e.writeHorizons(ctx, translated, false)
	if err != nil {
		return nil, err
	}
	// late are the changes with a stamp before their collection's write
	// horizon, judged on the records as stored (heldLive) after the rest.
	type lateChange struct {
		j, i int
		err  error
		read int // its record in the reads below; -1: not read
	}
	var late []lateChange
	if cfg.writeScope != nil {
		cfg.writeScope = oncePerCollection(cfg.writeScope)
	}
	// Admitted under the engine's lock, released however admission ends:
	// a bug met in it is recovered by the server's goroutine
	// (bug.Recovered), and the engine must serve the next call.
	func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		wall := e.wall()
		for j, c := range translated {
			i := j
			if tindex != nil {
				i = tindex[j]
			}
			err := checkCollected(c, horizons[c.Collection])
			if err != nil {
				late = append(late, lateChange{j, i, err, -1})
				continue
			}
			if err = e.admit(&c, wall, cfg.held); err != nil {
				results[i] = Result{Status: StatusRefused, Err: fmt.Errorf("change %s/%s: %w", c.Collection, c.Record.ID, err)}
				continue
			}
			accepted = append(accepted, c)
			index = append(index, i)
		}
	}()
	if len(late) > 0 {
		// A refusal is final, so each is judged on the horizon the store
		// holds now, not a cached one (writeHorizons), and then on its
		// record as the store holds it; one whose key no store takes
		// holds nothing and stays refused.
		var lateColls []crdt.Change // one change per collection
		for _, l := range late {
			if c := translated[l.j]; !slices.ContainsFunc(lateColls, func(o crdt.Change) bool { return o.Collection == c.Collection }) {
				lateColls = append(lateColls, c)
			}
		}
		fresh, err := e.writeHorizons(ctx, lateColls, true)
		if err != nil {
			return nil, err
		}
		for _, c := range lateColls {
			// The rest of the call was judged against the lower of the
			// two (horizonsStill checks it against later reads).
			horizons[c.Collection] = min(horizons[c.Collection], fresh[c.Collection])
		}
		keys := make([]recordKey, 0, len(late))
		for k, l := range late {
			c := translated[l.j]
			if late[k].err = checkCollected(c, fresh[c.Collection]); late[k].err == nil {
				continue
			}
			if stores.CheckKey(c.Collection, c.Record.ID) == nil {
				late[k].read = len(keys)
				keys = append(keys, recordKey{c.Collection, c.Record.ID})
			}
		}
		stored, err := readRecords(ctx, keys, func(ctx context.Context, k recordKey) (crdt.Record, error) {
			return e.held(ctx, "apply", k.collection, k.id)
		})
		if err != nil {
			return nil, err
		}
		for _, l := range late {
			c := translated[l.j]
			err := l.err
			if err == nil || l.read >= 0 && heldLive(e.Migrations(c.Collection), stored[l.read], c.Record, fresh[c.Collection]) {
				err = e.admitNow(&c, cfg.held)
			} else if l.read >= 0 {
				// Whether the record outweighs the change tells which
				// fields it holds and how new they are: a record outside
				// the write scope is refused as checkRules refuses every
				// change to it, whatever it holds.
				if oerr := outOfScope(cfg, e.Migrations(c.Collection), c.Collection, stored[l.read]); oerr != nil {
					err = oerr
				}
			}
			if err != nil {
				results[l.i] = Result{Status: StatusRefused, Err: fmt.Errorf("change %s/%s: %w", c.Collection, c.Record.ID, err)}
				continue
			}
			accepted = append(accepted, c)
			index = append(index, l.i)
		}
		accepted, index = inOrder(accepted, index)
	}
	// Quotas first: the rules judge each change on the record the call's
	// earlier changes leave (checkRules), so a change refused after them
	// would leave a later one judged on a record that never was.
	accepted, index, toCount, err := e.checkQuotas(ctx, accepted, index, results, cfg)
	if err != nil {
		return nil, err
	}
	run := &applyRun{cfg: cfg}
	accepted, index, err = e.checkRules(ctx, run, accepted, index, results)
	if err != nil {
		return nil, err
	}
	if err := e.countCollections(ctx, toCount, accepted); err != nil {
		return nil, err
	}
	for start := 0; start < len(accepted); start += stores.MaxBatch {
		end := min(start+stores.MaxBatch, len(accepted))
		if e.grace > 0 && time.Since(read) >= e.horizonsFor() {
			read = time.Now()
			if horizons, err = e.horizonsStill(ctx, accepted[start:], horizons); err != nil {
				return nil, err
			}
		}
		if err := e.applyStored(ctx, run, accepted[start:end], index[start:end], results); err != nil {
			return nil, err
		}
	}
	if err := e.answerInVersions(ctx, translated, tindex, cfg.versions, results); err != nil {
		return nil, err
	}
	return results, nil
}

// applyStored applies admitted changes to the store and fills their results.
// A store refuses a batch whole with stores.ErrTooLarge, stores.ErrInvalid
// or stores.ErrCorrupt (damaged data it cannot merge into) when any change
// in it breaks a limit or rule of the store or meets damage; the batch is
// then split in halves until the refusal lands on the change that caused it,
// which is reported refused while the others apply. Splitting is safe
// because Apply is idempotent and the halves go in order, so changes to one
// record still merge in order.
//
// The rules judged each change on the record the call's earlier changes
// leave, so a later change of a record one of whose changes the store
// refuses was judged on a record that never was: it is judged again
// (checkRules) on the record as stored, before it is applied, whether the
// rules took or refused it (applyRun.tentative), in whatever batch or
// half it is.
func (e *Engine) applyStored(ctx context.Context, run *applyRun, changes []crdt.Change, index []int, results []Result) error {
	if len(run.refused) > 0 {
		var again, keep []crdt.Change
		var againIndex, keepIndex []int
		for j, c := range changes {
			if g, ok := run.refused[recordKey{c.Collection, c.Record.ID}]; ok && run.judged[index[j]] < g {
				again, againIndex = append(again, c), append(againIndex, index[j])
			} else {
				keep, keepIndex = append(keep, c), append(keepIndex, index[j])
			}
		}
		if len(again) > 0 {
			if err := e.applyStored(ctx, run, keep, keepIndex, results); err != nil {
				return err
			}
			if run.judged == nil {
				run.judged = map[int]int{}
			}
			for _, i := range againIndex {
				run.judged[i] = run.gen
			}
			again, againIndex, err := e.checkRules(ctx, run, again, againIndex, results)
			if err != nil {
				return err
			}
			return e.applyStored(ctx, run, again, againIndex, results)
		}
	}
	// The changes the rules refused on what earlier changes of the call
	// left (run.tentative) go to the store only once judged again; while
	// those earlier changes land, they stay refused.
	send, sendIndex := changes, index
	if len(run.tentative) > 0 {
		send, sendIndex = nil, nil
		for j, c := range changes {
			if !run.tentative[index[j]] {
				send, sendIndex = append(send, c), append(sendIndex, index[j])
			}
		}
	}
	if len(send) == 0 {
		return nil
	}
	stored, err := e.store.Apply(ctx, send)
	refusable := errors.Is(err, stores.ErrTooLarge) || errors.Is(err, stores.ErrInvalid) || errors.Is(err, stores.ErrCorrupt)
	e.noteCommit(ctx, err, refusable)
	switch {
	case err == nil:
	case refusable && len(send) == 1:
		c := send[0]
		results[sendIndex[0]] = Result{Status: StatusRefused, Err: fmt.Errorf("change %s/%s: %w", c.Collection, c.Record.ID, err)}
		if run.refused == nil {
			run.refused = map[recordKey]int{}
		}
		run.gen++
		run.refused[recordKey{c.Collection, c.Record.ID}] = run.gen
		// The changes refused after it (tentative) are judged again.
		rest := slices.Index(index, sendIndex[0]) + 1
		return e.applyStored(ctx, run, changes[rest:], index[rest:], results)
	case refusable:
		half := len(changes) / 2
		if err := e.applyStored(ctx, run, changes[:half], index[:half], results); err != nil {
			return err
		}
		return e.applyStored(ctx, run, changes[half:], index[half:], results)
	default:
		return fmt.Errorf("apply %d changes: %w", len(changes), err)
	}
	for j, r := range stored {
		st := StatusApplied
		switch {
		case r.Changed:
		case len(r.Lost) > 0:
			st = StatusSuperseded
		default:
			st = StatusDuplicate
		}
		results[sendIndex[j]] = Result{Status: st, Seq: r.Seq, Lost: r.Lost}
	}
	return nil
}

// applyRun is what the store's part of one Apply call keeps.
type applyRun struct {
	cfg applyConfig
	// refused holds the records a change of which the store refused,
	// with the count of the store's refusals (gen) at the last one: each
	// of the call's later changes of them is judged again, on the record
	// as stored, unless it was judged since (judged, by its index in the
	// call). So every one is judged as if the call's changes were
	// applied one at a time, however the batches were cut and split.
	refused map[recordKey]int
	gen     int
	judged  map[int]int
	// tentative holds, by their index in the call, the changes the rules
	// refused on a record the call's earlier changes left (checkRules):
	// refused while those land, judged again with the others when the
	// store refuses one of them.
	tentative map[int]bool
}

// recordKey names a record of a collection.
type recordKey struct{ collection, id string }

// applyCaptured is the engine's stores.CaptureSink: writes other programs
// made directly in the backend come through the same admission as pushes
// (validation, stamps against the collection's clock, size limits). A
// refusal is final for that change (the store logs and skips it); an
// error means the store offers the same changes again later.
//
// The sink runs on the store's capture goroutine, which no one recovers:
// a bug (a panic) met applying the batch, on a foreign write of a shape
// that a validation function or the engine did not expect, would end the
// process. The batch is then applied again one change at a time (applying
// a change twice is harmless), and a change that meets the bug alone is
// refused with it, logged here at error level with its stack: the store
// counts and skips it as any refusal, and goes on with the others.
//
// While the engine's clock is off its store's the sink answers "not now"
// (takesCaptured's error): the store offers the changes again later, and
// nothing is lost.
func (e *Engine) applyCaptured(ctx context.Context, changes []crdt.Change) ([]stores.CaptureResult, error) {
	if err := e.takesCaptured(ctx); err != nil {
		return nil, err
	}
	var res []Result
	err := bug.Recovered(func() (err error) {
		res, err = e.Apply(ctx, changes)
		return err
	})
	if errors.Is(err, bug.ErrPanic) {
		return e.applyCapturedEach(ctx, changes)
	}
	if err != nil {
		return nil, err
	}
	out := make([]stores.CaptureResult, len(res))
	for i, r := range res {
		if r.Status == StatusRefused {
			out[i].Err = r.Err
		}
	}
	return out, nil
}

// takesCaptured is the capture sink's Ready: while the engine's clock is
// off its store's (ClockHealth), an error wrapping ErrClockSkew. Captured
// changes are admitted against the engine's clock, which would take a
// stamp a year ahead for the present; a store asks before it stamps a
// batch (stores.CaptureSink), so that a write held back keeps no stamp of
// the off clock.
func (e *Engine) takesCaptured(context.Context) error {
	if err := e.ClockHealth(); err != nil {
		return fmt.Errorf("captured changes held back: %w", err)
	}
	return nil
}

// applyCapturedEach applies captured changes one at a time, refusing each
// that meets a bug (applyCaptured).
func (e *Engine) applyCapturedEach(ctx context.Context, changes []crdt.Change) ([]stores.CaptureResult, error) {
	out := make([]stores.CaptureResult, len(changes))
	for i, c := range changes {
		var res []Result
		err := bug.Recovered(func() (err error) {
			res, err = e.Apply(ctx, []crdt.Change{c})
			return err
		})
		switch {
		case errors.Is(err, bug.ErrPanic):
			e.log.Error("captured change refused: it met a bug", "collection", c.Collection, "record", c.Record.ID, "err", err)
			out[i].Err = fmt.Errorf("change %s/%s: %w", c.Collection, c.Record.ID, err)
		case err != nil:
			return nil, err
		case res[0].Status == StatusRefused:
			out[i].Err = res[0].Err
		}
	}
	return out, nil
}

// unreadyAfter is how many store commits in a row must fail before
// WriteHealth reports the engine unable to write.
const unreadyAfter = 3

// commitHealth counts the store commits that failed in a row.
type commitHealth struct {
	mu      sync.Mutex
	failed  int
	lastErr error
}

// noteCommit records the outcome of a store Apply. A refusal of the input
// (too large, invalid), a caller's cancelled context and a collection
// fenced by an operator's rebuild of its log (stores.ErrFenced: that
// collection alone) say nothing of the store's health.
func (e *Engine) noteCommit(ctx context.Context, err error, refusal bool) {
	if refusal || (err != nil && ctx.Err() != nil) || errors.Is(err, stores.ErrFenced) {
		return
	}
	e.commits.mu.Lock()
	defer e.commits.mu.Unlock()
	if err == nil {
		e.commits.failed, e.commits.lastErr = 0, nil
		return
	}
	e.commits.failed++
	e.commits.lastErr = err
}

// WriteHealth returns an error once the last few commits to the store all
// failed (a full disk, a store refusing writes), nil again after one
// succeeds. Readiness probes use it: reads alone can succeed while every
// write fails.
func (e *Engine) WriteHealth() error {
	e.commits.mu.Lock()
	defer e.commits.mu.Unlock()
	if e.commits.failed < unreadyAfter {
		return nil
	}
	return fmt.Errorf("the last %d commits failed: %w", e.commits.failed, e.commits.lastErr)
}

// admit validates a change and observes its stamps. The clock only moves
// when every stamp of the change is acceptable. A held change (WithHeld)
// may carry logical counters up to crdt.MaxLogical, a pushed one up to
// crdt.MaxIssuedLogical. Called with e.mu held.
// admitNow is admit at the wall time now, under the engine's lock.
func (e *Engine) admitNow(c *crdt.Change, held bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.admit(c, e.wall(), held)
}

func (e *Engine) admit(c *crdt.Change, wall int64, held bool) error {
	maxLogical := uint32(crdt.MaxIssuedLogical)
	if held {
		maxLogical = crdt.MaxLogical
	}
	if err := crdt.ValidateCollection(c.Collection); err != nil {
		return err
	}
	if err := crdt.ValidateID(c.Record.ID); err != nil {
		return err
	}
	if len(c.Record.Fields) > crdt.MaxFieldsPerRecord {
		return fmt.Errorf("%w: %d fields, at most %d", crdt.ErrTooLarge, len(c.Record.Fields), crdt.MaxFieldsPerRecord)
	}
	max := c.Record.Deleted
	if err := max.Validate(); err != nil {
		return err
	}
	cloned := false
	for name, f := range c.Record.Fields {
		if err := crdt.ValidateFieldName(name); err != nil {
			return err
		}
		if err := f.Stamp.Validate(); err != nil {
			return err
		}
		if f.Stamp.IsZero() {
			return fmt.Errorf("%w: field %q has a zero stamp", crdt.ErrInvalid, name)
		}
		if f.Stamp.Logical > maxLogical {
			return fmt.Errorf("%w: field %q: logical counter %d above %d, which no honest clock issues", crdt.ErrInvalid, name, f.Stamp.Logical, maxLogical)
		}
		if f.Stamp.Compare(max) > 0 {
			max = f.Stamp
		}
		if f.Value != nil {
			v, err := crdt.NormalizeValue(f.Value)
			if err != nil {
				return fmt.Errorf("field %q: %w", name, err)
			}
			if &v[0] != &f.Value[0] { // a value an embedding program built: the change becomes ours
				if !cloned {
					c.Record, cloned = c.Record.Clone(), true
				}
				f.Value = v
				c.Record.Fields[name] = f
			}
		}
	}
	if max.IsZero() {
		return nil // an empty change: nothing to observe, a no-op
	}
	if c.Record.Deleted.Logical > maxLogical {
		return fmt.Errorf("%w: delete stamp: logical counter %d above %d", crdt.ErrInvalid, c.Record.Deleted.Logical, maxLogical)
	}
	// Observing the largest stamp covers the others: the drift check is on
	// the largest, and the clock ends above all of them.
	return e.clockOf(c.Collection).Observe(max.Time(), wall)
}

// Entry is a record in a collection's change log, at the sequence number
// of its latest change.
type Entry struct {
	Seq    uint64
	Record crdt.Record
}

// Page is one page of a collection's change log.
type Page struct {
	// Entries are in log order, each record at most once.
	Entries []Entry
	// Left lists, for a scoped read (PullScoped), the log entries after
	// the cursor whose record the scope does not hold (deleted, or not
	// matching): the reader drops the record if it holds it. In log
	// order; nil for an unscoped read.
	Left []Left
	// Next is the cursor after this page (the one passed in when the page
	// is empty and no change of scope began).
	Next Cursor
	// More reports that the log held more after Next when the page was
	// read. A page may be empty and have More set: a change of scope
	// (a transition) can pass over many entries the reader need not be
	// told of.
	More bool
}

// Left is a log entry of a scoped read whose record the scope does not
// hold at the time of the read: the record was deleted, or it no longer
// (or never) matched the scope.
type Left struct {
	Seq uint64
	ID  string
}

// leftBytes is what a leave counts toward PageLimit.Bytes: what its leave
// entry counts on the wire (proto.LeaveEntryCost).
const leftBytes = proto.LeaveEntryCost

// MaxPage is the most records a page may hold.
const MaxPage = stores.MaxPage

// PageLimit bounds a page of Pull.
type PageLimit struct {
	// Records is the most records: 1 to MaxPage; 0 means MaxPage. A
	// leave (Page.Left) counts as a record.
	Records int
	// Bytes bounds the encoded size of the page's records, except that a
	// single larger record comes alone; a leave counts
	// proto.LeaveEntryCost bytes. 0 means proto.DefaultMaxPageBytes.
	Bytes int
}

// Pull returns a page of collection's change log after cursor, within
// limit. A cursor of another history than the store's (another store
// identity, an earlier epoch, a position past the head) gets an error
// wrapping ErrReset, a *ResetError with the reason; the empty cursor never
// does. Every page's Next carries the store's current identity and epoch.
// Pull is PullScoped with no scope.
func (e *Engine) Pull(ctx context.Context, collection string, cursor Cursor, limit PageLimit) (Page, error) {
	return e.PullScoped(ctx, collection, cursor, limit, nil)
}

// Head returns the newest sequence number of collection. A head lower
// than one read before is a loss of history: see observeHead.
func (e *Engine) Head(ctx context.Context, collection string) (uint64, error) {
	h, err := e.readHead(ctx, collection)
	if err != nil {
		return 0, fmt.Errorf("head %s: %w", collection, err)
	}
	return h, nil
}
