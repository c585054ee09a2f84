package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport/proto"
)

// The tombstone collection property (docs/design.md, "Tombstone
// horizons"): replicas write, delete and re-create records, push, pull
// with their leases, go offline for random periods (some beyond
// MaxOffline), and the collection job runs at random times. Replicas
// reconcile after lease_expired and after refusals collected as the
// design says. Checked:
//
//   - after every step, the server's visible state is exactly the merge
//     of every change it acknowledged (with the stamps it acknowledged):
//     a purge loses no live field, and no change the purged tombstones
//     should have hidden is let through (no deleted record comes back);
//   - a change re-stamped after a refusal collected never makes visible
//     what the server's record, as delivered to the replica, hides: it
//     resurrects no deleted record and overwrites no newer field;
//   - at the end, with every replica online and synced until quiet, every
//     replica shows what the server shows (a replica that missed a purged
//     delete dropped the record when it reconciled);
//   - at the end, the server shows the merge of every change it ever
//     acknowledged, also those the store lost when it went back in time
//     (rewind: while every replica's cursor is the empty one, which no
//     reset can reach), less only the stamps a replica gave back before it
//     dropped them and the server refused collected: no acknowledged write
//     is lost unless collected (or, once lost, older than the write
//     horizon by the time its replica gives it back).
//
// The replicas reconcile as docs/protocol.md §8 says, made precise where
// the simulation found the plain reading wrong (hzSim's knobs restore
// it): the records delivered by the pull from the beginning replace what
// the replica held, since their purged tombstones (unset fields, a
// cleared delete stamp) can no longer hide the older fields it holds
// (mergeAtReconcile); a re-stamp keeps only what the record as the
// replica knows it (delivered, with its other pending changes) neither
// hides nor beats (restampAll). Before a reconciliation drops a record
// the server acknowledged and did not deliver, or replaces the stamps of
// its own a delivered record neither holds nor hides, the replica gives
// them back with a push, one change per stamp, and drops only what comes
// back refused collected (giveBack). Replicas pull in small pages
// (pageRecords), so that a pull from the beginning ends its first pages
// before the read horizon: it began after the horizon was published, so
// it must not be reset lease_expired (the cursor's mark).

const hzColl = "notes"

var hzFields = []string{"a", "b", "c"}

// hzDraw is where the simulation draws its choices: rapid, or a seeded
// math/rand for the deterministic coverage test.
type hzDraw interface {
	intn(label string, n int) int // 0 ≤ x < n
}

type hzRapidDraw struct{ t *rapid.T }

func (d hzRapidDraw) intn(label string, n int) int { return rapid.IntRange(0, n-1).Draw(d.t, label) }

type hzRandDraw struct{ r *rand.Rand }

func (d hzRandDraw) intn(_ string, n int) int { return d.r.Intn(n) }

// hzT is what the simulation reports failures to.
type hzT interface {
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
}

// hzPending is a change in a replica's outbox.
type hzPending struct {
	change crdt.Change
	// reconciled: in the outbox when a reconciliation of the collection
	// ended; a refusal collected re-stamps it.
	reconciled bool
	// restamped: written again with fresh stamps after a refusal
	// collected; refused collected again, it is rejected.
	restamped bool
}

type hzReplica struct {
	id      string
	clock   *crdt.Clock
	skew    int64 // ms its wall clock is behind the server's
	base    map[string]crdt.Record
	outbox  []hzPending
	cursor  Cursor
	online  bool
	created int
	// leasedAt and leasedFloor are the time and the pending floor of the
	// lease r last noted (leasedAt 0: none yet).
	leasedAt, leasedFloor int64
}

// hzStats counts what a run exercised.
type hzStats struct {
	collects, purgedRecords, purgedDeletes, purgedFields       int
	resets, fromStart, droppedAtReconcile, rejectedAtReconcile int
	refusedCollected, restamped, restampDropped                int
	rejectedAfterRestamp                                       int
	backups, rewinds, givenBack, givenBackCollected            int
	floorsClamped                                              int
}

func (s *hzStats) add(o hzStats) {
	s.collects += o.collects
	s.purgedRecords += o.purgedRecords
	s.purgedDeletes += o.purgedDeletes
	s.purgedFields += o.purgedFields
	s.resets += o.resets
	s.fromStart += o.fromStart
	s.droppedAtReconcile += o.droppedAtReconcile
	s.rejectedAtReconcile += o.rejectedAtReconcile
	s.refusedCollected += o.refusedCollected
	s.restamped += o.restamped
	s.restampDropped += o.restampDropped
	s.rejectedAfterRestamp += o.rejectedAfterRestamp
	s.backups += o.backups
	s.rewinds += o.rewinds
	s.givenBack += o.givenBack
	s.givenBackCollected += o.givenBackCollected
	s.floorsClamped += o.floorsClamped
}

