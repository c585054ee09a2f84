package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/migrate"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/transport/proto"
)

// maxScan bounds the log entries one pull passes over without putting
// them in its page (a transition skips what the reader already holds, a
// scope what it does not match): past it the page ends, perhaps empty,
// with More set. scanPages bounds the bytes of the records it reads but
// does not send, scanPages times the page's byte bound (or the largest
// record, when that is more): those it passes over, and those it sends a
// leave of (a few bytes each, read whole), with the bytes of the scopes
// it judges each entry by (scan.cost). A reader whose scope matches
// nothing would otherwise make one request read maxScan records of up to
// crdt.MaxRecordBytes, some 3 GB, to be answered an empty page, or
// MaxPage leaves; and one whose scope is near scope.MaxBytes make each
// of maxScan entries cost many times what a plain scope's do.
const (
	scanPages = 10
	maxScan   = scanPages * MaxPage
)

// PullScoped returns a page of collection's change log after cursor,
// within limit, as a reader whose scope is s sees it. A nil s is an
// unscoped read, which is Pull: every entry's record, tombstones
// included. With a scope, each log entry after the cursor gives either
// an Entry (the record exists and s matches it) or a Left (it does not:
// deleted, or not matching), which counts as a record toward
// limit.Records and as proto.LeaveEntryCost bytes toward limit.Bytes.
//
// s must be bound (scope.Pred.Bind) and its encoding at most
// scope.MaxBytes, else the error wraps ErrInvalid. A cursor read under
// another scope than s (compared by canonical encoding; unscoped differs
// from any scope) that is not at the start begins a transition: the log
// is read again from its start, and at or before the cursor's positions
// an entry is sent only when s matches it and the old scope did not, a
// leave only when the old scope matched it and s does not (see the
// package doc, "Scopes and transitions"). Resets are decided as by Pull,
// before any transition.
//
// Records are served in the collection's current schema version; PullAt
// serves another.
func (e *Engine) PullScoped(ctx context.Context, collection string, cursor Cursor, limit PageLimit, s *scope.Pred) (Page, error) {
	return e.PullAt(ctx, collection, cursor, limit, s, 0)
}

// PullAt is PullScoped with the page's records translated to schema
// version version of the collection (0: the current one; above it an
// error wrapping ErrSchemaAhead). Stored records are resolved to the
// current version first, and the scope is evaluated on them (with the
// current version's defaults), so readers of every version see the same
// records (docs/design.md, "Schema versions").
func (e *Engine) PullAt(ctx context.Context, collection string, cursor Cursor, limit PageLimit, s *scope.Pred, version int) (Page, error) {
	mig := e.Migrations(collection)
	version, err := mig.Resolve(version)
	if err != nil {
		return Page{}, fmt.Errorf("pull %s: %w", collection, err)
	}
	page, err := e.pullScoped(ctx, collection, cursor, limit, s, mig, version, e.reads.begin())
	if err != nil {
		return Page{}, err
	}
	return page, nil
}

// CheckReadScope checks that s, an effective read scope (nil: none), is
// one a pull can be read under: its parameters bound, and within the
// scope limits however many scopes it combines (scope.And does not
// check), since every cursor of the read carries it (carried). It wraps
// ErrInvalid. PullScoped refuses such a scope; a caller that keeps one
// for later reads (a live subscription) checks it up front.
func CheckReadScope(s *scope.Pred) error {
	if s == nil {
		return nil
	}
	if !s.Bound() {
		return fmt.Errorf("%w: the scope has unbound parameters %v", ErrInvalid, s.Params())
	}
	if err := carried(s); err != nil {
		return fmt.Errorf("%w: the scope: %v", ErrInvalid, err)
	}
	return nil
}

// carried returns why a cursor cannot carry scope s (not nil), or nil:
// ParseCursor reads a cursor's scopes back within every scope limit (its
// bytes, nesting, predicates and list lengths), which a scope combined
// with scope.And or scope.Or can be over.
func carried(s *scope.Pred) error {
	_, err := scope.Decode(s.Encode())
	return err
}

