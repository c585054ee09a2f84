package engine

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// ErrReset means a reader's cursor no longer describes the collection's
// history: the store was wiped, restored, or lost writes, or its log was
// rebuilt. The error is a *ResetError, which says why. The reader starts
// again from the empty cursor; what else it does depends on the reason
// alone (docs/design.md, "Resets").
var ErrReset = errors.New("engine: reset")

// ResetReason says why a reader is reset. Its String is the protocol's name
// for it.
type ResetReason uint8

const (
	// ResetHistoryLost: the store's identity differs from the cursor's
	// (a new or wiped store), the collection's epoch began with history
	// lost after the cursor's (a restore, a Redis restart that may have
	// lost writes, a failover, a head that went back), or the cursor is
	// past the collection's head (which, for a cursor the server made,
	// starts a new epoch of every collection: wentBack). The reader
	// pulls from the start and gives back what the store lacks.
	ResetHistoryLost ResetReason = 1
	// ResetRebuilt: the collection's log was rebuilt since the cursor's
	// epoch (renumbered, resharded) with nothing lost. The reader pulls
	// from the start; it has nothing to give back.
	ResetRebuilt ResetReason = 2
	// ResetLeaseExpired: the cursor is before the collection's published
	// read horizon (horizon.go), and its reading began from the start
	// before that horizon was published there: tombstones it has not read
	// may have been collected. A cursor of an epoch rebuilt since gets it
	// too, in place of ResetRebuilt, when the horizon of its epoch had
	// passed it, or one of a later epoch cannot say (passedBefore). The
	// reader pulls from the start and reconciles.
	ResetLeaseExpired ResetReason = 3
)

// ResetReasons lists every reason, in order.
var ResetReasons = []ResetReason{ResetHistoryLost, ResetRebuilt, ResetLeaseExpired}

func (r ResetReason) String() string {
	switch r {
	case ResetHistoryLost:
		return "history_lost"
	case ResetRebuilt:
		return "rebuilt"
	case ResetLeaseExpired:
		return "lease_expired"
	}
	return fmt.Sprintf("reset_reason_%d", uint8(r))
}

// ResetError is the error of a Pull whose cursor is of another history.
// It wraps ErrReset.
type ResetError struct {
	Collection string
	Reason     ResetReason
	// Detail says what differed, for logs (not for clients: it names
	// epochs and positions).
	Detail string
}

func (e *ResetError) Error() string {
	return fmt.Sprintf("pull %s: reset (%s): %s", e.Collection, e.Reason, e.Detail)
}

func (e *ResetError) Unwrap() error { return ErrReset }

// history is what the engine remembers of the store's histories: the tag
// of its identity and each collection's Meta, cached for at most
// historyTTL and dropped at every Resync of the store; and the highest
// head it read of each collection, to notice a head going backwards.
type history struct {
	mu    sync.Mutex
	tag   [8]byte
	tagAt time.Time // zero: not read
	// slotKey is the key of the slot marks in cursors of the store whose
	// tag is tag (slotKeyOf); nil for a store without an identity.
	slotKey []byte
	metas   map[string]metaSeen
	heads   map[string]headSeen
	ticket  atomic.Uint64 // counts completed head reads; see observeHead
	// shardHeads holds, for each collection of K > 1 shards, the highest
	// head seen of each shard (notifications and reads): its sum is the
	// value subscribers get, which grows whenever any shard does, whatever
	// order notifications from different shards and instances arrive in.
	shardHeads map[string][]uint64
}

// noteShardHeads merges shard heads into collection's known heads (of k
// shards; other counts start afresh) and returns their sum. reset replaces
// them instead (after a rewind).
func (h *history) noteShardHeads(collection string, k int, heads map[int]uint64, reset bool) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.shardHeads == nil {
		h.shardHeads = map[string][]uint64{}
	}
	v := h.shardHeads[collection]
	if len(v) != k || reset {
		if v == nil && len(h.shardHeads) >= maxHistory {
			clear(h.shardHeads)
		}
		v = make([]uint64, k)
		h.shardHeads[collection] = v
	}
	var sum uint64
	for s := range v {
		if x, ok := heads[s]; ok && x > v[s] {
			v[s] = x
		}
		sum += v[s]
	}
	return sum
}

type metaSeen struct {
	m  stores.Meta
	at time.Time
}

type headSeen struct {
	seq  uint64
	done uint64 // the ticket when the read completed
}

// historyTTL bounds how long a cached identity or epoch is trusted without
// a Resync. Stores send a Resync when they start an epoch, but an
// instance may miss one sent by another (Redis pub/sub is at-most-once).
const historyTTL = DefaultPollInterval