func (s hzStats) String() string {
	return fmt.Sprintf("collects %d, purged records %d, delete stamps %d, unset fields %d; lease_expired resets %d, "+
		"reconciliations from the beginning %d, records dropped at reconciliation %d, changes rejected there %d; "+
		"refused collected %d, re-stamped %d, dropped instead (hidden on the server) %d, rejected after a re-stamp %d; "+
		"backups %d, rewinds %d, stamps given back and taken %d, given back and refused collected %d; pending floors clamped %d",
		s.collects, s.purgedRecords, s.purgedDeletes, s.purgedFields, s.resets, s.fromStart, s.droppedAtReconcile,
		s.rejectedAtReconcile, s.refusedCollected, s.restamped, s.restampDropped, s.rejectedAfterRestamp,
		s.backups, s.rewinds, s.givenBack, s.givenBackCollected, s.floorsClamped)
}

type hzSim struct {
	t     hzT
	d     hzDraw
	ctx   context.Context
	clk   *fakeClock
	e     *Engine
	st    *memory.Store // e's store
	reps  []*hzReplica
	acked map[string]crdt.Record // the merge of every acknowledged change the store holds
	// ackLog is every change the server acknowledged, in order, also
	// those the store lost when it went back in time.
	ackLog []crdt.Change
	// refusedBack holds the stamps given back (giveBack) and refused
	// collected that the store had lost (acked neither holds nor hides
	// them).
	refusedBack map[hzStampOf]bool
	// refusedParts is every stamp given back and refused collected, as
	// given back: one the store still held or hid then (collected) is
	// lost for good when the store goes back to a copy that neither
	// holds nor hides it (its replica dropped it), so a rewind notes
	// them again.
	refusedParts []crdt.Record
	// backup is the store as it was at some earlier step, which rewind
	// goes back to.
	backup *hzBackup
	stats  hzStats
	// restampAll re-stamps a change refused collected whatever the
	// delivered record says (transport/client's rule); false re-stamps
	// only what the delivered record does not hide or beat.
	restampAll bool
	// mergeAtReconcile merges the records delivered by the pull from the
	// beginning into what the replica holds (transport/client does); false
	// replaces them.
	mergeAtReconcile bool
	// pageRecords is the page size of the replicas' pulls: a few records,
	// so that most pulls take several pages.
	pageRecords int
	// noGiveBack drops what a reconciliation does not receive without
	// giving it back first (the clients' rule before the give-back).
	noGiveBack bool
}

// hzStampOf names a stamp of a record: its id and the stamp.
type hzStampOf struct {
	id    string
	stamp crdt.Stamp
}

// hzBackup is a copy of the store's records (the collection's, its
// leases' and its published horizon's) and of what it acknowledged.
type hzBackup struct {
	records []crdt.Change
	acked   map[string]crdt.Record
}

const hzMaxOffline = time.Hour

// openHz opens the simulation's engine on st.
func openHz(t hzT, clk *fakeClock, st *memory.Store) *Engine {
	e, err := Open(Config{Store: st, Replica: "srv", Now: clk.now, PollInterval: -1,
		Rules:        []Rule{{Pattern: hzColl, MaxOffline: hzMaxOffline}},
		CollectGrace: -1, CollectEvery: -1})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return e
}

func newHzSim(t hzT, d hzDraw) *hzSim {
	clk := &fakeClock{ms: 1_700_000_000_000}
	st := memory.New()
	s := &hzSim{t: t, d: d, ctx: context.Background(), clk: clk, e: openHz(t, clk, st), st: st, acked: map[string]crdt.Record{},
		refusedBack: map[hzStampOf]bool{}, pageRecords: 1 + d.intn("page records", 4)}
	n := 2 + d.intn("replicas", 3)
	for i := range n {
		id := fmt.Sprintf("r%d", i+1)
		c, err := crdt.NewClock(crdt.ClockConfig{Replica: id})
		if err != nil {
			t.Fatalf("clock: %v", err)
		}
		skew := int64(0)
		if d.intn("skewed", 3) == 0 {
			skew = int64(d.intn("skew", 120)) * 1000
		}
		s.reps = append(s.reps, &hzReplica{id: id, clock: c, skew: skew, base: map[string]crdt.Record{}, online: true})
	}
	return s
}

func (s *hzSim) close() { s.e.Close() }

// view is a replica's local view: its base merged with its outbox.
func (r *hzReplica) view() map[string]crdt.Record {
	v := make(map[string]crdt.Record, len(r.base))
	for id, rec := range r.base {
		v[id] = rec.Clone()
	}
	for _, p := range r.outbox {
		rec := v[p.change.Record.ID]
		rec.Merge(p.change.Record.Clone())
		v[p.change.Record.ID] = rec
	}
	return v
}

func (s *hzSim) stamp(r *hzReplica) crdt.Stamp {
	st, err := r.clock.Now(s.clk.ms - r.skew)
	if err != nil {
		s.t.Fatalf("%s: stamp: %v", r.id, err)
	}
	return st
}

func (s *hzSim) value() []byte {
	b, _ := crdt.EncodeValue(s.d.intn("value", 100))
	return b
}