// pullScoped is PullAt with migrations mig and the version resolved, of a
// pull that began when the store reads begun were since (logReads). The
// page is translated to version as it is built, so that its byte bound
// holds on the records served: a translation down can grow a record (a
// longer name, a merge's separator).
func (e *Engine) pullScoped(ctx context.Context, collection string, cursor Cursor, limit PageLimit, s *scope.Pred, mig *migrate.Definition, version int, since uint64) (Page, error) {
	if err := CheckReadScope(s); err != nil {
		return Page{}, fmt.Errorf("pull %s: %w", collection, err)
	}
	var enc string
	if s != nil {
		enc = string(s.Encode())
	}
	if limit.Records <= 0 || limit.Records > MaxPage {
		limit.Records = MaxPage
	}
	if limit.Bytes <= 0 {
		limit.Bytes = proto.DefaultMaxPageBytes
	}
	// The epoch is read before the page: a page read after a new epoch
	// began and labelled with the old one resets at the next pull, never
	// the other way round.
	tag, meta, err := e.checkCursor(ctx, collection, cursor)
	if err != nil {
		return Page{}, err
	}
	mark, err := e.checkLease(ctx, collection, cursor, meta)
	if err != nil {
		return Page{}, err
	}
	k := stores.ShardsOf(meta)
	pos := cursor.Positions()
	if cursor.IsStart() || len(pos) != k {
		pos = make([]uint64, k)
	}
	slots := newSlotScan(e.slotKeyFor(tag), cursor, k)
	sc := scan{s: s, enc: enc, trans: cursor.trans, prevEnc: cursor.prev, since: since}
	if mig.Current() > 1 {
		sc.mig = mig
		if version != mig.Current() {
			sc.version = version
		}
	}
	if cursor.trans != noTransition {
		sc.prevPos = cursor.prevPositions()
	}
	if cursor.fresh && s != nil {
		// A reader that holds nothing: read as a transition from a scope
		// that matched nothing, to the end of the log, so entries that do
		// not match are skipped instead of becoming leaves.
		none := scope.Or()
		sc.trans, sc.prev, sc.prevEnc = exactPrev, none, string(none.Encode())
		sc.prevPos = make([]uint64, k)
		for i := range sc.prevPos {
			sc.prevPos[i] = math.MaxUint64
		}
	}
	pastChecked := false
	if cursor.unverified && k > 1 && !cursor.IsStart() {
		// A client may have written these positions, and a page can end
		// before it reads a shard, or read nothing from one: that shard's
		// position would go on into the next cursor, which the server
		// makes, and a position past the head there is taken for proof
		// that the store went back (wentBack). So they are held to the
		// heads first. (One log is read from its position on every pull,
		// and a page that moves nothing is checked below.)
		if err := e.checkPast(ctx, collection, cursor, k, pos); err != nil {
			return Page{}, err
		}
		pastChecked = true
	}
	if cursor.scope != enc && !cursor.IsStart() {
		// A change of scope: what the reader holds was read under the
		// cursor's scope, up to its positions.
		if !pastChecked {
			if err := e.checkPast(ctx, collection, cursor, k, pos); err != nil {
				return Page{}, err
			}
		}
		if cursor.unverified {
			// What the reader holds is not known (Unverified): it is told
			// of every entry from the start.
			sc.trans, sc.prevEnc, sc.prevPos = noTransition, "", nil
		} else if err := sc.begin(cursor, pos); err != nil {
			return Page{}, fmt.Errorf("pull %s: %w", collection, err)
		}
		pos = make([]uint64, k)
		if slots != nil { // nil: a store without an identity, no marks
			slots = newSlotScan(slots.key, Cursor{}, k)
		}
	}
	if sc.trans != noTransition {
		if sc.prevEnc != "" {
			if sc.prev, err = scope.Decode([]byte(sc.prevEnc)); err != nil {
				return Page{}, fmt.Errorf("pull %s: %w: the cursor's previous scope: %v", collection, ErrInvalid, err)
			}
		}
		if len(sc.prevPos) != k {
			return Page{}, fmt.Errorf("pull %s: %w: the cursor's transition has %d positions for %d shards", collection, ErrInvalid, len(sc.prevPos), k)
		}
	}
	out, scanned, err := e.scanLog(ctx, collection, k, pos, slots, e.purgeable(ctx, collection, meta), limit, &sc)
	if errors.Is(err, stores.ErrInvalid) && k == 1 {
		// The arguments were checked: the collection may have become
		// sharded since its Meta was cached (a store sets the shard count
		// with a collection's first write).
		if _, m, verr := e.view(ctx, collection, true); verr == nil && stores.ShardsOf(m) > 1 {
			return e.pullScoped(ctx, collection, cursor, limit, s, mig, version, since)
		}
	}
	var moved *slotMoved
	if errors.As(err, &moved) {
		return Page{}, e.wentBack(ctx, collection, cursor, moved.Error())
	}
	if err != nil {
		return Page{}, err
	}
	if len(out.Entries) == 0 && len(out.Left) == 0 && scanned == 0 && !cursor.IsStart() {
		// Nothing after the cursor: is it past the head?
		if err := e.checkPast(ctx, collection, cursor, k, pos); err != nil {
			return Page{}, err
		}
	}
	out.Next = cursorOf(tag, meta.Epoch, pos)
	out.Next.scope, out.Next.mark = enc, mark
	out.Next.slots = slots.next(collection)
	out.Next.stateSlots = out.Next.slots != ""
	if sc.trans != noTransition && out.More {
		for i, p := range pos {
			if p < sc.prevPos[i] { // the scan has not passed the old positions yet
				out.Next.trans, out.Next.prev, out.Next.prevPos = sc.trans, sc.prevEnc, packPositions(sc.prevPos)
				break
			}
		}
	}
	if !out.Next.IsStart() {
		// A page at the start of the log (an empty one) serves no history
		// to reset, and remembering it would let pulls of names nobody
		// wrote push the written collections' histories out.
		e.served.note(collection, served{tag, meta.Epoch})
	}
	return out, nil
}

