package stores

import (
	"context"
	"errors"
	"time"

	"github.com/convergo/convergo/crdt"
)

// Sentinel errors. Implementations translate backend errors at their edge and
// wrap these so callers can branch with errors.Is.
var (
	// ErrNotFound means the store holds no state for the record.
	ErrNotFound = errors.New("stores: not found")
	// ErrClosed means the store was used after Close.
	ErrClosed = errors.New("stores: closed")
	// ErrTooLarge means a record or batch exceeds a limit of the store (for
	// example DynamoDB's 400 KB item). The change is refused whole, never
	// truncated. It is crdt.ErrTooLarge, the same value: a refusal matches
	// whichever layer's name a caller uses.
	ErrTooLarge = crdt.ErrTooLarge
	// ErrInvalid means the input breaks the contract: an invalid collection
	// name or record id, a negative limit. It is crdt.ErrInvalid, the same
	// value; wrap a crdt validation error as it is (%w), not inside it again.
	ErrInvalid = crdt.ErrInvalid
	// ErrUnavailable means the backend could not be reached or kept failing
	// after retries. Nothing in the failed call is known to be lost: Apply
	// is idempotent, so the caller retries.
	ErrUnavailable = errors.New("stores: backend unavailable")
	// ErrCorrupt means data the store read back fails its own checks: a
	// record, log entry or head that something outside the store damaged
	// (a key of the wrong type, an unreadable record, a log entry without
	// its record). It is not retryable: the same call fails the same way
	// until the data is repaired (each store's doc says how: the next
	// write to the record, or an operator's repair). The error names what
	// is damaged; the store also logs and counts it. It says nothing of
	// the backend's health, so readiness must not fail on it.
	ErrCorrupt = errors.New("stores: corrupt data")
	// ErrFenced means the collection is closed by an operator's command
	// that rebuilds its log (DynamoDB's reshard, repair and mark-restored)
	// until that command finishes: the call failed for this collection
	// alone. A store wraps it together with ErrUnavailable (clients are
	// told unavailable and retry), and its message names the command and
	// what to do when it no longer runs. It says nothing of the backend's
	// health, so readiness must not fail on it: one collection's rebuild
	// must not take the instance from every tenant.
	ErrFenced = errors.New("stores: the collection is fenced by a rebuild of its log")
	// ErrEpochChanged means a Purge was refused because the collection is
	// no longer in the epoch its horizon is of (Horizon.Epoch): nothing
	// was purged. The horizon's positions are of a history that ended;
	// the caller computes a horizon of the new epoch.
	ErrEpochChanged = errors.New("stores: the collection's epoch changed")
)

// Limits every store accepts at least.
const (
	// MaxBatch is the largest number of changes one Apply call takes.
	MaxBatch = 1000
	// MaxPage is the largest number of records one page of Pull holds
	// (PageLimit.Records).
	MaxPage = 1000
	// DefaultPageBytes is the byte budget of a page for callers with no
	// better figure (PageLimit.Bytes): 1 MiB, a few round trips' worth on a
	// slow link and far below what a page of MaxPage records near
	// crdt.MaxRecordBytes would be (293 MiB). The engine passes its own
	// configured value.
	DefaultPageBytes = 1 << 20
)

// PageLimit bounds one page of Pull by record count and by bytes.
type PageLimit struct {
	// Records is the most entries the page holds: 1 to MaxPage.
	Records int
	// Bytes is the most bytes the page's records take, each counted as the
	// length of its deterministic encoding (crdt.EncodeRecord of the merged
	// record, tombstones included), summed over the page. It must be
	// positive. The first record of a page always travels, even when it
	// alone is larger than Bytes, so a page is never empty while the log
	// has entries after the cursor, and every record can be read.
	Bytes int
}