// write queues a local change of r: a new record, a field set (which
// re-creates a deleted record), an unset or a delete.
func (s *hzSim) write(r *hzReplica) {
	view := r.view()
	var live, all []string
	for _, id := range slices.Sorted(maps.Keys(view)) {
		all = append(all, id)
		if view[id].Exists() {
			live = append(live, id)
		}
	}
	op := s.d.intn("op", 5)
	var rec crdt.Record
	switch {
	case op == 0 || len(all) == 0:
		r.created++
		rec = crdt.SetField(fmt.Sprintf("%s-%d", r.id, r.created), hzFields[s.d.intn("field", 3)], s.value(), s.stamp(r))
	case op == 1 && len(live) > 0:
		rec = crdt.DeleteRecord(live[s.d.intn("record", len(live))], s.stamp(r))
	case op == 2 && len(live) > 0:
		rec = crdt.UnsetField(live[s.d.intn("record", len(live))], hzFields[s.d.intn("field", 3)], s.stamp(r))
	default: // set, re-creating a deleted record
		id := all[s.d.intn("record", len(all))]
		st := s.stamp(r)
		rec = crdt.Record{ID: id, Fields: map[string]crdt.Field{}}
		for _, f := range hzFields {
			if s.d.intn("set "+f, 2) == 0 || len(rec.Fields) == 0 && f == hzFields[len(hzFields)-1] {
				rec.Fields[f] = crdt.Field{Stamp: st, Value: s.value()}
			}
		}
	}
	r.outbox = append(r.outbox, hzPending{change: crdt.Change{Collection: hzColl, Record: rec}})
}

// floor is r's pending floor: the wall time of its oldest outbox change.
func (r *hzReplica) floor() int64 {
	f := int64(-1)
	for _, p := range r.outbox {
		w := p.change.Record.MaxStamp().Wall
		for _, fl := range p.change.Record.Fields {
			w = min(w, fl.Stamp.Wall)
		}
		if !p.change.Record.Deleted.IsZero() {
			w = min(w, p.change.Record.Deleted.Wall)
		}
		if f < 0 || w < f {
			f = w
		}
	}
	return f
}

// pullPage pulls one page as the transport does: a reset is returned, a
// page notes the lease of the cursor presented, with r's pending floor.
func (s *hzSim) pullPage(r *hzReplica, cur Cursor) (Page, error) {
	p, err := s.e.Pull(s.ctx, hzColl, cur, PageLimit{Records: s.pageRecords})
	if err != nil {
		return Page{}, err
	}
	if err := s.e.NoteLease(s.ctx, hzColl, Lease{Replica: r.id, Cursor: cur, Pending: r.floor()}); err != nil {
		s.t.Fatalf("%s: lease: %v", r.id, err)
	}
	r.leasedAt, r.leasedFloor = s.clk.ms, r.floor()
	for _, en := range p.Entries {
		rec := r.base[en.Record.ID]
		rec.Merge(en.Record.Clone())
		r.base[en.Record.ID] = rec
		if err := r.clock.Observe(en.Record.MaxStamp().Time(), s.clk.ms-r.skew); err != nil {
			s.t.Fatalf("%s: observe: %v", r.id, err)
		}
	}
	return p, nil
}

func hzLeaseExpired(err error) bool {
	var re *ResetError
	return errors.As(err, &re) && re.Reason == ResetLeaseExpired
}

// pull pulls r's collection to the end of its log; on lease_expired it
// reconciles (and then pushes, as the client does). A pull from the
// beginning (the encoded cursor is empty) by a replica that holds records
// the server acknowledged reconciles too, as the clients do: no lease
// protected records it pushed before it ever pulled (or while its log was
// empty), and one deleted and collected meanwhile is just absent. No push
// follows that one, so it marks no change reconciled: by the time one is
// refused collected, what the replica knows of its record may be old, and
// the refusal reconciles again first.
func (s *hzSim) pull(r *hzReplica) {
	if r.cursor.IsStart() && len(r.base) > 0 {
		s.stats.fromStart++
		s.reconcile(r, false)
		return
	}
	for range 100 {
		p, err := s.pullPage(r, r.cursor)
		if hzLeaseExpired(err) {
			s.stats.resets++
			s.reconcile(r, true)
			s.push(r)
			return
		}
		if err != nil {
			s.t.Fatalf("%s: pull: %v", r.id, err)
		}
		r.cursor = p.Next
		if !p.More {
			return
		}
	}
	s.t.Fatalf("%s: pull: no end after 100 pages", r.id)
}

