package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// Replica is a local copy of some collections kept in sync through a
// Client: the server's version of each record, an outbox of local changes
// not yet acknowledged, the changes the server refused, and a cursor per
// collection. It is what a Go program (or a test) that writes offline and
// syncs later needs.
//
// It keeps everything in memory and nothing on disk: when the program
// ends, its outbox and its rejected changes are gone. A program that must
// not lose them pushes before it exits and reads Rejected.
//
// # The local view
//
// For each record the replica keeps the server's version (its base: what
// pulls and live pages delivered, merged with the local changes the server
// acknowledged), and the local view a reader sees (Get, Records) is always
// the base merged with the changes for that record still in the outbox.
// Local writes (Set, Unset, Delete) are stamped by the client's clock,
// merged into the view at once and queued. Records from the server merge
// into both. Since merge is idempotent and commutative, pulled records and
// local changes may arrive in any order and any number of times.
//
// Sync pushes the outbox, then pulls every collection from its cursor. A
// change the server acknowledges (applied, duplicate or superseded) leaves
// the outbox and joins the base: the server holds it or newer writes that
// beat it. A superseded change, or the lost fields of an applied one
// (Result.Lost), need no undoing: the newer writes that beat them reach the
// replica by pull or live sync and win the local merge as they won the
// server's. Changes the push did not answer stay for the next attempt.
//
// # Refused changes
//
// A change the server refuses will never be applied as it is (a record
// that would grow past the size limit by merging, a stamp the principal
// may not write, ...), and no client can foresee every refusal. The replica
// takes it out of the outbox and rolls the record's view back to the base
// merged with the changes still pending for it, so the refused write
// vanishes from the view at once, and keeps it among the rejected changes
// (Rejected) with the server's code and message, at most MaxRejected
// entries and MaxRejectedBytes bytes, the oldest dropped first and counted
// (RejectedDropped). The application is told through
// ReplicaConfig.OnRejected, and chooses to Retry a rejected change (a new
// write of the same values with fresh stamps, so it can win again) or to
// Discard it.
//
// # Reconciliation
//
// A server collects tombstones once every reader has seen them
// (docs/design.md, "Tombstone horizons"). A reader away longer than its
// lease allows is told so by a reset with reason proto.ResetLeaseExpired,
// and it alone knows which records the server acknowledged to it, so it
// reconciles the collection: it holds the collection's outbox (Flush sends
// none of its changes), pulls it from the beginning to the end, noting the
// records the server sends (each replaces the replica's base of it rather
// than merging into it: the server's whole record, whose collected
// tombstones, unset fields or a delete stamp cleared when the record was
// written again, could no longer hide the older fields the replica held;
// the stamps of this replica the record held that the server's neither
// holds nor hides are given back, below, and join it again unless
// refused collected),
// and then drops every record the server had
// acknowledged (its base) and sent no more: it was deleted and its
// tombstone collected, or the server lost it. So before it drops any, it
// gives back, with an ordinary push, the stamps of this replica each such
// record holds in its base (one change per stamp): a collected record's
// stamps are all before the write horizon, so the server refuses them
// collected; a record the server lost (its store went back in time) is
// taken back, and stays, as does one refused for another reason (logged,
// and told to OnError as a heal's refusals are),
// its base from then on the stamps that went back (not those refused
// collected: a lost write the write horizon has passed is lost for good).
// A record with no stamp of this replica (one only pages brought, after a
// reset) has nothing to give back; its writers give it back. When that
// push fails nothing is dropped: the reconciliation stays open, its
// outbox held, and the next pull gives back again (after Apply, the next
// Pull, Flush or Sync). A record dropped
// leaves the replica without a delete and
// without a change queued (OnLeave is called for it), and its changes in
// the outbox move to the rejected changes with code proto.CodeCollected
// (ErrCollected) without ever being pushed: pushed with fresh stamps they
// would bring a deleted record back. Then it pushes the outbox (Pull and
// Live do so themselves; after Apply, the next Flush does). A change of
// the outbox the server refuses collected (a field stamped before the
// collection's write horizon) whose record the server still has, or which
// the replica created and never saw acknowledged, is written again with
// fresh stamps and pushed again, once: refused collected again, it stays
// among the rejected changes, as does any other change refused collected.
// Unlike Retry, the re-stamp keeps only what the record as the replica
// knows it (the server's record as delivered or acknowledged, with the
// record's other pending changes) neither hides nor beats, since without
// the collection those would have won: a field stamped at or before that
// record's delete, or older than its value of the field, is left out (a
// later delete, the replica's own or another's, or a newer value is not
// undone), and a delete of a record with a field written after it becomes
// unsets of the fields it would have hidden. A change left with nothing
// leaves the outbox unpushed and is reported to OnResult as superseded. A scoped read from the beginning does not send the
// records that left the reader's scope meanwhile either: the replica
// cannot tell them from collected ones, and drops them the same way (their
// pending changes too), which is safe: pushed with fresh stamps, an edit
// of a collected record would bring it back.
//
// A reading from the beginning reconciles the same way, without a reset,
// when the replica holds records the server acknowledged: records it
// pushed before it ever pulled the collection, or while its cursor was
// the beginning (the cursor of an empty log). No lease protected them (a
// lease is noted by pulls and subscriptions), so one another replica
// deleted and the server collected is just absent from that pull. Nor
// does an empty cursor carry the store's identity, so a store that went
// back in time does not reset it: a record the server lost is absent too,
// and the give-back above is what tells the two apart. Its
// outbox is held while the pull runs, but was not held back before it, so
// Pull and Live leave it to the next Flush. After a reset for another
// reason (history lost, log rebuilt), the readings from the beginning
// are no reconciliation until a pull stores a cursor again: a reset drops
// nothing, and what the server lacks is given back, or stays local when
// the server refuses it. A reconciliation under way when such a reset
// comes (its pull cut short, say) is not given up, nor left waiting for
// pages of the history that ended, which would hold its outbox for
// ever: after the heal it goes on from the beginning of the server's
// history, as the browser client's does.
//
// So that the reset comes before anything is pushed, Flush pulls a kept
// collection to the end before it pushes the collection's changes, unless
// the collection was pulled to the end (or a live page of it arrived)
// within ReplicaConfig.FreshFor, or was never pulled (it holds no lease
// to have expired). A Flush that is refused collected all the same (a
// clock set back, say) keeps the refused changes of a kept collection in
// the outbox and reconciles the collection first, without waiting for a
// reset; the refused changes the reconciliation keeps are re-stamped at
// once.
//
// A Replica is safe for concurrent use.
type Replica struct {
	c          *Client
	onResult   func(crdt.Change, Result)
	onRejected func(Rejection)
	onLeave    func(collection, id string)
	onError    func(error)

	syncMu sync.Mutex // one push at a time, so a change is in flight once

	mu sync.Mutex // guards the fields below
	// base is the server's version of each record, as far as the replica
	// knows: it never holds a write the server does not.
	base map[string]map[string]crdt.Record
	// view is the local view, base ⊔ the changes for the record in the
	// outbox, kept only for records with changes in the outbox (the view
	// of any other record is its base).
	view    map[string]map[string]crdt.Record
	cursors map[string][]byte // opaque, from the server; empty is the beginning
	// sealed is each record as the server last sent it, with its seal:
	// what the replica gives back (Client.Restore) after a reset that lost
	// history.
	sealed map[string]map[string]proto.SealedRecord
	owed   map[string]bool // collections reset with history lost, not healed yet
	// losses counts each collection's losses of history (lostLocked:
	// resets with history lost, and readings after a heal that miss what
	// it gave back): a push answered after one that came since it was
	// sent (flushOnce) was acknowledged perhaps by the store that lost
	// it, which the heal could not give back, the change being still
	// pending then.
	losses map[string]uint64
	// refusedHeal holds the collections owed a heal the server last
	// refused forbidden (healFailed): told to ReplicaConfig.OnError once,
	// until a heal of it is made.
	refusedHeal map[string]bool
	// healed holds, per collection healed while its cursor was the empty
	// one, what the heal gave back and the server acknowledged, or refused
	// collected, until the reading from the beginning that follows
	// delivers it (see heal).
	healed map[string]*healCheck
	// reread holds the collections reset for another reason than
	// proto.ResetLeaseExpired whose pull from the beginning has not yet
	// stored a cursor: a reset drops nothing held, so their reading from
	// the beginning is no reconciliation (reconcileFromStartLocked).
	reread map[string]bool
	// leaves maps, per collection, the leave entry (proto.LeaveDigest) of
	// each id in base or view to the id; it may keep ids the replica no
	// longer holds. A collection's index is built when its first leave
	// entry arrives and kept from then on.
	leaves map[string]map[string]string
	// gone holds the records a leave entry dropped while they had changes
	// in the outbox: acknowledging those changes does not put the record
	// back into base. A record the server sends, or the end of its
	// changes in the outbox, takes it out.
	gone map[recordKey]bool
	// pulledAt is when each collection was last pulled to its end, or a
	// live page of it with no more after it arrived (time.Now: monotonic).
	pulledAt map[string]time.Time
	freshFor time.Duration
	// reconciling holds the collections being reconciled after their
	// reader's lease expired (see Reconciliation): their changes stay in
	// the outbox, unsent, until it ends.
	reconciling map[string]*reconciliation
	outbox      []pending
	nextID      uint64
	rejected    rejectedStore
	// revoked is the server's refusal that revoked access, nil while
	// access holds. Once set, the replica holds no records and no outbox,
	// and neither syncs nor takes writes.
	revoked error
	stopped chan struct{} // closed when revoked is set
	// floor is the handle of this replica's pending floor in its client
	// (Client.addFloor), which Close removes.
	floor uint64
}