// maxHistory bounds the collections the engine remembers, like maxClocks.
const maxHistory = 1 << 16

// forget drops the cached identity and epochs: the store said they may
// have changed.
func (h *history) forget() {
	h.mu.Lock()
	h.tagAt = time.Time{}
	clear(h.metas)
	h.mu.Unlock()
}

// forgetViews drops what the engine cached of the store's histories: the
// identity and epochs (history.forget), and the published horizons, which
// are of a history too: a store made anew holds none, and one restored
// holds an older one, whose publications are numbered lower than the one
// cached. A pull from the start marks its cursor with the id of the
// horizon as cached (checkLease); marked with the id of a history the
// store no longer holds, the reader would not be reset by the read
// horizons the store publishes next, and would miss the deletes collected
// under them.
func (e *Engine) forgetViews() {
	e.hist.forget()
	e.hz.forget()
}

// storeNotified is the engine's Watch callback: a Resync may mean a new
// identity or epoch, so the cache goes before the heads are re-read.
func (e *Engine) storeNotified(n stores.Notification) {
	if n.Resync {
		e.forgetViews()
	}
	e.notify(n)
}

// view returns the store tag and collection's Meta, from the cache unless
// fresh is set or the cache is older than historyTTL.
func (e *Engine) view(ctx context.Context, collection string, fresh bool) ([8]byte, stores.Meta, error) {
	h := &e.hist
	now := time.Now()
	h.mu.Lock()
	tag, tagOK := h.tag, !h.tagAt.IsZero() && now.Sub(h.tagAt) < historyTTL
	ms, metaOK := h.metas[collection]
	metaOK = metaOK && now.Sub(ms.at) < historyTTL
	h.mu.Unlock()
	if !fresh && tagOK && metaOK {
		return tag, ms.m, nil
	}
	// Meta first: a store may check its backend in it (Redis) and change
	// its identity or epochs.
	m, err := e.store.Meta(ctx, collection)
	if err != nil {
		return [8]byte{}, stores.Meta{}, fmt.Errorf("read the epoch of %s: %w", collection, err)
	}
	id, err := e.store.Identity(ctx)
	if err != nil {
		return [8]byte{}, stores.Meta{}, fmt.Errorf("read the store's identity: %w", err)
	}
	tag = storeTag(id)
	h.mu.Lock()
	if tag != h.tag || h.slotKey == nil {
		h.slotKey = slotKeyOf(id)
	}
	// A horizon cached is of the history it was read in (forgetViews).
	otherStore := h.tag != [8]byte{} && tag != h.tag
	prev, had := h.metas[collection]
	h.tag, h.tagAt = tag, now
	if h.metas == nil {
		h.metas = map[string]metaSeen{}
	}
	if len(h.metas) >= maxHistory {
		clear(h.metas)
	}
	h.metas[collection] = metaSeen{m, now}
	h.mu.Unlock()
	switch {
	case otherStore:
		e.hz.forget()
	case had && prev.m.Epoch != m.Epoch:
		e.hz.forgetOne(collection)
	}
	return tag, m, nil
}

// slotKeyOf derives the key of slot marks from a store's identity, which
// no client sees (a cursor holds only a digest of it): a mark then says
// nothing a client could test a guessed record id against. A store
// without an identity has no key, and its cursors no marks.
func slotKeyOf(identity string) []byte {
	if identity == "" {
		return nil
	}
	k := sha256.Sum256([]byte("convergo/slot-key/v1\x00" + identity))
	return k[:]
}

// slotMark is the mark of a log entry of record id of collection, under
// key: 4 bytes of an HMAC, never 0 (which a cursor holds for "not
// known"). A sequence number is given to one record only in a history,
// and the entry stays at it until that record changes again (and moves
// to a later number) or is collected; so the record at a reader's
// position is, while it is still there, the one the reader read there,
// unless the store went back and gave the number out again.
func slotMark(key []byte, collection, id string) uint32 {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(collection))
	m.Write([]byte{0})
	m.Write([]byte(id))
	if v := binary.BigEndian.Uint32(m.Sum(nil)); v != 0 {
		return v
	}
	return 1
}

// stateFlag is the top bit of a state mark in a cursor of formats 5
// and 6: set, the second mark of the pair is the id mark (slotMark) of
// the record at the position; clear, it is the id mark of a record still
// to be met (0: none). A state mark is 31 bits.
const stateFlag = 1 << 31

