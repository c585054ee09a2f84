package engine

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/transport/proto"
)

// A Cursor is a reader's position in a collection's change log. Clients
// hold it as opaque bytes (Bytes, ParseCursor) that only the server reads,
// so that what a position needs to say can grow (store identity, epoch,
// shard positions, scope; docs/design.md, "Cursor") without changing a
// client.
//
// A collection whose log the store splits over K shards (stores.Sharder)
// has cursors of K positions, one per shard; a collection of one log has
// cursors of one. The zero Cursor is the beginning of every log. Cursors
// are comparable with ==.
//
// A cursor of a scoped read (PullScoped) also holds the canonical bytes of
// the scope it was read under and, while a change of scope is being
// caught up with, the transition: the previous scope and the positions
// read under it (see the package doc, "Scopes and transitions"). An
// encoded cursor is at most MaxCursorBytes long; one of an unscoped read
// at most 1+8+(3+stores.MaxShards)×10+8×stores.MaxShards bytes.
//
// A cursor also holds, for each shard, the slot mark of the log entry at
// its position (stateMark): which record that sequence number was given
// to in the history the reader read, and what the record held there. A
// pull checks it against the entry there now, to see a store that went
// back in time and was written past the reader's position since (reset.go,
// wentBack).
type Cursor struct {
	store [8]byte // the first 8 bytes of SHA-256 of the store's identity
	epoch uint64  // the epoch of the collection's log
	seq   uint64  // the last sequence number read (one shard)
	// shards holds, for K > 1 shards, the last sequence number read in
	// each, 8 bytes big-endian per shard (a string keeps Cursor
	// comparable); empty for one shard.
	shards string
	// scope is the canonical encoding of the scope the cursor was read
	// under (scope.Pred.Encode); empty for an unscoped read.
	scope string
	// trans says whether a transition is under way, and of which kind;
	// prev and prevPos are then the previous scope's encoding (empty:
	// unscoped) and the positions read under it, 8 bytes big-endian per
	// shard (K of them, K = 1 too).
	trans   transition
	prev    string
	prevPos string
	// slots holds, per shard (K of them), 8 bytes: two marks, each 4
	// bytes big-endian, 0 where there is none (newSlotScan says which:
	// the slot mark of the entry at the position, and the mark of a record
	// still to be met (below) or of the record at the position); empty
	// when every one is 0. A record still to be met is the one the reader read
	// at its position, whose entry a later pull found gone from there: in
	// one history it moved on, to a later position, which the reader
	// reads before it reaches the head.
	slots string
	// stateSlots says that the first mark of each pair in slots is a
	// state mark (stateMark, formats 5 and 6) and what the second one is
	// depends on its flag (newSlotScan); otherwise (formats 3 and 4,
	// written before state marks) both are id marks (slotMark).
	stateSlots bool
	// fresh marks a beginning read by a reader that holds no record of
	// the collection (FreshStart); it is never encoded.
	fresh bool
	// unverified marks a cursor whose scope and transition the reader
	// may have written itself (Unverified); it is never encoded.
	unverified bool
	// mark is the id of the tombstone horizon that was published when the
	// reading that led to this cursor began from the start of the log
	// (Horizon.ID); 0: none known (a cursor written before marks were,
	// or read from the start when no horizon was published). A reader
	// that began after a publication misses nothing its purge removes,
	// so checkLease resets it only for a horizon raised after its mark.
	mark uint64
}

// FreshStart returns the beginning of the log for a reader that holds no
// record of the collection (a new client, an emptied database): a scoped
// read from it sends no leave entries until it reaches the head, since
// the reader has nothing to drop. Its encoding is that of any beginning,
// and for an unscoped read it is the beginning.
func FreshStart() Cursor { return Cursor{fresh: true} }

// Unverified returns c as a cursor the server cannot tell it made: its
// positions are the reader's own business (a false one costs only the
// reader), but the scope it claims to have been read under and its
// transition decide which leave entries a scoped read sends, so a reader
// that wrote them could learn which records outside its scope match a
// predicate of its choosing. An unverified cursor is in no transition,
// and a scoped read from it under another scope than the one it names
// reads again from the start as a reader that holds nothing known: a
// record or a leave for every entry (see the package doc, "Scopes and
// transitions"). Nor is an unverified cursor past the head, or one whose
// slot mark names another record, proof that the store went back: it
// resets its reader only (wentBack), and what it claims of shards a page
// does not read never goes on into the page's next cursor. The transport
// verifies the cursors it made with a tag.
func (c Cursor) Unverified() Cursor {
	c.trans, c.prev, c.prevPos = noTransition, "", ""
	c.unverified = true
	return c
}