// healCheck is what a heal of a collection gave back and the server
// acknowledged, not yet delivered by the reading of the collection from
// the beginning that follows the heal. That reading's cursors carry the
// store's identity only once its log is not empty, so a store that went
// back in time again between the heal and the end of that reading resets
// no cursor: a record acknowledged by the heal and missing from it is how
// the replica learns of it.
type healCheck struct {
	ids map[string]bool
	// collected holds the records whose every give-back the server
	// refused collected (their stamps are before its write horizon: it
	// collected their delete), not yet delivered by that reading. Those
	// it does not deliver are dropped at its end, as a reconciliation
	// drops them (dropCollectedLocked).
	collected map[string]bool
	// reading says a reading from the beginning began after the heal,
	// and chain is the cursor its next page is read from: only a page
	// read from it (Page.from) continues that reading, and only the one
	// that says no more ends it. A page read from elsewhere (a live
	// subscription's, from the middle of the log) delivers records all
	// the same, but ends nothing.
	reading bool
	chain   []byte
	// again counts the heals made again because such a reading missed
	// records, since the collection last healed for good.
	again int
}

type pending struct {
	id     uint64
	change crdt.Change
	// reconciled says the change was in the outbox when its collection's
	// reconciliation ended: its record survives on the server, or the
	// replica created it and never saw it acknowledged, so a refusal
	// collected re-stamps it (Retry) and it is pushed again.
	reconciled bool
	// restamped says the change is such a re-stamped one: refused
	// collected again, it stays among the rejected changes.
	restamped bool
	// collected says the server refused the change collected before its
	// collection was reconciled: if it stays, the reconciliation's end
	// re-stamps it at once rather than push it to be refused again.
	collected bool
}

// reconciliation is a collection's pull from the beginning after its
// reader's lease expired.
type reconciliation struct {
	// acked holds the ids of the records the server had acknowledged when
	// it began: those in base, and those that left the reader's scope
	// with changes pending.
	acked map[string]bool
	// delivered holds the ids of the records the server sent since.
	delivered map[string]bool
	// replaced holds the ids of the records the pull from the beginning
	// sent: the first time, the server's record replaced the base.
	replaced map[string]bool
	// kept holds the ids of acknowledged records the pull did not send
	// whose stamps of this replica the server took back when they were
	// given back (giveBack): it had lost them, so they stay.
	kept map[string]bool
	// owedBack holds, per record the pull sent, the stamps of this
	// replica its base held that the server's record, which replaced it,
	// neither holds nor hides: given back too (giveBack), they join the
	// base again unless refused collected.
	owedBack map[string]crdt.Record
	// atEnd says the pull from the beginning reached its end (a page
	// read from chain said no more) and the reconciliation waits for
	// giveBack to end it.
	atEnd bool
	// chain is the cursor the next page of the pull from the beginning is
	// read from: a page read from it continues the pull, and the one that
	// says no more ends it.
	chain []byte
	// live says the pull is a live session's (pages delivered by Apply
	// after a reset it delivered), not Pull's.
	live bool
	// fromStart says no reset asked for it: the collection's reading
	// started from the beginning with records held (reconcileFromStart).
	// Its outbox was not held back by an earlier Flush, so its end does
	// not push it: the next Flush does.
	fromStart bool
}

type recordKey struct{ collection, id string }

// ReplicaConfig configures a Replica.
type ReplicaConfig struct {
	// Collections are the collections to keep: Sync pulls them and Live
	// subscribes to them. Writes to other collections are pushed but not
	// pulled.
	Collections []string
	// OnResult, when set, is called with each pushed change and the
	// server's answer for it (applied, with the fields that lost in
	// Result.Lost; duplicate; superseded, with the fields that lost; or
	// refused), in order, after the outbox, the view and the rejected
	// changes were updated. Nil means no calls.
	OnResult func(crdt.Change, Result)
	// OnRejected, when set, is called with each change the server refused,
	// after OnResult for it, when the record's view was already rolled back
	// and the change is among the rejected changes (unless more than
	// MaxRejected refusals came at once). Nil means no calls.
	//
	// Both are called by the goroutine running Flush or Sync, with no lock
	// of the Replica held except the one that serializes pushes: they may
	// read the replica, write, Retry and Discard, but must not call Flush
	// or Sync. A change a reconciliation settles (see Reconciliation) is
	// reported by the goroutine applying the page that ends it (Pull,
	// Live, Apply, or Flush). When access is revoked, OnRejected is called for each
	// change of the outbox, by the goroutine that learnt it.
	OnRejected func(Rejection)
	// OnLeave, when set, is called for each record that left the replica
	// without a delete: the server sent a leave entry for it (it no longer
	// matches the reader's scope), or access was revoked and every record
	// was purged. It is called after the record left, with no lock of the
	// Replica held, by the goroutine applying the page (Sync, Pull, Live,
	// Apply) or learning of the revocation; a record a reconciliation
	// drops (see Reconciliation), or the reading after a heal (a record
	// the heal gave back refused collected and the reading did not
	// deliver), is reported the same way, also by Flush,
	// which then holds the lock that serializes pushes: it must not call
	// Flush or Sync. A record that left the scope with local changes still
	// in the outbox stays visible with them alone. Nil means no calls.
	OnLeave func(collection, id string)
	// OnError, when set, is called with each error the application must
	// know of that no call of its returns: ErrNotHealed (wrapped, naming
	// the collection) when a heal made by Live, or a page given to Apply,
	// gave up (see the package doc, "Resets and healing"), which Pull and
	// Sync return instead; and, after a heal or a reconciliation that gave
	// back records the server refused for another reason than collected
	// (they stay local),
	// an error naming the collection
	// that counts them and wraps the last refusal (*Error); and a heal
	// the server refused forbidden (ErrForbidden, wrapped, naming the
	// collection), once until a heal of the collection is made: it stays
	// owed, made again by the next Sync, Pull or Heal; and a collection
	// whose live sub or pull failed while Live streams the others (an
	// error naming it and wrapping the server's *Error: ErrForbidden,
	// ErrSchemaAhead, ErrInternal...), once until it is served again (see
	// Client.Live). It is called with no lock of the
	// Replica held, by the goroutine running Live or Apply, or the heal
	// (Sync, Pull, Flush, Heal, Live), which waits for it: it may call the
	// replica's methods, and should return promptly. Told of a heal's or
	// a reconciliation's refusals, or of a heal refused forbidden, it must
	// not call Flush or Sync: a Flush that pulled first may be running the
	// heal or the reconciliation, holding the lock that serializes pushes. Nil means the error is only logged.
	OnError func(error)
	// FreshFor is how long after a pull of a collection to its end (or a
	// live page of it) Flush pushes the collection's changes without
	// pulling it first; after longer, the pull comes first, so that a
	// lease that expired meanwhile is reconciled before anything is pushed
	// (see Reconciliation). Zero means DefaultFreshFor; negative, always
	// pull first. Far below any sensible maximum offline period.
	FreshFor time.Duration
}

// DefaultFreshFor is ReplicaConfig.FreshFor's default.
const DefaultFreshFor = time.Minute

// NewReplica returns an empty replica syncing through c.
func NewReplica(c *Client, cfg ReplicaConfig) (*Replica, error) {
	r := &Replica{
		c:          c,
		onResult:   cfg.OnResult,
		onRejected: cfg.OnRejected,
		onLeave:    cfg.OnLeave,
		onError:    cfg.OnError,
		base:       map[string]map[string]crdt.Record{},
		view:       map[string]map[string]crdt.Record{},
		cursors:    map[string][]byte{},
		sealed:     map[string]map[string]proto.SealedRecord{},
		pulledAt:   map[string]time.Time{},
		freshFor:   cfg.FreshFor,
		stopped:    make(chan struct{}),
	}
	if r.freshFor == 0 {
		r.freshFor = DefaultFreshFor
	}
	for _, coll := range cfg.Collections {
		if err := crdt.ValidateCollection(coll); err != nil {
			return nil, fmt.Errorf("new replica: %w", err)
		}
		r.cursors[coll] = []byte{}
	}
	r.floor = c.addFloor(r.pendingFloor)
	return r, nil
}

// Close detaches the replica from its Client: the oldest change of its
// outbox no longer holds back the collection of tombstones (the pending
// floor the client's pulls and subscriptions report). Call it when the
// replica is discarded while its Client lives on, after flushing what
// must reach the server: changes still in its outbox are not sent. Close
// does not stop a Live session (cancel its context). It is safe to call
// more than once; the replica must not be used after it.
func (r *Replica) Close() {
	r.c.removeFloor(r.floor)
}

// pendingFloor is the wall time of the oldest stamp of a change for
// collection in the outbox, and whether there is one.
func (r *Replica) pendingFloor(collection string) (int64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	floor, ok := int64(0), false
	for _, p := range r.outbox {
		if p.change.Collection != collection {
			continue
		}
		for _, s := range stampsOf(p.change.Record) {
			if !ok || s.Wall < floor {
				floor, ok = s.Wall, true
			}
		}
	}
	return floor, ok
}

// stampsOf lists the stamps a change writes: its delete stamp and its
// fields'.
func stampsOf(rec crdt.Record) []crdt.Stamp {
	var out []crdt.Stamp
	if !rec.Deleted.IsZero() {
		out = append(out, rec.Deleted)
	}
	for _, f := range rec.Fields {
		out = append(out, f.Stamp)
	}
	return out
}

// writer is the replica id a local change was written by: that of its
// stamps (a change of this replica's stamps all alike).
func writer(ch crdt.Change) string {
	if s := stampsOf(ch.Record); len(s) > 0 {
		return s[0].Replica
	}
	return ""
}

// Client returns the replica's client.
func (r *Replica) Client() *Client { return r.c }

// Set sets field name of record id in collection to value, encoded as
// canonical CBOR.
func (r *Replica) Set(collection, id, name string, value any) error {
	v, err := crdt.EncodeValue(value)
	if err != nil {
		return fmt.Errorf("set %s/%s.%s: %w", collection, id, name, localRefusal(err))
	}
	return r.write(collection, id, func(s crdt.Stamp) crdt.Record { return crdt.SetField(id, name, v, s) })
}