// stateMark is the mark of a log entry of record r (its state as stored,
// never as migrated for a reader) of collection, under key: 31 bits of an
// HMAC (stateFlag clear), never 0, of the collection, the record id, and
// the name and stamp of every field of r that holds a value. A record
// stays at its sequence number only while it is not written again: every
// change that changes it (Apply, captured writes too) moves it to a new
// number. So in one history the entry at a reader's position, while it
// is there, holds what the reader read there; one that holds another
// record, or the same record written again, means the store went back
// and gave the number out again.
//
// What a purge may do to a record in place (stores.PurgeRecord: clear a
// delete stamp, remove unset fields) touches no field that holds a value,
// and a migration is applied as records are read, not to what is stored:
// neither changes the mark. So the mark does not cover the delete stamp
// and the unset fields: a write put back at the position that changed
// only those (a delete of a record already deleted, an unset of a field
// already unset) is not seen.
func stateMark(key []byte, collection string, r crdt.Record) uint32 {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("\x00state\x00"))
	m.Write([]byte(collection))
	m.Write([]byte{0})
	m.Write([]byte(r.ID))
	names := make([]string, 0, len(r.Fields))
	for name, f := range r.Fields {
		if f.Value != nil {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	var b []byte
	for _, name := range names {
		st := r.Fields[name].Stamp
		b = append(b[:0], 0)
		b = append(b, name...)
		b = append(b, 0)
		b = binary.BigEndian.AppendUint64(b, uint64(st.Wall))
		b = binary.BigEndian.AppendUint32(b, st.Logical)
		b = binary.AppendUvarint(b, uint64(len(st.Replica)))
		b = append(b, st.Replica...)
		m.Write(b)
	}
	if v := binary.BigEndian.Uint32(m.Sum(nil)) &^ stateFlag; v != 0 {
		return v
	}
	return 1
}

// slotKeyFor returns the key of the slot marks of cursors of the store
// whose tag is tag, or nil when it is not the store's (or has none).
func (e *Engine) slotKeyFor(tag [8]byte) []byte {
	e.hist.mu.Lock()
	defer e.hist.mu.Unlock()
	if e.hist.tag != tag {
		return nil
	}
	return e.hist.slotKey
}

// checkCursor returns the tag and Meta new cursors of collection carry, or
// a *ResetError when c is of another history. A cursor that differs from
// the cache is judged on values read afresh, so a stale cache neither
// resets a reader that another instance moved on nor lets one through.
// A cursor of an epoch rebuilt since that a purge may have passed
// (passedBefore) is reset ResetLeaseExpired, not ResetRebuilt.
func (e *Engine) checkCursor(ctx context.Context, collection string, c Cursor) ([8]byte, stores.Meta, error) {
	tag, m, err := e.view(ctx, collection, false)
	if err != nil || c.IsStart() {
		return tag, m, err
	}
	if c.store != tag || c.epoch != m.Epoch || c.Shards() != stores.ShardsOf(m) {
		if tag, m, err = e.view(ctx, collection, true); err != nil {
			return tag, m, err
		}
	}
	reset := func(r ResetReason, format string, args ...any) ([8]byte, stores.Meta, error) {
		return tag, m, &ResetError{Collection: collection, Reason: r, Detail: fmt.Sprintf(format, args...)}
	}
	switch {
	case c.store != tag:
		return reset(ResetHistoryLost, "the cursor is of store %x, this is store %x", c.store, tag)
	case c.epoch > m.Epoch:
		detail := fmt.Sprintf("the cursor's epoch %d is after the store's %d: the store went back", c.epoch, m.Epoch)
		if !c.unverified {
			// Epochs only grow, and this server made the cursor (for
			// this collection: its tag says so), so the store went back
			// past a bump: proof, as a cursor past the head is (wentBack).
			e.newHistory(ctx, collection, m, detail)
		}
		return reset(ResetHistoryLost, "%s", detail)
	case c.epoch < m.Lost:
		return reset(ResetHistoryLost, "history was lost after the cursor's epoch %d (now epoch %d)", c.epoch, m.Epoch)
	case c.epoch < m.Epoch:
		why, err := e.passedBefore(ctx, collection, c)
		if err != nil {
			return tag, m, err
		}
		if why != "" {
			return reset(ResetLeaseExpired, "the log was rebuilt after the cursor's epoch %d (now epoch %d), and %s", c.epoch, m.Epoch, why)
		}
		return reset(ResetRebuilt, "the log was rebuilt after the cursor's epoch %d (now epoch %d)", c.epoch, m.Epoch)
	case c.Shards() != stores.ShardsOf(m):
		// A change of the shard count starts an epoch, so this is a
		// store that changed K without one, or a forged cursor: either
		// way the positions describe other logs.
		return reset(ResetRebuilt, "the cursor has %d shard positions, the log has %d shards", c.Shards(), stores.ShardsOf(m))
	}
	return tag, m, nil
}

// readHead reads collection's head from the store and notes it, so that a
// head going backwards is noticed (observeHead). For a collection of K > 1
// shards the head is the sum of the shards' heads, read with ShardHeads and
// merged into the heads notifications brought (history.noteShardHeads).
func (e *Engine) readHead(ctx context.Context, collection string) (uint64, error) {
	start := e.hist.ticket.Load()
	if sh, ok := e.store.(stores.Sharder); ok {
		_, m, err := e.view(ctx, collection, false)
		if err != nil {
			return 0, err
		}
		if k := stores.ShardsOf(m); k > 1 {
			heads, err := sh.ShardHeads(ctx, collection)
			if err != nil {
				return 0, err
			}
			read := make(map[int]uint64, len(heads))
			var sum uint64
			for s, h := range heads {
				read[s] = h
				sum += h
			}
			// A rewind is noticed on the sum: a shard that went back while
			// another advanced further is not (left for per-shard epochs).
			rewound := e.observeHead(ctx, collection, sum, start)
			return e.hist.noteShardHeads(collection, len(heads), read, rewound), nil
		}
	}
	h, err := e.store.Head(ctx, collection)
	if err != nil {
		return 0, err
	}
	e.observeHead(ctx, collection, h, start)
	return h, nil
}

// observeHead notes head h of collection, read by a call that began when
// the ticket was start. It is a rewind when a read that completed before
// this one began saw a higher head (overlapping reads may complete in any
// order, and are no evidence). On a rewind the store starts a new epoch of
// the collection, history lost, so that cursors between the two heads
// reset even once the head has passed them again, and subscribers are
// told the lower head, so that they pull and learn it.
func (e *Engine) observeHead(ctx context.Context, collection string, h, start uint64) (rewound bool) {
	done := e.hist.ticket.Add(1)
	e.hist.mu.Lock()
	if e.hist.heads == nil {
		e.hist.heads = map[string]headSeen{}
	}
	prev, ok := e.hist.heads[collection]
	rewound = ok && h < prev.seq && prev.done <= start
	switch {
	case !ok && h == 0:
		// A collection never written (or not known written): a head of 0
		// can show no rewind, and remembering it would let reads of names
		// nobody wrote push the written collections' heads out.
	case !ok || h >= prev.seq || rewound:
		if !ok && len(e.hist.heads) >= maxHistory {
			clear(e.hist.heads)
		}
		e.hist.heads[collection] = headSeen{seq: h, done: done}
	}
	if rewound {
		delete(e.hist.metas, collection)
	}
	e.hist.mu.Unlock()
	if !rewound {
		return false
	}
	e.log.Warn("a collection's head went backwards: history was lost; starting a new epoch", "collection", collection, "was", prev.seq, "now", h)
	if err := e.store.BumpEpoch(ctx, collection, stores.HistoryLost); err != nil {
		// Cursors past the head still reset by position; those below it
		// would not. Forget the higher head so that the next read tries
		// again.
		e.log.Error("start a new epoch after the head went back", "collection", collection, "err", err)
		e.hist.mu.Lock()
		e.hist.heads[collection] = prev
		e.hist.mu.Unlock()
	}
	e.forgetViews()
	e.rewindSubscribers(collection, h)
	return true
}

// StoreWentBack returns how many times since Open this engine found that
// the store went back in time unnoticed (wentBack) and started a new
// epoch of every collection. Any count is worth an operator's look: a
// backup put back without `convergo store mark-restored`, or a failover
// that lost writes.
func (e *Engine) StoreWentBack() uint64 { return e.wentBackCount.Load() }

// wentBack returns the reset of a reader whose cursor c is past
// collection's head or finds another record's entry at its position
// (detail says which), and acts on it. When the store's identity or the
// collection's epoch, read afresh, is no longer the cursor's, the cursor
// was read in a history since ended (a rebuild this instance has not
// heard of yet, say, or a store made anew), and the reset is the one that
// change gives; when they cannot be read, the error is returned, and the
// reader tries again. Otherwise, for a cursor this server made,
// the store went back in time: a copy of it put back without `convergo
// store mark-restored`, or a failover that lost writes. The head will
// pass that position again as writers write (or already has), and then
// nothing would tell the cursors between the two heads, of this
// collection or of any other, from those of the new history: their
// readers would skip what is written there, and never give back what they
// hold. The causes known put a whole store back, not one collection, and
// which other collections went back cannot be seen, so every collection
// starts a new epoch, history lost, as the operator's procedure does
// (BumpEpochs): every reader pulls again from the start and gives back
// what it holds, once. A cursor the server cannot tell it made resets
// its reader only: a client could have written it.
func (e *Engine) wentBack(ctx context.Context, collection string, c Cursor, detail string) error {
	lost := &ResetError{Collection: collection, Reason: ResetHistoryLost, Detail: detail}
	e.witnessMu.Lock() // readers coming back at once start one epoch, not one each
	defer e.witnessMu.Unlock()
	// The store's identity and the epoch, read afresh: the cursor may be
	// of a store since made anew, or of an epoch since ended, and what
	// cannot be read is no proof yet (the reader tries again).
	tag, m, err := e.view(ctx, collection, true)
	if err != nil {
		// Returned, not logged: the transport logs it with the request.
		return fmt.Errorf("pull %s: judge the cursor (%s): read the epoch: %w", collection, detail, err)
	}
	if tag != c.store || m.Epoch != c.epoch {
		e.forgetViews()
		if _, _, err := e.checkCursor(ctx, collection, c); err != nil {
			return err
		}
		return lost
	}
	if c.unverified {
		return lost
	}
	e.newHistory(ctx, collection, m, detail)
	return lost
}

// newHistory starts a new epoch of every collection, history lost, given
// proof read against m (the collection's Meta as read afresh) that the
// store went back in time (wentBack; checkCursor, for a cursor of an
// epoch after the store's). Only from the store-wide counter read: another
// instance that had the same proof may have started one a moment ago (a
// store that cannot say starts one all the same; the readers are then
// reset twice). A failure is logged: the reader is reset all the same, and
// the next proof bumps again.
func (e *Engine) newHistory(ctx context.Context, collection string, m stores.Meta, detail string) {
	bumped, err := true, error(nil)
	if bf, ok := e.store.(stores.EpochsBumperFrom); ok {
		bumped, err = bf.BumpEpochsFrom(ctx, stores.StoreEpochOf(m))
	} else {
		err = e.store.BumpEpochs(ctx)
	}
	if err != nil {
		e.log.Error("start a new epoch of every collection after the store went back", "collection", collection, "err", err)
		return
	}
	e.forgetViews()
	if bumped {
		e.log.Error("the store went back in time: started a new epoch of every collection, history lost, so that every reader gives back what it holds",
			"collection", collection, "detail", detail)
		e.wentBackCount.Add(1)
	}
}

// rewindSubscribers delivers head h, lower than what they were given, to
// collection's subscribers.
func (e *Engine) rewindSubscribers(collection string, h uint64) {
	e.subsMu.Lock()
	subs := make([]*Subscription, 0, len(e.subs[collection]))
	for s := range e.subs[collection] {
		subs = append(subs, s)
	}
	e.subsMu.Unlock()
	for _, s := range subs {
		s.offer(h, true)
	}
}

// CursorAt returns the cursor after sequence number seq of collection's
// log in the store's current history (its identity and the collection's
// epoch), for a reader that knows its position by number: tests, and a
// server that resumes a position it kept itself. The package-level
// CursorAt makes a cursor of no store, which any store with an identity
// resets. Like a parsed one (ParseCursor), the cursor is taken as one
// this server made: past the head, it starts a new epoch of every
// collection of the store (wentBack). A position a client gave is made
// into a cursor with Unverified.
func (e *Engine) CursorAt(ctx context.Context, collection string, seq uint64) (Cursor, error) {
	if err := stores.CheckCollection(collection); err != nil {
		return Cursor{}, err
	}
	tag, m, err := e.view(ctx, collection, false)
	if err != nil {
		return Cursor{}, err
	}
	if k := stores.ShardsOf(m); k > 1 && seq != 0 {
		return Cursor{}, fmt.Errorf("cursor of %s at %d: %w: the log has %d shards (CursorAtShards)", collection, seq, stores.ErrInvalid, k)
	}
	return Cursor{store: tag, epoch: m.Epoch, seq: seq}, nil
}

// CursorAtShards is CursorAt for a collection whose log has K shards: pos
// holds the last sequence number read in each, K values.
func (e *Engine) CursorAtShards(ctx context.Context, collection string, pos []uint64) (Cursor, error) {
	if err := stores.CheckCollection(collection); err != nil {
		return Cursor{}, err
	}
	tag, m, err := e.view(ctx, collection, false)
	if err != nil {
		return Cursor{}, err
	}
	if k := stores.ShardsOf(m); len(pos) != k {
		return Cursor{}, fmt.Errorf("cursor of %s: %w: %d positions for %d shards", collection, stores.ErrInvalid, len(pos), k)
	}
	return cursorOf(tag, m.Epoch, pos), nil
}