// Result is the outcome of one change of an Apply call.
//
// Changed and Lost together tell a writer what became of its change:
//
//   - Changed false, Lost empty: the store already held everything the
//     change says (a duplicate or a replay).
//   - Changed false, Lost not empty: newer writes won; the change altered
//     nothing.
//   - Changed true, Lost empty: the record holds the whole change.
//   - Changed true, Lost not empty: the change was partly applied; the
//     fields in Lost were superseded.
type Result struct {
	// Changed reports whether the change altered the record. A change that
	// alters nothing writes nothing and takes no sequence number.
	Changed bool
	// Seq is the record's sequence number after the call: the new one when
	// Changed, else the one it already had (0 if the store never saw it).
	Seq uint64
	// Lost names, sorted, the fields of the change that the record does not
	// hold as the change wrote them once the change is merged
	// (crdt.LostFields): the stored field has a newer stamp, or the same
	// stamp and the other value won the tie-break, or the record's delete
	// stamp is at or after the field's stamp. The change's own delete stamp
	// is never listed. It is judged right after the change's merge: a later
	// change of the same batch that supersedes a field does not make it
	// lost here. Nil when nothing was lost.
	Lost []string
}

// Entry is a record in the change log.
type Entry struct {
	Seq    uint64
	Record crdt.Record
}

// Page is one page of a collection's change log.
type Page struct {
	// Entries are in ascending sequence order, each record at most once.
	Entries []Entry
	// Next is the cursor to pass to the next Pull: the sequence number of the
	// last entry, or the cursor that was passed in when the page is empty.
	Next uint64
	// More reports that entries after Next existed when the page was read:
	// the page was cut by one of its limits.
	More bool
}

// Notification says that a collection's log advanced to Seq.
type Notification struct {
	Collection string
	Seq        uint64
	// Shard is the log shard whose head Seq is, for a collection of
	// Shards > 1 shards (Sharder); 0 otherwise.
	Shard int
	// Shards is the collection's shard count when the store notifies per
	// shard; 0 (or 1) for a collection of one log, whose head Seq is.
	Shards int
	// Resync means notifications may have been lost (a pub/sub connection
	// dropped, say): every collection may have advanced, and the store's
	// identity or epochs may have changed (a store sends one after it
	// starts an epoch). Collection and Seq are empty.
	Resync bool
}

// Meta is what a store keeps about a collection besides its records and
// its log. Later work adds rules, schema version and tombstone horizon
// here (docs/design.md, "Store contract v2").
type Meta struct {
	// Epoch names the collection's current history. It changes whenever
	// the log's history may have been lost or rewritten, and it only
	// grows. A cursor read in another epoch no longer describes the log.
	// A collection never written has an epoch too (the store-wide part of
	// the stores in this module; see MetaOf).
	Epoch uint64
	// Lost is the first epoch after the latest loss of history: a cursor
	// of an epoch below Lost may have seen changes the store no longer
	// holds, or sequence numbers since handed out again (reset: history
	// lost); a cursor of an epoch from Lost to below Epoch was cut off by
	// rebuilds alone, with every record kept (reset: rebuilt). Lost <=
	// Epoch.
	Lost uint64
	// Shards is the number of shards the collection's log is split over
	// (Sharder), durable per collection; 0 and 1 both mean one log, which
	// is all that a store without Sharder keeps. A change of it starts a
	// new epoch (Rebuilt).
	Shards int
}

// RepairReport says what a store's Repair (`convergo repair`) did: it
// rebuilt a collection's log and head(s) from its records and started a new
// epoch of it.
type RepairReport struct {
	// Records is the number of records the rebuilt log lists.
	Records int
	// Lost is the number of records dropped as unreadable (Redis: when the
	// record hash itself had the wrong type, everything it held counts as
	// one).
	Lost int
	// Head is the collection's head after the rebuild; for a log of
	// several shards, the highest of its shards' heads.
	Head uint64
}

// EpochCause says why a new epoch begins.
type EpochCause uint8

