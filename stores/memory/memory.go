// Package memory is an in-memory stores.Store for tests and for Go programs
// that embed Convergo and keep nothing on disk.
//
// A store's data ends with its process, so each New is a new store with a
// new identity: readers of a store that was restarted are reset.
//
// One mutex serialises writers; a change takes its sequence number under the
// mutex that makes it visible, so sequence numbers become visible in order
// (the no-gap invariant of package stores).
package memory

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

var (
	_ stores.Store            = (*Store)(nil)
	_ stores.Usager           = (*Store)(nil)
	_ stores.Purger           = (*Store)(nil)
	_ stores.EpochsBumperFrom = (*Store)(nil)
)

type entry struct {
	seq    uint64
	record crdt.Record
}

type collection struct {
	head    uint64
	bytes   int64 // encoded sizes of the records, for Usage
	records map[string]*entry
	// purged counts the records removed since records was last rebuilt:
	// a Go map never shrinks, so Purge rebuilds it when they outnumber
	// those left.
	purged int
	// log lists (seq, id) in ascending sequence order. It is append-only;
	// an entry whose record has since taken a newer sequence number (or
	// was purged) is stale and skipped, and stale entries are dropped when
	// they are half the log.
	log   []logEntry
	stale int
}

type logEntry struct {
	seq uint64
	id  string
}

func (c *collection) appendLog(seq uint64, id string, oldSeq uint64) {
	c.log = append(c.log, logEntry{seq, id})
	if oldSeq == 0 {
		return
	}
	c.staled()
}

// staled counts one more stale log entry and compacts.
func (c *collection) staled() {
	c.stale++
	c.compact()
}

// compact drops the stale entries of the log when they are half of it.
func (c *collection) compact() {
	if c.stale > 1024 && c.stale*2 > len(c.log) {
		live := c.log[:0]
		for _, le := range c.log {
			if e := c.records[le.id]; e != nil && e.seq == le.seq {
				live = append(live, le)
			}
		}
		clear(c.log[len(live):])
		if len(live) < cap(live)/4 {
			live = slices.Clone(live) // give back the room of a log that shrank
		}
		c.log, c.stale = live, 0
	}
}

// Store is an in-memory store. Its zero value is not usable; call New.
type Store struct {
	mu          sync.RWMutex
	collections map[string]*collection
	closed      bool
	watchers    stores.Watchers
	identity    string
	// epoch is the store-wide epoch counter, epochs each collection's
	// own (stores.MetaOf), bumped by stores.NextEpoch at now (time.Now;
	// its tests set a clock): nothing puts a memory store back, but it
	// bumps by the rule every store does.
	epoch  uint64
	epochs map[string]localEpoch
	now    func() time.Time
}

// localEpoch is a collection's own epoch counter and its value at the
// latest HistoryLost bump.
type localEpoch struct{ n, lost uint64 }

// New returns an empty store with a new identity.
func New() *Store {
	return &Store{collections: map[string]*collection{}, identity: stores.NewIdentity(), epochs: map[string]localEpoch{}, now: time.Now}
}

func (s *Store) coll(name string) *collection {
	c := s.collections[name]
	if c == nil {
		c = &collection{records: map[string]*entry{}}
		s.collections[name] = c
	}
	return c
}

