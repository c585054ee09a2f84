package engine

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/migrate"
	"github.com/convergo/convergo/internal/bug"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/transport/proto"
)

// Tombstone collection (docs/design.md, "Tombstone horizons").
//
// A collection whose rules give a MaxOffline has its tombstones collected.
// Readers hold leases (NoteLease): records of proto.LeaseCollection, one
// per (collection, replica), with the positions of the cursor the reader
// presented, its pending floor and when it was seen. The collection job
// (Collect) derives from the live leases a read horizon R (per shard, the
// lowest live position; the heads without a live lease; never below the
// heads of pendingFloorReach × MaxOffline before: Horizon.Heads) and a write
// horizon W (now − MaxOffline, or an earlier live pending floor, though
// never before now − pendingFloorReach × MaxOffline; held where it was
// for MaxOffline after a loss of history or the store's first horizon of
// the collection: lostRecently, begunRecently), publishes
// them in proto.HorizonCollection, waits Config.CollectGrace so that every
// instance enforces them, and only then purges (stores.Purger). Before
// that it removes the lease records that expired, those of a subject
// beyond Config.MaxLeasesPerSubject live leases on a collection (its least
// recently seen), and, of collections never written, those without a
// pending floor and those of a subject beyond
// proto.MaxUnwrittenLeasesPerSubject across them; then it purges the
// lease log of them (leaseScan).
//
// Enforcement, from the moment a horizon is published, by every instance
// whatever its rules say (enforced):
//   - a Pull whose cursor (not the start) has a position before R is
//     reset ResetLeaseExpired, unless its reading began from the start
//     after R reached that position there (the cursor's mark, below);
//   - an Apply change with a stamp (a field's or the delete's) whose wall
//     is before W is refused ErrCollected.
//
// Each publication has an id (Horizon.ID): a sequence number, one more
// than the horizon it followed, over a digest of its stamp that tells
// apart two runs that followed the same one. Per shard, the horizon
// keeps the id of the publication that last raised R there
// (Horizon.Raised). A pull from the start marks its cursor with the id of
// the published horizon as of that pull, and every Next carries the mark
// on. A reader whose reading began after a publication never held the
// earlier state of a record whose entry that publication's purge removes
// (the entry was already there when it began, so the record was not
// anywhere before it in the log): it misses nothing. So a cursor before R
// in a shard is reset only when R was raised there by a later
// publication than its mark, or its mark is unknown (0: every cursor
// written before marks existed).
//
// Every instance reads a collection's published horizon again at least
// every historyTTL, so a grace of twice that covers them all. Published
// horizons only go up: a run publishes the larger of what it computed and
// what it read (R within an epoch, whose positions it is; W, a wall time,
// across epochs too), and purges only when its own publication is still
// the one in the store after its grace; a concurrent run that published
// later purges instead. The store, not any instance, is where leases and
// horizons live, so any instance may run the job.

// errStaleHorizon: a collection run did not publish a horizon, because
// half the grace (Config.CollectGrace) passed between its read of the
// published one, which its own is raised to, and its write. A run on
// another instance may have published a higher horizon meanwhile, waited
// its grace and purged under it; a write of this run's lower one after
// that, with a newer stamp, would lower the horizons every instance
// enforces under what was purged: a change stamped before a collected
// delete would be taken, bringing its record back, and a reader between
// the two read horizons would miss the collected entries unreset. Bounded
// by half the grace, the write reaches the store before any run that
// published after the read checks, at the end of its grace, that its
// publication is still the latest: that run then leaves the purge to this
// one. What it cannot bound is a write the store takes later than its
// context allows (held up in the network); that needs a compare-and-set
// in the store.
var errStaleHorizon = errors.New("the published horizon was read too long ago")

// ErrCollected: a change carries a stamp before its collection's write
// horizon (Result.Err, per change): the tombstones that could have hidden
// it may be gone.
var ErrCollected = errors.New("engine: collected")

// ErrHorizonMoved fails an Apply whose changes were judged against a
// write horizon that has since moved past one of them, before that
// change reached the store (horizonsStill): retry the call.
var ErrHorizonMoved = errors.New("engine: the write horizon moved during the call")

// Fields of lease and horizon records.
const (
	LeaseFieldPos   = "pos"   // the cursor's shard positions
	LeaseFieldFloor = "floor" // the pending floor, ms; absent: none pending
	LeaseFieldSeen  = "seen"  // ms
	LeaseFieldEpoch = "epoch" // the epoch of the cursor's positions

	HorizonFieldRead     = "read"     // R, one position per shard
	HorizonFieldWall     = "wall"     // W, ms
	HorizonFieldEpoch    = "epoch"    // the epoch R's positions are of
	HorizonFieldPrevRead = "prevRead" // the horizon this one followed
	HorizonFieldPrevWall = "prevWall"
	HorizonFieldAt       = "at"     // ms, when published
	HorizonFieldSince    = "since"  // ms, when the store's first horizon of the collection was published
	HorizonFieldID       = "id"     // the publication's id (Horizon.ID)
	HorizonFieldRaised   = "raised" // per shard, the id that last raised R
	HorizonFieldHeads    = "heads"  // the log's heads as of past runs: [at, position per shard], oldest first
)

// horizonNonceBits is the low part of a publication id: a digest of its
// stamp, below the sequence number.
const horizonNonceBits = 24

// DefaultCollectEvery is how often Collect runs when Config.CollectEvery
// is zero and a rule has a MaxOffline.
const DefaultCollectEvery = time.Hour

// leaseRefreshDivisor: a lease is rewritten when its seen time is older
// than MaxOffline/leaseRefreshDivisor, even if nothing else changed.
const leaseRefreshDivisor = 20

// pendingFloorReach bounds how far back a live lease's pending floor holds
// the write horizon: to no earlier than now − pendingFloorReach ×
// MaxOffline, whatever the floor announced. A replica away for up to
// MaxOffline (longer, its lease expired) comes back with edits stamped
// after it left, at or after now − MaxOffline; the second MaxOffline is
// for it to push them. An older floor is an edit left pending longer than
// that (or a reader holding collection back): once the horizon passes it,
// the edit is refused collected like any other stamp before W, and its
// client reports it (or re-stamps it, docs/protocol.md section 8), so one
// reader delays the collection of everyone's tombstones by at most one
// MaxOffline more, never for ever.
//
// It bounds a lease's positions the same way: the read horizon is never
// below the log's heads as of a run at least pendingFloorReach ×
// MaxOffline ago (Horizon.Heads). A reader reads the log forward, and
// its lease is renewed from the cursor it reached (every pull, and every
// ping of a live subscription); one away for up to MaxOffline reached at
// least the heads of when it left. A lease that presents an older
// position run after run (the same old cursor, renewed) is a reader
// holding the read horizon, and so every reader's tombstones, back: past
// the reach it is reset lease_expired at its next pull, like a reader
// whose lease expired.
const pendingFloorReach = 2

// headsEvery spaces the heads Horizon.Heads keeps: a run records the
// heads when the newest recorded is at least MaxOffline/headsEvery old,
// so the read horizon's floor lags the reach by at most that, and a
// collection keeps at most pendingFloorReach × headsEvery + 2 of them.
const headsEvery = 4

// Horizon is a published tombstone horizon of one collection.
type Horizon struct {
	Epoch    uint64
	Read     []uint64 // per shard
	Wall     int64    // ms
	PrevRead []uint64
	PrevWall int64
	At       int64 // ms
	// Since is when the first horizon of the collection in this store was
	// published (ms), carried on by every publication; 0 for a chain
	// begun before it was recorded. W is held for MaxOffline from it
	// (heldSince).
	Since int64
	// ID identifies the publication: its sequence number (one more than
	// that of the horizon it followed) above horizonNonceBits bits of a
	// digest of its stamp. 0 for a horizon published before ids were.
	ID uint64
	// Raised holds, per shard, the ID of the publication that last raised
	// Read there; nil when unknown.
	Raised []uint64
	// Heads are the log's heads (Heads[j][0] the time in ms, then one
	// position per shard) as of earlier runs of this epoch, oldest first:
	// the newest at least pendingFloorReach × MaxOffline old is the floor
	// of Read. Nil when none is recorded.
	Heads [][]uint64
	stamp crdt.Stamp
}