// scan is what a pull reads under: its scope and the transition it is
// in, if any.
type scan struct {
	s       *scope.Pred // nil: unscoped
	enc     string      // its encoding
	trans   transition
	prev    *scope.Pred // the previous scope; nil: unscoped
	prevEnc string      // its encoding
	prevPos []uint64    // the positions read under it, one per shard
	// mig, when set, are the collection's migrations: records are
	// resolved to the current version, and judged with its defaults.
	mig *migrate.Definition
	// version, when not 0, is the older version records are served in:
	// they are translated down before they are measured.
	version int
	// since is the store reads begun when the pull began: it shares only
	// those begun after (logReads).
	since uint64
}

// begin starts a transition from cursor's scope, at its positions pos.
// A transition already under way keeps its positions, and its previous
// scope becomes the or of its own and the cursor's: the reader holds, up
// to those positions, records that one or the other matches, but not
// necessarily all of them, so the scan sends every match there. A
// previous scope that outgrows the scope limits (its bytes, nesting or
// predicates), which a cursor could not carry, is dropped: the scan
// reads from the start as a reader that holds nothing (an entry or a
// leave for every log entry).
func (sc *scan) begin(cursor Cursor, pos []uint64) error {
	if cursor.trans == noTransition {
		sc.trans, sc.prevEnc, sc.prevPos = exactPrev, cursor.scope, slices.Clone(pos)
		return nil
	}
	var prev, cur *scope.Pred
	var err error
	if cursor.prev != "" {
		if prev, err = scope.Decode([]byte(cursor.prev)); err != nil {
			return fmt.Errorf("%w: the cursor's previous scope: %v", ErrInvalid, err)
		}
	}
	if cursor.scope != "" {
		if cur, err = scope.Decode([]byte(cursor.scope)); err != nil {
			return fmt.Errorf("%w: the cursor's scope: %v", ErrInvalid, err)
		}
	}
	both := scope.Or(prev, cur)
	if both != nil && carried(both) != nil {
		sc.trans, sc.prevEnc, sc.prevPos = noTransition, "", nil
		return nil
	}
	sc.trans, sc.prevEnc = approxPrev, string(both.Encode())
	return nil
}

// verdict is what a scan does with a log entry.
type verdict uint8

const (
	skip  verdict = iota // the reader already holds what it needs
	send                 // an Entry
	leave                // a Left
)

