package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/convergo/convergo/crdt"
)

// Replica is a local copy of some collections kept in sync through a
// Client: records in memory, an outbox of local changes not yet
// acknowledged, and a cursor per collection. It is what a Go program (or a
// test) that writes offline and syncs later needs; it keeps nothing on disk.
//
// Local writes (Set, Unset, Delete) are stamped by the client's clock,
// merged into the local record at once and queued. Sync pushes the outbox,
// dropping what the server acknowledged (applied, duplicate or superseded)
// and what it refused for good (kept in Refused), keeping the rest for the
// next attempt, then pulls every collection from its cursor. Since merge is
// idempotent and commutative, pulled records and local changes may arrive
// in any order and any number of times.
//
// A superseded change needs no undoing: the newer writes that beat it
// reach the replica by pull or live sync and win the local merge as they
// won the server's. A refused change stays merged into the local record
// until newer writes replace it.
//
// A Replica is safe for concurrent use.
type Replica struct {
	c        *Client
	onResult func(crdt.Change, Result)

	syncMu sync.Mutex // one push at a time, so a change is in flight once

	mu      sync.Mutex // guards the fields below
	records map[string]map[string]crdt.Record
	cursors map[string][]byte // opaque, from the server; empty is the beginning
	outbox  []pending
	nextID  uint64
	refused []Refusal
}

type pending struct {
	id     uint64
	change crdt.Change
}

// Refusal is a local change the server refused for good, and why.
type Refusal struct {
	Change crdt.Change
	Err    error
}

// ReplicaConfig configures a Replica.
type ReplicaConfig struct {
	// Collections are the collections to keep: Sync pulls them and Live
	// subscribes to them. Writes to other collections are pushed but not
	// pulled.
	Collections []string
	// OnResult, when set, is called with each pushed change and the
	// server's answer for it (applied, duplicate, superseded or refused),
	// after the outbox was updated. It must not call back into the Replica's Sync.
	OnResult func(crdt.Change, Result)
}

// NewReplica returns an empty replica syncing through c.
func NewReplica(c *Client, cfg ReplicaConfig) (*Replica, error) {
	r := &Replica{
		c:        c,
		onResult: cfg.OnResult,
		records:  map[string]map[string]crdt.Record{},
		cursors:  map[string][]byte{},
	}
	for _, coll := range cfg.Collections {
		if err := crdt.ValidateCollection(coll); err != nil {
			return nil, fmt.Errorf("new replica: %w", err)
		}
		r.cursors[coll] = []byte{}
	}
	return r, nil
}

// Client returns the replica's client.
func (r *Replica) Client() *Client { return r.c }

// Set sets field name of record id in collection to value, encoded as
// canonical CBOR.
func (r *Replica) Set(collection, id, name string, value any) error {
	v, err := crdt.EncodeValue(value)
	if err != nil {
		return fmt.Errorf("set %s/%s.%s: %w", collection, id, name, err)
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

func (r *Replica) write(collection, id string, change func(crdt.Stamp) crdt.Record) error {
	if err := crdt.ValidateCollection(collection); err != nil {
		return fmt.Errorf("write %s/%s: %w", collection, id, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// Stamping under r.mu keeps the outbox in stamp order.
	s, err := r.c.Now()
	if err != nil {
		return fmt.Errorf("write %s/%s: %w", collection, id, err)
	}
	rec := change(s)
	if err := rec.Validate(); err != nil {
		return fmt.Errorf("write %s/%s: %w", collection, id, err)
	}
	r.mergeLocked(collection, rec)
	r.nextID++
	r.outbox = append(r.outbox, pending{id: r.nextID, change: crdt.Change{Collection: collection, Record: rec}})
	return nil
}

func (r *Replica) mergeLocked(collection string, rec crdt.Record) {
	m := r.records[collection]
	if m == nil {
		m = map[string]crdt.Record{}
		r.records[collection] = m
	}
	cur := m[rec.ID]
	cur.Merge(rec)
	m[rec.ID] = cur
}

// Get returns the local state of a record (tombstones included) and
// whether the replica has any state for it.
func (r *Replica) Get(collection, id string) (crdt.Record, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.records[collection][id]
	return rec.Clone(), ok
}

// Records returns a copy of the local state of every record of collection.
func (r *Replica) Records(collection string) map[string]crdt.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]crdt.Record, len(r.records[collection]))
	for id, rec := range r.records[collection] {
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

// Refused returns the changes the server refused for good.
func (r *Replica) Refused() []Refusal {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.refused)
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

// Flush pushes the outbox. Acknowledged and refused changes leave it; on
// error the unacknowledged rest stays for the next Flush.
func (r *Replica) Flush(ctx context.Context) error {
	r.syncMu.Lock()
	defer r.syncMu.Unlock()
	r.mu.Lock()
	batch := slices.Clone(r.outbox)
	r.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	changes := make([]crdt.Change, len(batch))
	for i, p := range batch {
		changes[i] = p.change
	}
	results, err := r.c.Push(ctx, changes)
	done := make(map[uint64]bool, len(results))
	r.mu.Lock()
	for i, res := range results {
		done[batch[i].id] = true
		if res.Status == StatusRefused {
			r.refused = append(r.refused, Refusal{Change: batch[i].change, Err: res.Err})
		}
	}
	r.outbox = slices.DeleteFunc(r.outbox, func(p pending) bool { return done[p.id] })
	r.mu.Unlock()
	if r.onResult != nil {
		for i, res := range results {
			r.onResult(batch[i].change, res)
		}
	}
	if err != nil {
		return fmt.Errorf("flush %d changes: %w", len(batch)-len(results), err)
	}
	return nil
}

// Pull pulls every kept collection from its cursor to the end of its log.
func (r *Replica) Pull(ctx context.Context) error {
	var errs []error
	for _, coll := range r.Collections() {
		if err := r.pullCollection(ctx, coll); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (r *Replica) pullCollection(ctx context.Context, coll string) error {
	for {
		from := r.Cursor(coll)
		p, err := r.c.Pull(ctx, coll, from, 0)
		if err != nil {
			return err
		}
		r.apply(coll, p.Records, from, p.Next)
		if !p.More {
			return nil
		}
	}
}

// Apply merges records received from the server into the local records and
// sets collection's cursor to next. It is a ChangesFunc, for Live.
func (r *Replica) Apply(collection string, records []crdt.Record, next []byte) {
	r.apply(collection, records, nil, next)
}

// apply merges records and sets collection's cursor to next; with from
// non-nil, only if the cursor is still from, so that a pull racing a live
// delivery cannot move the cursor back (cursors are opaque: equality is
// all a client may test).
func (r *Replica) apply(collection string, records []crdt.Record, from, next []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range records {
		r.mergeLocked(collection, rec)
	}
	if from == nil || bytes.Equal(r.cursors[collection], from) {
		r.cursors[collection] = bytes.Clone(next)
	}
}

// Live streams the kept collections from their cursors into the replica
// until ctx ends; see Client.Live.
func (r *Replica) Live(ctx context.Context) error {
	r.mu.Lock()
	subs := make(map[string][]byte, len(r.cursors))
	for coll, cur := range r.cursors {
		subs[coll] = bytes.Clone(cur)
	}
	r.mu.Unlock()
	return r.c.Live(ctx, subs, r.Apply)
}