// reconcile is the client's reconciliation after its lease expired (or a
// refusal collected): it pulls from the beginning to the end, noting the
// records delivered; a record it held (the server acknowledged it) that
// was not delivered was deleted and collected, so it is dropped and its
// pending changes are rejected, never pushed; with mark, the changes left
// are marked reconciled.
func (s *hzSim) reconcile(r *hzReplica, mark bool) {
	acked := map[string]bool{}
	for id := range r.base {
		acked[id] = true
	}
	delivered := map[string]bool{}
	// owed: the stamps of r's own that a replace dropped (the delivered
	// record neither holds nor hides them), given back below.
	owed := map[string]crdt.Record{}
	cur, restarts := Cursor{}, 0
	for pages := 0; ; pages++ {
		if pages > 100 {
			s.t.Fatalf("%s: reconciliation: no end after 100 pages", r.id)
		}
		p, err := s.pullPage(r, cur)
		if hzLeaseExpired(err) {
			// The pull from the beginning was reset itself.
			s.stats.resets++
			if restarts++; restarts > 3 {
				s.t.Fatalf("%s: the pull from the beginning is reset lease_expired again and again (%v): it never ends", r.id, err)
			}
			cur = Cursor{}
			continue
		}
		if err != nil {
			s.t.Fatalf("%s: reconciliation pull: %v", r.id, err)
		}
		for _, en := range p.Entries {
			if !s.mergeAtReconcile && !delivered[en.Record.ID] {
				// The server's record replaces what r held: the
				// tombstones that would have hidden r's older fields
				// (a delete stamp, unset fields) may be gone, and
				// merged with the record without them those fields
				// would stay.
				if old, ok := r.base[en.Record.ID]; ok {
					if unc := old.WrittenBy(r.id).NotIn(en.Record); !unc.Deleted.IsZero() || len(unc.Fields) > 0 {
						o := owed[en.Record.ID]
						o.Merge(unc)
						owed[en.Record.ID] = o
					}
				}
				r.base[en.Record.ID] = en.Record.Clone()
			}
			delivered[en.Record.ID] = true
		}
		cur = p.Next
		if !p.More {
			break
		}
	}
	r.cursor = cur
	kept := s.giveBack(r, acked, delivered, owed)
	for id := range acked {
		if delivered[id] || kept[id] {
			continue
		}
		delete(r.base, id)
		s.stats.droppedAtReconcile++
		n := len(r.outbox)
		r.outbox = slices.DeleteFunc(r.outbox, func(p hzPending) bool { return p.change.Record.ID == id })
		s.stats.rejectedAtReconcile += n - len(r.outbox)
	}
	for i := range r.outbox {
		r.outbox[i].reconciled = r.outbox[i].reconciled || mark
	}
}

// giveBack pushes, before a reconciliation drops anything, r's own stamps
// of each record it acknowledged that the pull did not deliver, and those
// a replace dropped (owed), one change per stamp. It returns the ids of
// the records not delivered that stay: a stamp of theirs taken back (the
// store lost it). Stamps of delivered records taken back join r's base
// again; those refused collected are noted in refusedBack.
func (s *hzSim) giveBack(r *hzReplica, acked, delivered map[string]bool, owed map[string]crdt.Record) map[string]bool {
	var changes []crdt.Change
	for _, id := range slices.Sorted(maps.Keys(acked)) {
		if delivered[id] {
			continue
		}
		for _, part := range r.base[id].WrittenBy(r.id).ByStamp() {
			changes = append(changes, crdt.Change{Collection: hzColl, Record: part})
		}
	}
	for _, id := range slices.Sorted(maps.Keys(owed)) {
		for _, part := range owed[id].ByStamp() {
			changes = append(changes, crdt.Change{Collection: hzColl, Record: part})
		}
	}
	kept := map[string]bool{}
	if len(changes) == 0 || s.noGiveBack {
		return kept
	}
	// Of a record not delivered that stays, the base is what the server
	// took back of it.
	keptBase := map[string]crdt.Record{}
	res, err := s.e.Apply(s.ctx, changes)
	if err != nil {
		s.t.Fatalf("%s: give back: %v", r.id, err)
	}
	for i, c := range changes {
		id := c.Record.ID
		switch res[i].Status {
		case StatusApplied, StatusDuplicate, StatusSuperseded:
			s.ack(c)
			s.stats.givenBack++
			if delivered[id] {
				rec := r.base[id]
				rec.Merge(c.Record.Clone())
				r.base[id] = rec
			} else {
				kept[id] = true
				b := keptBase[id]
				b.Merge(c.Record.Clone())
				keptBase[id] = b
			}
		default:
			if !errors.Is(res[i].Err, ErrCollected) {
				s.t.Fatalf("%s: a stamp given back of %s refused: %v", r.id, id, res[i].Err)
			}
			s.stats.givenBackCollected++
			s.refusedParts = append(s.refusedParts, c.Record.Clone())
			s.noteRefusedBack(c.Record)
		}
	}
	maps.Copy(r.base, keptBase)
	return kept
}

