package stores

import (
	"context"
	"fmt"

	"github.com/convergo/convergo/crdt"
)

// Horizon says which tombstones of a collection may be dropped
// (docs/design.md, "Tombstone horizons"). The engine computes it; the
// store only applies it.
type Horizon struct {
	// Epoch is the collection's epoch (Meta.Epoch) that Read's positions
	// are of: the one the engine read with the heads it computed Read
	// from. Purge purges only while the collection is in it.
	Epoch uint64
	// Read is the read horizon: per shard of the collection's log, the
	// lowest position that every live replica has acknowledged. Only
	// records whose log entry is at or before it are touched. It has one
	// position per shard: len(Read) == ShardsOf(Meta), so 1 for a
	// collection of one log.
	Read []uint64
	// Wall is the write horizon, a wall time in milliseconds: a delete
	// stamp or an unset field stamped before it (Stamp.Wall < Wall) may be
	// dropped. Stamps at or after it are kept.
	Wall int64
	// Sources are the fields the collection's migrations read into
	// others (crdt/migrate, Definition.Sources): a record that holds one
	// keeps its unset fields, whatever their stamps. Read, the record
	// resolves such a field into another unless a newer one is there; an
	// unset there is such a field, and dropped, it would let the old
	// value come back. Nil: none.
	Sources map[string]bool
	// Defaulted are the fields the collection's migrations give a
	// default (crdt/migrate, Definition.Defaults): an unset of one is
	// kept, whatever its stamp. Read, a field unset reads as unset and
	// one the record lacks as its default. Nil: none.
	Defaulted map[string]bool
}

// PurgeScan bounds the work of one Purge call and says where it resumes.
type PurgeScan struct {
	// After is where the scan resumes: per shard, the log position after
	// which it continues (PurgeResult.Next of the previous call). Nil
	// starts at the beginning of every shard; otherwise it has one
	// position per shard, like Horizon.Read.
	After []uint64
	// Limit is the most log entries the call scans (shards together):
	// 1 to MaxPage, or 0 for MaxPage.
	Limit int
}

// PurgeResult reports what one Purge call did.
type PurgeResult struct {
	// Scanned is the number of log entries the call looked at.
	Scanned int
	// Records is the number of records removed whole, with their log
	// entries: records that the purge left with no delete stamp and no
	// field.
	Records int
	// Deletes is the number of delete stamps cleared, of records removed
	// and of records kept (which keep their live fields and their log
	// entry).
	Deletes int
	// Fields is the number of unset fields removed.
	Fields int
	// Bytes is what the collection's Usage.Bytes went down by: the
	// encoded sizes of the records removed and the bytes the kept ones
	// lost.
	Bytes int64
	// Next is where the scan stopped, per shard: pass it as
	// PurgeScan.After to continue.
	Next []uint64
	// More reports that log entries at or before the read horizon remain
	// after Next: call again to continue.
	More bool
}

// Purger is implemented by stores that can collect tombstones
// (docs/design.md, "Tombstone horizons"). The engine calls it with a
// horizon it derived from the acknowledged cursors and pending floors of
// the collection's live replicas; the store checks nothing of that, but
// that the collection is still in the epoch the horizon is of
// (Horizon.Epoch).
type Purger interface {
	// Purge drops the tombstones of collection that h allows. It walks
	// the log in order from scan.After, per shard, looking at up to
	// scan.Limit entries at or before h.Read, and for each record whose
	// log entry is at or before h.Read (of its shard), atomically with
	// respect to Apply:
	//
	//   - a delete stamp before h.Wall is cleared (the record keeps the
	//     fields written after it);
	//   - unset fields stamped before h.Wall are removed, unless the
	//     record holds a field of h.Sources or the field is of
	//     h.Defaulted;
	//   - a record left without a delete stamp and without any field is
	//     removed, and its log entry with it.
	//
	// That is PurgeRecord, applied to the record's stored state. A record
	// that Purge changes but keeps stays at its sequence number: a purge
	// takes no sequence number, moves no head and notifies no one. Live
	// fields, records whose entry is after h.Read and tombstones at or
	// after h.Wall are kept as they are, byte for byte.
	//
	// The log entry of a removed record disappears: a reader whose cursor
	// is before it will never see the delete, and would keep the record.
	// This is why the engine purges only at or below the read horizon (what
	// every live replica has acknowledged) and resets the cursors of
	// replicas whose lease expired (lease_expired). Likewise a change
	// stamped before h.Wall that arrives after the purge is no longer
	// hidden by the tombstone it would have met: the engine refuses such
	// changes (collected). The store enforces neither.
	//
	// A change that Apply commits to a record while Purge runs is never
	// lost: the check of the record's entry against h.Read and the write
	// happen in one atomic step per record (a record that took a new
	// sequence number meanwhile is passed over). Usage (Usager) stays
	// exact: it goes down in the same step.
	//
	// Read's positions are of one history of the log, epoch h.Epoch. In
	// another epoch a position at or below h.Read may hold an entry that
	// no reader of the new epoch has read (the store went back and handed
	// the position out again, or the log was rebuilt): a tombstone
	// removed there would bring its record back to the readers that hold
	// it, or hide its delete from those that do not. So Purge checks that
	// the collection's epoch (Meta(collection).Epoch) is h.Epoch
	// atomically with each removal, in the same step, and when it is not
	// purges nothing more and returns ErrEpochChanged. A call that fails
	// so may have purged some records before the epoch changed, as any
	// failed call may; none after. A store whose backend cannot make the
	// check and the removal one step for some bump says so in its doc,
	// with the window that is left.
	//
	// Purge is idempotent (a second call with the same horizon finds
	// nothing to drop) and resumable: each call does bounded work and
	// returns Next and More; a call that fails may have purged some
	// records, and calling again from the same After finishes the job. It
	// is safe to run concurrently with any method of any instance on the
	// same data, including another Purge. len(h.Read), and len(scan.After)
	// when not nil, must be the collection's shard count (ErrInvalid).
	Purge(ctx context.Context, collection string, h Horizon, scan PurgeScan) (PurgeResult, error)
}