// Apply implements stores.Store. A batch is applied whole or not at all: a
// change whose merge would break a record limit refuses the batch with
// stores.ErrTooLarge before anything is written.
func (s *Store) Apply(ctx context.Context, changes []crdt.Change) ([]stores.Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := stores.CheckApply(changes); err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, stores.ErrClosed
	}
	// Merge into copies first, so a refused batch leaves no trace.
	type key struct{ coll, id string }
	staged := map[key]*entry{}
	changed := make([]bool, len(changes))
	lost := make([][]string, len(changes))
	for i, ch := range changes {
		k := key{ch.Collection, ch.Record.ID}
		e := staged[k]
		if e == nil {
			e = &entry{record: crdt.Record{ID: ch.Record.ID}}
			if c := s.collections[ch.Collection]; c != nil && c.records[ch.Record.ID] != nil {
				old := c.records[ch.Record.ID]
				e = &entry{seq: old.seq, record: old.record.Clone()}
			}
			staged[k] = e
		}
		changed[i] = e.record.Merge(ch.Record)
		lost[i] = crdt.LostFields(ch.Record, e.record)
		if changed[i] {
			if err := stores.CheckRecordLimits(e.record); err != nil {
				s.mu.Unlock()
				return nil, fmt.Errorf("apply %s/%s: %w", ch.Collection, ch.Record.ID, err)
			}
		}
	}
	// Each change that altered its record takes the next seq; the record
	// keeps the last one.
	results := make([]stores.Result, len(changes))
	seqs := map[key]uint64{}
	heads := map[string]uint64{}
	for i, ch := range changes {
		k := key{ch.Collection, ch.Record.ID}
		if !changed[i] {
			seq, ok := seqs[k]
			if !ok {
				seq = staged[k].seq
			}
			results[i] = stores.Result{Seq: seq, Lost: lost[i]}
			continue
		}
		c := s.coll(ch.Collection)
		c.head++
		seqs[k] = c.head
		results[i] = stores.Result{Changed: true, Seq: c.head, Lost: lost[i]}
		heads[ch.Collection] = c.head
	}
	// The log must stay in seq order: commit records by their new seq.
	for i := range changes {
		k := key{changes[i].Collection, changes[i].Record.ID}
		if !changed[i] || seqs[k] != results[i].Seq {
			continue // unchanged, or not the record's last change
		}
		c := s.collections[k.coll]
		if old := c.records[k.id]; old != nil {
			c.bytes -= int64(len(crdt.AppendRecord(nil, old.record)))
		}
		c.bytes += int64(len(crdt.AppendRecord(nil, staged[k].record)))
		c.records[k.id] = &entry{seq: results[i].Seq, record: staged[k].record}
		c.appendLog(results[i].Seq, k.id, staged[k].seq)
	}
	s.mu.Unlock()
	for name, head := range heads {
		s.watchers.Notify(stores.Notification{Collection: name, Seq: head})
	}
	return results, nil
}

// Pull implements stores.Store.
func (s *Store) Pull(ctx context.Context, collection string, after uint64, limit stores.PageLimit) (stores.Page, error) {
	if err := ctx.Err(); err != nil {
		return stores.Page{}, err
	}
	if err := stores.CheckPull(collection, limit); err != nil {
		return stores.Page{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return stores.Page{}, stores.ErrClosed
	}
	page := stores.Page{Next: after}
	c := s.collections[collection]
	if c == nil {
		return page, nil
	}
	i := sort.Search(len(c.log), func(i int) bool { return c.log[i].seq > after })
	var buf []byte
	used := 0
	for ; i < len(c.log); i++ {
		le := c.log[i]
		e := c.records[le.id]
		if e == nil || e.seq != le.seq {
			continue // stale: the record moved to a later sequence number, or was purged
		}
		buf = crdt.AppendRecord(buf[:0], e.record)
		if !stores.PageFits(limit, len(page.Entries), used, len(buf)) {
			page.More = true
			break
		}
		used += len(buf)
		page.Entries = append(page.Entries, stores.Entry{Seq: e.seq, Record: e.record.Clone()})
		page.Next = e.seq
	}
	return page, nil
}

// Get implements stores.Store.
func (s *Store) Get(ctx context.Context, collection, id string) (stores.Entry, error) {
	if err := ctx.Err(); err != nil {
		return stores.Entry{}, err
	}
	if err := stores.CheckKey(collection, id); err != nil {
		return stores.Entry{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return stores.Entry{}, stores.ErrClosed
	}
	if c := s.collections[collection]; c != nil {
		if e := c.records[id]; e != nil {
			return stores.Entry{Seq: e.seq, Record: e.record.Clone()}, nil
		}
	}
	return stores.Entry{}, fmt.Errorf("get %s/%s: %w", collection, id, stores.ErrNotFound)
}

// Head implements stores.Store.
func (s *Store) Head(ctx context.Context, collection string) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := crdt.ValidateCollection(collection); err != nil {
		return 0, fmt.Errorf("%w: %v", stores.ErrInvalid, err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, stores.ErrClosed
	}
	if c := s.collections[collection]; c != nil {
		return c.head, nil
	}
	return 0, nil
}

// Watch implements stores.Store.
func (s *Store) Watch(fn func(stores.Notification)) (stop func()) { return s.watchers.Add(fn) }

// Close implements stores.Store.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.watchers.Close()
	return nil
}

// Identity implements stores.Store: made by New.
func (s *Store) Identity(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return "", stores.ErrClosed
	}
	return s.identity, nil
}