// noteRefusedBack notes part, given back and refused collected: what of it
// the store still holds or hides (acked) was collected; the rest it lost
// when it went back in time, and is lost for good, with the writes it had
// beaten or hidden that the store lost too (the replica held them no
// more, so nobody gives them back: they were overwritten or deleted).
// It is called again for every such part after each rewind: a stamp
// collected when given back is lost too once the store goes back to a
// copy from before it.
func (s *hzSim) noteRefusedBack(part crdt.Record) {
	id, cur := part.ID, s.acked[part.ID]
	lost := func(name string, st crdt.Stamp) bool {
		if name == "" {
			return cur.Deleted.Compare(st) < 0
		}
		g, ok := cur.Fields[name]
		return st.Compare(cur.Deleted) > 0 && (!ok || g.Stamp.Compare(st) < 0)
	}
	beaten := func(name string, st crdt.Stamp) bool {
		if part.Deleted.Compare(st) >= 0 {
			return true
		}
		g, ok := part.Fields[name]
		return name != "" && ok && g.Stamp.Compare(st) >= 0
	}
	for _, c := range s.ackLog {
		if c.Record.ID != id {
			continue
		}
		if d := c.Record.Deleted; !d.IsZero() && lost("", d) && beaten("", d) {
			s.refusedBack[hzStampOf{id, d}] = true
		}
		for name, f := range c.Record.Fields {
			if lost(name, f.Stamp) && beaten(name, f.Stamp) {
				s.refusedBack[hzStampOf{id, f.Stamp}] = true
			}
		}
	}
}

// ack notes a change the server acknowledged.
func (s *hzSim) ack(c crdt.Change) {
	a := s.acked[c.Record.ID]
	a.Merge(c.Record.Clone())
	s.acked[c.Record.ID] = a
	s.ackLog = append(s.ackLog, crdt.Change{Collection: c.Collection, Record: c.Record.Clone()})
}

// hzStamps is every stamp of rec.
func hzStamps(rec crdt.Record) []crdt.Stamp {
	var out []crdt.Stamp
	if !rec.Deleted.IsZero() {
		out = append(out, rec.Deleted)
	}
	for _, f := range rec.Fields {
		out = append(out, f.Stamp)
	}
	return out
}

// takeBackup copies the store: the collection's records, its leases and
// its published horizon, as a backup holds them.
func (s *hzSim) takeBackup() {
	b := &hzBackup{acked: map[string]crdt.Record{}}
	for id, rec := range s.acked {
		b.acked[id] = rec.Clone()
	}
	for _, coll := range []string{hzColl, proto.LeaseCollection, proto.HorizonCollection} {
		var after uint64
		for {
			p, err := s.st.Pull(s.ctx, coll, after, stores.PageLimit{Records: stores.MaxPage, Bytes: proto.DefaultMaxPageBytes})
			if err != nil {
				s.t.Fatalf("backup %s: %v", coll, err)
			}
			for _, en := range p.Entries {
				b.records = append(b.records, crdt.Change{Collection: coll, Record: en.Record.Clone()})
			}
			after = p.Next
			if !p.More {
				break
			}
		}
	}
	s.backup = b
	s.stats.backups++
}

// rewind puts the server on a store restored from the backup: what was
// acknowledged since is lost. Only while every replica's cursor is the
// empty one, which carries no store identity: no reset tells them, and
// only their reconciliations from the beginning can give back what was
// lost. (A cursor of the store before would be reset history_lost, and
// healed: the clients' tests cover that.)
func (s *hzSim) rewind() {
	for _, r := range s.reps {
		if !r.cursor.IsStart() {
			return
		}
	}
	st := memory.New()
	for i := 0; i < len(s.backup.records); i += stores.MaxBatch {
		if _, err := st.Apply(s.ctx, s.backup.records[i:min(i+stores.MaxBatch, len(s.backup.records))]); err != nil {
			s.t.Fatalf("restore the backup: %v", err)
		}
	}
	s.e.Close()
	s.e, s.st = openHz(s.t, s.clk, st), st
	s.acked = map[string]crdt.Record{}
	for id, rec := range s.backup.acked {
		s.acked[id] = rec.Clone()
	}
	for _, part := range s.refusedParts {
		s.noteRefusedBack(part)
	}
	s.stats.rewinds++
}

// known is what r knows of record id apart from the change at skip of
// its outbox: its base (the server's record as delivered or acknowledged)
// merged with every other change of the record in the outbox.
func (r *hzReplica) known(id string, outbox []hzPending, skip int) crdt.Record {
	b := r.base[id].Clone()
	for i, p := range outbox {
		if i != skip && p.change.Record.ID == id {
			b.Merge(p.change.Record.Clone())
		}
	}
	return b
}