// Unset removes field name of record id.
func (r *Replica) Unset(collection, id, name string) error {
	return r.write(collection, id, func(s crdt.Stamp) crdt.Record { return crdt.UnsetField(id, name, s) })
}

// Delete deletes record id: every field written before now is hidden.
func (r *Replica) Delete(collection, id string) error {
	return r.write(collection, id, func(s crdt.Stamp) crdt.Record { return crdt.DeleteRecord(id, s) })
}

// write queues the local change a write makes of record id. A change that
// breaks a model rule (docs/protocol.md, section 11) is refused here, as
// the browser client refuses it (jsclient/src/values.js, checkSize): its
// names, its values, and its record's field count once merged with the
// record as this replica holds it. The error matches the sentinel of the
// code the server would refuse it with (localRefusal).
func (r *Replica) write(collection, id string, change func(crdt.Stamp) crdt.Record) error {
	if err := crdt.ValidateCollection(collection); err != nil {
		return fmt.Errorf("write %s/%s: %w", collection, id, localRefusal(err))
	}
	// Outside r.mu: the TokenFunc may take its time.
	tokenErr := r.c.bindToTokenFunc()
	r.mu.Lock()
	defer r.mu.Unlock()
	// Stamping under r.mu keeps the outbox in stamp order.
	s, err := r.stampLocked(collection, id)
	if err != nil {
		if tokenErr != nil && errors.Is(err, ErrUnbound) {
			err = fmt.Errorf("%w (%w)", err, tokenErr)
		}
		return fmt.Errorf("write %s/%s: %w", collection, id, err)
	}
	if err := r.queueLocked(collection, change(s)); err != nil {
		return fmt.Errorf("write %s/%s: %w", collection, id, localRefusal(err))
	}
	return nil
}

// localRefusal is err, a local write's refusal, matching also the
// sentinel of the code the server refuses such a change with: ErrTooLarge
// beside crdt.ErrTooLarge, ErrInvalid beside crdt.ErrInvalid, and
// ErrMalformed beside crdt.ErrMalformed (a value nested deeper than
// crdt.MaxValueNestedLevels, a decode limit), so that an application
// tells a refusal by one sentinel whichever side made it.
func localRefusal(err error) error {
	for _, k := range []struct{ crdt, code error }{{crdt.ErrTooLarge, ErrTooLarge}, {crdt.ErrInvalid, ErrInvalid}, {crdt.ErrMalformed, ErrMalformed}} {
		if errors.Is(err, k.crdt) {
			return localError{err, k.code}
		}
	}
	return err
}

// localError is a local write's refusal err, which matches code too.
type localError struct{ err, code error }

func (e localError) Error() string   { return e.err.Error() }
func (e localError) Unwrap() []error { return []error{e.err, e.code} }

// stampLocked issues the stamp of a local write of record id: after
// everything the record holds, so that the write wins over a value the
// application saw, even one whose stamp was too far ahead for the clock
// to adopt when it came (as in the browser client); one still too far
// ahead stays so (its pull logged it). Writes, Retry and the re-stamps
// of a reconciliation stamp through it.
func (r *Replica) stampLocked(collection, id string) (crdt.Stamp, error) {
	if v, ok := r.viewLocked(collection, id); ok {
		_ = r.c.Observe(v.MaxStamp())
	}
	return r.c.Now()
}

// queueLocked merges a local change into the view of its record and
// appends it to the outbox.
func (r *Replica) queueLocked(collection string, rec crdt.Record) error {
	if r.revoked != nil {
		return r.revoked
	}
	if err := rec.Validate(); err != nil {
		return err
	}
	v, ok := r.view[collection][rec.ID]
	if !ok {
		v = r.base[collection][rec.ID].Clone()
	}
	// The field limit holds for the record the change makes, as the
	// server merges it: a change adds the fields its record lacks.
	fields := len(v.Fields)
	for name := range rec.Fields {
		if _, ok := v.Fields[name]; !ok {
			fields++
		}
	}
	if fields > crdt.MaxFieldsPerRecord {
		return fmt.Errorf("%w: record %q would have %d fields, more than %d", crdt.ErrTooLarge, rec.ID, fields, crdt.MaxFieldsPerRecord)
	}
	r.noteIDLocked(collection, rec.ID)
	v.Merge(rec)
	put(r.view, collection, v)
	r.nextID++
	r.outbox = append(r.outbox, pending{id: r.nextID, change: crdt.Change{Collection: collection, Record: rec}})
	return nil
}

// put stores rec in m.
func put(m map[string]map[string]crdt.Record, collection string, rec crdt.Record) {
	c := m[collection]
	if c == nil {
		c = map[string]crdt.Record{}
		m[collection] = c
	}
	c[rec.ID] = rec
}

// mergeInto merges rec into m's record.
func mergeInto(m map[string]map[string]crdt.Record, collection string, rec crdt.Record) {
	cur := m[collection][rec.ID]
	cur.Merge(rec)
	put(m, collection, cur)
}

// noteIDLocked adds id to collection's leave index, if it has one, when
// the replica holds nothing of the record yet. Called before a record
// enters base or view.
func (r *Replica) noteIDLocked(collection, id string) {
	idx := r.leaves[collection]
	if idx == nil {
		return
	}
	if _, ok := r.base[collection][id]; ok {
		return
	}
	if _, ok := r.view[collection][id]; ok {
		return
	}
	idx[string(proto.LeaveDigest(collection, id))] = id
}

// mergeBaseLocked merges rec into the base of its record, keeping the
// collection's leave index (if it has one) in step.
func (r *Replica) mergeBaseLocked(collection string, rec crdt.Record) {
	r.noteIDLocked(collection, rec.ID)
	mergeInto(r.base, collection, rec)
}

// leaveLocked drops from collection's base (and its sealed copies) each
// record whose id digests to one of leaves, and returns the ids of those
// it held. A dropped record's changes still in the outbox stay, and its
// view becomes them alone; until they leave the outbox, acknowledging them
// does not bring the record back into base (it is gone: the server holds
// the change, but the reader may not see the record), a record the server
// sends does. Nothing is deleted and nothing queued: the record left the
// reader's scope, it did not end.
func (r *Replica) leaveLocked(collection string, leaves [][]byte) []string {
	if len(leaves) == 0 || len(r.base[collection])+len(r.view[collection]) == 0 {
		return nil
	}
	idx := r.leaves[collection]
	if idx == nil {
		idx = make(map[string]string, len(r.base[collection])+len(r.view[collection]))
		for _, m := range []map[string]crdt.Record{r.base[collection], r.view[collection]} {
			for id := range m {
				idx[string(proto.LeaveDigest(collection, id))] = id
			}
		}
		if r.leaves == nil {
			r.leaves = map[string]map[string]string{}
		}
		r.leaves[collection] = idx
	}
	var left []string
	touched := map[recordKey]bool{}
	for _, l := range leaves {
		id, ok := idx[string(l)]
		if !ok {
			continue // a record the replica does not hold
		}
		k := recordKey{collection, id}
		b, inBase := r.base[collection][id]
		if inBase && !b.Exists() {
			// A record held deleted stays: no scope matches a deleted
			// record, so a delete leaves every scoped reader, and the
			// tombstone is how this replica gives its acknowledged delete
			// back after the server lost it (heal); it shows nothing.
			continue
		}
		_, inView := r.view[collection][id]
		if inView {
			if r.gone == nil {
				r.gone = map[recordKey]bool{}
			}
			r.gone[k] = true
		} else {
			delete(idx, string(l))
		}
		if !inBase {
			continue
		}
		delete(r.base[collection], id)
		delete(r.sealed[collection], id)
		touched[k] = true
		left = append(left, id)
	}
	r.recomputeLocked(touched)
	return left
}

// recomputeLocked derives again the view of the given records from their
// base and the changes for them still in the outbox; a record with none
// keeps no view of its own.
func (r *Replica) recomputeLocked(records map[recordKey]bool) {
	for k := range records {
		delete(r.view[k.collection], k.id)
	}
	for _, p := range r.outbox {
		k := recordKey{p.change.Collection, p.change.Record.ID}
		if !records[k] {
			continue
		}
		v, ok := r.view[k.collection][k.id]
		if !ok {
			v = r.base[k.collection][k.id].Clone()
		}
		v.Merge(p.change.Record)
		put(r.view, k.collection, v)
	}
}

// viewLocked returns the local view of a record and whether the replica
// has any state for it.
func (r *Replica) viewLocked(collection, id string) (crdt.Record, bool) {
	if v, ok := r.view[collection][id]; ok {
		return v, true
	}
	b, ok := r.base[collection][id]
	return b, ok
}

// Get returns the local view of a record (tombstones included) and whether
// the replica has any state for it.
func (r *Replica) Get(collection, id string) (crdt.Record, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.viewLocked(collection, id)
	return rec.Clone(), ok
}

// Records returns a copy of the local view of every record of collection.
func (r *Replica) Records(collection string) map[string]crdt.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]crdt.Record, len(r.base[collection])+len(r.view[collection]))
	for id, rec := range r.base[collection] {
		out[id] = rec.Clone()
	}
	for id, rec := range r.view[collection] {
		out[id] = rec.Clone()
	}
	return out
}

// Pending returns the changes not yet acknowledged, oldest first.
func (r *Replica) Pending() []crdt.Change {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]crdt.Change, len(r.outbox))
	for i, p := range r.outbox {
		out[i] = p.change
	}
	return out
}

// Cursor returns the cursor of collection: the server's opaque bytes, empty
// before the first pull.
func (r *Replica) Cursor(collection string) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.cursors[collection])
}

// Collections returns the kept collections, sorted.
func (r *Replica) Collections() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(maps.Keys(r.cursors))
}