// headsFloor returns the positions of the newest of heads recorded at or
// before cutoff (ms), nil when none is.
func headsFloor(heads [][]uint64, cutoff int64) []uint64 {
	var floor []uint64
	for _, hd := range heads {
		if int64(hd[0]) > cutoff {
			break
		}
		floor = hd[1:]
	}
	return floor
}

// recordHeads returns heads with the ones of now appended when the
// newest is at least every ms old, less those older than the newest at
// or before cutoff (ms), which is the only old one headsFloor reads.
func recordHeads(heads [][]uint64, now, every, cutoff int64, at []uint64) [][]uint64 {
	out := slices.Clone(heads)
	if len(out) == 0 || now-int64(out[len(out)-1][0]) >= every {
		out = append(out, append([]uint64{uint64(now)}, at...))
	}
	for len(out) > 1 && int64(out[1][0]) <= cutoff {
		out = out[1:]
	}
	return out
}

// readSince reports whether a reading that began from the start of the
// log when the horizon with id mark was published began after Read[i]
// was set by h's chain of publications: then a purge under h removes
// nothing such a reader held an earlier state of. mark 0 is unknown.
func (h Horizon) readSince(mark uint64, i int) bool {
	if mark == 0 || len(h.Raised) != len(h.Read) {
		return false
	}
	r := h.Raised[i]
	return mark == r || mark>>horizonNonceBits > r>>horizonNonceBits
}

// MaxOffline returns how long a replica may stay away from collection
// before its lease expires: the largest MaxOffline of the rules matching
// it, 0 (tombstones kept for ever) when none has one. Reserved
// collections are never collected (enforced).
func (e *Engine) MaxOffline(collection string) time.Duration {
	if !enforced(collection) {
		return 0
	}
	var d time.Duration
	for _, r := range e.rules {
		if r.MaxOffline > d && crdt.MatchPattern(r.Pattern, collection) {
			d = r.MaxOffline
		}
	}
	return d
}

// enforced reports whether collection may have a published horizon, which
// every instance then enforces (checkLease, passedBefore, writeHorizons):
// any collection with a valid name but the server's own, whatever this
// instance's rules say (a change to one with an invalid name is refused
// on its own, later). A horizon is published by a run on an instance whose rules give
// the collection a MaxOffline, not necessarily this one: a rollout of
// the rule may not have reached it yet, or the rule was removed after
// purges. What was purged under the horizon stays purged, so the horizon
// is enforced for as long as its record stands, which is for ever:
// nothing removes it, and an instance without the rule never raises it.
// Its cost is HorizonOf's cache: one store read per collection per
// historyTTL, remembered too when none is published.
func enforced(collection string) bool {
	return !proto.Reserved(collection) && crdt.ValidateCollection(collection) == nil
}

func (e *Engine) collecting() bool {
	for _, r := range e.rules {
		if r.MaxOffline > 0 {
			return true
		}
	}
	return false
}

// horizons caches the published horizons.
type horizons struct {
	mu     sync.Mutex
	m      map[string]horizonSeen
	leases map[string]lease // collection + "/" + replica
	// fresh counts, per collection and subject, the leases written here
	// that were not in leases, since freshAt (ms): admitLease.
	fresh   map[string]int
	freshAt int64
	warned  bool          // the store cannot purge: said once
	totals  CollectTotals // what Collect did (CollectTotals)
}

type horizonSeen struct {
	h  Horizon
	ok bool // a horizon is published
	at time.Time
}

// lease is a lease as written (horizons.leases) or read back (leaseScan).
type lease struct {
	epoch uint64
	pos   []uint64
	floor int64 // -1: none
	seen  int64
	rec   crdt.Record // as read back: what removing it deletes
}

// HorizonOf returns collection's published horizon, and false when none
// is: from a cache at most historyTTL old unless fresh is set.
func (e *Engine) HorizonOf(ctx context.Context, collection string, fresh bool) (Horizon, bool, error) {
	now := time.Now()
	e.hz.mu.Lock()
	hs, cached := e.hz.m[collection]
	e.hz.mu.Unlock()
	if cached && !fresh && now.Sub(hs.at) < historyTTL {
		return hs.h, hs.ok, nil
	}
	ent, err := e.store.Get(ctx, proto.HorizonCollection, collection)
	switch {
	case errors.Is(err, stores.ErrNotFound):
		hs = horizonSeen{at: now}
	case err != nil:
		return Horizon{}, false, fmt.Errorf("read the horizon of %s: %w", collection, err)
	default:
		h, ok := decodeHorizon(ent.Record)
		hs = horizonSeen{h: h, ok: ok, at: now}
	}
	e.hz.remember(collection, hs)
	return hs.h, hs.ok, nil
}

// forget drops every horizon cached (Engine.forgetViews).
func (hz *horizons) forget() {
	hz.mu.Lock()
	clear(hz.m)
	hz.mu.Unlock()
}

// forgetOne drops collection's horizon cached: its epoch changed.
func (hz *horizons) forgetOne(collection string) {
	hz.mu.Lock()
	delete(hz.m, collection)
	hz.mu.Unlock()
}

func (hz *horizons) remember(collection string, hs horizonSeen) {
	hz.mu.Lock()
	defer hz.mu.Unlock()
	if hz.m == nil || len(hz.m) >= maxHistory {
		hz.m = map[string]horizonSeen{}
	}
	hz.m[collection] = hs
}

func decodeHorizon(r crdt.Record) (Horizon, bool) {
	if !r.Exists() {
		return Horizon{}, false
	}
	var h Horizon
	f, ok := r.Fields[HorizonFieldRead]
	if !ok || f.Value == nil || crdt.DecodeValue(f.Value, &h.Read) != nil {
		return Horizon{}, false
	}
	h.stamp = f.Stamp
	decodeInt(r, HorizonFieldWall, &h.Wall)
	decodeInt(r, HorizonFieldEpoch, &h.Epoch)
	decodeInt(r, HorizonFieldPrevWall, &h.PrevWall)
	decodeInt(r, HorizonFieldAt, &h.At)
	decodeInt(r, HorizonFieldSince, &h.Since)
	decodeInt(r, HorizonFieldID, &h.ID)
	if f := r.Fields[HorizonFieldPrevRead]; f.Value != nil {
		_ = crdt.DecodeValue(f.Value, &h.PrevRead)
	}
	// Raised and Heads are read only as written with Read, by one
	// publication: an instance that does not write one of them (of
	// before it existed) leaves an earlier publication's in the record,
	// perhaps of another epoch, whose positions and ids are not this
	// one's.
	if f := r.Fields[HorizonFieldRaised]; f.Value != nil && f.Stamp == h.stamp {
		if crdt.DecodeValue(f.Value, &h.Raised) != nil || len(h.Raised) != len(h.Read) {
			h.Raised = nil
		}
	}
	if f := r.Fields[HorizonFieldHeads]; f.Value != nil && f.Stamp == h.stamp {
		if crdt.DecodeValue(f.Value, &h.Heads) != nil ||
			slices.ContainsFunc(h.Heads, func(hd []uint64) bool { return len(hd) != 1+len(h.Read) }) ||
			!slices.IsSortedFunc(h.Heads, func(a, b []uint64) int { return cmp.Compare(a[0], b[0]) }) {
			h.Heads = nil
		}
	}
	return h, true
}

func decodeInt[T int64 | uint64](r crdt.Record, name string, out *T) bool {
	f, ok := r.Fields[name]
	return ok && f.Value != nil && crdt.DecodeValue(f.Value, out) == nil
}