// restamp writes c again with fresh stamps from r's clock, for a push
// after a refusal collected. Unless restampAll is set, only what b (the
// record as r knows it without c: delivered by the server, with r's other
// pending changes) does not hide or beat: a field stamped before b's
// delete or before the same field's stamp in b is left out, and a delete
// of a record with a field written after it becomes an unset of the
// fields it would have hidden. ok is false when nothing is left.
func (s *hzSim) restamp(r *hzReplica, c crdt.Change, b crdt.Record) (crdt.Change, bool) {
	old := c.Record
	rec := crdt.Record{ID: old.ID}
	if !old.Deleted.IsZero() {
		newer := false
		for _, f := range b.Fields {
			newer = newer || f.Value != nil && f.Stamp.Compare(old.Deleted) > 0
		}
		st := s.stamp(r)
		switch {
		case s.restampAll || !newer:
			rec.Deleted = st
		default:
			for name, f := range b.Fields {
				if f.Value != nil && f.Stamp.Compare(old.Deleted) < 0 {
					if rec.Fields == nil {
						rec.Fields = map[string]crdt.Field{}
					}
					rec.Fields[name] = crdt.Field{Stamp: st}
				}
			}
		}
	}
	if len(old.Fields) > 0 {
		st := s.stamp(r)
		for name, f := range old.Fields {
			cur, held := b.Fields[name]
			if !s.restampAll && (f.Stamp.Compare(b.Deleted) <= 0 || held && cur.Stamp.Compare(f.Stamp) > 0) {
				continue
			}
			if rec.Fields == nil {
				rec.Fields = map[string]crdt.Field{}
			}
			rec.Fields[name] = crdt.Field{Stamp: st, Value: f.Value}
		}
	}
	if rec.Deleted.IsZero() && len(rec.Fields) == 0 {
		return crdt.Change{}, false
	}
	return crdt.Change{Collection: c.Collection, Record: rec}, true
}

// checkRestamp: next, the re-stamped orig, makes visible nothing that
// hides orig and overwrites nothing newer than orig, on the server or in
// r's own later changes (others: the rest of the outbox).
func (s *hzSim) checkRestamp(r *hzReplica, orig, next crdt.Change, others []hzPending, skip int) {
	k := crdt.Record{ID: orig.Record.ID}
	if ent, err := s.e.GetRecord(s.ctx, hzColl, orig.Record.ID); err == nil {
		k = ent.Record.Clone()
	}
	for i, p := range others {
		if i != skip && p.change.Record.ID == orig.Record.ID {
			k.Merge(p.change.Record.Clone())
		}
	}
	for name, f := range next.Record.Fields {
		if f.Value == nil {
			continue
		}
		of, ok := orig.Record.Fields[name]
		if !ok {
			continue
		}
		if !k.Deleted.IsZero() && of.Stamp.Compare(k.Deleted) <= 0 {
			s.t.Fatalf("%s: re-stamping %s.%s (stamped %v) makes it visible over the delete %v: a deleted record comes back (server and outbox: %+v)",
				r.id, orig.Record.ID, name, of.Stamp, k.Deleted, k)
		}
		if cur, held := k.Fields[name]; held && cur.Stamp.Compare(of.Stamp) > 0 {
			s.t.Fatalf("%s: re-stamping %s.%s (stamped %v) overwrites the newer %v: a live field is lost",
				r.id, orig.Record.ID, name, of.Stamp, cur.Stamp)
		}
	}
	if d := orig.Record.Deleted; !d.IsZero() && !next.Record.Deleted.IsZero() {
		for name, f := range k.Fields {
			if f.Value != nil && f.Stamp.Compare(d) > 0 && f.Stamp.Compare(k.Deleted) > 0 {
				s.t.Fatalf("%s: re-stamping the delete of %s (stamped %v) hides the newer field %s (%v): a live field is lost",
					r.id, orig.Record.ID, d, name, f.Stamp)
			}
		}
	}
}

// push pushes r's outbox, as Flush does: acknowledged changes join the
// base; a change refused collected is re-stamped once when reconciled,
// else its collection is reconciled first and it goes again; refused
// again after a re-stamp, it is rejected.
func (s *hzSim) push(r *hzReplica) {
	for round := 0; round < 6 && len(r.outbox) > 0; round++ {
		batch := r.outbox
		changes := make([]crdt.Change, len(batch))
		for i, p := range batch {
			changes[i] = p.change
		}
		res, err := s.e.Apply(s.ctx, changes)
		if err != nil {
			s.t.Fatalf("%s: push: %v", r.id, err)
		}
		// Acknowledged changes first: the re-stamps below are decided on
		// the record as the server holds it after the whole batch.
		var refused []int
		for i, p := range batch {
			switch res[i].Status {
			case StatusApplied, StatusDuplicate, StatusSuperseded:
				id := p.change.Record.ID
				rec := r.base[id]
				rec.Merge(p.change.Record.Clone())
				r.base[id] = rec
				s.ack(p.change)
				continue
			}
			if !errors.Is(res[i].Err, ErrCollected) {
				s.t.Fatalf("%s: change %+v refused: %v", r.id, p.change.Record, res[i].Err)
			}
			s.stats.refusedCollected++
			refused = append(refused, i)
		}
		left := make([]hzPending, 0, len(refused))
		for _, i := range refused {
			left = append(left, batch[i])
		}
		var keep []hzPending
		hold := false
		for j, p := range left {
			switch {
			case p.restamped:
				s.stats.rejectedAfterRestamp++
			case p.reconciled:
				b := r.base[p.change.Record.ID]
				if !s.restampAll {
					b = r.known(p.change.Record.ID, left, j)
				}
				next, ok := s.restamp(r, p.change, b)
				if !ok {
					s.stats.restampDropped++
					continue
				}
				s.checkRestamp(r, p.change, next, left, j)
				s.stats.restamped++
				keep = append(keep, hzPending{change: next, restamped: true})
			default:
				hold = true
				keep = append(keep, p)
			}
		}
		r.outbox = keep
		if hold {
			s.reconcile(r, true)
		}
	}
}

