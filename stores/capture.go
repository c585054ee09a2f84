package stores

import (
	"context"
	"errors"
	"time"

	"github.com/convergo/convergo/crdt"
)

// Capturer is implemented by stores that turn writes made by other programs
// directly in the backend into changes (the DynamoDB store reads them from
// the table's stream). Such changes must pass the same admission as a
// client's (validation, clock drift, record limits), which is the engine's
// job, not the store's: so the store hands them to a sink, and the engine,
// which finds this interface by type assertion, registers its Apply as the
// sink. A store never applies what it captured by itself.
type Capturer interface {
	// Capture hands captured changes to sink until stop is called or the
	// store closes (a sink without Apply registers nothing). One sink is
	// registered at a time: a later Capture replaces an earlier one. The
	// store calls sink.Apply from one goroutine, in batches of at most
	// MaxBatch changes, each record's changes in the order they were
	// made; it may call sink.Ready from others as well (the Redis mirror
	// asks it), so Ready must be safe for concurrent use. Delivery is at
	// least once (a captured change may come again after a failure or a
	// restart, with the same stamps, so applying it again is a no-op). A
	// per-change refusal in the results is final: the store logs it and
	// skips the change. An error means "not now": the store offers the
	// same changes again later. An error of a sink that still takes
	// changes (Ready) may be of one collection alone (its writers fenced
	// out by a reshard, say): the store then tries the batch's
	// collections one by one and parks those whose changes still fail
	// (CaptureParker), so that one collection never stops capture for
	// the others. Changes made
	// while no sink is registered are offered once one is, as far as the
	// backend still holds them. stop waits for a sink call in progress,
	// whose context it cancels; after it returns sink is not called again.
	Capture(sink CaptureSink) (stop func())
}

// CaptureSink is where a store hands what it captured: the engine's
// admission.
type CaptureSink struct {
	// Apply admits and applies captured changes (the engine's Apply) and
	// returns one result per change, in order. Per-change refusals come
	// back in the results; an error means that none of the results are
	// known and the store retries the batch later.
	Apply func(ctx context.Context, changes []crdt.Change) ([]CaptureResult, error)
	// Ready says whether Apply takes changes now: an error means "not
	// now" (the engine's clock is off its store's). A store that stamps
	// captured writes itself asks (CheckReady) before anything that may
	// stamp them (a batch, a Redis mirror pass, which captures first),
	// and on an error stamps nothing and asks again later: a write
	// stamped while the sink would not take it would keep that stamp.
	// Nil: always.
	Ready func(ctx context.Context) error
}

// CheckReady calls Ready, if set: nil when the sink takes changes now.
func (s CaptureSink) CheckReady(ctx context.Context) error {
	if s.Ready == nil {
		return nil
	}
	return s.Ready(ctx)
}

// CaptureResult is the outcome of one captured change.
type CaptureResult struct {
	// Err is nil when the change was applied or was a no-op, and says why
	// it was refused for good otherwise (an invalid value, a record that
	// would pass a limit, a stamp beyond the drift bound). The store logs
	// and counts a refusal and skips the change; it never retries it.
	Err error
}

// RefusedForGood reports whether an error a sink returned for a whole
// batch is final for a change of it (a limit, an invalid value: ErrTooLarge,
// ErrInvalid) rather than "not now": a store that parks finds that change
// by offering the batch's changes one at a time, and reports and skips it
// as a per-change refusal instead of retrying it forever.
func RefusedForGood(err error) bool {
	return errors.Is(err, ErrTooLarge) || errors.Is(err, ErrInvalid)
}

// ParkRetryMax bounds the pause between two tries of a parked collection
// (CaptureParker): the longest a collection's captured writes wait after
// what failed them heals.
const ParkRetryMax = 30 * time.Second

// CaptureParker is implemented by capturing stores that park: a
// collection whose captured changes the sink fails (and only it) is held
// back, its writes kept in the order they were made and retried with a
// growing pause, while capture goes on for the others. A store logs a
// collection entering the parked state at info (a one-off failure heals on
// the first retry), a first retry that fails too at warn (once per
// parking, not per retry), and leaving it at info; its counts show the
// parked writes at once. ParkedCaptures lists what it holds back now.
type CaptureParker interface {
	// ParkedCount is len(ParkedCaptures()), without building the list.
	ParkedCount() int
	ParkedCaptures() []ParkedCapture
}

// CaptureCounter is implemented by capturing stores that count what their
// capture did since they opened, in terms every such store shares: the
// server exports the counts as metrics (each store's own statistics say
// more).
type CaptureCounter interface {
	CaptureCounts() CaptureCounts
}

// CaptureCounts are what a store's capture did since it opened. Counts of
// writes captured again (after a restart, say) count again.
type CaptureCounts struct {
	// Applied counts captured changes the sink applied or found applied.
	Applied uint64
	// Refused counts captured changes the sink refused for good (a limit,
	// the clock drift bound): logged and skipped, never retried
	// (CaptureResult).
	Refused uint64
	// Unmappable counts writes, or parts of them, that map to no valid
	// change (a value outside the value model, an invalid record id or
	// field name, a key of the wrong type): logged and skipped.
	Unmappable uint64
	// Overflowed counts writes of parked collections that did not fit
	// the store's bound on parked bytes: left in the backend and read
	// again once their collection's parked writes are applied. Zero on a
	// store that parks keys, not writes (Redis).
	Overflowed uint64
	// ParkedBytes is the size of the writes parked now (CaptureParker);
	// zero on a store that parks keys and reads them again (Redis).
	ParkedBytes uint64
}

// ParkedCapture is a captured write a store holds back for now.
type ParkedCapture struct {
	Collection string
	// Key is the write's key in the backend: the item's partition key
	// ("COLL#ID") on DynamoDB, the hash's key on Redis.
	Key string
	// Position is where the write is in the backend's order of writes,
	// when it has one: the stream record's sequence number on DynamoDB.
	Position string
	// Reason is the sink's last error for the collection.
	Reason string
	// Since is when the collection was parked.
	Since time.Time
}