// Meta implements stores.Store.
func (s *Store) Meta(ctx context.Context, collection string) (stores.Meta, error) {
	if err := ctx.Err(); err != nil {
		return stores.Meta{}, err
	}
	if err := stores.CheckCollection(collection); err != nil {
		return stores.Meta{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return stores.Meta{}, stores.ErrClosed
	}
	l := s.epochs[collection]
	return stores.MetaOf(s.epoch, l.n, l.lost), nil
}

// BumpEpoch implements stores.Store.
func (s *Store) BumpEpoch(ctx context.Context, collection string, cause stores.EpochCause) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := stores.CheckBump(collection, cause); err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return stores.ErrClosed
	}
	l := s.epochs[collection]
	l.n = stores.NextEpoch(l.n, s.now())
	if cause == stores.HistoryLost {
		l.lost = l.n
	}
	s.epochs[collection] = l
	s.mu.Unlock()
	s.watchers.Notify(stores.Notification{Resync: true})
	return nil
}

// BumpEpochs implements stores.Store.
func (s *Store) BumpEpochs(ctx context.Context) error {
	_, err := s.bumpEpochs(ctx, func(uint64) bool { return true })
	return err
}

// BumpEpochsFrom implements stores.EpochsBumperFrom.
func (s *Store) BumpEpochsFrom(ctx context.Context, from uint64) (bool, error) {
	return s.bumpEpochs(ctx, func(e uint64) bool { return stores.IsStoreEpoch(e, from) })
}

// bumpEpochs raises the store-wide epoch when ok says so of its value.
func (s *Store) bumpEpochs(ctx context.Context, ok func(uint64) bool) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false, stores.ErrClosed
	}
	if !ok(s.epoch) {
		s.mu.Unlock()
		return false, nil
	}
	s.epoch = stores.NextEpoch(s.epoch, s.now())
	s.mu.Unlock()
	s.watchers.Notify(stores.Notification{Resync: true})
	return true, nil
}

// Usage implements stores.Usager.
func (s *Store) Usage(ctx context.Context, collection string) (stores.Usage, error) {
	if err := ctx.Err(); err != nil {
		return stores.Usage{}, err
	}
	if err := stores.CheckCollection(collection); err != nil {
		return stores.Usage{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return stores.Usage{}, stores.ErrClosed
	}
	c := s.collections[collection]
	if c == nil {
		return stores.Usage{}, nil
	}
	return stores.Usage{Records: int64(len(c.records)), Bytes: c.bytes}, nil
}

// Purge implements stores.Purger. It holds the store's lock for the whole
// call (at most scan.Limit live entries), so every record is checked and
// purged atomically with respect to Apply, and the epoch (h.Epoch) with
// respect to the bumps.
func (s *Store) Purge(ctx context.Context, collection string, h stores.Horizon, scan stores.PurgeScan) (stores.PurgeResult, error) {
	if err := ctx.Err(); err != nil {
		return stores.PurgeResult{}, err
	}
	after, limit, err := stores.CheckPurge(collection, h, scan, 1)
	if err != nil {
		return stores.PurgeResult{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return stores.PurgeResult{}, stores.ErrClosed
	}
	l := s.epochs[collection]
	if err := stores.CheckEpoch(collection, h, stores.MetaOf(s.epoch, l.n, l.lost)); err != nil {
		return stores.PurgeResult{}, fmt.Errorf("purge %s: %w", collection, err)
	}
	res := stores.PurgeResult{Next: after}
	c := s.collections[collection]
	if c == nil {
		return res, nil
	}
	// Removing records makes their entries stale; collect the ids first,
	// then compact once, so the walk's indexes stay valid.
	i := sort.Search(len(c.log), func(i int) bool { return c.log[i].seq > after[0] })
	for ; i < len(c.log) && c.log[i].seq <= h.Read[0]; i++ {
		le := c.log[i]
		e := c.records[le.id]
		if e == nil || e.seq != le.seq {
			continue
		}
		if res.Scanned == limit {
			res.More = true
			break
		}
		res.Scanned++
		res.Next[0] = le.seq
		out, deletes, fields := stores.PurgeRecord(e.record, h)
		if deletes+fields == 0 {
			continue
		}
		res.Deletes += deletes
		res.Fields += fields
		before := int64(len(crdt.AppendRecord(nil, e.record)))
		if stores.Empty(out) {
			delete(c.records, le.id)
			c.bytes -= before
			res.Bytes += before
			res.Records++
			c.stale++
			continue
		}
		now := int64(len(crdt.AppendRecord(nil, out)))
		c.bytes += now - before
		res.Bytes += before - now
		c.records[le.id] = &entry{seq: e.seq, record: out}
	}
	if c.purged += res.Records; c.purged > len(c.records) {
		fresh := make(map[string]*entry, len(c.records)) // maps.Clone keeps the old size
		maps.Copy(fresh, c.records)
		c.records, c.purged = fresh, 0
	}
	c.compact()
	return res, nil
}
