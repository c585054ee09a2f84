package client

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// Bounds of a Replica's rejected changes (docs/design.md, "Push results
// and refused changes"): at most MaxRejected entries and MaxRejectedBytes
// bytes (each entry counted as its change's encoding plus its strings). The
// oldest entries are dropped first and counted (Replica.RejectedDropped); an
// entry larger than MaxRejectedBytes on its own is kept alone.
const (
	MaxRejected      = proto.MaxRejected
	MaxRejectedBytes = proto.MaxRejectedBytes
)

// ErrNoRejection is returned by Replica.Retry and Replica.Discard for an id
// that is not (or no longer) among the rejected changes.
var ErrNoRejection = errors.New("convergo: no such rejected change")

// errOtherSubject says a change refused collected was written by another
// replica id than the client's now (restampKnownLocked): it is not written
// again.
var errOtherSubject = errors.New("written as another subject")

// Rejection is a local change the server refused: it will never be applied
// in this form, so the replica took it out of its outbox, rolled the local
// view of its record back, and keeps it here with the server's reason until
// the application retries or discards it.
type Rejection struct {
	// ID identifies the entry within its Replica; ids grow with each
	// refusal and are never reused.
	ID uint64
	// Collection and RecordID name the record the change was for.
	Collection string
	RecordID   string
	// Change is the change as it was pushed, with its original stamps.
	Change crdt.Change
	// Code is the per-change code of the refusal (proto.CodeTooLarge,
	// CodeInvalid, CodeClockDrift, CodeForbidden, CodeForgedReplica,
	// CodeOutOfScope, CodeSchema, ..., or a newer server's code), or
	// proto.CodeRevoked for a change the outbox held when access was
	// revoked; Message is the server's explanation.
	Code    string
	Message string
	// RequestID is the id under which the server logged the push, "" when
	// it sent none.
	RequestID string
	// When is the local time (Config.Now) at which the refusal arrived.
	When time.Time
	// Subject is the subject the client was signed in as (from its last
	// hello), "" when anonymous or before any hello.
	Subject string
}

// Err returns the refusal as an *Error, which matches the sentinel of its
// code with errors.Is (ErrTooLarge, ErrClockDrift, ...).
func (j Rejection) Err() error {
	return &Error{Code: j.Code, Message: j.Message, RequestID: j.RequestID}
}

func (j Rejection) clone() Rejection {
	j.Change.Record = j.Change.Record.Clone()
	return j
}

// newRejection makes the entry for change, refused with err.
func newRejection(change crdt.Change, err error, when time.Time, subject string) Rejection {
	j := Rejection{Collection: change.Collection, RecordID: change.Record.ID, Change: change, When: when, Subject: subject}
	var e *Error
	switch {
	case errors.As(err, &e):
		j.Code, j.Message, j.RequestID = e.Code, e.Message, e.RequestID
	case err != nil:
		j.Message = err.Error()
	}
	return j
}

// rejectedStore holds rejected changes, oldest first, within MaxRejected
// entries and MaxRejectedBytes bytes.
type rejectedStore struct {
	entries []Rejection
	bytes   int    // the sum of rejectionSize over entries
	lastID  uint64 // the id of the last entry added
	dropped uint64 // entries dropped to stay within the bounds
}

// rejectionSize is what an entry counts against MaxRejectedBytes.
func rejectionSize(j Rejection) int {
	return len(crdt.AppendChange(nil, j.Change)) + len(j.Code) + len(j.Message) + len(j.RequestID) + len(j.Subject)
}

// add gives j the next id, appends it and drops the oldest entries past
// the bounds. It returns j with its id.
func (s *rejectedStore) add(j Rejection) Rejection {
	s.lastID++
	j.ID = s.lastID
	s.entries = append(s.entries, j)
	s.bytes += rejectionSize(j)
	n := 0
	for len(s.entries)-n > MaxRejected || (s.bytes > MaxRejectedBytes && len(s.entries)-n > 1) {
		s.bytes -= rejectionSize(s.entries[n])
		n++
	}
	if n > 0 {
		clear(s.entries[:n])
		s.entries = s.entries[n:]
		s.dropped += uint64(n)
	}
	return j
}

// remove takes entry id out of the store.
func (s *rejectedStore) remove(id uint64) (Rejection, bool) {
	i, ok := slices.BinarySearchFunc(s.entries, id, func(j Rejection, id uint64) int {
		switch {
		case j.ID < id:
			return -1
		case j.ID > id:
			return 1
		}
		return 0
	})
	if !ok {
		return Rejection{}, false
	}
	j := s.entries[i]
	s.bytes -= rejectionSize(j)
	s.entries = slices.Delete(s.entries, i, i+1)
	return j, true
}

// Rejected returns the changes the server refused and the application has
// neither retried nor discarded, oldest first.
func (r *Replica) Rejected() []Rejection {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Rejection, len(r.rejected.entries))
	for i, j := range r.rejected.entries {
		out[i] = j.clone()
	}
	return out
}

// RejectedDropped returns how many rejected changes were dropped, oldest
// first, to keep within MaxRejected and MaxRejectedBytes. A drop is reported
// by this count (and a warning on the client's logger), not by an entry.
func (r *Replica) RejectedDropped() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rejected.dropped
}