// checkLease resets a cursor with a position before collection's
// published read horizon (ResetLeaseExpired), unless its mark says its
// reading began from the start after R was raised there (Horizon.readSince).
// The start never is. It returns the mark of the cursor that follows: the
// cursor's own, or for the start the id of the horizon published now (0
// when none is).
func (e *Engine) checkLease(ctx context.Context, collection string, cursor Cursor, m stores.Meta) (uint64, error) {
	if !enforced(collection) {
		return cursor.mark, nil
	}
	h, ok, err := e.HorizonOf(ctx, collection, false)
	if err != nil {
		return 0, err
	}
	if cursor.IsStart() {
		if !ok {
			return 0, nil
		}
		return h.ID, nil
	}
	if !ok || h.Epoch != m.Epoch || h.passed(cursor) == "" {
		return cursor.mark, nil
	}
	// A reset is judged on the horizon the store holds now: a cached one
	// may be of a history the store no longer holds (a Redis restarted
	// empty under running servers holds none, and its log's positions
	// start again in the same epoch), and a reader of the new history
	// reset lease_expired would reconcile, dropping what only it holds.
	if h, ok, err = e.HorizonOf(ctx, collection, true); err != nil {
		return 0, err
	}
	if !ok || h.Epoch != m.Epoch {
		return cursor.mark, nil
	}
	if why := h.passed(cursor); why != "" {
		return 0, &ResetError{Collection: collection, Reason: ResetLeaseExpired, Detail: why}
	}
	return cursor.mark, nil
}

// passed says how h's read horizon passed cursor, a cursor of h's epoch:
// a position before R whose reading began before R was raised there
// (readSince); "" when it did not. A cursor of another shard count
// than h is not judged (checkCursor resets it).
func (h Horizon) passed(cursor Cursor) string {
	pos := cursor.heldPositions()
	if len(pos) != len(h.Read) {
		return ""
	}
	for i, p := range pos {
		if p < h.Read[i] && !h.readSince(cursor.mark, i) {
			return fmt.Sprintf("the cursor is at %d in shard %d, before the read horizon %d, and its reading began before that horizon was published", p, i, h.Read[i])
		}
	}
	return ""
}

// passedBefore says why the reader of cursor, of an epoch of collection
// that ended with nothing lost (checkCursor's ResetRebuilt), may have
// missed an entry a purge removed, "" when it cannot have: the read
// horizon published in its epoch passed it (Horizon.passed), or the one
// published is of a later epoch, which cannot say where the cursor's
// epoch's stood. Such a reader is owed ResetLeaseExpired instead: reset
// rebuilt, it reads the log again from the start and drops nothing it
// holds, so a record deleted and collected while its lease had expired
// would stay with it for ever; lease_expired makes it reconcile, which
// drops it and does all that rebuilt asks. The horizon is read as
// checkLease reads it.
func (e *Engine) passedBefore(ctx context.Context, collection string, cursor Cursor) (string, error) {
	if !enforced(collection) {
		return "", nil
	}
	h, ok, err := e.HorizonOf(ctx, collection, false)
	switch {
	case err != nil || !ok || h.Epoch < cursor.Epoch():
		return "", err
	case h.Epoch > cursor.Epoch():
		return fmt.Sprintf("a read horizon of epoch %d is published, which cannot say whether the one of the cursor's epoch had passed it", h.Epoch), nil
	}
	return h.passed(cursor), nil
}

// writeHorizons returns the write horizons of the collections of changes
// that have one published, whatever this instance's rules say (enforced);
// a collection with none is absent (0). It checks a collection once per
// run of changes to it, from HorizonOf's cache unless fresh is set,
// without allocating when none has a horizon.
//
// A cached horizon may be higher than the store's: one of a history the
// store no longer holds (a Redis restarted empty or flushed under running
// servers, a table restored in place), read up to historyTTL before. That
// is safe for what it takes (a horizon is published CollectGrace before
// anything is purged under it), not for what it refuses: a change refused
// collected is final, and a record whose every give-back is refused so is
// dropped by the replica that gave it back. So Apply reads the horizon
// afresh before it refuses a change collected.
func (e *Engine) writeHorizons(ctx context.Context, changes []crdt.Change, fresh bool) (map[string]int64, error) {
	var out map[string]int64
	for i, c := range changes {
		if i > 0 && c.Collection == changes[i-1].Collection {
			continue
		}
		if _, seen := out[c.Collection]; seen || !enforced(c.Collection) {
			continue
		}
		h, ok, err := e.HorizonOf(ctx, c.Collection, fresh)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		if out == nil {
			out = map[string]int64{}
		}
		out[c.Collection] = h.Wall
	}
	return out, nil
}

// horizonsFor is how long an Apply judges its changes against the write
// horizons it read before it reads them again for its next store call
// (horizonsStill). They came from a cache at most historyTTL old; a run
// that published a higher horizon after that purges no sooner than its
// grace after publishing. Half of what is left of the grace leaves the
// store call begun within it the other half to land before that purge.
func (e *Engine) horizonsFor() time.Duration {
	return max(e.grace-historyTTL, 0) / 2
}

// horizonsStill reads afresh the write horizons of the collections of
// changes, the rest of an Apply judged against was (its write horizons
// when it began), and returns them. A change that was, but no longer is,
// at or after its collection's write horizon fails the call with
// ErrHorizonMoved: a run may have collected a delete it would undo.
// Nothing of it has been applied; the caller retries, and the retry
// judges it against the new horizon (refused ErrCollected, or taken when
// the record as held outweighs it: heldLive).
func (e *Engine) horizonsStill(ctx context.Context, changes []crdt.Change, was map[string]int64) (map[string]int64, error) {
	now, err := e.writeHorizons(ctx, changes, true)
	if err != nil {
		return nil, err
	}
	for _, c := range changes {
		if w := now[c.Collection]; w > was[c.Collection] && checkCollected(c, was[c.Collection]) == nil && checkCollected(c, w) != nil {
			return nil, fmt.Errorf("apply %s/%s: %w: to %d", c.Collection, c.Record.ID, ErrHorizonMoved, w)
		}
	}
	return now, nil
}

// heldLive reports whether every stamp of change before the write
// horizon w changes nothing in stored, the record as the store holds it
// (raw: in the shapes it was written in), whatever is collected: each
// such field is held with a value (not an unset, not hidden by a delete)
// that its merge leaves in place (stamped after it, or at it and winning
// the tie), and such a delete is at or before stored's own. A held value
// is never collected, and it only grows, so the field loses now and at
// any later merge; a tombstone covering it might be collected before the
// change is applied, and the field would then come back. An older delete
// can bring nothing back. So a record given back after a loss, or pushed
// again, whose old fields the server still holds is not refused for them.
//
// The record is judged raw, not resolved to the current version: a
// resolved field may take its stamp from a tombstone (a merge stamps its
// target with the newest part, an unset one too), and once that is
// collected it falls back to an older stamp that a change taken meanwhile
// would beat. Merged into the raw record, a change heldLive accepts
// takes nothing, so no later purge can make it count.
//
// A field the raw record lacks may still be held under the names the
// collection's migrations d read into it (a record written before a
// migration keeps its old fields, and a change comes translated up): it
// is held when the record resolved from its held values alone (live,
// which no purge removes) holds it with a value, exactly as the record
// resolved whole does (so no tombstone, whichever are purged, counts in
// it), stamped after the change's, or at its stamp with the same value.
// Merged into the raw record, such a field changes nothing a reader
// sees: resolving keeps a present target unless its source is strictly
// newer, and the source outweighs it. So a record written before a
// migration and given back whole after a loss is taken with its later
// edits too.
func heldLive(d *migrate.Definition, stored, change crdt.Record, w int64) bool {
	if dl := change.Deleted; !dl.IsZero() && dl.Wall < w && dl.Compare(stored.Deleted) > 0 {
		return false
	}
	var live, full *crdt.Record // stored's held values resolved, and stored resolved, once needed
	for name, f := range change.Fields {
		if f.Stamp.Wall >= w {
			continue
		}
		g, ok := stored.Fields[name]
		if !ok && d != nil && d.Current() > 1 && !f.IsUnset() {
			if live == nil {
				l, _ := resolved(d, heldValues(stored))
				r, _ := resolved(d, stored)
				live, full = &l, &r
			}
			g, ok := live.Fields[name]
			if h := full.Fields[name]; !ok || g.IsUnset() || g.Stamp.Compare(live.Deleted) <= 0 || g.Stamp != h.Stamp || !bytes.Equal(g.Value, h.Value) {
				return false
			}
			if c := g.Stamp.Compare(f.Stamp); c < 0 || c == 0 && !bytes.Equal(f.Value, g.Value) {
				return false
			}
			continue
		}
		if !ok || g.IsUnset() || g.Stamp.Compare(stored.Deleted) <= 0 {
			return false
		}
		// Field order (crdt.Field): at equal stamps an unset, or the
		// larger value, wins.
		switch c := g.Stamp.Compare(f.Stamp); {
		case c < 0:
			return false
		case c == 0 && (f.IsUnset() || bytes.Compare(f.Value, g.Value) > 0):
			return false
		}
	}
	return true
}