// collect runs the job and counts what it purged.
func (s *hzSim) collect() {
	reps, err := s.e.Collect(s.ctx)
	if err != nil {
		s.t.Fatalf("collect: %v", err)
	}
	s.stats.collects++
	// A live lease whose pending floor is further back than the job lets
	// a floor hold the write horizon: this run clamped it.
	maxOff := hzMaxOffline.Milliseconds()
	for _, r := range s.reps {
		if r.leasedAt > 0 && r.leasedAt >= s.clk.ms-maxOff && r.leasedFloor >= 0 && r.leasedFloor < s.clk.ms-pendingFloorReach*maxOff {
			s.stats.floorsClamped++
			break
		}
	}
	for _, rep := range reps {
		s.stats.purgedRecords += rep.Records
		s.stats.purgedDeletes += rep.Deletes
		s.stats.purgedFields += rep.Fields
	}
}

// server reads every record of the collection, as a reader with no lease.
func (s *hzSim) server() map[string]crdt.Record {
	out := map[string]crdt.Record{}
	var cur Cursor
	for {
		p, err := s.e.Pull(s.ctx, hzColl, cur, PageLimit{})
		if err != nil {
			s.t.Fatalf("read the server: %v", err)
		}
		for _, en := range p.Entries {
			out[en.Record.ID] = en.Record
		}
		cur = p.Next
		if !p.More {
			return out
		}
	}
}

// hzVisible is the visible values of the existing records of m.
func hzVisible(m map[string]crdt.Record) map[string]map[string][]byte {
	out := map[string]map[string][]byte{}
	for id, r := range m {
		if v := r.Values(); v != nil {
			out[id] = v
		}
	}
	return out
}

func hzSameVisible(a, b map[string]map[string][]byte) bool {
	return maps.EqualFunc(a, b, func(x, y map[string][]byte) bool { return maps.EqualFunc(x, y, bytes.Equal) })
}

// checkServer: the server shows exactly the merge of what it acknowledged.
func (s *hzSim) checkServer(step int) {
	got, want := hzVisible(s.server()), hzVisible(s.acked)
	if !hzSameVisible(got, want) {
		s.t.Fatalf("step %d: the server shows %v, the merge of the changes it acknowledged %v", step, got, want)
	}
}

func (s *hzSim) step(i int) {
	r := s.reps[s.d.intn("replica", len(s.reps))]
	switch op := s.d.intn("step", 18); {
	case op < 5:
		s.write(r)
	case op < 7:
		if r.online {
			s.push(r)
		}
	case op < 9:
		if r.online {
			s.pull(r)
		}
	case op < 10:
		r.online = !r.online
	case op < 13:
		if s.d.intn("long", 4) == 0 {
			s.clk.ms += (30*time.Minute + time.Duration(s.d.intn("hours", 150))*time.Minute).Milliseconds()
		} else {
			s.clk.ms += time.Duration(s.d.intn("minutes", 600)).Milliseconds() * 1000
		}
	case op < 16:
		s.collect()
	case op < 17:
		s.takeBackup()
	default:
		if s.backup != nil {
			s.rewind()
		}
	}
	s.checkServer(i)
}

// settle brings every replica online and syncs them until quiet, then
// checks that each shows what the server shows.
func (s *hzSim) settle() {
	for _, r := range s.reps {
		r.online = true
	}
	for round := 0; ; round++ {
		if round == 10 {
			s.t.Fatalf("replicas still have changes to push after 10 rounds")
		}
		quiet := true
		for _, r := range s.reps {
			quiet = quiet && len(r.outbox) == 0
			s.push(r)
			s.pull(r)
		}
		if quiet {
			break
		}
	}
	for _, r := range s.reps {
		s.pull(r)
	}
	s.checkServer(-1)
	s.checkNothingLost()
	want := hzVisible(s.server())
	for _, r := range s.reps {
		if len(r.outbox) != 0 {
			s.t.Fatalf("%s: %d changes left to push", r.id, len(r.outbox))
		}
		if got := hzVisible(r.view()); !hzSameVisible(got, want) {
			s.t.Fatalf("%s shows %v, the server %v", r.id, got, want)
		}
	}
}

// checkNothingLost: the server shows the merge of every change it ever
// acknowledged, the store's losses included, less the stamps given back
// and refused collected.
func (s *hzSim) checkNothingLost() {
	want := map[string]crdt.Record{}
	for _, c := range s.ackLog {
		rec := crdt.Record{ID: c.Record.ID}
		if d := c.Record.Deleted; !d.IsZero() && !s.refusedBack[hzStampOf{rec.ID, d}] {
			rec.Deleted = d
		}
		for name, f := range c.Record.Fields {
			if !s.refusedBack[hzStampOf{rec.ID, f.Stamp}] {
				if rec.Fields == nil {
					rec.Fields = map[string]crdt.Field{}
				}
				rec.Fields[name] = f
			}
		}
		w := want[rec.ID]
		w.Merge(rec)
		want[rec.ID] = w
	}
	if got, want := hzVisible(s.server()), hzVisible(want); !hzSameVisible(got, want) {
		s.t.Fatalf("the server shows %v, the merge of every change it ever acknowledged %v (less the stamps given back and refused collected): an acknowledged write was lost", got, want)
	}
}