// judge decides what a reader under sc is told of the entry at seq in
// shard of record r.
func (sc *scan) judge(shard int, seq uint64, r crdt.Record) verdict {
	if sc.trans != noTransition && seq <= sc.prevPos[shard] {
		// Unchanged since the reader's last read under prev, so it holds r
		// exactly (exactPrev) or at most (approxPrev) when prev matches.
		now := sc.s == nil || sc.s.Match(r)
		held := matches(sc.prev, r)
		switch {
		case now && (sc.trans == approxPrev || !held):
			return send
		case !now && held:
			return leave
		}
		return skip
	}
	if sc.s == nil || sc.s.Match(r) {
		return send
	}
	return leave
}

// cost is what judging the entry at seq in shard costs beside reading
// its record, in bytes: those of the scopes judge matches it with (a
// match costs at most the record's bytes and the scope's, crdt/scope).
// A pull counts it toward what it passes over, so that a scope the
// client chose near scope.MaxBytes ends a page sooner than a plain one.
func (sc *scan) cost(shard int, seq uint64) int {
	c := len(sc.enc)
	if sc.trans != noTransition && seq <= sc.prevPos[shard] {
		c += len(sc.prevEnc)
	}
	return c
}

// matches reports whether scope p holds record r: nil (unscoped) holds
// every record that exists.
func matches(p *scope.Pred, r crdt.Record) bool {
	if p == nil {
		return r.Exists()
	}
	return p.Match(r)
}