// heldValues returns stored without its tombstones (unsets, and fields
// at or before its delete): what is left of it whatever a purge removes.
func heldValues(stored crdt.Record) crdt.Record {
	held := crdt.Record{ID: stored.ID, Deleted: stored.Deleted, Fields: make(map[string]crdt.Field, len(stored.Fields))}
	for name, f := range stored.Fields {
		if !f.IsUnset() && f.Stamp.Compare(stored.Deleted) > 0 {
			held.Fields[name] = f
		}
	}
	return held
}

// inOrder sorts changes and their indices in the call by index, so that
// changes of one record apply in the order they came in.
func inOrder(changes []crdt.Change, index []int) ([]crdt.Change, []int) {
	order := make([]int, len(index))
	for k := range order {
		order[k] = k
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(index[a], index[b]) })
	cs, is := make([]crdt.Change, len(order)), make([]int, len(order))
	for k, o := range order {
		cs[k], is[k] = changes[o], index[o]
	}
	return cs, is
}

// migratedFields returns what a purge of a collection with migrations d
// keeps unsets for (stores.Horizon): the fields d reads into others, and
// those it gives a default at any version. Nil maps without migrations.
func migratedFields(d *migrate.Definition) (sources, defaulted map[string]bool) {
	for _, f := range d.Sources() {
		if sources == nil {
			sources = map[string]bool{}
		}
		sources[f] = true
	}
	for v := 1; v <= d.Current(); v++ {
		for f := range d.Defaults(v) {
			if defaulted == nil {
				defaulted = map[string]bool{}
			}
			defaulted[f] = true
		}
	}
	return sources, defaulted
}

// checkCollected refuses a change with a stamp before w.
func checkCollected(c crdt.Change, w int64) error {
	if w <= 0 {
		return nil
	}
	if d := c.Record.Deleted; !d.IsZero() && d.Wall < w {
		return fmt.Errorf("%w: the delete is stamped at %d, before the write horizon %d", ErrCollected, d.Wall, w)
	}
	for name, f := range c.Record.Fields {
		if f.Stamp.Wall < w {
			return fmt.Errorf("%w: field %q is stamped at %d, before the write horizon %d", ErrCollected, name, f.Stamp.Wall, w)
		}
	}
	return nil
}

// Lease is what a reader presents with a pull or a subscription.
type Lease struct {
	// Replica is the reader's replica id; "" holds no lease.
	Replica string
	// Cursor is the cursor it presented.
	Cursor Cursor
	// Pending is the wall time (ms) of the oldest change in its outbox
	// for the collection; negative when none is pending.
	Pending int64
}

// NoteLease records l as the reader's lease on collection, for a
// collection with a MaxOffline (else it does nothing). It writes the
// lease record only when it matters: the first time this instance sees
// the lease, when a position went back, when a pending floor appeared or
// went back, or when the lease was last written more than
// MaxOffline/20 ago. A position or floor that moved forward is written
// at the next of those: a lease that lags is safe, it only holds the
// horizons back. A lease this instance has not written before, or whose
// record was gone when its last collection run read the leases (expired,
// or removed beyond a bound, by any instance's run: leaseScan.forget), is
// written only while the subject has made fewer than
// Config.MaxLeasesPerSubject such leases on collection in the current
// window (admitLease); past that NoteLease writes nothing and returns
// nil: the reader holds no lease. The caller checks that the principal
// owns l.Replica.
//
// A reader may name any collection its rights match, written or not. A
// lease from the start of a collection never written (every head 0)
// holds nothing unless it announces a pending floor: the reader's cursor
// is the start, which is never reset, and no horizon is published for
// the collection (publishHorizon). So without a floor NoteLease writes
// none, and with one it counts the lease, beyond the bound on the
// collection, against proto.MaxUnwrittenLeasesPerSubject for the
// subject across every collection never written (admitLease again; the
// collection runs hold the same bound, leaseScan.boundUnwritten). A
// reader past it holds no lease: its pending changes are held back for
// MaxOffline only, like anyone's.
//
// A lease it writes outweighs every lease of the reader written before,
// by whichever instance: another instance's clock may run ahead of this
// one's by up to MaxClockSkew, neither off, and its lease, written up to
// that much earlier, must not win over the one the reader presents now.
// The write is stamped from this instance's clock and, only when it lost,
// written again after what the record holds (applyOwnRetried), so a lease
// write reads the store only then.
//
// While the engine's clock is off its store's (ClockHealth) NoteLease
// writes nothing and returns that error, wrapping ErrClockSkew: a lease
// seen a year ahead would hold the read horizons for a year, one seen
// far behind would let another instance take it for expired. A lease
// written before stays as it was, which only holds the horizons back.
func (e *Engine) NoteLease(ctx context.Context, collection string, l Lease) error {
	maxOff := e.MaxOffline(collection)
	if maxOff == 0 || l.Replica == "" {
		return nil
	}
	if err := e.ClockHealth(); err != nil {
		return fmt.Errorf("lease %s/%s: %w", collection, l.Replica, err)
	}
	key := collection + "/" + l.Replica
	if err := stores.CheckKey(proto.LeaseCollection, key); err != nil {
		return fmt.Errorf("lease %s: %w", key, err)
	}
	now := e.wall()
	pos := l.Cursor.heldPositions()
	floor := max(l.Pending, -1)
	epoch := l.Cursor.Epoch()
	if l.Cursor.IsStart() {
		_, m, err := e.view(ctx, collection, false)
		if err != nil {
			return err
		}
		epoch, pos = m.Epoch, make([]uint64, stores.ShardsOf(m))
	}
	e.hz.mu.Lock()
	old, ok := e.hz.leases[key]
	e.hz.mu.Unlock()
	if ok && old.epoch == epoch && len(old.pos) == len(pos) && now-old.seen < (maxOff/leaseRefreshDivisor).Milliseconds() {
		back := false
		for i := range pos {
			back = back || pos[i] < old.pos[i]
		}
		floorBack := floor >= 0 && (old.floor < 0 || floor < old.floor)
		if !back && !floorBack {
			return nil
		}
	}
	// A cursor off the start was read from a written log (its epoch
	// checked by the pull it came from); from the start, the heads tell.
	// They are read after the pull that presented l: a head it saw above
	// 0 is still above 0.
	unwritten := false
	if l.Cursor.IsStart() {
		var err error
		if unwritten, err = e.unwritten(ctx, collection); err != nil {
			return fmt.Errorf("lease %s: %w", key, err)
		}
		if unwritten && floor < 0 {
			return nil
		}
	}
	if !ok {
		e.hz.mu.Lock()
		admitted := e.hz.admitLease(collection, l.Replica, unwritten, now, e.leaseWindow(), e.maxLeases)
		e.hz.mu.Unlock()
		if !admitted {
			e.log.Debug("lease not written: the subject made as many new leases on the collection (or on collections never written) in this window as the bound",
				"collection", collection, "replica", l.Replica, "bound", e.maxLeases, "unwritten", unwritten)
			return nil
		}
	}
	// The lease is what the reader presents now, so it must outweigh
	// every lease of it written before, whichever instance wrote it: one
	// stamped by a clock that runs ahead of this one's, within
	// MaxClockSkew, would otherwise win, silently, with a position the
	// reader has gone back from (its read horizon released while it reads
	// below it: reset lease_expired) or without the floor it announces now
	// (its pending edit refused collected). applyOwnRetried reads the
	// record only when this write lost.
	err := e.applyOwnRetried(ctx, "lease", proto.LeaseCollection, key, func(st crdt.Stamp) crdt.Record {
		rec := crdt.Record{ID: key, Fields: map[string]crdt.Field{}}
		set := func(name string, v any) {
			b, _ := crdt.EncodeValue(v) // integers and arrays of them
			rec.Fields[name] = crdt.Field{Stamp: st, Value: b}
		}
		set(LeaseFieldPos, pos)
		set(LeaseFieldSeen, now)
		set(LeaseFieldEpoch, epoch)
		if floor >= 0 {
			set(LeaseFieldFloor, floor)
		} else {
			rec.Fields[LeaseFieldFloor] = crdt.Field{Stamp: st}
		}
		return rec
	})
	if err != nil {
		return err
	}
	e.hz.mu.Lock()
	if e.hz.leases == nil || len(e.hz.leases) >= maxHistory {
		e.hz.leases = map[string]lease{}
	}
	e.hz.leases[key] = lease{epoch: epoch, pos: pos, floor: floor, seen: now}
	e.hz.mu.Unlock()
	return nil
}