// Sync pushes the outbox, then pulls every kept collection to the end of
// its log. Both run even when the other fails; the error joins theirs.
func (r *Replica) Sync(ctx context.Context) error {
	return errors.Join(r.Flush(ctx), r.Pull(ctx))
}

// Flush pushes the outbox. Acknowledged changes leave it and join the
// base; refused ones leave it, are rolled back and join the rejected
// changes; on error the unacknowledged rest stays for the next Flush.
// Changes of a collection being reconciled stay unsent (see
// Reconciliation), and a refusal collected is handled as Reconciliation
// says: OnResult and OnRejected are called for a change refused collected
// only when it stays among the rejected changes.
func (r *Replica) Flush(ctx context.Context) error {
	r.syncMu.Lock()
	defer r.syncMu.Unlock()
	for _, coll := range r.stale() {
		if _, err := r.pullToEnd(ctx, coll); err != nil {
			if !r.revokeOn(err) && r.unreadable(coll, err) {
				// The token may not read coll (it may still write it):
				// its changes go as the others do, and the server
				// answers each, as the browser client's pullOne skips
				// such a collection. Pull returns the refusal.
				r.c.log.Warn("flush: the pull first was refused; pushing all the same", "collection", coll, "err", err)
				continue
			}
			return fmt.Errorf("flush: pull %s first: %w", coll, err)
		}
	}
	// Each round moves a change refused collected one step on (held,
	// reconciled, re-stamped, rejected), so a few rounds finish; a server
	// that keeps asking for more is left for the next Flush.
	for range flushRounds {
		reconcile, again, err := r.flushOnce(ctx)
		if err != nil {
			return err
		}
		for _, coll := range reconcile {
			r.beginReconcile(coll)
			// Held changes go in the next round once it ends.
			if _, err := r.pullToEnd(ctx, coll); err != nil {
				r.revokeOn(err)
				return fmt.Errorf("flush: reconcile %s: %w", coll, err)
			}
		}
		if len(reconcile) == 0 && !again {
			return nil
		}
	}
	if n := r.queued(); n > 0 {
		r.c.log.Warn("flush stopped after its rounds with changes still queued; the next Flush sends them",
			"rounds", flushRounds, "queued", n)
	}
	return nil
}

// unreadable reports whether err, of a pull of coll, is the server
// refusing coll to the token (Client.unreadable).
func (r *Replica) unreadable(coll string, err error) bool {
	return r.c.unreadable(coll, err)
}

// queued is the number of changes in the outbox.
func (r *Replica) queued() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.outbox)
}

// flushRounds is how many push rounds one Flush makes at most.
const flushRounds = 4

// stale returns the kept collections with changes in the outbox that
// Flush pulls first: pulled before, not within freshFor, and not being
// reconciled (Flush goes on with a reconciliation by itself).
func (r *Replica) stale() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, p := range r.outbox {
		coll := p.change.Collection
		cur, kept := r.cursors[coll]
		if !kept || len(cur) == 0 || r.reconciling[coll] != nil || slices.Contains(out, coll) {
			continue
		}
		if at, ok := r.pulledAt[coll]; !ok || time.Since(at) >= r.freshFor {
			out = append(out, coll)
		}
	}
	return out
}

// flushOnce pushes the outbox once. It returns the kept collections with
// changes refused collected that are not reconciled yet (they stay in the
// outbox), and whether it queued changes again with fresh stamps.
func (r *Replica) flushOnce(ctx context.Context) (reconcile []string, again bool, err error) {
	held := map[string]bool{}
	// losses are the batch's collections' counts of resets with history
	// lost when it is sent.
	losses := map[string]uint64{}
	r.mu.Lock()
	batch, revoked := make([]pending, 0, len(r.outbox)), r.revoked
	me := r.c.Replica()
	for _, p := range r.outbox {
		if writer(p.change) != me {
			// Written as another subject (the token changed since): kept
			// for when that subject signs in again (docs/protocol.md,
			// "Replica ids"); under this one it would be refused
			// forged_replica.
			continue
		}
		if r.reconciling[p.change.Collection] == nil {
			batch = append(batch, p)
			losses[p.change.Collection] = r.losses[p.change.Collection]
		} else {
			// Held by a reconciliation that has not ended (a pull that
			// failed, say): go on with it.
			held[p.change.Collection] = true
		}
	}
	r.mu.Unlock()
	if revoked != nil {
		return nil, false, fmt.Errorf("flush: %w", revoked)
	}
	if len(batch) == 0 {
		return slices.Sorted(maps.Keys(held)), false, nil
	}
	changes := make([]crdt.Change, len(batch))
	for i, p := range batch {
		changes[i] = p.change
	}
	results, err := r.c.Push(ctx, changes)
	if r.revokeOn(err) {
		return nil, false, fmt.Errorf("flush %d changes: %w", len(batch), err)
	}
	// A change refused forged_replica was written by this replica: the
	// token's subject changed while it was pushed (a TokenFunc's new
	// token, the hello that tells the client not made yet, or made
	// meanwhile). Unless the client's replica id is its configuration's,
	// a hello learns the subject, and such a change of another subject's
	// replica stays in the outbox for that subject.
	forged := func(res Result) bool { return res.Status == StatusRefused && errors.Is(res.Err, ErrForgedReplica) }
	keepForged := false
	if r.c.cfg.Replica == "" && slices.ContainsFunc(results, forged) {
		if _, herr := r.c.Hello(ctx); herr != nil {
			keepForged = true // pushed again by the next Flush
			err = errors.Join(err, fmt.Errorf("hello after a refusal forged_replica: %w", herr))
		}
		me = r.c.Replica()
	}
	var when time.Time
	var subject string
	if slices.ContainsFunc(results, func(res Result) bool { return res.Status == StatusRefused }) {
		when = r.c.cfg.Now()
		info, _ := r.c.Info()
		subject = info.Subject
	}
	rejections := make([]Rejection, len(results))
	// report says whether the result of a change is final, for OnResult
	// and OnRejected.
	report := make([]bool, len(results))
	done := make(map[uint64]bool, len(results))
	touched := make(map[recordKey]bool, len(results))
	collected := map[uint64]bool{}
	r.mu.Lock()
	if r.revoked != nil {
		// Revoked meanwhile: the outbox, batch included, is among the
		// rejected changes already.
		r.mu.Unlock()
		return nil, false, fmt.Errorf("flush: %w", r.revoked)
	}
	dropped := r.rejected.dropped
	// The changes refused collected are decided after the others, on
	// the base with every acknowledged change of the push.
	var later []int
	refused := map[uint64]bool{}
	for i, res := range results {
		p := batch[i]
		k := recordKey{p.change.Collection, p.change.Record.ID}
		if forged(res) && (keepForged || writer(p.change) != me) {
			continue // another subject's: kept for it
		}
		if res.Acknowledged() && r.losses[k.collection] != losses[k.collection] {
			// A reset with history lost came since the push was sent:
			// the store that acknowledged the change may be the one that
			// lost it, and the heal did not give it back (it was still
			// pending). It stays, and goes again.
			again = true
			continue
		}
		if res.Status == StatusRefused && errors.Is(res.Err, ErrCollected) && !p.restamped {
			if _, kept := r.cursors[k.collection]; p.reconciled || kept {
				later = append(later, i)
				continue
			}
		}
		done[p.id], touched[k], report[i] = true, true, true
		if res.Status == StatusRefused {
			refused[p.id] = true
			rejections[i] = r.rejected.add(newRejection(p.change, res.Err, when, subject)).clone()
			continue
		}
		// The server holds the change, or newer writes that beat it: the
		// change is below the server's record, so base stays below it too
		// (unless the record left the reader's scope meanwhile).
		if !r.gone[k] {
			r.mergeBaseLocked(p.change.Collection, p.change.Record)
		}
	}
	// What the replica knows of a record: its base and the changes for it
	// still pending, not those refused for good nor the re-stamps below.
	known := slices.DeleteFunc(slices.Clone(r.outbox), func(p pending) bool { return refused[p.id] })
	for _, i := range later {
		p, res := batch[i], results[i]
		k := recordKey{p.change.Collection, p.change.Record.ID}
		if !p.reconciled {
			// Stamped before the write horizon: the replica was away
			// too long. Reconcile the collection before deciding.
			held[k.collection] = true
			collected[p.id] = true
			continue
		}
		// Its record survives, or the replica created it: write it again
		// with fresh stamps (as Retry does), once, as far as the record
		// as the replica knows it neither hides nor beats it.
		done[p.id], touched[k] = true, true
		queued, err := r.restampKnownLocked(p.change, r.knownLocked(k.collection, k.id, known, p.id))
		switch {
		case err != nil:
			r.c.log.Warn("could not re-stamp a change refused collected", "collection", k.collection, "record", k.id, "err", err)
			rejections[i], report[i] = r.rejected.add(newRejection(p.change, res.Err, when, subject)).clone(), true
		case !queued:
			// Nothing of it would have won: settled, as if superseded.
			results[i], report[i] = Result{Status: StatusSuperseded}, true
		default:
			again = true
		}
	}
	dropped = r.rejected.dropped - dropped
	r.outbox = slices.DeleteFunc(r.outbox, func(p pending) bool { return done[p.id] })
	for i := range r.outbox {
		if collected[r.outbox[i].id] {
			r.outbox[i].collected = true
		}
	}
	r.recomputeLocked(touched)
	for k := range touched {
		if _, ok := r.view[k.collection][k.id]; !ok {
			delete(r.gone, k) // no changes left in the outbox
		}
	}
	r.mu.Unlock()
	r.report(nil, dropped)
	for i, res := range results {
		if !report[i] {
			continue
		}
		if r.onResult != nil {
			r.onResult(batch[i].change, res)
		}
		if res.Status == StatusRefused && r.onRejected != nil {
			r.onRejected(rejections[i])
		}
	}
	if err != nil {
		return nil, again, fmt.Errorf("flush %d changes: %w", len(batch)-len(results), err)
	}
	return slices.Sorted(maps.Keys(held)), again, nil
}