// scanLog reads collection's log of k shards after positions pos (which
// it moves) into a page within limit, as sc says, and returns how many
// entries it passed over.
//
// It reads the shards in turn, from pos, starting at a shard that rotates
// with the positions so that a busy shard cannot starve the others, and
// merges what it reads into one page within limit: each shard's read gets
// the records and bytes the page has left, and as many again as the pull
// passed over so far (up to MaxPage records and a page's bytes, or the
// largest record's), so that one pull makes a few store reads however
// little room its page has; what a read returns past the page's bounds,
// and a shard's first record that would break the page's byte bound (a
// store lets a page's first record pass), waits for the next page. The page stops at the first shard
// that had more; More is then set, also for shards not read. A position
// only moves past entries the page holds or that the reader need not be
// told of, so the no-gap rule of each shard (stores.Sharder) holds at
// every cursor. Entries of one page come from different shards, so their
// Seq values are not in one order; each record appears once (a record
// lives in one shard).
//
// A scoped read counts a leave as leftBytes where the store counted the
// record, and a collection with migrations serves records in another
// shape than the store measured (resolved to the current version, then
// translated to sc.version): both measure each record as served, and
// read a shard again while the page has room.
func (e *Engine) scanLog(ctx context.Context, collection string, k int, pos []uint64, slots *slotScan, purgeable func(s int, from uint64) bool, limit PageLimit, sc *scan) (Page, int, error) {
	plain := sc.s == nil && sc.trans == noTransition
	// exact: the store's sizes are the sizes served, so its page bound
	// is the page's.
	exact := plain && sc.mig == nil
	if k > 1 {
		if _, ok := e.store.(stores.Sharder); !ok {
			return Page{}, 0, fmt.Errorf("pull %s: the store says %d shards but cannot pull a shard", collection, k)
		}
	}
	out := Page{Entries: []Entry{}}
	// What a page passes over is bounded by scanPages of its byte bound
	// (or of the largest record); by all an int holds when that is more,
	// so that a byte bound near math.MaxInt (none) does not wrap it
	// around and end every page before its first entry.
	// readBytes bounds a store read, in bytes: a page's, or the largest
	// record when that is more.
	readBytes := max(limit.Bytes, crdt.MaxRecordBytes)
	passBound := math.MaxInt
	if readBytes <= math.MaxInt/scanPages {
		passBound = scanPages * readBytes
	}
	n, used, scanned, passed := 0, 0, 0, 0 // passed: bytes passed over
	var enc []byte                         // a record's encoding, to count its size
	var sum uint64
	for _, p := range pos {
		sum += p
	}
	first := int(sum % uint64(k))
read:
	for i := range k {
		s := (first + i) % k
		for {
			left := limit.Records - n
			if left == 0 || used >= limit.Bytes || scanned >= maxScan || passed >= passBound {
				out.More = true
				break read
			}
			// What the page has room for, and as much again as the pull
			// passed over so far, up to a store read's bounds: a reader
			// not told of what it reads (out of a fresh reader's scope, or
			// alike in both scopes of a transition) would otherwise be
			// read one entry at a time while its page has room for one
			// more, up to maxScan store reads for one request. Within what
			// the pull may still pass over, too.
			room := limit.Bytes - used
			lim := stores.PageLimit{Records: min(left+scanned-n, MaxPage, maxScan-scanned), Bytes: readBytes}
			if grown := min(passed, passBound-passed); grown < readBytes-room {
				lim.Bytes = room + grown
			}
			want := lim.Records
			after, check := pos[s], slots.checks(s, pos[s])
			if check {
				// One entry earlier: the one at the position, to check.
				after--
				lim.Records = min(lim.Records+1, MaxPage)
			}
			read := logRead{collection: collection, shard: s, after: after, limit: lim}
			if k == 1 {
				read.shard = -1 // Store.Pull
			}
			// Shared: what it returns is read, never changed; the records
			// served are copied (own).
			p, shared, err := e.reads.pull(ctx, e.store, read, sc.since)
			own := func(r crdt.Record) crdt.Record {
				if shared {
					return r.Clone()
				}
				return r
			}
			if check && errors.Is(err, stores.ErrCorrupt) {
				// The entry damaged may be the one at the position, which
				// the reader has read and needs nothing of: the check says
				// nothing, and the shard is read again from the position.
				slots.drop(s)
				continue
			}
			if err != nil && k == 1 {
				return Page{}, 0, fmt.Errorf("pull %s after %d: %w", collection, pos[0], err)
			}
			if err != nil {
				return Page{}, 0, fmt.Errorf("pull %s shard %d after %d: %w", collection, s, pos[s], err)
			}
			if check {
				if p, err = slots.check(collection, s, pos[s], p, want); err != nil {
					return Page{}, 0, err
				}
				if len(p.Entries) == 0 && p.More {
					continue // the entry checked alone filled the store's page
				}
			}
			if exact && k == 1 {
				// The store's page is the page: it kept to the limit.
				out.Entries = make([]Entry, len(p.Entries))
				for j, en := range p.Entries {
					out.Entries[j] = Entry{Seq: en.Seq, Record: own(en.Record)}
				}
				pos[0], out.More = p.Next, p.More
				for _, en := range p.Entries {
					slots.meet(collection, 0, en.Record.ID)
				}
				if len(p.Entries) > 0 {
					slots.at(collection, 0, p.Entries[len(p.Entries)-1].Record)
				}
				if !p.More {
					if err := slots.atHead(0, purgeable); err != nil {
						return Page{}, 0, err
					}
				}
				return out, len(p.Entries), nil
			}
			cut := false
			for _, en := range p.Entries {
				stored := en.Record // the slot marks are of records as stored
				en.Record = e.resolve(sc.mig, en.Record)
				cost := sc.cost(s, en.Seq)
				if scanned > 0 && passed+cost > passBound {
					cut = true // judged by the next page
					break
				}
				passed += cost
				switch sc.judge(s, en.Seq, withDefaults(sc.mig, en.Record)) {
				case send:
					if sc.version != 0 {
						r, dropped, err := sc.mig.Record(en.Record, sc.mig.Current(), sc.version)
						if err != nil {
							return Page{}, 0, fmt.Errorf("pull %s: %w", collection, err)
						}
						e.noteDropped(dropped)
						en.Record = r
					}
					enc = crdt.AppendRecord(enc[:0], en.Record)
					size := len(enc)
					if n == limit.Records || n > 0 && used+size > limit.Bytes {
						cut = true // this and what follows wait for the next page
						break
					}
					used += size
					n++
					out.Entries = append(out.Entries, Entry{Seq: en.Seq, Record: own(en.Record)})
				case leave:
					if n == limit.Records || n > 0 && used+leftBytes > limit.Bytes {
						cut = true
						break
					}
					used += leftBytes
					n++
					out.Left = append(out.Left, Left{Seq: en.Seq, ID: en.Record.ID})
					// The record was read whole for a leave of a few bytes.
					enc = crdt.AppendRecord(enc[:0], en.Record)
					passed += len(enc)
				default:
					enc = crdt.AppendRecord(enc[:0], en.Record)
					passed += len(enc)
				}
				if cut {
					break
				}
				scanned++
				pos[s] = en.Seq
				slots.at(collection, s, stored)
			}
			switch {
			case cut:
				out.More = true
				break read
			case !p.More:
				if err := slots.atHead(s, purgeable); err != nil {
					return Page{}, 0, err
				}
				continue read // this shard is read to its end
			case exact:
				// The store cut its page at the page's own bounds.
				out.More = true
				break read
			}
		}
	}
	return out, scanned, nil
}

