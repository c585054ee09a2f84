package stores

import (
	"context"
	"errors"

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
	// truncated.
	ErrTooLarge = errors.New("stores: too large")
	// ErrInvalid means the input breaks the contract: an invalid collection
	// name or record id, a negative limit.
	ErrInvalid = errors.New("stores: invalid input")
	// ErrUnavailable means the backend could not be reached or kept failing
	// after retries. Nothing in the failed call is known to be lost: Apply
	// is idempotent, so the caller retries.
	ErrUnavailable = errors.New("stores: backend unavailable")
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
	// Resync means notifications may have been lost (a pub/sub connection
	// dropped, say): every collection may have advanced. Collection and Seq
	// are empty.
	Resync bool
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

	// Close releases the store's resources and stops its goroutines.
	Close() error
}