// Pull pulls every kept collection from its cursor to the end of its log.
func (r *Replica) Pull(ctx context.Context) error {
	if err := r.Revoked(); err != nil {
		return fmt.Errorf("pull: %w", err)
	}
	var errs []error
	for _, coll := range r.Collections() {
		err := r.pullCollection(ctx, coll)
		if r.revokeOn(err) {
			return err
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (r *Replica) pullCollection(ctx context.Context, coll string) error {
	// A heal that failed is made again first (the package doc, "Resets
	// and healing"); the pull that follows checks what it gave back when
	// it reads from the beginning, where the reset left the cursor.
	r.mu.Lock()
	owed := r.owed[coll]
	r.mu.Unlock()
	if owed {
		if err := r.heal(ctx, coll); err != nil {
			return err
		}
	}
	reconciled, err := r.pullToEnd(ctx, coll)
	if err != nil {
		return err
	}
	if reconciled {
		// The outbox held back for the reconciliation goes now.
		if err := r.Flush(ctx); err != nil {
			return fmt.Errorf("pull %s: push after reconciling: %w", coll, err)
		}
	}
	return nil
}

// pullToEnd pulls coll from its cursor to the end of its log, and reports
// whether a reconciliation of the collection ended with it (the caller
// pushes the outbox then).
func (r *Replica) pullToEnd(ctx context.Context, coll string) (reconciled bool, err error) {
	r.mu.Lock()
	r.reconcileFromStartLocked(coll, false)
	r.mu.Unlock()
	limit := 0 // the server's max-pull, until a page is over the client's bound
	var rd reading
	for {
		from := r.Cursor(coll)
		rd.ask(from)
		p, err := r.c.pullFitting(ctx, coll, from, &limit, len(from) == 0 && r.holdsNothing(coll))
		if err == nil {
			err = rd.check(coll, p)
		}
		if err != nil {
			return reconciled, err
		}
		if p.Reset != "" {
			r.reset(coll, p.Reset, false)
			// After a lease expired, what the replica holds of records
			// the server collected must not go back: it reconciles instead.
			if p.Reset != proto.ResetLeaseExpired {
				if err := r.heal(ctx, coll); err != nil {
					return reconciled, err
				}
			}
			continue
		}
		ended, owed, again := r.apply(coll, p, from, false)
		if owed {
			if ended, err = r.giveBack(ctx, coll); err != nil {
				return reconciled, fmt.Errorf("pull %s: %w", coll, err)
			}
		}
		if ended {
			reconciled = true
		}
		if err := r.Revoked(); err != nil {
			return reconciled, fmt.Errorf("pull %s: %w", coll, err) // revoked meanwhile
		}
		switch again {
		case healAgain:
			// The store went back again while it was healed: heal it
			// again, and read it again from the beginning.
			if err := r.heal(ctx, coll); err != nil {
				return reconciled, err
			}
			rd.restart()
			continue
		case healUnconfirmed:
			return reconciled, fmt.Errorf("pull %s: %w", coll, ErrNotHealed)
		}
		if !p.More {
			return reconciled, nil
		}
	}
}

// holdsNothing reports whether the replica holds no record of coll, from
// the server or its own: a pull from the beginning then needs no leave
// entries.
func (r *Replica) holdsNothing(coll string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.base[coll]) == 0 && len(r.view[coll]) == 0
}

// Apply merges a page received from the server into the base of its
// records (and so into the local view) and sets collection's cursor to its
// Next; a page with Reset starts the collection again from the beginning
// (the records to give back are kept until Heal or the next Sync). It is
// the ChangesFunc of Live: after a reset with reason
// proto.ResetLeaseExpired, the pages that follow it (Live's pull from the
// beginning) reconcile the collection, and the next Flush pushes its
// outbox (Replica.Live flushes by itself).
func (r *Replica) Apply(collection string, page Page) {
	r.applyLive(collection, page)
}

// applyLive is Apply; it reports what apply does.
func (r *Replica) applyLive(collection string, page Page) (ended, owed bool, again healVerdict) {
	if page.Reset != "" {
		r.reset(collection, page.Reset, true)
		return false, false, healDone
	}
	ended, owed, again = r.apply(collection, page, nil, true)
	if again == healUnconfirmed {
		// No caller to return ErrNotHealed to.
		r.tell(fmt.Errorf("live %s: %w", collection, ErrNotHealed))
	}
	return ended, owed, again
}

// tell tells the application of err through ReplicaConfig.OnError,
// when set (checkHealLocked, say, has logged it already).
func (r *Replica) tell(err error) {
	if r.onError != nil {
		r.onError(err)
	}
}

// healVerdict is what a page says of the collection's last heal (see
// healCheck).
type healVerdict uint8

const (
	healDone        healVerdict = iota // nothing to do
	healAgain                          // heal again: the store went back again
	healUnconfirmed                    // proto.MaxHealAgain reached: said, and given up
)

// apply merges a page's records and sets collection's cursor to its Next;
// with from non-nil, only if the cursor is still from, so that a pull
// racing a live delivery cannot move the cursor back (cursors are opaque:
// equality is all a client may test). It reports whether the page ended a
// reconciliation of the collection that a reset asked for (the outbox it
// held goes then): a page read from where the pull from the beginning
// stands (from, or any page delivered live to a live reconciliation) that
// says there is no more. owed says such a page came but the
// reconciliation cannot end before its records are given back (giveBack,
// the caller's: it needs the network). again says the page ended a reading
// from the beginning after a heal that misses what the heal gave back: the
// collection is owed a heal again (see healCheck).
func (r *Replica) apply(collection string, page Page, from []byte, live bool) (ended, owed bool, again healVerdict) {
	r.mu.Lock()
	if r.revoked != nil {
		r.mu.Unlock()
		return false, false, healDone
	}
	// A page holds each record once, as a record or a leave entry, so the
	// order in which the two are applied does not matter.
	left := r.leaveLocked(collection, page.Leaves)
	// A page of a reconciliation's pull from the beginning.
	rc := r.reconciling[collection]
	chained := rc != nil && ((from != nil && bytes.Equal(from, rc.chain)) || (from == nil && live && rc.live))
	replaced := map[recordKey]bool{}
	for i, rec := range page.Records {
		k := recordKey{collection, rec.ID}
		delete(r.gone, k)
		if chained && !rc.replaced[rec.ID] {
			// The server's whole record replaces the one held: the
			// tombstones that hid its older fields (unset fields, a
			// delete stamp) may have been collected, and merged with
			// the record without them those fields would stay.
			rc.replaced[rec.ID] = true
			if old, ok := r.base[collection][rec.ID]; ok {
				if unc := old.WrittenBy(r.c.Replica()).NotIn(rec); hasStamps(unc) {
					if rc.owedBack == nil {
						rc.owedBack = map[string]crdt.Record{}
					}
					o := rc.owedBack[rec.ID]
					o.Merge(unc)
					rc.owedBack[rec.ID] = o
				}
			}
			r.noteIDLocked(collection, rec.ID)
			put(r.base, collection, rec.Clone())
			replaced[k] = true
		} else {
			r.mergeBaseLocked(collection, rec)
		}
		if v, ok := r.view[collection][rec.ID]; ok && !replaced[k] {
			v.Merge(rec)
			put(r.view, collection, v)
		}
		if i < len(page.Seals) {
			if r.sealed[collection] == nil {
				r.sealed[collection] = map[string]proto.SealedRecord{}
			}
			r.sealed[collection][rec.ID] = proto.SealedRecord{Record: rec, Seal: page.Seals[i]}
		}
	}
	r.recomputeLocked(replaced)
	// What the page's end of a reading after a heal dropped.
	var healed reconcileEnd
	if from == nil || bytes.Equal(r.cursors[collection], from) {
		// A page of unknown origin (one the application built) is taken
		// to continue the replica's cursor.
		at := page.from
		if at == nil {
			at = r.cursors[collection]
		}
		again, healed = r.checkHealLocked(collection, page, at)
		r.cursors[collection] = bytes.Clone(page.Next)
		if len(page.Next) != 0 {
			delete(r.reread, collection)
		}
		if !page.More {
			r.pulledAt[collection] = time.Now()
		}
	}
	var end reconcileEnd
	if rc != nil {
		// Whatever page it came in, a record sent is one the server has.
		for _, rec := range page.Records {
			rc.delivered[rec.ID] = true
		}
		if chained {
			rc.chain = bytes.Clone(page.Next)
			rc.atEnd = !page.More
			switch {
			case page.More:
			case len(r.giveBackLocked(collection, rc)) > 0:
				owed = true
			default:
				end = r.endReconcileLocked(collection)
				ended = !rc.fromStart
			}
		}
	}
	if again == healAgain {
		// The collection is read from the beginning again, as after a
		// reset (the pull goes on from there; Live and the next Pull
		// start there): nothing held is dropped.
		r.cursors[collection] = []byte{}
		if r.reread == nil {
			r.reread = map[string]bool{}
		}
		r.reread[collection] = true
	}
	r.mu.Unlock()
	end.left = slices.Concat(left, healed.left, end.left)
	end.rejections = append(healed.rejections, end.rejections...)
	end.dropped += healed.dropped
	r.reportEnd(collection, end)
	return ended, owed, again
}

// checkHealLocked notes what page, read from cursor at, delivers of
// collection's last heal's records (see healCheck), and returns the
// verdict when the page ends a reading from the beginning that began
// after the heal: a page read from the empty cursor begins one, and a
// page read from where it stands continues it. With healAgain
// the collection is owed a heal again. With healDone at such an end, the
// records the heal's give-backs were refused collected and the reading
// did not deliver are dropped (dropCollectedLocked); it returns what left
// and the rejections, for the caller to report once the lock is released.
func (r *Replica) checkHealLocked(collection string, page Page, at []byte) (healVerdict, reconcileEnd) {
	hc := r.healed[collection]
	if hc == nil {
		return healDone, reconcileEnd{}
	}
	chained := len(at) == 0 || (hc.reading && bytes.Equal(at, hc.chain))
	if chained {
		hc.reading, hc.chain = true, bytes.Clone(page.Next)
	}
	for _, rec := range page.Records {
		delete(hc.ids, rec.ID)
		delete(hc.collected, rec.ID)
	}
	if len(page.Leaves) > 0 && len(hc.ids)+len(hc.collected) > 0 {
		// A leave entry says the server holds the record, out of the
		// reader's scope.
		leaves := make(map[string]bool, len(page.Leaves))
		for _, l := range page.Leaves {
			leaves[string(l)] = true
		}
		for _, ids := range []map[string]bool{hc.ids, hc.collected} {
			for id := range ids {
				if leaves[string(proto.LeaveDigest(collection, id))] {
					delete(ids, id)
				}
			}
		}
	}
	if !chained || page.More {
		return healDone, reconcileEnd{}
	}
	if len(hc.ids) == 0 {
		delete(r.healed, collection)
		// What the server refused collected and does not serve was
		// deleted and collected: it goes, as a reconciliation's would.
		var end reconcileEnd
		if len(hc.collected) > 0 {
			dropped := r.rejected.dropped
			end.left, end.rejections = r.dropCollectedLocked(collection, slices.Sorted(maps.Keys(hc.collected)))
			end.dropped = r.rejected.dropped - dropped
			r.c.log.Info("healed: dropped the records the server refused collected and does not serve", "collection", collection,
				"collected", len(end.left), "rejected", len(end.rejections))
		}
		return healDone, end
	}
	// The next heal gives back again, and judges again what was collected.
	hc.reading, hc.chain, hc.collected = false, nil, nil
	hc.again++
	if hc.again > proto.MaxHealAgain {
		r.c.log.Error("the server acknowledged records this replica gave back after it lost history, and does not serve them: they stay local only",
			"collection", collection, "records", len(hc.ids), "heals", hc.again, "remedy", notHealedRemedy)
		delete(r.healed, collection)
		return healUnconfirmed, reconcileEnd{}
	}
	r.c.log.Warn("the store went back in time again while this replica healed it: healing it again",
		"collection", collection, "missing", len(hc.ids), "again", hc.again)
	r.lostLocked(collection)
	return healAgain, reconcileEnd{}
}

// lostLocked notes that collection's store lost history (a reset with
// proto.ResetHistoryLost, or a reading after a heal that misses what the
// heal gave back): a heal is owed, and a push answered from now on that
// was sent before (flushOnce) acknowledges nothing, perhaps acknowledged
// by the store that lost it.
func (r *Replica) lostLocked(collection string) {
	if r.owed == nil {
		r.owed = map[string]bool{}
	}
	r.owed[collection] = true
	if r.losses == nil {
		r.losses = map[string]uint64{}
	}
	r.losses[collection]++
}

// reconcileEnd is what the end of a reconciliation (and a page) reports
// once the replica's lock is released: the records that left, the
// rejections, the changes settled as superseded, and how many of the
// oldest rejected changes the rejections pushed out.
type reconcileEnd struct {
	left       []string
	rejections []Rejection
	settled    []crdt.Change
	dropped    uint64
}

// reportEnd tells the application what end says, with no lock held.
func (r *Replica) reportEnd(collection string, end reconcileEnd) {
	if r.onResult != nil {
		for _, ch := range end.settled {
			r.onResult(ch, Result{Status: StatusSuperseded})
		}
	}
	r.report(end.rejections, end.dropped)
	if r.onLeave != nil {
		for _, id := range end.left {
			r.onLeave(collection, id)
		}
	}
}

// giveBackLocked returns what a reconciliation of collection that reached
// its end gives back before it drops anything (see Reconciliation): for
// each record the server had acknowledged, did not send, and the replica
// still holds, the stamps of this replica in its base, and for each
// record it sent, those its record replaced without holding or hiding
// them (owedBack); one change per stamp (so that a stamp the server
// refuses collected does not take a later one with it). A record with
// none (written by others alone, which only a page can have brought) has
// nothing to give back.
func (r *Replica) giveBackLocked(collection string, rc *reconciliation) []crdt.Change {
	own := r.c.Replica()
	if own == "" {
		return nil
	}
	var out []crdt.Change
	for _, id := range slices.Sorted(maps.Keys(rc.acked)) {
		if rc.delivered[id] || rc.kept[id] {
			continue
		}
		rec, ok := r.base[collection][id]
		if !ok {
			continue
		}
		for _, part := range rec.WrittenBy(own).ByStamp() {
			out = append(out, crdt.Change{Collection: collection, Record: part})
		}
	}
	for _, id := range slices.Sorted(maps.Keys(rc.owedBack)) {
		for _, part := range rc.owedBack[id].ByStamp() {
			out = append(out, crdt.Change{Collection: collection, Record: part})
		}
	}
	return out
}

// hasStamps reports whether rec holds a delete or a field.
func hasStamps(rec crdt.Record) bool { return !rec.Deleted.IsZero() || len(rec.Fields) > 0 }

// giveBack ends collection's reconciliation once its pull reached the
// end (see Reconciliation): it pushes the stamps giveBackLocked returns,
// an ordinary push; a record the server took back (a stamp acknowledged:
// it had lost it, a store that went back in time) or refused for another
// reason than collected stays, and only the records whose every stamp it
// refused collected are dropped with the others it did not send. When the
// push fails, nothing is dropped: the reconciliation stays at its end,
// its outbox held, and the next pull of the collection (Pull, Flush,
// Sync) gives back again. It reports whether it ended a reconciliation a
// reset asked for (the caller pushes the outbox then).
func (r *Replica) giveBack(ctx context.Context, collection string) (ended bool, err error) {
	r.mu.Lock()
	rc := r.reconciling[collection]
	if rc == nil || !rc.atEnd || r.revoked != nil {
		r.mu.Unlock()
		return false, nil
	}
	changes := r.giveBackLocked(collection, rc)
	r.mu.Unlock()
	var results []Result
	if len(changes) > 0 {
		if results, err = r.c.Push(ctx, changes); err != nil {
			return false, fmt.Errorf("reconcile %s: give back %d stamps: %w", collection, len(changes), err)
		}
	}
	r.mu.Lock()
	if r.reconciling[collection] != rc || !rc.atEnd || r.revoked != nil {
		// Begun again, or ended, meanwhile: that one decides.
		r.mu.Unlock()
		return false, nil
	}
	taken, refused, last := 0, 0, error(nil)
	touched := map[recordKey]bool{}
	// kept: of each record not sent that stays, the stamps the server
	// took back (or refused for another reason): its base from now on,
	// without those refused collected.
	kept := map[string]crdt.Record{}
	for i, x := range results {
		ch := changes[i]
		id := ch.Record.ID
		collected := x.Status == StatusRefused && errors.Is(x.Err, ErrCollected)
		switch {
		case x.Status != StatusRefused:
			taken++
		case !collected:
			refused, last = refused+1, x.Err
			r.c.log.Warn("reconcile: the server refused a write given back; it stays local", "collection", collection, "record", id, "err", x.Err)
		}
		if collected {
			continue
		}
		if !rc.delivered[id] {
			rc.kept[id] = true
			k := kept[id]
			k.Merge(ch.Record)
			kept[id] = k
		} else if _, held := r.base[collection][id]; held {
			// The record the server sent replaced these stamps: they
			// join it again.
			r.mergeBaseLocked(collection, ch.Record)
			touched[recordKey{collection, id}] = true
		}
	}
	for id, rec := range kept {
		if _, held := r.base[collection][id]; held {
			put(r.base, collection, rec)
			touched[recordKey{collection, id}] = true
		}
	}
	rc.owedBack = nil
	r.recomputeLocked(touched)
	if taken > 0 {
		r.c.log.Warn("reconcile: the server took back acknowledged writes it had lost", "collection", collection, "stamps", taken)
	}
	end := r.endReconcileLocked(collection)
	r.mu.Unlock()
	r.reportEnd(collection, end)
	if refused > 0 {
		r.tell(refusedBack("reconcile", collection, refused, len(changes), last))
	}
	return !rc.fromStart, nil
}

// refusedBack is the error told to ReplicaConfig.OnError when the server
// refused n of the total records or writes that op (a heal, a
// reconciliation) of collection gave back, for another reason than
// collected: they stay local only. It wraps last, the last refusal.
func refusedBack(op, collection string, n, total int, last error) error {
	return fmt.Errorf("%s %s: the server refused %d of the %d given back; they stay local (last: %w)",
		op, collection, n, total, last)
}

// report tells the application of rejections, and logs the drop of the
// oldest rejected changes.
func (r *Replica) report(rejections []Rejection, dropped uint64) {
	if dropped > 0 {
		r.c.log.Warn("dropped the oldest rejected changes", "dropped", dropped, "max", MaxRejected, "max_bytes", MaxRejectedBytes)
	}
	if r.onRejected != nil {
		for _, j := range rejections {
			r.onRejected(j)
		}
	}
}

// reset starts collection again from the beginning after the server said
// its cursor is of another history; with proto.ResetHistoryLost the
// collection is owed a heal (giving back what the server may lack), with
// proto.ResetLeaseExpired it is reconciled. Nothing local is dropped here:
// merging what the server sends again is idempotent. live says the reset
// came to Apply.
func (r *Replica) reset(collection, reason string, live bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.revoked != nil {
		return
	}
	r.cursors[collection] = []byte{}
	if reason != proto.ResetLeaseExpired {
		if r.reread == nil {
			r.reread = map[string]bool{}
		}
		r.reread[collection] = true
		if rc := r.reconciling[collection]; rc != nil {
			// A reconciliation under way goes on from the beginning of
			// the history the server holds now, as the reading after
			// this reset: pages of the one that ended will not come, and
			// what they delivered says nothing of what the server holds.
			r.beginReconcileLocked(collection, live)
			clear(rc.delivered)
			clear(rc.replaced)
		}
	}
	switch reason {
	case proto.ResetHistoryLost:
		r.lostLocked(collection)
	case proto.ResetLeaseExpired:
		r.beginReconcileLocked(collection, live)
	}
}

// beginReconcile starts reconciling collection from the beginning of its
// log, as a reset with proto.ResetLeaseExpired does, unless a
// reconciliation of it is under way: that one goes on from where it
// stands.
func (r *Replica) beginReconcile(collection string) {
	r.mu.Lock()
	under := r.reconciling[collection] != nil
	r.mu.Unlock()
	if !under {
		r.reset(collection, proto.ResetLeaseExpired, false)
	}
}

// reconcileFromStartLocked begins a reconciliation of collection when
// its reading starts from the beginning while the replica holds records
// of it the server acknowledged (see Reconciliation): pushed before the
// collection was ever pulled, or pulled while its log was empty (the
// beginning is the cursor of an empty log). No lease protected them, so
// one deleted and collected meanwhile is simply absent from the pull, and
// only a reconciliation drops it. A collection reset for another reason
// whose pull has not stored a cursor since (a reset drops nothing: what
// the server lacks after losing history is given back, or stays local
// when it cannot be), or already being reconciled, is left as it is. live
// says the pages will come to a live session.
func (r *Replica) reconcileFromStartLocked(collection string, live bool) {
	if len(r.cursors[collection]) != 0 || len(r.base[collection]) == 0 || r.reread[collection] || r.reconciling[collection] != nil {
		return
	}
	r.beginReconcileLocked(collection, live)
	r.reconciling[collection].fromStart = true
}

// beginReconcileLocked notes what the server had acknowledged of
// collection and holds its outbox until the pull from the beginning ends;
// a reconciliation already under way goes on with what it noted, from
// the beginning again.
func (r *Replica) beginReconcileLocked(collection string, live bool) {
	if rc := r.reconciling[collection]; rc != nil {
		rc.chain, rc.live, rc.atEnd = []byte{}, live, false
		return
	}
	rc := &reconciliation{acked: map[string]bool{}, delivered: map[string]bool{}, replaced: map[string]bool{}, kept: map[string]bool{}, chain: []byte{}, live: live}
	for id := range r.base[collection] {
		rc.acked[id] = true
	}
	for k := range r.gone {
		if k.collection == collection {
			rc.acked[k.id] = true
		}
	}
	if r.reconciling == nil {
		r.reconciling = map[string]*reconciliation{}
	}
	r.reconciling[collection] = rc
}

// endReconcileLocked ends collection's reconciliation: every record the
// server had acknowledged and did not send again was deleted and
// collected, so it leaves the replica (base, view, seals) and its changes
// in the outbox move to the rejected changes with code collected; the
// changes left of the collection are marked reconciled, and the outbox is
// no longer held. It returns the ids that left, sorted, the rejections,
// the changes settled as superseded, and how many of the oldest rejected
// changes the rejections pushed out.
func (r *Replica) endReconcileLocked(collection string) reconcileEnd {
	var settled []crdt.Change
	dropped := r.rejected.dropped
	rc := r.reconciling[collection]
	delete(r.reconciling, collection)
	var ids []string
	for id := range rc.acked {
		if !rc.delivered[id] && !rc.kept[id] {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	collected, rejections := r.dropCollectedLocked(collection, ids)
	// What stays of the collection's outbox is reconciled; a change the
	// server refused collected already is written again now (the horizon
	// only goes up: pushed as it is, it would be refused again).
	// Each is re-stamped as far as the record as the replica knows it
	// without it (the base, the server's record as delivered, with the
	// record's other pending changes) neither hides nor beats it.
	outbox := slices.Clone(r.outbox)
	var again []pending
	r.outbox = slices.DeleteFunc(r.outbox, func(p pending) bool {
		if p.change.Collection != collection || !p.collected || p.restamped {
			return false
		}
		again = append(again, p)
		return true
	})
	for i := range r.outbox {
		if r.outbox[i].change.Collection == collection {
			r.outbox[i].reconciled = true
		}
	}
	touched := map[recordKey]bool{}
	for _, p := range again {
		ch := p.change
		touched[recordKey{ch.Collection, ch.Record.ID}] = true
		queued, err := r.restampKnownLocked(ch, r.knownLocked(ch.Collection, ch.Record.ID, outbox, p.id))
		switch {
		case err != nil:
			e := &Error{Code: proto.CodeCollected, Message: fmt.Sprintf("refused collected, and not re-stamped: %v", err)}
			info, _ := r.c.Info()
			rejections = append(rejections, r.rejected.add(newRejection(ch, e, r.c.cfg.Now(), info.Subject)).clone())
		case !queued:
			// Nothing of it would have won: settled, as if superseded.
			settled = append(settled, ch)
		}
	}
	r.recomputeLocked(touched)
	r.c.log.Info("reconciled after the lease expired", "collection", collection,
		"acknowledged", len(rc.acked), "delivered", len(rc.delivered), "collected", len(collected),
		"kept", len(rc.kept), "rejected", len(rejections), "settled", len(settled))
	return reconcileEnd{left: collected, rejections: rejections, settled: settled, dropped: r.rejected.dropped - dropped}
}

// dropCollectedLocked drops the records ids of collection, which the
// server deleted and collected (it no longer serves them, and refused
// collected what was given back of them): each leaves the replica (base,
// view, seals), without a delete, and its changes in the outbox move to
// the rejected changes with code collected, never pushed. It returns the
// ids that left, in the order of ids (one that left meanwhile is
// skipped), and the rejections. The end of a reconciliation
// (endReconcileLocked) and of the reading after a heal
// (checkHealLocked) drop this way.
func (r *Replica) dropCollectedLocked(collection string, ids []string) (left []string, rejections []Rejection) {
	gone := map[recordKey]bool{}
	for _, id := range ids {
		k := recordKey{collection, id}
		_, inBase := r.base[collection][id]
		_, inView := r.view[collection][id]
		if !inBase && !inView {
			continue // it left meanwhile
		}
		delete(r.base[collection], id)
		delete(r.view[collection], id)
		delete(r.sealed[collection], id)
		delete(r.gone, k)
		gone[k] = true
		left = append(left, id)
	}
	if slices.ContainsFunc(r.outbox, func(p pending) bool { return gone[recordKey{p.change.Collection, p.change.Record.ID}] }) {
		when := r.c.cfg.Now()
		info, _ := r.c.Info()
		e := &Error{Code: proto.CodeCollected, Message: "the record was deleted on the server and its tombstone collected before this replica learnt of the delete"}
		r.outbox = slices.DeleteFunc(r.outbox, func(p pending) bool {
			if !gone[recordKey{p.change.Collection, p.change.Record.ID}] {
				return false
			}
			rejections = append(rejections, r.rejected.add(newRejection(p.change, e, when, info.Subject)).clone())
			return true
		})
	}
	return left, rejections
}

// Heal gives the server back what it may have lost of the collections it
// reset with history lost: every record the replica holds as the server
// sealed it (Client.Restore: anyone's stamps, a reader's too), and the
// client's own stamps in its base that no seal covers (changes the server
// acknowledged, then lost: pushed again, which the replica binding
// allows). The outbox needs nothing: Flush pushes it as always. Sync heals
// by itself, and so does Live (again and again, with backoff, while a
// heal fails); call Heal after Apply took a reset from a Client.Live of
// the program's own.
func (r *Replica) Heal(ctx context.Context) error {
	if err := r.Revoked(); err != nil {
		return fmt.Errorf("heal: %w", err)
	}
	r.mu.Lock()
	owed := make([]string, 0, len(r.owed))
	for coll := range r.owed {
		owed = append(owed, coll)
	}
	r.mu.Unlock()
	var errs []error
	for _, coll := range owed {
		err := r.heal(ctx, coll)
		if r.revokeOn(err) {
			return err
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// healFailed is what a heal of coll that failed with err returns; the
// heal stays owed. A heal refused forbidden (the token may no longer read
// the collection: the restore is refused whole; a push of its own stamps
// the token may not write is refused change by change, and those stay
// local) cannot be made yet: it
// is skipped, told to ReplicaConfig.OnError once until a heal of it is
// made, as the browser client does, and nil is returned, so that the
// collection is pulled on; the next Sync, Pull or Heal makes it again,
// and gives back what the replica holds once the server grants the
// collection again. Any other error is returned.
func (r *Replica) healFailed(coll string, err error) error {
	err = fmt.Errorf("heal %s: %w", coll, err)
	if !errors.Is(err, ErrForbidden) {
		return err
	}
	r.c.log.Warn("heal: refused forbidden; still owed, what the replica holds stays local until then", "collection", coll, "err", err)
	r.mu.Lock()
	delete(r.healed, coll)
	told := r.refusedHeal[coll]
	if r.refusedHeal == nil {
		r.refusedHeal = map[string]bool{}
	}
	r.refusedHeal[coll] = true
	r.mu.Unlock()
	if !told {
		r.tell(err)
	}
	return nil
}

func (r *Replica) heal(ctx context.Context, coll string) error {
	own := r.c.Replica()
	r.mu.Lock()
	sealed := make([]proto.SealedRecord, 0, len(r.sealed[coll]))
	for _, sr := range r.sealed[coll] {
		sealed = append(sealed, sr)
	}
	// The replica's own writes go back one change per stamp, as a
	// reconciliation gives them back (giveBackLocked): a record whose
	// every give-back is refused collected is dropped (healCheck), so one
	// stamp before the write horizon must not take a later one with it.
	var mine []crdt.Change
	for _, rec := range r.base[coll] {
		if own == "" {
			break
		}
		for _, part := range rec.WrittenBy(own).ByStamp() {
			mine = append(mine, crdt.Change{Collection: coll, Record: part})
		}
	}
	refusedBefore := r.refusedHeal[coll]
	r.mu.Unlock()
	// A heal the server refused forbidden (healFailed) asks first with a
	// restore of no records, so that each Sync, Pull or Heal while the
	// token still may not read coll sends that, not a batch of what is
	// held, refused again whole.
	if refusedBefore {
		if err := r.c.restoreNone(ctx, coll); err != nil {
			return r.healFailed(coll, err)
		}
	}
	// acked holds the records the server took back (a give-back of them
	// acknowledged), kept those refused for another reason than
	// collected (they stay local), collected those refused collected.
	acked, kept, collected := map[string]bool{}, map[string]bool{}, map[string]bool{}
	// refused counts the records refused for another reason than
	// collected, last the reason of the last one.
	refused, last := 0, error(nil)
	take := func(id string, x Result, what string) {
		switch {
		case x.Status != StatusRefused:
			acked[id] = true
		case errors.Is(x.Err, ErrCollected):
			collected[id] = true
		default:
			kept[id] = true
			refused, last = refused+1, x.Err
			r.c.log.Warn("heal: the server refused "+what, "collection", coll, "record", id, "err", x.Err)
		}
	}
	if len(sealed) > 0 {
		res, err := r.c.Restore(ctx, coll, sealed)
		if err != nil {
			return r.healFailed(coll, err)
		}
		for i, x := range res {
			take(sealed[i].Record.ID, x, "a sealed record; it stays local")
		}
	}
	if len(mine) > 0 {
		res, err := r.c.Push(ctx, mine)
		if err != nil {
			return r.healFailed(coll, err)
		}
		for i, x := range res {
			take(mine[i].Record.ID, x, "an own write it had acknowledged")
		}
	}
	// A record whose every give-back was refused collected was deleted and
	// collected, unless the reading that follows delivers it (see
	// healCheck); one taken back, or refused otherwise, stays.
	for id := range collected {
		if acked[id] || kept[id] {
			delete(collected, id)
		}
	}
	r.mu.Lock()
	delete(r.owed, coll)
	delete(r.refusedHeal, coll)
	// The reading from the beginning that follows must deliver what the
	// server took back (see healCheck); once the cursor moved on, a later
	// loss resets it.
	switch hc := r.healed[coll]; {
	case len(r.cursors[coll]) != 0 || len(acked)+len(collected) == 0:
		delete(r.healed, coll)
	case hc == nil:
		if r.healed == nil {
			r.healed = map[string]*healCheck{}
		}
		r.healed[coll] = &healCheck{ids: acked, collected: collected}
	default:
		hc.ids, hc.collected, hc.reading, hc.chain = acked, collected, false, nil
	}
	r.mu.Unlock()
	if refused > 0 {
		// The heal is done: no call returns what it could not give back.
		r.tell(refusedBack("heal", coll, refused, len(sealed)+len(mine), last))
	}
	return nil
}

// Live streams the kept collections from their cursors into the replica
// until ctx ends; see Client.Live. It does not push local writes as they
// are made, as the browser client's background sync does: it pushes the
// outbox only to end a reconciliation or a heal. Call Flush after writes
// (it goes over the session while one is open, see Client.Push).
func (r *Replica) Live(ctx context.Context) error {
	r.mu.Lock()
	if r.revoked != nil {
		defer r.mu.Unlock()
		return fmt.Errorf("live: %w", r.revoked)
	}
	subs := make(map[string][]byte, len(r.cursors))
	for coll, cur := range r.cursors {
		subs[coll] = bytes.Clone(cur)
		r.reconcileFromStartLocked(coll, true)
	}
	r.mu.Unlock()
	// A revocation learnt elsewhere (a Flush, a heal) ends the session,
	// and Live returns it.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case <-r.stopped:
			cancel(r.Revoked())
		case <-ctx.Done():
		}
	}()
	// A heal that failed is made again, with backoff, while the session
	// runs: a replica that only runs Live still gives back what the
	// server lost.
	healFailed := make(chan struct{}, 1)
	healed := make(chan struct{})
	go func() {
		defer close(healed)
		r.healAgain(ctx, healFailed)
	}()
	defer func() {
		cancel(nil)
		<-healed
	}()
	err := r.c.Live(ctx, subs, func(coll string, p Page) {
		reconciled, owed, again := r.applyLive(coll, p)
		if owed {
			ended, err := r.giveBack(ctx, coll)
			if r.revokeOn(err) {
				return
			}
			if err != nil {
				r.c.log.Warn("giving back before a live reconciliation drops failed; the next pull gives back again", "collection", coll, "err", err)
			}
			reconciled = ended
		}
		// again == healUnconfirmed: applyLive reported it; the session
		// goes on.
		if p.Reset == proto.ResetHistoryLost || again == healAgain {
			err := r.heal(ctx, coll)
			if r.revokeOn(err) {
				return // stopped: the session ends
			}
			if err != nil {
				r.c.log.Warn("heal after a live reset failed; Live heals again after a backoff", "collection", coll, "err", err)
				select {
				case healFailed <- struct{}{}:
				default:
				}
			} else if again == healAgain {
				// The store went back again while it was healed: read
				// it again from the beginning (apply moved the cursor
				// there), as Pull does, healing again up to
				// proto.MaxHealAgain times.
				err := r.pullCollection(ctx, coll)
				if r.revokeOn(err) {
					return
				}
				switch {
				case errors.Is(err, ErrNotHealed):
					r.tell(fmt.Errorf("live: %w", err))
				case err != nil:
					r.c.log.Warn("reading again after a heal made again failed; the next pull reads again", "collection", coll, "err", err)
				}
			}
		}
		if reconciled {
			// The outbox held back for the reconciliation goes now.
			err := r.Flush(ctx)
			if r.revokeOn(err) {
				return
			}
			if err != nil {
				r.c.log.Warn("push after a live reconciliation failed; the next Flush pushes", "collection", coll, "err", err)
			}
		}
	}, r.tell)
	if cause := context.Cause(ctx); cause != nil && errors.Is(cause, ErrRevoked) {
		err = fmt.Errorf("live: %w", cause)
	}
	r.revokeOn(err)
	return err
}

// healAgain heals, with the client's backoff between attempts, after
// each signal on failed (a heal of a live reset failed) until a heal of
// every collection owed one succeeds, ctx ends, or access is revoked.
func (r *Replica) healAgain(ctx context.Context, failed <-chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-failed:
		}
		for attempt := 0; ; attempt++ {
			if sleep(ctx, r.c.backoff.delay(attempt, 0)) != nil {
				return
			}
			err := r.Heal(ctx)
			if err == nil || r.revokeOn(err) || ctx.Err() != nil {
				break
			}
			r.c.log.Warn("heal after a live reset failed again; Live heals again after a backoff", "attempt", attempt+1, "err", err)
		}
	}
}

// Revoked returns the server's refusal that revoked this replica's access
// (an error matching ErrRevoked), or nil while access holds.
//
// When the server answers any request of the replica with revoked (its
// principal is on the server's deny list), the replica purges every record
// it holds, of every collection (OnLeave is called for each), moves every
// change of its outbox to the rejected changes with code revoked (OnRejected
// is called for each) and stops: Sync, Flush, Pull, Heal and Live return
// the revocation at once, and writes and Retry fail with it. Rejected and
// Discard still work. A program that regains access (a new token, a
// subject taken off the deny list) starts a new Replica.
func (r *Replica) Revoked() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.revoked
}

// revokeOn revokes the replica if err says access was revoked, and reports
// whether it did (or had).
func (r *Replica) revokeOn(err error) bool {
	if err == nil || !errors.Is(err, ErrRevoked) {
		return false
	}
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Code: proto.CodeRevoked, Message: err.Error()}
	}
	r.revoke(e)
	return true
}