const (
	// HistoryLost: changes the log held may be gone, or their sequence
	// numbers may be handed out again (a restore, a lost write, a head set
	// back).
	HistoryLost EpochCause = 1
	// Rebuilt: the log was rebuilt (renumbered, resharded) and every
	// record kept; a reader pulls again from the start but has nothing to
	// give back.
	Rebuilt EpochCause = 2
)

func (c EpochCause) String() string {
	switch c {
	case HistoryLost:
		return "history lost"
	case Rebuilt:
		return "rebuilt"
	}
	return "unknown cause"
}

// MetaOf builds a collection's Meta the way the stores of this module keep
// epochs: a store-wide counter that BumpEpochs raises (history lost for
// every collection, existing or not, without touching any), and per
// collection a counter of its own BumpEpoch calls and that counter's value
// at its latest HistoryLost bump. The store-wide counter is the high 32
// bits, so epochs only grow. A bump raises a counter to NextEpoch's
// value.
func MetaOf(store, local, localLost uint64) Meta {
	hi := (store & epochMask) << 32
	return Meta{Epoch: hi | local&epochMask, Lost: hi | localLost&epochMask}
}

// epochMask keeps an epoch counter to the 32 bits MetaOf gives it.
const epochMask = 0xffffffff

// StoreEpochOf returns the store-wide counter of a Meta built by MetaOf.
func StoreEpochOf(m Meta) uint64 { return m.Epoch >> 32 }

// LocalEpochOf returns the collection's own counter of a Meta built by
// MetaOf, and LocalLostOf that counter's value at its latest loss.
func LocalEpochOf(m Meta) uint64 { return m.Epoch & epochMask }

// LocalLostOf: see LocalEpochOf.
func LocalLostOf(m Meta) uint64 { return m.Lost & epochMask }

// LostBefore returns a time after the latest loss of history of a Meta
// built by MetaOf whose counters NextEpoch raised: the second after the
// larger of the store-wide counter (which only losses raise: BumpEpochs)
// and the collection's own at its latest loss (LocalLostOf), read as Unix
// seconds, since a bump raises a counter to at least the time it ran. A
// counter that never went by the clock (raised by one at a time, before
// NextEpoch read it) is small and reads as long ago; one raised on a
// clock ahead of the reader's reads as in the reader's future.
func LostBefore(m Meta) time.Time {
	return time.Unix(int64(max(StoreEpochOf(m), LocalLostOf(m)))+1, 0)
}

// IsStoreEpoch reports whether counter, a store-wide counter as a store
// holds it, is from, as StoreEpochOf reads it (modulo 2^32, as MetaOf
// keeps it): what BumpEpochsFrom compares.
func IsStoreEpoch(counter, from uint64) bool { return counter&epochMask == from }

// NextEpoch is the value a bump at time now raises an epoch counter (the
// store-wide one or a collection's own) to from cur: cur+1, or the Unix
// time in seconds when that is more. Every store of this module bumps this
// way, with the clock its options give (time.Now unless a test sets one).
//
// A counter lives in the store it describes, so a copy of the store put
// back from before a bump (a restored backup, a Redis restart from an
// older snapshot) counts from an older value. Were a bump cur+1, the bump
// that follows the restore (`convergo store mark-restored`, a Redis
// restart's, the engine's proof that the store went back) would start an
// epoch the lost history had already started, and a reader whose cursor
// is of that epoch would be taken for a reader of the new history: its
// position skips what the new history wrote, and what it alone holds is
// never given back. With the clock, a bump comes after every bump of a
// history lost more than a second before it, as long as the clock of the
// host that bumps is not behind the clocks that bumped before (and the
// lost history did not bump faster than once a second, running its
// counter ahead of the clock). A counter stays below 2^32, which MetaOf
// keeps, until the year 2106: a clock past 2^32−1 seconds (set wrong, or
// that year) is not read, since a counter there would wrap in MetaOf to a
// small epoch, and so would every bump after it.
func NextEpoch(cur uint64, now time.Time) uint64 {
	if s := now.Unix(); s > 0 && s <= epochMask && uint64(s) > cur+1 {
		return uint64(s)
	}
	return cur + 1
}