func (s *hzSim) run(steps int) {
	for i := range steps {
		s.step(i)
	}
	s.settle()
}

// TestHorizonProperty: see the top of the file.
func TestHorizonProperty(t *testing.T) {
	var total hzStats
	rapid.Check(t, func(rt *rapid.T) {
		s := newHzSim(rt, hzRapidDraw{rt})
		defer s.close()
		s.run(rapid.IntRange(10, 150).Draw(rt, "steps"))
		total.add(s.stats)
	})
	t.Logf("exercised: %v", total)
}

// hzFailed is what hzCatch's Fatalf panics with.
type hzFailed struct{ msg string }

// hzCatch is an hzT whose Fatalf panics, for runs expected to fail.
type hzCatch struct{}

func (hzCatch) Fatalf(format string, args ...any) { panic(hzFailed{fmt.Sprintf(format, args...)}) }
func (hzCatch) Logf(string, ...any)               {}

// TestHorizonPropertyFindsDropsWithoutGiveBack: with the clients' rule
// before the give-back (a reconciliation drops what it did not receive,
// and a replace drops the own stamps the delivered record lacks, without
// asking the server), the simulation finds an acknowledged write lost
// when the store goes back in time, from the coverage test's seeds.
func TestHorizonPropertyFindsDropsWithoutGiveBack(t *testing.T) {
	for seed := range int64(40) {
		failed := func() (msg string) {
			defer func() {
				if f, ok := recover().(hzFailed); ok {
					msg = f.msg
				}
			}()
			s := newHzSim(hzCatch{}, hzRandDraw{rand.New(rand.NewSource(seed))})
			defer s.close()
			s.noGiveBack = true
			s.run(150)
			return ""
		}()
		if failed != "" {
			t.Logf("seed %d: %s", seed, failed)
			return
		}
	}
	t.Fatal("no seed found a write lost without the give-back: the rewind does not reach it")
}

// TestHorizonPropertyCoverage runs the simulation from fixed seeds and
// checks that it exercises what the property is about: purges of records,
// delete stamps and unset fields, lease_expired resets that drop records,
// refusals collected that re-stamp changes.
func TestHorizonPropertyCoverage(t *testing.T) {
	var total hzStats
	for seed := range int64(40) {
		s := newHzSim(t, hzRandDraw{rand.New(rand.NewSource(seed))})
		s.run(150)
		s.close()
		total.add(s.stats)
	}
	t.Logf("exercised: %v", total)
	for name, n := range map[string]int{
		"records purged": total.purgedRecords, "delete stamps purged": total.purgedDeletes,
		"unset fields purged": total.purgedFields, "lease_expired resets": total.resets,
		"reconciliations from the beginning": total.fromStart,
		"records dropped at reconciliation":  total.droppedAtReconcile,
		"changes rejected at reconciliation": total.rejectedAtReconcile,
		"refusals collected":                 total.refusedCollected, "re-stamped changes": total.restamped,
		"rewinds": total.rewinds, "stamps given back and taken back": total.givenBack,
		"stamps given back and refused collected": total.givenBackCollected,
		"pending floors clamped":                  total.floorsClamped,
	} {
		if n == 0 {
			t.Errorf("no %s: the simulation misses a path of the property", name)
		}
	}
}

// TestHorizonPropertyRefusedThenRewound: a delete collected is given back
// by its replica, refused collected and dropped; then the store goes back
// to a backup from before the delete, and the record it deleted is back
// with nobody left to give the delete back. The delete was given back and
// refused collected, so the property excludes it: the simulation must not
// report an acknowledged write lost.
func TestHorizonPropertyRefusedThenRewound(t *testing.T) {
	s := newHzSim(t, hzRandDraw{rand.New(rand.NewSource(0))})
	defer s.close()
	r := s.reps[0]
	r.skew = 0
	queue := func(rec crdt.Record) {
		r.outbox = append(r.outbox, hzPending{change: crdt.Change{Collection: hzColl, Record: rec}})
	}
	queue(crdt.SetField("x", "a", s.value(), s.stamp(r)))
	s.push(r)
	s.takeBackup()
	queue(crdt.DeleteRecord("x", s.stamp(r)))
	s.push(r)
	s.clk.ms += (2 * time.Hour).Milliseconds()
	s.collect() // publishes the horizon
	s.clk.ms += (hzMaxOffline + time.Minute).Milliseconds()
	s.collect() // purges the delete
	s.pull(r)   // from the beginning: gives the delete back, refused collected
	s.rewind()
	if s.stats.givenBackCollected == 0 || s.stats.rewinds == 0 {
		t.Fatalf("the scenario was not reached: %v", s.stats)
	}
	s.settle()
}