// transition is the kind of a cursor's transition from one scope to
// another.
type transition uint8

const (
	// noTransition: the cursor was read under one scope throughout.
	noTransition transition = 0
	// exactPrev: the reader holds, at or before prevPos, exactly the
	// records prev matches.
	exactPrev transition = 1
	// approxPrev: the reader holds, at or before prevPos, only records
	// prev matches, but maybe not all of them (a scope changed again in
	// the middle of a transition: prev is the or of the two earlier
	// scopes).
	approxPrev transition = 2
)

// MaxCursorBytes bounds an encoded cursor: two scopes of scope.MaxBytes
// (the one read under and a transition's previous one) and up to
// stores.MaxShards positions for each, with room for the 16-byte tag the
// transport appends (docs/design.md, "Cursor"). ParseCursor refuses a
// longer one.
// The protocol declares it (proto.MaxCursorBytes).
const MaxCursorBytes = proto.MaxCursorBytes

// The first byte of an encoded cursor: format 1 for an unscoped read,
// format 2 for a scoped one or one in transition; formats 3 and 4 are 1
// and 2 with id slot marks after the positions (written before state
// marks; still read), formats 5 and 6 1 and 2 with state slot marks.
const (
	cursorFormat       = 1
	cursorFormatScoped = 2
	// cursorSlots is added to a format whose cursor carries id slot
	// marks.
	cursorSlots = 2
	// cursorStateSlots is added to a format whose cursor carries state
	// slot marks.
	cursorStateSlots = 4
)

// slotBytes is the length of a slot mark; a cursor holds two per shard.
const slotBytes = 4

// storeTag is the tag of a store identity.
func storeTag(identity string) [8]byte {
	sum := sha256.Sum256([]byte(identity))
	var t [8]byte
	copy(t[:], sum[:8])
	return t
}

// noIdentity is the tag of a store without an identity.
var noIdentity = storeTag("")

// CursorAt returns the cursor after sequence number seq of a log.
func CursorAt(seq uint64) Cursor { return Cursor{store: noIdentity, seq: seq} }

// cursorOf returns the cursor at positions pos (one per shard) of history
// (store, epoch).
func cursorOf(store [8]byte, epoch uint64, pos []uint64) Cursor {
	c := Cursor{store: store, epoch: epoch}
	if len(pos) <= 1 {
		if len(pos) == 1 {
			c.seq = pos[0]
		}
		return c
	}
	c.shards = packPositions(pos)
	return c
}

// Shards returns the number of shard positions the cursor holds: 1 for a
// log of one shard (and for the zero Cursor).
func (c Cursor) Shards() int { return max(len(c.shards)/8, 1) }

// Positions returns the last sequence number read in each shard.
func (c Cursor) Positions() []uint64 {
	if c.shards == "" {
		return []uint64{c.seq}
	}
	return unpackPositions(c.shards)
}

// Seq returns the last sequence number the cursor has read; for a cursor
// of K > 1 shards, the sum of its positions, which grows with every entry
// read as the sum of a collection's shard heads (Engine.Head) grows with
// every change.
func (c Cursor) Seq() uint64 {
	if c.shards == "" {
		return c.seq
	}
	var sum uint64
	for _, p := range c.Positions() {
		sum += p
	}
	return sum
}

// Epoch returns the epoch of the collection's log the cursor was read in.
func (c Cursor) Epoch() uint64 { return c.epoch }

// IsStart reports whether c is the beginning of the log: every position
// 0 and no transition under way (whatever its mark).
func (c Cursor) IsStart() bool { return c.Seq() == 0 && c.trans == noTransition }

// Scoped reports whether c was read under a scope.
func (c Cursor) Scoped() bool { return c.scope != "" }

// InTransition reports whether c is in the middle of a transition from
// one scope to another: the reads that follow rescan the log from the
// start and go on until the head.
func (c Cursor) InTransition() bool { return c.trans != noTransition }

// slotMarks returns the pairs of marks the cursor holds, one pair per
// shard: in formats 3 and 4 the slot marks of the entries at the
// positions and the marks of the records still to be met (0: none); in
// formats 5 and 6 (stateSlots) as newSlotScan reads them. Nils when
// there is none at all.
func (c Cursor) slotMarks() (marks, pending []uint32) {
	if c.slots == "" {
		return nil, nil
	}
	k := len(c.slots) / (2 * slotBytes)
	marks, pending = make([]uint32, k), make([]uint32, k)
	for i := range k {
		marks[i] = binary.BigEndian.Uint32([]byte(c.slots[2*slotBytes*i:]))
		pending[i] = binary.BigEndian.Uint32([]byte(c.slots[2*slotBytes*i+slotBytes:]))
	}
	return marks, pending
}