// slotScan checks a cursor's slot marks as a pull reads each shard from
// its position, and notes the record at each position the pull moves to,
// for the next cursor's marks. A nil *slotScan (a store without an
// identity) checks and notes nothing.
//
// The mark of the entry at a position is a state mark (stateMark): of the
// record there and of what it holds, so that the same record written
// again at that number in a history put back is told from the one read
// there. A cursor of formats 3 and 4, made before state marks, holds id
// marks (slotMark), which are checked as such; the next cursor holds
// state marks where the pull read the record at the position.
//
// When the entry at a position is gone, the record the reader read there
// moved on (it changed again, and its entry went to a later position) or
// was collected; or the store went back and has not given that number out
// again. The record is then one still to be met: in one history the
// reader meets its entry before it reaches the head, so reaching the head
// without meeting it is the same proof as another record at the position,
// unless a purge may have removed it (pullScoped). A record still to be
// met is named by its id mark.
//
// In a cursor of formats 5 and 6 each shard's pair of marks is (S, I): S
// the state mark of the entry at the position (0: not known), whose top
// bit (stateFlag) says what I is: set, the id mark of the record at the
// position (nothing to be met); clear, the id mark of a record still to
// be met (0: none), and the record at the position is not named by id
// (when its entry is gone, no other record becomes one to be met: one
// at a time, as before).
type slotScan struct {
	key  []byte
	want []uint32 // the cursor's marks still to check; 0: none
	// wantState says whether want holds state marks (formats 5 and 6) or
	// id marks (formats 3 and 4).
	wantState bool
	// wantIDs are the id marks of the records at the cursor's positions,
	// when known (0: not), which become the marks of records still to
	// be met when their entries are gone.
	wantIDs []uint32
	// marks and ids are the state and id marks at the positions as they
	// move: the cursor's (none for an unverified cursor, nor for a
	// cursor of id marks until its check reads the record) until a
	// shard's position moves, then unknown until recs[s] is set.
	marks, ids []uint32
	// recs are the records, as stored, at moved positions; a zero Record
	// while not moved.
	recs []crdt.Record
	// pending are the marks of the records still to be met, per shard
	// (0: none), and from the positions where they were read: known for
	// those this pull found, 0 for those the cursor carried.
	pending []uint32
	from    []uint64
	// carry says whether the pending marks go on into the next cursor:
	// not an unverified cursor's, which a client may have written.
	carry bool
}

// newSlotScan returns the slotScan of a pull from cursor, of k shards,
// with key (nil: none).
func newSlotScan(key []byte, cursor Cursor, k int) *slotScan {
	if key == nil {
		return nil
	}
	sl := &slotScan{key: key, marks: make([]uint32, k), ids: make([]uint32, k), recs: make([]crdt.Record, k),
		wantIDs: make([]uint32, k), pending: make([]uint32, k), from: make([]uint64, k), carry: !cursor.unverified}
	first, second := cursor.slotMarks()
	if len(first) != k || cursor.IsStart() {
		return sl
	}
	// Where a record still to be met was read is not kept: from 0, any
	// published horizon may explain that it is gone (purgeable).
	if !cursor.stateSlots {
		sl.want = first
		copy(sl.wantIDs, first)
		copy(sl.pending, second)
		return sl
	}
	sl.want, sl.wantState = make([]uint32, k), true
	for s, m := range first {
		sl.want[s] = m &^ stateFlag
		if m&stateFlag != 0 {
			sl.wantIDs[s] = second[s]
		} else {
			sl.pending[s] = second[s]
		}
	}
	if !cursor.unverified {
		// The marks of an unverified cursor are checked where the pull
		// reads, but never go on into a cursor the server makes: a
		// client may have written them, and a mark of another record
		// (or state) there is taken for proof that the store went back
		// (wentBack).
		copy(sl.marks, sl.want)
		copy(sl.ids, sl.wantIDs)
	}
	return sl
}