// leaseWindow is how long admitLease counts new leases for: the
// interval of the collection job, whose runs bring each subject back
// within the bound.
func (e *Engine) leaseWindow() int64 {
	if e.collectEvery > 0 {
		return e.collectEvery.Milliseconds()
	}
	return DefaultCollectEvery.Milliseconds()
}

// admitLease says whether this instance may write a lease it has not
// written before (not in hz.leases) for replica on collection: it counts
// such leases per collection and subject (leaseSubject) over windows of
// window ms, and admits at most max in one window. So between two runs of
// the job, which keep each subject's leases within the bound, one
// instance adds at most about the bound again per subject and collection
// (a window not aligned with the runs: up to twice that). A lease of a
// collection never written (unwritten) is also counted per subject across
// all such collections, and admitted only while that count is below
// proto.MaxUnwrittenLeasesPerSubject. A lease not admitted is not
// written: its reader holds none, as if a run had evicted it. The counts
// are forgotten, like the lease cache, past maxHistory keys. hz.mu must
// be held.
func (hz *horizons) admitLease(collection, replica string, unwritten bool, now, window int64, max int) bool {
	if hz.fresh == nil || now-hz.freshAt >= window || now < hz.freshAt || len(hz.fresh) >= maxHistory {
		hz.fresh, hz.freshAt = map[string]int{}, now
	}
	sub := leaseSubject(replica)
	k := collection + "\x00" + sub
	if hz.fresh[k] >= max {
		return false
	}
	if unwritten {
		ku := "\x00" + sub // no collection name is empty
		if hz.fresh[ku] >= proto.MaxUnwrittenLeasesPerSubject {
			return false
		}
		hz.fresh[ku]++
	}
	hz.fresh[k]++
	return true
}

// unwritten reports whether collection was never written (in its current
// epoch): its head is 0, which for a sharded collection means every
// shard's (stores.Store.Head). One read of the store.
func (e *Engine) unwritten(ctx context.Context, collection string) (bool, error) {
	h, err := e.store.Head(ctx, collection)
	if err != nil {
		return false, fmt.Errorf("head %s: %w", collection, err)
	}
	return h == 0, nil
}

// CollectReport says what one Collect did to one collection.
type CollectReport struct {
	Collection string
	Horizon    Horizon
	// Skipped: nothing was purged under Horizon: another run published
	// a later horizon during the grace (it purges), or the collection's
	// epoch changed before the purge's first step (the next run
	// publishes one of the new epoch), or this run read the published
	// horizon too long before it could write its own (errStaleHorizon;
	// Horizon is then zero: nothing was published). A purge whose epoch
	// changed between two steps stops there, and is not Skipped.
	Skipped bool
	// Held: Horizon's write horizon was held at the one published before,
	// for MaxOffline after a loss of history (lostRecently) or after the
	// store's first horizon of the collection (begunRecently): tombstones
	// stamped since are not collected meanwhile.
	Held bool
	stores.PurgeResult
}

// CollectTotals counts what Collect did on this engine since it opened,
// by the background job and by direct calls alike. Like WriteHealth it
// is read by the layer that reports it (the transport's metrics): the
// engine keeps the counts, not the metrics. Every count only goes up.
type CollectTotals struct {
	// Purged counts the collections a run published a horizon for and
	// purged under it (CollectReport, not Skipped).
	Purged uint64
	// Skipped counts the collections a run left to another run: one that
	// published a later horizon during the grace, or the next, when the
	// collection's epoch changed before the purge began or the run read
	// the published horizon too long before it could write its own
	// (CollectReport.Skipped).
	Skipped uint64
	// Held counts the horizons a run published with the write horizon
	// held after a loss of history or the store's first horizon of the
	// collection (CollectReport.Held).
	Held uint64
	// Failed counts the runs that ended in an error, one each whatever
	// the collection they were at; a run stopped by its context
	// (the engine closing) is not counted.
	Failed uint64
	// Records, Deletes, Fields and Bytes add up what the purges removed
	// (stores.PurgeResult), including the pages a failed purge completed.
	Records, Deletes, Fields, Bytes uint64
}

// CollectTotals returns what Collect did since the engine opened.
func (e *Engine) CollectTotals() CollectTotals {
	e.hz.mu.Lock()
	defer e.hz.mu.Unlock()
	return e.hz.totals
}

// reclaimed adds what a purge removed to the totals.
func (hz *horizons) reclaimed(r stores.PurgeResult) {
	hz.mu.Lock()
	defer hz.mu.Unlock()
	hz.totals.Records += uint64(max(r.Records, 0))
	hz.totals.Deletes += uint64(max(r.Deletes, 0))
	hz.totals.Fields += uint64(max(r.Fields, 0))
	hz.totals.Bytes += uint64(max(r.Bytes, 0))
}

// held counts a horizon published with its write horizon held.
func (hz *horizons) held() {
	hz.mu.Lock()
	defer hz.mu.Unlock()
	hz.totals.Held++
}

// ran counts the outcome of one collection's run.
func (hz *horizons) ran(skipped bool) {
	hz.mu.Lock()
	defer hz.mu.Unlock()
	if skipped {
		hz.totals.Skipped++
	} else {
		hz.totals.Purged++
	}
}

// leaseScan is what one collection run keeps of the lease records: per
// collection and subject (leaseSubject), at most maxLeases live leases,
// the most recently seen. The records of expired leases and of leases
// beyond the bound are deleted as the scan meets them (stores.DeleteAsRead)
// in batches, so memory holds at most maxLeases leases per subject and
// collection, never the whole lease log. Once the log is read, the leases
// of collections never written are held to their own bounds
// (boundUnwritten).
type leaseScan struct {
	e       *Engine
	now     int64 // ms, when the scan began
	max     int
	kept    map[string]map[string]map[string]lease // collection → subject → id → lease
	drop    []crdt.Change
	removed int // records deleted: expired or beyond a bound
	evicted int // of which beyond the bound per collection
	// unwritten holds the collections of kept leases found never written
	// (boundUnwritten); evictedUnwritten counts the leases of them removed.
	unwritten        map[string]bool
	evictedUnwritten int
}

// leaseSubject is whom the bound on leases counts a replica against: its
// replica prefix (the subject that owns it, proto.PrefixOf), or the id
// itself for an id of another shape (a server's, a tool's), which the
// transport never accepts as a lease on a collected collection.
func leaseSubject(replica string) string {
	if p, ok := proto.PrefixOf(replica); ok {
		return p
	}
	return replica
}

// add takes one lease record as read.
func (s *leaseScan) add(ctx context.Context, r crdt.Record) error {
	i := strings.LastIndexByte(r.ID, '/')
	if i <= 0 || !r.Exists() {
		return nil
	}
	coll, replica := r.ID[:i], r.ID[i+1:]
	maxOff := s.e.MaxOffline(coll).Milliseconds()
	if maxOff == 0 {
		return nil // not collected (here): no lease of it expires
	}
	l := lease{floor: -1}
	if f := r.Fields[LeaseFieldPos]; f.Value == nil || crdt.DecodeValue(f.Value, &l.pos) != nil {
		// Not held to: its reader may be reset as if it had expired.
		s.e.log.Warn("tombstone collection: a lease without readable positions is ignored", "lease", r.ID)
		return nil
	}
	decodeInt(r, LeaseFieldSeen, &l.seen)
	decodeInt(r, LeaseFieldEpoch, &l.epoch)
	decodeInt(r, LeaseFieldFloor, &l.floor)
	l.rec = r
	subs := s.kept[coll]
	if subs == nil {
		subs = map[string]map[string]lease{}
		s.kept[coll] = subs
	}
	sub := leaseSubject(replica)
	held := subs[sub]
	delete(held, r.ID) // read again (rewritten during the scan): this state is the later
	if l.seen < s.now-maxOff {
		return s.remove(ctx, r, false) // expired: it holds nothing back
	}
	if held == nil {
		held = map[string]lease{}
		subs[sub] = held
	}
	held[r.ID] = l
	if len(held) <= s.max {
		return nil
	}
	// Beyond the bound: the subject's least recently seen lease goes.
	var ev lease
	oldest := ""
	for id, h := range held {
		if oldest == "" || h.seen < ev.seen || h.seen == ev.seen && id < oldest {
			oldest, ev = id, h
		}
	}
	delete(held, oldest)
	return s.remove(ctx, ev.rec, true)
}

