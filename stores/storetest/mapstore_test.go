package storetest_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// mapStore is the third-party store of docs/embedding.md: a map with a
// mutex, written against the stores.Store contract alone. The kit's own
// tests run storetest on it, and on three broken variants of it.
type mapStore struct {
	mu       sync.Mutex
	colls    map[string]*mapColl
	identity string
	epochs   map[string]uint64 // per collection: raised by BumpEpoch
	lost     map[string]uint64 // per collection: the count at its last HistoryLost bump
	epoch    uint64            // raised by BumpEpochs
	closed   bool
	watchers stores.Watchers
	now      func() time.Time // the clock bumps read; nil: time.Now
	bug      string           // "", "drop-log", "reorder", "lose-field", "bump-by-one": the broken variants
}

type mapColl struct {
	head    uint64
	records map[string]stores.Entry
	log     map[uint64]string // seq -> record id; stale when the record moved on
}

var _ stores.Store = (*mapStore)(nil)

func newMapStore() *mapStore {
	return &mapStore{colls: map[string]*mapColl{}, identity: stores.NewIdentity(),
		epochs: map[string]uint64{}, lost: map[string]uint64{}}
}

// use checks the context and that the store is open; it returns with s.mu
// held when err is nil.
func (s *mapStore) use(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return stores.ErrClosed
	}
	return nil
}

func (s *mapStore) Apply(ctx context.Context, changes []crdt.Change) ([]stores.Result, error) {
	if err := stores.CheckApply(changes); err != nil {
		return nil, err
	}
	if err := s.use(ctx); err != nil {
		return nil, err
	}
	// Merge into copies, so a refused batch leaves no trace.
	type key struct{ coll, id string }
	merged := map[key]crdt.Record{}
	changed := make([]bool, len(changes))
	results := make([]stores.Result, len(changes))
	for i, c := range changes {
		k := key{c.Collection, c.Record.ID}
		r, ok := merged[k]
		if !ok {
			r = s.coll(c.Collection).records[c.Record.ID].Record.Clone()
			r.ID = c.Record.ID
		}
		delta := c.Record
		if s.bug == "lose-field" && len(delta.Fields) > 1 {
			delta = delta.Clone()
			delete(delta.Fields, slices.Max(delta.FieldNames()))
		}
		changed[i] = r.Merge(delta)
		results[i].Lost = crdt.LostFields(c.Record, r)
		if n := len(crdt.AppendRecord(nil, r)); n > crdt.MaxRecordBytes || len(r.Fields) > crdt.MaxFieldsPerRecord {
			s.mu.Unlock()
			return nil, fmt.Errorf("apply %s/%s: %w: %d bytes, %d fields", c.Collection, c.Record.ID, stores.ErrTooLarge, n, len(r.Fields))
		}
		merged[k] = r
	}
	heads := map[string]uint64{}
	for i, c := range changes {
		col := s.coll(c.Collection)
		if !changed[i] {
			results[i].Seq = col.records[c.Record.ID].Seq
			continue
		}
		col.head++
		if s.bug != "drop-log" || col.head%4 != 0 {
			col.log[col.head] = c.Record.ID
		}
		col.records[c.Record.ID] = stores.Entry{Seq: col.head, Record: merged[key{c.Collection, c.Record.ID}]}
		results[i].Changed, results[i].Seq = true, col.head
		heads[c.Collection] = col.head
	}
	s.mu.Unlock()
	for coll, head := range heads {
		s.watchers.Notify(stores.Notification{Collection: coll, Seq: head})
	}
	return results, nil
}

// coll returns a collection, made empty if new. Called with s.mu held.
func (s *mapStore) coll(name string) *mapColl {
	c := s.colls[name]
	if c == nil {
		c = &mapColl{records: map[string]stores.Entry{}, log: map[uint64]string{}}
		s.colls[name] = c
	}
	return c
}

func (s *mapStore) Pull(ctx context.Context, collection string, after uint64, limit stores.PageLimit) (stores.Page, error) {
	if err := stores.CheckPull(collection, limit); err != nil {
		return stores.Page{}, err
	}
	if err := s.use(ctx); err != nil {
		return stores.Page{}, err
	}
	defer s.mu.Unlock()
	col := s.coll(collection)
	var seqs []uint64
	for seq, id := range col.log {
		if seq > after && col.records[id].Seq == seq {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	page := stores.Page{Next: after}
	used := 0
	for _, seq := range seqs {
		e := col.records[col.log[seq]]
		size := len(crdt.AppendRecord(nil, e.Record))
		if !stores.PageFits(limit, len(page.Entries), used, size) {
			page.More = true
			break
		}
		used += size
		page.Entries = append(page.Entries, stores.Entry{Seq: seq, Record: e.Record.Clone()})
		page.Next = seq
	}
	if s.bug == "reorder" {
		slices.Reverse(page.Entries)
	}
	return page, nil
}

func (s *mapStore) Get(ctx context.Context, collection, id string) (stores.Entry, error) {
	if err := stores.CheckKey(collection, id); err != nil {
		return stores.Entry{}, err
	}
	if err := s.use(ctx); err != nil {
		return stores.Entry{}, err
	}
	defer s.mu.Unlock()
	e, ok := s.coll(collection).records[id]
	if !ok {
		return stores.Entry{}, fmt.Errorf("get %s/%s: %w", collection, id, stores.ErrNotFound)
	}
	e.Record = e.Record.Clone()
	return e, nil
}

func (s *mapStore) Head(ctx context.Context, collection string) (uint64, error) {
	if err := stores.CheckCollection(collection); err != nil {
		return 0, err
	}
	if err := s.use(ctx); err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	return s.coll(collection).head, nil
}

func (s *mapStore) Watch(fn func(stores.Notification)) (stop func()) { return s.watchers.Add(fn) }

func (s *mapStore) Identity(ctx context.Context) (string, error) {
	if err := s.use(ctx); err != nil {
		return "", err
	}
	defer s.mu.Unlock()
	return s.identity, nil
}

func (s *mapStore) Meta(ctx context.Context, collection string) (stores.Meta, error) {
	if err := stores.CheckCollection(collection); err != nil {
		return stores.Meta{}, err
	}
	if err := s.use(ctx); err != nil {
		return stores.Meta{}, err
	}
	defer s.mu.Unlock()
	return stores.MetaOf(s.epoch, s.epochs[collection], s.lost[collection]), nil
}

func (s *mapStore) BumpEpoch(ctx context.Context, collection string, cause stores.EpochCause) error {
	if err := stores.CheckBump(collection, cause); err != nil {
		return err
	}
	if err := s.use(ctx); err != nil {
		return err
	}
	s.epochs[collection] = s.nextEpoch(s.epochs[collection])
	if cause == stores.HistoryLost {
		s.lost[collection] = s.epochs[collection]
	}
	s.mu.Unlock()
	s.watchers.Notify(stores.Notification{Resync: true})
	return nil
}

func (s *mapStore) BumpEpochs(ctx context.Context) error {
	if err := s.use(ctx); err != nil {
		return err
	}
	s.epoch = s.nextEpoch(s.epoch)
	s.mu.Unlock()
	s.watchers.Notify(stores.Notification{Resync: true})
	return nil
}

// nextEpoch is stores.NextEpoch, or one more for the variant that bumps
// the way a copy put back would start its lost epochs again.
func (s *mapStore) nextEpoch(cur uint64) uint64 {
	if s.bug == "bump-by-one" {
		return cur + 1
	}
	now := time.Now
	if s.now != nil {
		now = s.now
	}
	return stores.NextEpoch(cur, now())
}

func (s *mapStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.watchers.Close()
	return nil
}