// checks reports whether shard s's mark is still to be checked, at
// position pos.
func (sl *slotScan) checks(s int, pos uint64) bool {
	return sl != nil && sl.want != nil && sl.want[s] != 0 && pos > 0
}

// check checks page p of shard s, read from one before pos, within left
// records: the entry at pos, when there, must be the record in the state
// the cursor's mark names (of the record only, for an id mark). It
// returns the page without that entry, cut to left records. An entry
// gone from there makes its record one still to be met.
func (sl *slotScan) check(collection string, s int, pos uint64, p stores.Page, left int) (stores.Page, error) {
	want := sl.want[s]
	sl.want[s] = 0
	if len(p.Entries) > 0 && p.Entries[0].Seq == pos {
		r := p.Entries[0].Record // as stored: marks are never of a migrated record
		if sl.wantState {
			if stateMark(sl.key, collection, r) != want {
				return p, &slotMoved{shard: s, seq: pos, state: slotMark(sl.key, collection, r.ID) == sl.wantIDs[s]}
			}
		} else {
			if slotMark(sl.key, collection, r.ID) != want {
				return p, &slotMoved{shard: s, seq: pos}
			}
			if sl.carry {
				// A cursor of id marks: the next one holds the state
				// mark of the record read here.
				sl.marks[s], sl.ids[s] = stateMark(sl.key, collection, r), want
			}
		}
		p.Entries = p.Entries[1:]
	} else if sl.pending[s] == 0 && sl.wantIDs[s] != 0 {
		sl.pending[s], sl.from[s] = sl.wantIDs[s], pos
	}
	if len(p.Entries) > left {
		p.Entries, p.More = p.Entries[:left], true
	}
	p.Next = pos
	if len(p.Entries) > 0 {
		p.Next = p.Entries[len(p.Entries)-1].Seq
	}
	return p, nil
}

// drop gives up the check of shard s's mark.
func (sl *slotScan) drop(s int) { sl.want[s] = 0 }

// at notes that shard s's position moved to an entry of record r (as
// stored, not migrated) of collection, which may be the record still to
// be met there.
func (sl *slotScan) at(collection string, s int, r crdt.Record) {
	if sl == nil {
		return
	}
	sl.recs[s], sl.marks[s], sl.ids[s] = r, 0, 0
	sl.meet(collection, s, r.ID)
}

// meet clears shard s's record still to be met when id is that record.
func (sl *slotScan) meet(collection string, s int, id string) {
	if sl != nil && sl.pending[s] != 0 && slotMark(sl.key, collection, id) == sl.pending[s] {
		sl.pending[s] = 0
	}
}

// atHead is called when shard s was read to its head. A record still to
// be met there was not met: unless purgeable says a purge may have
// removed it (its entry read at from), that is proof the store went back.
func (sl *slotScan) atHead(s int, purgeable func(s int, from uint64) bool) error {
	if sl == nil || sl.pending[s] == 0 {
		return nil
	}
	from := sl.from[s]
	sl.pending[s] = 0
	if purgeable(s, from) {
		return nil
	}
	return &slotMoved{shard: s, seq: from, gone: true}
}

// next returns the slot marks of the next cursor, packed as formats 5
// and 6 hold them (newSlotScan).
func (sl *slotScan) next(collection string) string {
	if sl == nil {
		return ""
	}
	for s, r := range sl.recs {
		if r.ID != "" {
			sl.marks[s], sl.ids[s] = stateMark(sl.key, collection, r), slotMark(sl.key, collection, r.ID)
		}
	}
	first, second := make([]uint32, len(sl.marks)), make([]uint32, len(sl.marks))
	for s, m := range sl.marks {
		var pend uint32
		if sl.carry {
			pend = sl.pending[s]
		}
		switch {
		case pend != 0:
			first[s], second[s] = m, pend
		case m != 0 && sl.ids[s] != 0:
			first[s], second[s] = m|stateFlag, sl.ids[s]
		default:
			first[s] = m
		}
	}
	return packSlots(first, second)
}