// packSlots encodes slot marks and the marks of records still to be met
// (nil: none) for Cursor.slots: empty when every one is 0.
func packSlots(marks, pending []uint32) string {
	set := func(x uint32) bool { return x != 0 }
	if !slices.ContainsFunc(marks, set) && !slices.ContainsFunc(pending, set) {
		return ""
	}
	b := make([]byte, 0, 2*slotBytes*len(marks))
	for i, x := range marks {
		b = binary.BigEndian.AppendUint32(b, x)
		var p uint32
		if pending != nil {
			p = pending[i]
		}
		b = binary.BigEndian.AppendUint32(b, p)
	}
	return string(b)
}

// prevPositions returns the positions of a transition's previous scope.
func (c Cursor) prevPositions() []uint64 { return unpackPositions(c.prevPos) }

// heldPositions returns the positions up to which the reader holds what
// the log says, for its lease and the read horizon: those of a
// transition's previous scope, except in the transition of a fresh read
// (FreshStart, previous positions at the end of every log), where the
// reader holds only what it read from the start: the positions.
func (c Cursor) heldPositions() []uint64 {
	if c.trans == noTransition {
		return c.Positions()
	}
	prev := c.prevPositions()
	for _, p := range prev {
		if p != math.MaxUint64 {
			return prev
		}
	}
	return c.Positions()
}

func packPositions(pos []uint64) string {
	b := make([]byte, 0, 8*len(pos))
	for _, p := range pos {
		b = binary.BigEndian.AppendUint64(b, p)
	}
	return string(b)
}

func unpackPositions(s string) []uint64 {
	pos := make([]uint64, len(s)/8)
	for i := range pos {
		pos[i] = binary.BigEndian.Uint64([]byte(s[8*i : 8*i+8]))
	}
	return pos
}

// Bytes encodes c: format, store tag, epoch, the number of shards K and
// the K positions, and in formats 3 to 6 K pairs of 4-byte marks
// (slotMarks: state marks in 5 and 6); then, in format 2 (and 4 and 6) (a
// scoped cursor or one in
// transition), the scope's length and bytes, the kind of transition and,
// in a transition, the previous scope's length and bytes and its K
// positions; last, in both formats, the mark when it is not 0. The
// beginning of the log is the empty byte string.
func (c Cursor) Bytes() []byte {
	if c.IsStart() {
		return []byte{} // the start is the same in every history and scope
	}
	pos := c.Positions()
	format := byte(cursorFormat)
	if c.scope != "" || c.trans != noTransition {
		format = cursorFormatScoped
	}
	slots := c.slots != "" && len(c.slots) == 2*slotBytes*len(pos)
	b := make([]byte, 0, 1+8+(2+2*len(pos))*binary.MaxVarintLen64+2*slotBytes*len(pos)+len(c.scope)+len(c.prev)+8)
	switch {
	case slots && c.stateSlots:
		b = append(b, format+cursorStateSlots)
	case slots:
		b = append(b, format+cursorSlots)
	default:
		b = append(b, format)
	}
	b = append(b, c.store[:]...)
	b = binary.AppendUvarint(b, c.epoch)
	b = binary.AppendUvarint(b, uint64(len(pos)))
	for _, p := range pos {
		b = binary.AppendUvarint(b, p)
	}
	if slots {
		b = append(b, c.slots...)
	}
	if format == cursorFormatScoped {
		b = binary.AppendUvarint(b, uint64(len(c.scope)))
		b = append(b, c.scope...)
		b = append(b, byte(c.trans))
		if c.trans != noTransition {
			b = binary.AppendUvarint(b, uint64(len(c.prev)))
			b = append(b, c.prev...)
			for _, p := range c.prevPositions() {
				b = binary.AppendUvarint(b, p)
			}
		}
	}
	if c.mark != 0 {
		b = binary.AppendUvarint(b, c.mark)
	}
	return b
}