// boundUnwritten holds the leases kept of collections never written to
// what NoteLease takes of them: it removes those without a pending floor
// (they hold nothing: their cursors are the start, and no horizon is
// published for such a collection), and of one subject's leases with a
// floor across all such collections keeps the
// proto.MaxUnwrittenLeasesPerSubject most recently seen. It reads the
// heads of each collection whose kept leases all sit at the start (a
// lease off the start was read from a written log), after the whole
// lease log was read: a lease written once its collection was written
// is seen written here.
func (s *leaseScan) boundUnwritten(ctx context.Context) error {
	var colls []string
	for c, subs := range s.kept {
		atStart, any := true, false
		for _, held := range subs {
			for _, l := range held {
				any = true
				atStart = atStart && !slices.ContainsFunc(l.pos, func(p uint64) bool { return p > 0 })
			}
		}
		if any && atStart {
			colls = append(colls, c)
		}
	}
	slices.Sort(colls)
	type held struct {
		coll, id string
		l        lease
	}
	bySubject := map[string][]held{}
	for _, c := range colls {
		unwritten, err := s.e.unwritten(ctx, c)
		if err != nil {
			return fmt.Errorf("read the leases: %w", err)
		}
		if !unwritten {
			continue
		}
		s.unwritten[c] = true
		for sub, ls := range s.kept[c] {
			for id, l := range ls {
				if l.floor >= 0 {
					bySubject[sub] = append(bySubject[sub], held{c, id, l})
					continue
				}
				delete(ls, id)
				if err := s.remove(ctx, l.rec, false); err != nil {
					return err
				}
			}
		}
	}
	for sub, hs := range bySubject {
		if len(hs) <= proto.MaxUnwrittenLeasesPerSubject {
			continue
		}
		slices.SortFunc(hs, func(a, b held) int {
			if c := cmp.Compare(b.l.seen, a.l.seen); c != 0 {
				return c // the most recently seen first
			}
			return strings.Compare(a.id, b.id)
		})
		for _, h := range hs[proto.MaxUnwrittenLeasesPerSubject:] {
			delete(s.kept[h.coll][sub], h.id)
			s.evictedUnwritten++
			if err := s.remove(ctx, h.l.rec, false); err != nil {
				return err
			}
		}
	}
	return nil
}

// remove deletes the lease record r as read.
func (s *leaseScan) remove(ctx context.Context, r crdt.Record, evicted bool) error {
	c, ok := stores.DeleteAsRead(proto.LeaseCollection, r)
	if !ok {
		return nil
	}
	s.drop = append(s.drop, c)
	s.removed++
	if evicted {
		s.evicted++
	}
	if len(s.drop) >= stores.MaxBatch {
		return s.flush(ctx)
	}
	return nil
}

// flush applies the deletes gathered so far.
func (s *leaseScan) flush(ctx context.Context) error {
	if len(s.drop) == 0 {
		return nil
	}
	res, err := s.e.Apply(ctx, s.drop)
	if err != nil {
		return fmt.Errorf("remove leases: %w", err)
	}
	for i, r := range res {
		if r.Err != nil {
			return fmt.Errorf("remove lease %s: %w", s.drop[i].Record.ID, r.Err)
		}
	}
	s.drop = s.drop[:0]
	return nil
}

// forget drops from this instance's lease cache (hz.leases) the leases
// the whole scan did not keep, unless written since it began: those this
// run removed (expired, beyond a bound), and those gone before it (another
// instance's run removed them). NoteLease then takes such a lease's reader
// as new, within the bound on new leases (admitLease), rather than writing
// its lease again at its next renewal, uncounted.
func (s *leaseScan) forget() {
	hz := &s.e.hz
	hz.mu.Lock()
	defer hz.mu.Unlock()
	for key, l := range hz.leases {
		if l.seen >= s.now {
			continue
		}
		i := strings.LastIndexByte(key, '/')
		if i < 0 {
			delete(hz.leases, key) // not a lease's key (NoteLease writes none such)
			continue
		}
		if _, kept := s.kept[key[:i]][leaseSubject(key[i+1:])][key]; !kept {
			delete(hz.leases, key)
		}
	}
}

// leases returns the live leases kept of collection.
func (s *leaseScan) leases(collection string) []lease {
	var out []lease
	for _, held := range s.kept[collection] {
		for _, l := range held {
			out = append(out, l)
		}
	}
	return out
}

// scanLeases reads the lease log page by page: it keeps the live leases
// within the bound (leaseScan), removes the records of the others, and
// then purges the lease log of the tombstones left (purgeLeases).
func (e *Engine) scanLeases(ctx context.Context, purger stores.Purger) (*leaseScan, error) {
	s := &leaseScan{e: e, now: e.wall(), max: e.maxLeases, kept: map[string]map[string]map[string]lease{}, unwritten: map[string]bool{}}
	var cur Cursor
	for more := true; more; {
		page, err := e.Pull(ctx, proto.LeaseCollection, cur, PageLimit{})
		if errors.Is(err, ErrReset) {
			cur = Cursor{}
			clear(s.kept)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read the leases: %w", err)
		}
		for _, en := range page.Entries {
			if err := s.add(ctx, en.Record); err != nil {
				return nil, err
			}
		}
		cur, more = page.Next, page.More
	}
	if err := s.boundUnwritten(ctx); err != nil {
		return nil, err
	}
	if err := s.flush(ctx); err != nil {
		return nil, err
	}
	s.forget()
	if s.evicted > 0 {
		e.log.Info("tombstone collection: leases beyond the bound per subject removed", "leases", s.evicted, "bound", s.max)
	}
	if s.evictedUnwritten > 0 {
		e.log.Info("tombstone collection: leases of collections never written beyond the bound per subject removed",
			"leases", s.evictedUnwritten, "bound", proto.MaxUnwrittenLeasesPerSubject)
	}
	if err := e.purgeLeases(ctx, purger, s.now); err != nil {
		return nil, err
	}
	return s, nil
}

// purgeLeases removes from the lease log the records this run and earlier
// ones deleted, whole, with their log entries: it purges the whole log
// (the read horizon at its heads: the only reader of the log is this
// scan, which starts from the beginning every run) under a write horizon
// of now. A live lease loses only an unset floor field, which reads as
// none pending either way.
func (e *Engine) purgeLeases(ctx context.Context, purger stores.Purger, now int64) error {
	_, m, err := e.view(ctx, proto.LeaseCollection, true)
	if err != nil {
		return err
	}
	heads, err := e.shardHeads(ctx, proto.LeaseCollection, stores.ShardsOf(m))
	if err != nil {
		return err
	}
	var after []uint64
	for {
		res, err := purger.Purge(ctx, proto.LeaseCollection, stores.Horizon{Epoch: m.Epoch, Read: heads, Wall: now}, stores.PurgeScan{After: after})
		if errors.Is(err, stores.ErrEpochChanged) {
			// The heads are of the epoch that ended: the next run
			// purges under those of the new one.
			e.log.Info("tombstone collection: the lease log's epoch changed; its purge is left to the next run", "err", err)
			return nil
		}
		if err != nil {
			return fmt.Errorf("purge the leases: %w", err)
		}
		if after = res.Next; !res.More {
			return nil
		}
	}
}