// slotMoved is scanLog's error when the entry at a cursor's position is
// of another record than its mark says: the sequence number was given
// out again, so the store went back in time.
type slotMoved struct {
	shard int
	seq   uint64
	// state: the entry at seq is of the record the cursor read there, in
	// another state.
	state bool
	// gone: the entry at seq was gone, and its record was not met before
	// the head.
	gone bool
}

func (m *slotMoved) Error() string {
	if m.gone {
		return fmt.Sprintf("the record the cursor read at position %d in shard %d is neither there nor after it", m.seq, m.shard)
	}
	if m.state {
		return fmt.Sprintf("the log entry at the cursor's position %d in shard %d is of the record the cursor read there, written again since", m.seq, m.shard)
	}
	return fmt.Sprintf("the log entry at the cursor's position %d in shard %d is of another record than the one the cursor read there", m.seq, m.shard)
}

// purgeable returns what tells, for a pull of collection in the epoch of
// meta, whether a purge may have removed a record whose entry a reader
// read at position from of shard s: the collection's published read
// horizon is at or past from there (or, published in another epoch or
// unreadable, cannot say it is not). A purge removes a record left with
// nothing with its entry, when that entry is at or before the read
// horizon: the one the reader read, or a later one it moved on to. The
// horizon is read afresh: this is asked only when a record was not met.
// It is read whatever this instance's rules say: an instance whose rules
// give the collection a MaxOffline may have published it and purged (one
// the rollout of a rule has not reached, or one that still has a rule
// this one's configuration removed). The lease log is purged to its heads
// under no published horizon (purgeLeases): any record of it may have
// been. It is read once for the pull, however many shards ask: a cursor
// a client wrote may name a record still to be met on every one.
func (e *Engine) purgeable(ctx context.Context, collection string, meta stores.Meta) func(s int, from uint64) bool {
	var (
		read bool
		h    Horizon
		ok   bool
		err  error
	)
	return func(s int, from uint64) bool {
		if collection == proto.LeaseCollection {
			// Its log is purged to its heads, under no published
			// horizon (purgeLeases).
			return true
		}
		if !read {
			h, ok, err = e.HorizonOf(ctx, collection, true)
			read = true
		}
		switch {
		case err != nil:
			// Not proof the store went back; but the check is lost, so
			// it is said.
			e.log.Warn("a record a cursor read was not met before the head, and the published horizon could not be read to tell whether a purge removed it; the reader is not reset",
				"collection", collection, "shard", s, "from", from, "err", err)
			return true
		case !ok:
			return false // nothing was ever collected
		case h.Epoch != meta.Epoch || s >= len(h.Read):
			return true
		}
		return h.Read[s] >= from
	}
}

// checkPast returns a *ResetError when a position of cursor (pos, one per
// shard) is past the head of its shard: the store lost writes. It reads
// the head, and so notes it. When the server made cursor (it is not
// Unverified), that is proof the store went back, and wentBack starts a
// new epoch of every collection.
func (e *Engine) checkPast(ctx context.Context, collection string, cursor Cursor, k int, pos []uint64) error {
	var heads []uint64
	if k == 1 {
		h, err := e.readHead(ctx, collection)
		if err != nil {
			return fmt.Errorf("pull %s after %d: %w", collection, pos[0], err)
		}
		heads = []uint64{h}
	} else {
		var err error
		if heads, err = e.shardHeads(ctx, collection, k); err != nil {
			return fmt.Errorf("pull %s: %w", collection, err)
		}
	}
	for s, p := range pos {
		if p <= heads[s] {
			continue
		}
		detail := fmt.Sprintf("the cursor is at %d, past the head %d", p, heads[s])
		if k > 1 {
			detail = fmt.Sprintf("the cursor is at %d in shard %d, past its head %d", p, s, heads[s])
		}
		return e.wentBack(ctx, collection, cursor, detail)
	}
	return nil
}