// revoke purges every record, moves the outbox to the rejected changes
// with e's code and message, and stops the replica.
func (r *Replica) revoke(e *Error) {
	when := r.c.cfg.Now()
	info, _ := r.c.Info()
	r.mu.Lock()
	if r.revoked != nil {
		r.mu.Unlock()
		return
	}
	r.revoked = e
	var left []recordKey
	for _, m := range []map[string]map[string]crdt.Record{r.base, r.view} {
		for coll, recs := range m {
			for id := range recs {
				left = append(left, recordKey{coll, id})
			}
		}
	}
	dropped := r.rejected.dropped
	rejections := make([]Rejection, 0, len(r.outbox))
	for _, p := range r.outbox {
		rejections = append(rejections, r.rejected.add(newRejection(p.change, e, when, info.Subject)).clone())
	}
	dropped = r.rejected.dropped - dropped
	r.outbox = nil
	clear(r.base)
	clear(r.view)
	clear(r.sealed)
	clear(r.leaves)
	clear(r.gone)
	clear(r.owed)
	clear(r.refusedHeal)
	clear(r.healed)
	clear(r.reconciling)
	clear(r.pulledAt)
	for coll := range r.cursors {
		r.cursors[coll] = []byte{}
	}
	close(r.stopped)
	r.mu.Unlock()
	r.c.log.Warn("access revoked: purged every record and moved the outbox to the rejected changes",
		"outbox", len(rejections), "err", e)
	r.report(rejections, dropped)
	if r.onLeave != nil {
		slices.SortFunc(left, func(a, b recordKey) int {
			if c := strings.Compare(a.collection, b.collection); c != 0 {
				return c
			}
			return strings.Compare(a.id, b.id)
		})
		left = slices.Compact(left)
		for _, k := range left {
			r.onLeave(k.collection, k.id)
		}
	}
}