// Collect runs the collection job once: for every collection with a
// MaxOffline that has a lease, a published horizon or was written through
// this engine, it computes and publishes the horizons, waits the grace
// and purges. A store that cannot purge (no stores.Purger) makes it log
// once and do nothing. Safe to run concurrently, on any instances. What
// it did is added to CollectTotals. While the engine's clock is off the
// store's (ClockHealth) it refuses to run, with that error.
//
// A bug (a panic) met in a run, on the leases and horizons that clients'
// reads write, fails the run as an error does: the collection loop runs on
// a goroutine of the engine's own, which nothing else recovers.
func (e *Engine) Collect(ctx context.Context) (reports []CollectReport, err error) {
	defer func() {
		if err != nil && ctx.Err() == nil {
			e.hz.mu.Lock()
			e.hz.totals.Failed++
			e.hz.mu.Unlock()
		}
	}()
	err = bug.Recovered(func() (err error) {
		reports, err = e.collect(ctx)
		return err
	})
	return reports, err
}

// collect is a run of Collect.
func (e *Engine) collect(ctx context.Context) ([]CollectReport, error) {
	// Leases expire and horizons move by this instance's clock: off the
	// store's, it would expire every lease (ahead) or hold nothing back
	// it should (behind). Another instance, in time, collects meanwhile.
	if err := e.ClockHealth(); err != nil {
		return nil, fmt.Errorf("collect: %w", err)
	}
	purger, ok := e.store.(stores.Purger)
	if !ok {
		e.hz.mu.Lock()
		warned := e.hz.warned
		e.hz.warned = true
		e.hz.mu.Unlock()
		if !warned {
			e.log.Warn("tombstone collection: the store cannot purge; tombstones are kept")
		}
		return nil, nil
	}
	leases, err := e.scanLeases(ctx, purger)
	if err != nil {
		return nil, err
	}
	colls := map[string]bool{}
	for c := range leases.kept {
		colls[c] = true
	}
	e.mu.Lock()
	for c := range e.clocks {
		colls[c] = true
	}
	e.mu.Unlock()
	if err := e.eachRecord(ctx, proto.HorizonCollection, func(r crdt.Record) { colls[r.ID] = true }); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(colls))
	for c := range colls {
		// A collection the scan found never written has nothing to
		// collect (publishHorizon); written since, it is collected at
		// the next run.
		if e.MaxOffline(c) > 0 && !leases.unwritten[c] {
			names = append(names, c)
		}
	}
	slices.Sort(names)
	type job struct {
		coll string
		h    Horizon
		held bool
	}
	var jobs []job
	var reports []CollectReport
	for _, c := range names {
		h, written, held, err := e.publishHorizon(ctx, c, leases.leases(c))
		if errors.Is(err, errStaleHorizon) {
			e.log.Warn("tombstone collection: the published horizon was read too long ago to publish one over it; the collection is left to the next run",
				"collection", c, "err", err)
			e.hz.ran(true)
			reports = append(reports, CollectReport{Collection: c, Skipped: true})
			continue
		}
		if err != nil {
			return nil, err
		}
		if written {
			jobs = append(jobs, job{c, h, held})
		}
	}
	if len(jobs) == 0 {
		return reports, nil
	}
	if g := e.grace; g > 0 {
		t := time.NewTimer(g)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
	for _, j := range jobs {
		rep := CollectReport{Collection: j.coll, Horizon: j.h, Held: j.held}
		cur, ok, err := e.HorizonOf(ctx, j.coll, true)
		if err != nil {
			return reports, err
		}
		if !ok || cur.stamp != j.h.stamp {
			rep.Skipped = true
			e.hz.ran(true)
			reports = append(reports, rep)
			continue
		}
		sources, defaulted := migratedFields(e.Migrations(j.coll))
		var after []uint64
		for steps := 0; ; steps++ {
			// The positions of R are of the epoch it was computed in.
			// Purged under them in a later one, the log would lose
			// entries that readers of the new epoch read, and that its
			// first R, which may be lower, cannot explain (purgeable):
			// taken for proof that the store went back. So the epoch is
			// read again before every step, not only after the grace: a
			// purge of a large collection takes many. A change between
			// this read and the store's removals the store itself
			// refuses (stores.Horizon.Epoch, ErrEpochChanged).
			_, m, err := e.view(ctx, j.coll, true)
			if err != nil {
				return reports, err
			}
			changed := func(now uint64) {
				e.log.Info("tombstone collection: the collection's epoch changed; nothing more purged, the next run publishes a horizon of the new epoch",
					"collection", j.coll, "epoch", j.h.Epoch, "now", now, "steps", steps)
				rep.Skipped = steps == 0
			}
			if m.Epoch != j.h.Epoch || stores.ShardsOf(m) != len(j.h.Read) {
				changed(m.Epoch)
				break
			}
			res, err := purger.Purge(ctx, j.coll, stores.Horizon{Epoch: j.h.Epoch, Read: j.h.Read, Wall: j.h.Wall, Sources: sources, Defaulted: defaulted},
				stores.PurgeScan{After: after})
			if errors.Is(err, stores.ErrEpochChanged) {
				_, m, verr := e.view(ctx, j.coll, true)
				if verr != nil {
					return reports, verr
				}
				changed(m.Epoch)
				break
			}
			if err != nil {
				return reports, fmt.Errorf("collect %s: %w", j.coll, err)
			}
			e.hz.reclaimed(res)
			rep.Scanned += res.Scanned
			rep.Records += res.Records
			rep.Deletes += res.Deletes
			rep.Fields += res.Fields
			rep.Bytes += res.Bytes
			rep.Next, after = res.Next, res.Next
			if !res.More {
				break
			}
		}
		if !rep.Skipped {
			e.log.Info("tombstones collected", "collection", j.coll, "read", j.h.Read, "wall", j.h.Wall,
				"records", rep.Records, "deletes", rep.Deletes, "fields", rep.Fields, "bytes", rep.Bytes)
		}
		e.hz.ran(rep.Skipped)
		reports = append(reports, rep)
	}
	return reports, nil
}

// eachRecord calls f with every record of collection.
func (e *Engine) eachRecord(ctx context.Context, collection string, f func(crdt.Record)) error {
	var cur Cursor
	for more := true; more; {
		page, err := e.Pull(ctx, collection, cur, PageLimit{})
		if errors.Is(err, ErrReset) {
			cur = Cursor{}
			continue
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", collection, err)
		}
		for _, en := range page.Entries {
			f(en.Record)
		}
		cur, more = page.Next, page.More
	}
	return nil
}

