package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
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
}

// Status is the outcome of one change of an Apply call.
type Status int

const (
	// StatusApplied means the change altered its record.
	StatusApplied Status = iota + 1
	// StatusNoop means the record already held everything the change says.
	StatusNoop
	// StatusRefused means the change was not applied; Result.Err says why.
	StatusRefused
)

func (s Status) String() string {
	switch s {
	case StatusApplied:
		return "applied"
	case StatusNoop:
		return "noop"
	case StatusRefused:
		return "refused"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Result is the outcome of one change.
type Result struct {
	Status Status
	// Seq is the record's sequence number after the change (applied or
	// no-op).
	Seq uint64
	// Err says why a change was refused; it wraps crdt.ErrClockDrift,
	// crdt.ErrInvalid or crdt.ErrCounterOverflow.
	Err error
}

// Engine applies, serves and announces changes on one store. It is safe for
// concurrent use.
type Engine struct {
	store    stores.Store
	now      func() time.Time
	log      *slog.Logger
	poll     time.Duration
	mu       sync.Mutex // guards clock
	clock    *crdt.Clock
	subsMu   sync.Mutex
	subs     map[string]map[*Subscription]struct{}
	stopWat  func()
	resync   chan struct{}
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	closeMu  sync.Once
	closedCh chan struct{}
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
	clock, err := crdt.NewClock(crdt.ClockConfig{Replica: cfg.Replica, MaxDrift: cfg.MaxDrift})
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Engine{
		store:    cfg.Store,
		now:      cfg.Now,
		log:      cfg.Logger.With("component", "engine"),
		poll:     cfg.PollInterval,
		clock:    clock,
		subs:     map[string]map[*Subscription]struct{}{},
		resync:   make(chan struct{}, 1),
		cancel:   cancel,
		closedCh: make(chan struct{}),
	}
	e.stopWat = cfg.Store.Watch(e.notify)
	e.wg.Add(1)
	go e.watchLoop(ctx)
	return e, nil
}

// Close stops the engine's goroutines and closes every subscription. It
// does not close the store.
func (e *Engine) Close() error {
	e.closeMu.Do(func() {
		close(e.closedCh)
		e.stopWat()
		e.cancel()
		e.wg.Wait()
		e.subsMu.Lock()
		for _, set := range e.subs {
			for s := range set {
				s.closeLocked()
			}
		}
		e.subs = map[string]map[*Subscription]struct{}{}
		e.subsMu.Unlock()
	})
	return nil
}

// Replica returns the id the engine stamps its own writes with.
func (e *Engine) Replica() string { return e.clock.Replica() }

// Store returns the engine's store.
func (e *Engine) Store() stores.Store { return e.store }

func (e *Engine) wall() int64 { return e.now().UnixMilli() }

// Now issues a stamp for a write made by the server itself.
func (e *Engine) Now() (crdt.Stamp, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.clock.Now(e.wall())
}

// ServerTime returns the server's wall time in milliseconds, for clients
// correcting their clock skew.
func (e *Engine) ServerTime() int64 { return e.wall() }

// MaxDrift returns the bound on incoming stamps.
func (e *Engine) MaxDrift() time.Duration { return e.clock.MaxDrift() }

// Apply applies a batch of changes. Each change is checked and its stamps
// observed on its own: a refused change (a stamp beyond MaxDrift, an invalid
// name) is reported in its Result while the rest of the batch applies. The
// error is for the batch as a whole (a store failure, a cancelled context,
// a batch over stores.MaxBatch); after it the caller retries the batch.
func (e *Engine) Apply(ctx context.Context, changes []crdt.Change) ([]Result, error) {
	if len(changes) > stores.MaxBatch {
		return nil, fmt.Errorf("apply: %w: %d changes, at most %d", stores.ErrInvalid, len(changes), stores.MaxBatch)
	}
	results := make([]Result, len(changes))
	accepted := make([]crdt.Change, 0, len(changes))
	index := make([]int, 0, len(changes))
	e.mu.Lock()
	wall := e.wall()
	for i, c := range changes {
		if err := e.admit(c, wall); err != nil {
			results[i] = Result{Status: StatusRefused, Err: fmt.Errorf("change %s/%s: %w", c.Collection, c.Record.ID, err)}
			continue
		}
		accepted = append(accepted, c)
		index = append(index, i)
	}
	e.mu.Unlock()
	if len(accepted) == 0 {
		return results, nil
	}
	if err := e.applyStored(ctx, accepted, index, results); err != nil {
		return nil, err
	}
	return results, nil
}

// applyStored applies admitted changes to the store and fills their results.
// A store refuses a batch whole with stores.ErrTooLarge when any change in it
// would grow its record past a limit; the batch is then split in halves until
// the refusal lands on the change that caused it, which is reported refused
// while the others apply. Splitting is safe because Apply is idempotent and
// the halves go in order, so changes to one record still merge in order.
func (e *Engine) applyStored(ctx context.Context, changes []crdt.Change, index []int, results []Result) error {
	stored, err := e.store.Apply(ctx, changes)
	switch {
	case err == nil:
	case errors.Is(err, stores.ErrTooLarge) && len(changes) == 1:
		c := changes[0]
		results[index[0]] = Result{Status: StatusRefused, Err: fmt.Errorf("change %s/%s: %w", c.Collection, c.Record.ID, err)}
		return nil
	case errors.Is(err, stores.ErrTooLarge):
		half := len(changes) / 2
		if err := e.applyStored(ctx, changes[:half], index[:half], results); err != nil {
			return err
		}
		return e.applyStored(ctx, changes[half:], index[half:], results)
	default:
		return fmt.Errorf("apply %d changes: %w", len(changes), err)
	}
	for j, r := range stored {
		st := StatusNoop
		if r.Changed {
			st = StatusApplied
		}
		results[index[j]] = Result{Status: st, Seq: r.Seq}
	}
	return nil
}

// admit validates a change and observes its stamps. The clock only moves
// when every stamp of the change is acceptable. Called with e.mu held.
func (e *Engine) admit(c crdt.Change, wall int64) error {
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
		if f.Stamp.Compare(max) > 0 {
			max = f.Stamp
		}
	}
	if max.IsZero() {
		return nil // an empty change: nothing to observe, a no-op
	}
	// Observing the largest stamp covers the others: the drift check is on
	// the largest, and the clock ends above all of them.
	return e.clock.Observe(max.Time(), wall)
}

// Pull returns a page of collection's change log after cursor after.
func (e *Engine) Pull(ctx context.Context, collection string, after uint64, limit int) (stores.Page, error) {
	if limit <= 0 || limit > stores.MaxPage {
		limit = stores.MaxPage
	}
	page, err := e.store.Pull(ctx, collection, after, limit)
	if err != nil {
		return stores.Page{}, fmt.Errorf("pull %s after %d: %w", collection, after, err)
	}
	return page, nil
}

// Head returns the newest sequence number of collection.
func (e *Engine) Head(ctx context.Context, collection string) (uint64, error) {
	h, err := e.store.Head(ctx, collection)
	if err != nil {
		return 0, fmt.Errorf("head %s: %w", collection, err)
	}
	return h, nil
}