// EpochsBumperFrom is a Store that can start a new epoch of every
// collection only while its store-wide counter is still the one a caller
// read (StoreEpochOf of a Meta): readers that prove at once, on several
// instances, that the store went back start one new epoch, not one each
// (engine, "A cursor past the head is proof"). Every store of this module
// implements it.
type EpochsBumperFrom interface {
	// BumpEpochsFrom is BumpEpochs when the store-wide counter is from
	// (modulo 2^32, as MetaOf keeps it), and reports whether it bumped;
	// otherwise it changes nothing and reports false.
	BumpEpochsFrom(ctx context.Context, from uint64) (bool, error)
}

// Store is the contract between the engine and a database. All methods are
// safe for concurrent use. Every method that does I/O takes a context and
// returns promptly with its error once the context is done; after Close,
// methods return ErrClosed.
type Store interface {
	// Apply merges each change into the current state of its record
	// (crdt.Record.Merge), atomically per record: a reader sees a record
	// either before or after a change, never in between. Each change that
	// alters its record takes the collection's next sequence number, in the
	// same atomic step that makes it visible (the no-gap invariant). Changes
	// to one record within a batch are merged in order.
	//
	// Apply is idempotent: applying a batch again, in whole or in part,
	// changes nothing. On error some changes may have been applied and
	// others not; the caller retries the batch. Results are in the order of
	// changes. Changes must be valid (crdt validation) and at most MaxBatch.
	Apply(ctx context.Context, changes []crdt.Change) ([]Result, error)

	// Pull returns records of collection whose sequence number is greater
	// than after, in ascending sequence order, each in its current merged
	// state (tombstones included): as many as follow after, up to
	// limit.Records and up to limit.Bytes of encoded records, of which the
	// first always travels even when it alone is larger (see PageLimit).
	// More reports that the page was cut by either bound and more entries
	// follow. A store cuts the page while reading its backend: it does not
	// read much more than limit.Bytes (at most one record beyond the page)
	// to return it.
	Pull(ctx context.Context, collection string, after uint64, limit PageLimit) (Page, error)

	// Get returns the current state of one record and its sequence number,
	// or ErrNotFound.
	Get(ctx context.Context, collection, id string) (Entry, error)

	// Head returns the highest sequence number of collection, 0 when empty.
	Head(ctx context.Context, collection string) (uint64, error)

	// Watch registers fn to be called after changes commit, with the
	// collection and its new head, until the returned stop function is
	// called or the store closes. fn may be called from any goroutine and
	// must not block. Notifications are hints: see the package doc.
	Watch(fn func(Notification)) (stop func())

	// Identity returns the store's identity: a random string made when the
	// store was created and kept durably with its data, the same across
	// calls, processes and reopenings of the same data. A store whose data
	// was wiped or lost whole gets a new one (a new file, a restarted
	// memory store, a Redis database whose identity key is gone).
	Identity(ctx context.Context) (string, error)

	// Meta returns what the store keeps about collection: its epoch (see
	// Meta). A store starts a new epoch of every collection whenever it
	// can tell its history may have gone back (each store's doc says
	// when) and on BumpEpoch and BumpEpochs.
	Meta(ctx context.Context, collection string) (Meta, error)

	// BumpEpoch starts a new epoch of collection for cause: the engine
	// calls it with HistoryLost when it sees the collection's head go
	// backwards; repairs call it with Rebuilt. Durable once it returns;
	// watchers get a Resync.
	BumpEpoch(ctx context.Context, collection string, cause EpochCause) error

	// BumpEpochs starts a new epoch, history lost, of every collection of
	// the store, including collections it does not hold: the operator's
	// step after restoring a backup (convergo store mark-restored).
	// Durable once it returns; watchers get a Resync.
	BumpEpochs(ctx context.Context) error

	// Close releases the store's resources and stops its goroutines.
	Close() error
}