// publishHorizon computes collection's horizons from its leases, raises
// them to the published ones (R never goes down within an epoch, W never
// at all: it is a wall time, and what was collected under it stays
// collected in the next epoch), holds W at the published one for
// MaxOffline after a loss of history (lostRecently) or after the store's
// first horizon of the collection (begunRecently), and publishes the
// result. A collection never written (every head 0) has
// nothing to collect: nothing is published for it (written false), so
// that leases of names nobody wrote (a reader may name any collection its
// rights match) leave no horizon record behind, which no run would ever
// remove. held says the write horizon was held (lostRecently,
// begunRecently).
func (e *Engine) publishHorizon(ctx context.Context, collection string, leases []lease) (_ Horizon, written, held bool, _ error) {
	now := e.wall()
	maxOff := e.MaxOffline(collection).Milliseconds()
	_, m, err := e.view(ctx, collection, true)
	if err != nil {
		return Horizon{}, false, false, err
	}
	heads, err := e.shardHeads(ctx, collection, stores.ShardsOf(m))
	if err != nil {
		return Horizon{}, false, false, err
	}
	if !slices.ContainsFunc(heads, func(h uint64) bool { return h > 0 }) {
		return Horizon{}, false, false, nil
	}
	h := Horizon{Epoch: m.Epoch, Read: slices.Clone(heads), Wall: now - maxOff, At: now}
	reach := now - pendingFloorReach*maxOff // no floor holds W further back
	for _, l := range leases {
		if l.seen < now-maxOff {
			continue // expired
		}
		// A floor is a wall time, whatever history the reader's
		// positions are of: its pending changes are still to be pushed
		// after the reset its cursor of another epoch gets.
		if l.floor >= 0 {
			h.Wall = min(h.Wall, max(l.floor, reach))
		}
		if l.epoch != m.Epoch || len(l.pos) != len(heads) {
			continue // positions of another history: its reader is reset anyway
		}
		for i, p := range l.pos {
			h.Read[i] = min(h.Read[i], p)
		}
	}
	// What is published below is raised to the horizon read here, and
	// must reach the store while that is still the latest: see
	// errStaleHorizon.
	read := time.Now()
	prev, ok, err := e.HorizonOf(ctx, collection, true)
	if err != nil {
		return Horizon{}, false, false, err
	}
	same := ok && prev.Epoch == h.Epoch && len(prev.Read) == len(h.Read)
	var recorded [][]uint64
	if same {
		recorded = prev.Heads
		// No lease holds R below the heads of pendingFloorReach ×
		// MaxOffline ago: its reader presents positions it read past
		// long since (pendingFloorReach).
		if floor := headsFloor(recorded, reach); floor != nil {
			for i := range h.Read {
				h.Read[i] = max(h.Read[i], min(floor[i], heads[i]))
			}
		}
		for i := range h.Read {
			h.Read[i] = max(h.Read[i], prev.Read[i])
		}
		h.PrevRead = prev.Read
	}
	h.Heads = recordHeads(recorded, now, maxOff/headsEvery, reach, heads)
	if ok {
		// W never goes down, across epochs too: a purge under the
		// published W collected deletes stamped before it, in whatever
		// epoch, and a change stamped before such a delete must stay
		// refused (a lower W would take it, and bring back the record).
		h.Wall = max(h.Wall, prev.Wall)
		h.PrevWall = prev.Wall
	}
	h.Since = now
	if ok {
		h.Since = prev.Since
	}
	held = lostRecently(m, now, maxOff) || begunRecently(h.Since, now, maxOff)
	if held {
		// Nor does it rise for MaxOffline after a loss of history: the
		// leases of the lost history are lost with it (the store's are
		// older, expired), so now − MaxOffline could pass the stamps of
		// what it alone held, which the replicas reset history_lost
		// give back, and a give-back refused collected is dropped by
		// the replica that made it: by every replica, so lost
		// everywhere. Every replica whose lease was live when the
		// history was lost comes back within MaxOffline. A store made
		// anew (wiped) lost its epochs with the rest, so no epoch says
		// so: its first horizon does (begunRecently).
		h.Wall = 0
		if ok {
			h.Wall = prev.Wall
		}
	}
	// Stamped from this instance's clock alone, unlike a lease: written
	// less than MaxClockSkew after a publication of an instance whose
	// clock runs ahead, it loses to that one, which it was raised to when
	// read after it, and this run then purges nothing (its publication is
	// not the store's after the grace). That only delays collection
	// (docs/design.md, "The job").
	st, err := e.Now(proto.HorizonCollection)
	if err != nil {
		return Horizon{}, false, false, err
	}
	// The id: the sequence number goes on across epochs (a mark of an
	// earlier epoch is older than every publication of this one).
	var seq uint64
	if ok {
		seq = prev.ID >> horizonNonceBits
	}
	sum := sha256.Sum256([]byte(st.String()))
	h.ID = (seq+1)<<horizonNonceBits | uint64(sum[0])<<16 | uint64(sum[1])<<8 | uint64(sum[2])
	h.Raised = make([]uint64, len(h.Read))
	for i := range h.Raised {
		h.Raised[i] = h.ID
		if same && h.Read[i] == prev.Read[i] && prev.Raised != nil {
			h.Raised[i] = prev.Raised[i] // not raised: readers marked since keep reading
		}
	}
	rec := crdt.Record{ID: collection, Fields: map[string]crdt.Field{}}
	set := func(name string, v any) {
		b, _ := crdt.EncodeValue(v)
		rec.Fields[name] = crdt.Field{Stamp: st, Value: b}
	}
	set(HorizonFieldRead, h.Read)
	set(HorizonFieldWall, h.Wall)
	set(HorizonFieldEpoch, h.Epoch)
	set(HorizonFieldAt, h.At)
	set(HorizonFieldSince, h.Since)
	if h.PrevRead != nil {
		set(HorizonFieldPrevRead, h.PrevRead)
	} else {
		rec.Fields[HorizonFieldPrevRead] = crdt.Field{Stamp: st}
	}
	set(HorizonFieldPrevWall, h.PrevWall)
	set(HorizonFieldID, h.ID)
	set(HorizonFieldRaised, h.Raised)
	set(HorizonFieldHeads, h.Heads)
	pctx := ctx
	if e.grace > 0 {
		late := read.Add(e.grace / 2)
		if !time.Now().Before(late) {
			return Horizon{}, false, false, fmt.Errorf("publish the horizon of %s: %w: %v since it was read", collection, errStaleHorizon, time.Since(read).Round(time.Millisecond))
		}
		var cancel context.CancelFunc
		pctx, cancel = context.WithDeadline(ctx, late)
		defer cancel()
	}
	if err := e.applyOne(pctx, "publish horizon", crdt.Change{Collection: proto.HorizonCollection, Record: rec}); err != nil {
		if ctx.Err() == nil && pctx.Err() != nil {
			err = fmt.Errorf("%w: %w", errStaleHorizon, err)
		}
		return Horizon{}, false, false, err
	}
	h.stamp = st
	e.hz.remember(collection, horizonSeen{h: h, ok: true, at: time.Now()})
	if held {
		e.hz.held()
		e.log.Info("tombstone collection: the write horizon is held where it was published, after a loss of history or the store's first horizon of the collection; tombstones stamped since are not collected until MaxOffline has passed since then",
			"collection", collection, "wall", h.Wall, "lost_before", stores.LostBefore(m), "since", h.Since)
	}
	return h, true, held, nil
}

// lostRecently reports whether collection, of Meta m, lost history
// within maxOff ms of now (ms): the time stores.LostBefore reads in its
// epochs is after now − maxOff. That time is the store's clock's, not
// now's: one ahead of now by more than maxOff is taken for a clock set
// wrong (or epochs numbered otherwise), not for a recent loss, so the
// write horizon is held by one loss for at most twice maxOff of now.
// An epoch that is not a time (small) reads as a loss long ago. A
// rebuild (stores.Rebuilt) is no loss: it leaves Lost as it was.
func lostRecently(m stores.Meta, now, maxOff int64) bool {
	at := stores.LostBefore(m).UnixMilli()
	return at > now-maxOff && at <= now+maxOff
}

// begunRecently reports whether the first horizon of a collection in
// this store, published at since (ms; 0: before that was recorded), is
// within maxOff ms of now (ms). A store holds the leases taken since its
// first horizon only: one made anew (a memory store restarted, a Redis
// without persistence restarted or flushed, a bolt file lost) holds no
// lease, no horizon and epochs at 0, while every replica that read it
// before is reset history_lost and gives back what it holds, some of it
// stamped more than MaxOffline ago. So W is held, as after a loss
// (lostRecently), for MaxOffline from the first horizon; a since more than
// maxOff ahead of now is taken for a clock set wrong, as there.
func begunRecently(since, now, maxOff int64) bool {
	return since > 0 && since > now-maxOff && since <= now+maxOff
}

// shardHeads returns the head of each of collection's k shards.
func (e *Engine) shardHeads(ctx context.Context, collection string, k int) ([]uint64, error) {
	if k <= 1 {
		h, err := e.store.Head(ctx, collection)
		if err != nil {
			return nil, fmt.Errorf("head %s: %w", collection, err)
		}
		return []uint64{h}, nil
	}
	sh, ok := e.store.(stores.Sharder)
	if !ok {
		return nil, fmt.Errorf("%s: the store says %d shards but cannot read a shard's head", collection, k)
	}
	heads, err := sh.ShardHeads(ctx, collection)
	if err != nil {
		return nil, fmt.Errorf("heads of %s: %w", collection, err)
	}
	out := make([]uint64, k)
	copy(out, heads)
	return out, nil
}

// collectOnce runs Collect once, from the engine's background job.
func (e *Engine) collectOnce(ctx context.Context) {
	if _, err := e.Collect(ctx); err != nil && ctx.Err() == nil {
		e.log.Error("tombstone collection failed", "err", err)
	}
}