// PurgeRecord returns r without the tombstones that h allows: its delete
// stamp, when stamped before h.Wall (milliseconds), is cleared, and its
// unset fields stamped before h.Wall are removed, unless r holds a field
// of h.Sources (then its unsets are kept) or the field is of h.Defaulted.
// It reports how many delete stamps (0 or 1) and fields it dropped; when
// both are 0, out is r.
// out.Deleted is zero and out.Fields empty when nothing is left of r: the
// record is to be removed. When anything was dropped, out encodes
// shorter than r, so a store may tell a purged record from the one it
// read by size. r is not modified; h.Read is not looked at. Every
// store's Purge uses it (the Redis store too: it purges in Go and writes
// with a compare-and-set script).
func PurgeRecord(r crdt.Record, h Horizon) (out crdt.Record, deletes, fields int) {
	wall := h.Wall
	clearDelete := !r.Deleted.IsZero() && r.Deleted.Wall < wall
	keepUnsets := false
	for name := range r.Fields {
		if h.Sources[name] {
			keepUnsets = true
			break
		}
	}
	drop := func(name string, f crdt.Field) bool {
		return !keepUnsets && f.Value == nil && f.Stamp.Wall < wall && !h.Defaulted[name]
	}
	for name, f := range r.Fields {
		if drop(name, f) {
			fields++
		}
	}
	if !clearDelete && fields == 0 {
		return r, 0, 0
	}
	out = crdt.Record{ID: r.ID, Deleted: r.Deleted}
	if clearDelete {
		out.Deleted, deletes = crdt.Stamp{}, 1
	}
	if n := len(r.Fields) - fields; n > 0 {
		out.Fields = make(map[string]crdt.Field, n)
		for name, f := range r.Fields {
			if !drop(name, f) {
				out.Fields[name] = f
			}
		}
	}
	return out, deletes, fields
}

// Empty reports whether PurgeRecord left nothing of a record: no delete
// stamp and no field. Such a record is removed with its log entry.
func Empty(r crdt.Record) bool { return r.Deleted.IsZero() && len(r.Fields) == 0 }

// CheckEpoch returns nil when m, the collection's Meta as a Purge read
// it in the step that removes records, is of the epoch of h, and
// otherwise ErrEpochChanged, wrapped with both epochs; the caller adds
// its operation.
func CheckEpoch(collection string, h Horizon, m Meta) error {
	if m.Epoch != h.Epoch {
		return fmt.Errorf("%w: the horizon is of epoch %d, collection %s is in %d", ErrEpochChanged, h.Epoch, collection, m.Epoch)
	}
	return nil
}

// CheckPurge validates the arguments of Purge for a collection of shards
// log shards, as every store must, and returns the scan's start (a copy
// of scan.After, or zeros) and its limit (MaxPage for 0).
func CheckPurge(collection string, h Horizon, scan PurgeScan, shards int) (after []uint64, limit int, err error) {
	if err := crdt.ValidateCollection(collection); err != nil {
		return nil, 0, err
	}
	shards = max(shards, 1)
	if len(h.Read) != shards {
		return nil, 0, fmt.Errorf("%w: horizon of %d positions for a log of %d shards", ErrInvalid, len(h.Read), shards)
	}
	if scan.After != nil && len(scan.After) != shards {
		return nil, 0, fmt.Errorf("%w: purge resumes from %d positions for a log of %d shards", ErrInvalid, len(scan.After), shards)
	}
	limit = scan.Limit
	if limit == 0 {
		limit = MaxPage
	}
	if limit < 1 || limit > MaxPage {
		return nil, 0, fmt.Errorf("%w: purge limit of %d entries not in 0..%d", ErrInvalid, scan.Limit, MaxPage)
	}
	after = make([]uint64, shards)
	copy(after, scan.After)
	return after, limit, nil
}

// DeleteAsRead returns the change that deletes record r of collection as
// it was read: a delete stamped with the latest stamp of r's fields.
// Merged, it hides every field r holds and nothing written
// after it, so a concurrent write that renewed the record survives it.
// Purge then removes the record whole once the write horizon is past that
// stamp. The engine removes expired and evicted leases this way
// (docs/design.md, "Tombstone horizons"). ok is false when r holds no
// field: there is nothing to delete.
func DeleteAsRead(collection string, r crdt.Record) (c crdt.Change, ok bool) {
	var last crdt.Stamp
	for _, f := range r.Fields {
		if f.Stamp.Compare(last) > 0 {
			last = f.Stamp
		}
	}
	if last.IsZero() {
		return crdt.Change{}, false
	}
	return crdt.Change{Collection: collection, Record: crdt.Record{ID: r.ID, Deleted: last}}, true
}