func (c Cursor) String() string {
	var s string
	if c.shards != "" {
		s = fmt.Sprintf("cursor(store %x, epoch %d, shards %v", c.store, c.epoch, c.Positions())
	} else {
		s = fmt.Sprintf("cursor(store %x, epoch %d, seq %d", c.store, c.epoch, c.seq)
	}
	if c.scope != "" {
		sum := sha256.Sum256([]byte(c.scope))
		s += fmt.Sprintf(", scope %x", sum[:8])
	}
	if c.trans != noTransition {
		s += fmt.Sprintf(", transition from %v", c.prevPositions())
	}
	if c.mark != 0 {
		s += fmt.Sprintf(", read since horizon %x", c.mark)
	}
	if c.slots != "" {
		s += fmt.Sprintf(", slots %x", c.slots)
	}
	return s + ")"
}

// ParseCursor decodes a cursor from Bytes. The empty byte string is the
// beginning of the log. A cursor that is not one this engine wrote
// (formats 1 to 6), or longer than MaxCursorBytes, wraps crdt.ErrInvalid.
// The trailing mark is optional: a cursor written without one (by an
// earlier version) parses with none.
//
// The cursor is taken as one this server made: a pull from it that finds
// it past the head, or another record at its position, starts a new epoch
// of every collection of the store (reset.go, wentBack). Bytes a client
// could have written are read with Unverified, as the transport reads
// every cursor whose tag does not verify.
func ParseCursor(b []byte) (Cursor, error) {
	if len(b) == 0 {
		return CursorAt(0), nil
	}
	bad := func(what string) (Cursor, error) {
		return Cursor{}, fmt.Errorf("%w: cursor: %s", crdt.ErrInvalid, what)
	}
	if len(b) > MaxCursorBytes {
		return bad("too long")
	}
	if b[0] < cursorFormat || b[0] > cursorFormatScoped+cursorStateSlots || len(b) < 9 {
		return bad("unknown format")
	}
	format, slots, state := b[0], false, false
	switch {
	case format > cursorFormatScoped+cursorSlots:
		format, slots, state = format-cursorStateSlots, true, true
	case format > cursorFormatScoped:
		format, slots = format-cursorSlots, true
	}
	var store [8]byte
	copy(store[:], b[1:9])
	rest := b[9:]
	epoch, n := binary.Uvarint(rest)
	if n <= 0 {
		return bad("epoch")
	}
	rest = rest[n:]
	shards, n := binary.Uvarint(rest)
	if n <= 0 || shards < 1 || shards > stores.MaxShards {
		return bad("shard count")
	}
	rest = rest[n:]
	positions := func() ([]uint64, bool) {
		pos := make([]uint64, shards)
		for i := range pos {
			if pos[i], n = binary.Uvarint(rest); n <= 0 {
				return nil, false
			}
			rest = rest[n:]
		}
		return pos, true
	}
	scopeBytes := func() (string, bool) {
		l, n := binary.Uvarint(rest)
		if n <= 0 || l > scope.MaxBytes || l > uint64(len(rest)-n) {
			return "", false
		}
		s := rest[n : n+int(l)]
		rest = rest[n+int(l):]
		if l == 0 {
			return "", true
		}
		if _, err := scope.Decode(s); err != nil {
			return "", false
		}
		return string(s), true
	}
	pos, ok := positions()
	if !ok {
		return bad("position")
	}
	c := cursorOf(store, epoch, pos)
	if slots {
		n := 2 * slotBytes * len(pos)
		if len(rest) < n {
			return bad("slot marks")
		}
		if c.slots, rest = string(rest[:n]), rest[n:]; packSlots(c.slotMarks()) == "" {
			return bad("slot marks, all unknown") // Bytes writes those as format 1 or 2
		}
		if c.stateSlots = state; state {
			marks, second := c.slotMarks()
			for i, m := range marks {
				if m == stateFlag || m&stateFlag != 0 && second[i] == 0 {
					return bad("state slot marks") // never written (slotScan.next)
				}
			}
		}
	}
	if format == cursorFormatScoped {
		if c.scope, ok = scopeBytes(); !ok {
			return bad("scope")
		}
		if len(rest) == 0 || rest[0] > byte(approxPrev) {
			return bad("transition")
		}
		c.trans, rest = transition(rest[0]), rest[1:]
		if c.trans != noTransition {
			if c.prev, ok = scopeBytes(); !ok {
				return bad("previous scope")
			}
			prev, ok := positions()
			if !ok {
				return bad("previous position")
			}
			c.prevPos = packPositions(prev)
		}
	}
	if len(rest) != 0 {
		mark, n := binary.Uvarint(rest)
		if n <= 0 || mark == 0 {
			return bad("mark")
		}
		c.mark, rest = mark, rest[n:]
	}
	if len(rest) != 0 {
		return bad("trailing bytes")
	}
	if c.IsStart() {
		return bad("an encoded start") // Bytes writes the start as empty
	}
	return c, nil
}