// Discard forgets rejected change id. It returns an error wrapping
// ErrNoRejection if there is no such entry.
func (r *Replica) Discard(id uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.rejected.remove(id); !ok {
		return fmt.Errorf("discard %d: %w", id, ErrNoRejection)
	}
	return nil
}

// Retry writes rejected change id again as a new local write: its fields
// (and its delete, if it has one) are stamped afresh by the client's clock,
// so the write sorts after everything the replica has seen and can win
// again, then it is merged into the local view and queued in the outbox,
// and the entry leaves the rejected changes. The values are the ones
// refused: a change refused for its content (too_large, invalid, ...) is
// likely refused again, and comes back as a new entry. It returns an error
// wrapping ErrNoRejection if there is no such entry, and the entry stays
// when the change cannot be stamped (ErrUnbound).
func (r *Replica) Retry(id uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.retryLocked(id)
}

// retryLocked is Retry.
func (r *Replica) retryLocked(id uint64) error {
	i := slices.IndexFunc(r.rejected.entries, func(j Rejection) bool { return j.ID == id })
	if i < 0 {
		return fmt.Errorf("retry %d: %w", id, ErrNoRejection)
	}
	if err := r.restampLocked(r.rejected.entries[i].Change); err != nil {
		return fmt.Errorf("retry %d: %w", id, err)
	}
	r.rejected.remove(id)
	return nil
}

// restampLocked writes old again as a new local write: its fields (and its
// delete, if it has one) stamped afresh, merged into the view and queued.
func (r *Replica) restampLocked(old crdt.Change) error {
	rec := crdt.Record{ID: old.Record.ID}
	if !old.Record.Deleted.IsZero() {
		s, err := r.stampLocked(old.Collection, old.Record.ID)
		if err != nil {
			return err
		}
		rec.Deleted = s
	}
	if len(old.Record.Fields) > 0 {
		// Stamped after the delete, if any, so the delete does not hide
		// them.
		s, err := r.stampLocked(old.Collection, old.Record.ID)
		if err != nil {
			return err
		}
		rec.Fields = make(map[string]crdt.Field, len(old.Record.Fields))
		for name, f := range old.Record.Fields {
			rec.Fields[name] = crdt.Field{Stamp: s, Value: f.Value}
		}
	}
	return r.queueLocked(old.Collection, rec)
}

// restampKnownLocked writes old, refused collected, again with fresh
// stamps (as restampLocked does, marked restamped), but only what known,
// the record as the replica knows it without old (the server's record as
// delivered or acknowledged, with the record's other pending changes),
// neither hides nor beats: without the collection, those would have won
// over old, and re-stamped it must not win instead. A field stamped at or
// before known's delete, or older than known's stamp of the same field, is
// left out; a delete of a record with a field written after it becomes
// unsets of the fields it would have hidden. It reports false, queueing
// nothing, when nothing is left. A change another replica id wrote (the
// client greeted as another subject since it was pushed) is not written
// again: its fresh stamps would be the new subject's, and the first
// subject's edit would go out as the second's (errOtherSubject; the
// caller rejects it, for its subject to write again).
func (r *Replica) restampKnownLocked(old crdt.Change, known crdt.Record) (bool, error) {
	if w := writer(old); w != r.c.Replica() {
		return false, fmt.Errorf("%w: written by %s", errOtherSubject, w)
	}
	rec := crdt.Record{ID: old.Record.ID}
	if d := old.Record.Deleted; !d.IsZero() {
		newer := false
		for _, f := range known.Fields {
			newer = newer || f.Value != nil && f.Stamp.Compare(d) > 0
		}
		s, err := r.stampLocked(old.Collection, old.Record.ID)
		if err != nil {
			return false, err
		}
		if !newer {
			rec.Deleted = s
		} else {
			for name, f := range known.Fields {
				if f.Value != nil && f.Stamp.Compare(d) < 0 {
					if rec.Fields == nil {
						rec.Fields = map[string]crdt.Field{}
					}
					rec.Fields[name] = crdt.Field{Stamp: s}
				}
			}
		}
	}
	if len(old.Record.Fields) > 0 {
		// Stamped after the delete, if any, so the delete does not hide
		// them.
		s, err := r.stampLocked(old.Collection, old.Record.ID)
		if err != nil {
			return false, err
		}
		for name, f := range old.Record.Fields {
			cur, held := known.Fields[name]
			if f.Stamp.Compare(known.Deleted) <= 0 || held && cur.Stamp.Compare(f.Stamp) > 0 {
				continue
			}
			if rec.Fields == nil {
				rec.Fields = map[string]crdt.Field{}
			}
			rec.Fields[name] = crdt.Field{Stamp: s, Value: f.Value}
		}
	}
	if rec.Deleted.IsZero() && len(rec.Fields) == 0 {
		return false, nil
	}
	if err := r.queueLocked(old.Collection, rec); err != nil {
		return false, err
	}
	r.outbox[len(r.outbox)-1].restamped = true
	return true, nil
}

// knownLocked is the record collection/id as the replica knows it apart
// from the change self of outbox: its base merged with the record's other
// changes in outbox.
func (r *Replica) knownLocked(collection, id string, outbox []pending, self uint64) crdt.Record {
	k := r.base[collection][id].Clone()
	k.ID = id
	for _, p := range outbox {
		if p.id != self && p.change.Collection == collection && p.change.Record.ID == id {
			k.Merge(p.change.Record)
		}
	}
	return k
}
