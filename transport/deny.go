package transport

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/internal/bug"
	"github.com/convergo/convergo/transport/proto"
)

// The deny list ends access before a token expires (docs/protocol.md,
// section 12): the records of proto.DenyCollection in the store, one per
// denied subject ("sub:<subject>") or token id ("jti:<token id>"), with
// the fields until (ms since the Unix epoch; absent: for ever), reason
// and by. The store is the one place it lives, so every server instance
// on the store sees the same list: each follows the collection from the
// beginning into memory (a subscribe-then-pull loop, read again from the
// beginning after a reset), and authentication checks a verified
// principal against it. A subject or token id that becomes denied has its
// open live sessions ended with revoked.
//
// Until the list's first full read, authentication waits (DenyWait) and
// then answers unavailable: a server that cannot read the list does not
// serve as if it were empty.

// DenyWait is how long a request waits for the deny list's first read
// before it is answered unavailable.
const DenyWait = 5 * time.Second

// Deny record fields and id prefixes.
const (
	DenyFieldUntil  = "until"
	DenyFieldReason = "reason"
	DenyFieldBy     = "by"
	DenySubject     = "sub:"
	DenyTokenID     = "jti:"
)

// denyRetry is the pause before the follower reads again after a failure.
const denyRetry = time.Second

// denyList is a server's copy of the deny list.
type denyList struct {
	mu     sync.RWMutex
	until  map[string]int64 // record id → until, ms; 0: for ever
	loaded chan struct{}    // closed after the first full read
	once   sync.Once
}

func newDenyList() *denyList {
	return &denyList{until: map[string]int64{}, loaded: make(chan struct{})}
}

// deniedAt reports whether p is denied at now (ms), and by which record.
func (d *denyList) deniedAt(p Principal, now int64) (string, bool) {
	if p.Subject == "" && p.TokenID == "" {
		return "", false // the anonymous demo principal
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	for _, id := range denyIDs(p) {
		if u, ok := d.until[id]; ok && (u == 0 || now < u) {
			return id, true
		}
	}
	return "", false
}

// denyIDs returns the deny record ids that name p.
func denyIDs(p Principal) []string {
	var ids []string
	if p.Subject != "" {
		ids = append(ids, DenySubject+p.Subject)
	}
	if p.TokenID != "" {
		ids = append(ids, DenyTokenID+p.TokenID)
	}
	return ids
}

// apply takes the records of a page of the deny list and reports whether
// an entry was added or extended (live sessions are then checked).
func (d *denyList) apply(entries []engine.Entry) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	added := false
	for _, e := range entries {
		r := e.Record
		if !r.Exists() {
			delete(d.until, r.ID)
			continue
		}
		until := denyUntil(r)
		if old, ok := d.until[r.ID]; !ok || old != until {
			added = true
		}
		d.until[r.ID] = until
	}
	return added
}

// denyUntil is the until of deny record r, ms; 0 for ever, which is also
// what an unreadable or negative one means: the list fails closed.
func denyUntil(r crdt.Record) int64 {
	var until int64
	if f := r.Fields[DenyFieldUntil]; f.Value != nil {
		if err := crdt.DecodeValue(f.Value, &until); err != nil || until < 0 {
			return 0
		}
	}
	return until
}

// replace makes entries, the whole list read again from its beginning,
// the list, at once, and reports whether an entry was added or its until
// changed, extended or shortened (live sessions are then checked).
func (d *denyList) replace(entries []engine.Entry) bool {
	fresh := &denyList{until: map[string]int64{}}
	fresh.apply(entries)
	d.mu.Lock()
	defer d.mu.Unlock()
	changed := false
	for id, until := range fresh.until {
		if old, ok := d.until[id]; !ok || old != until {
			changed = true
		}
	}
	d.until = fresh.until
	return changed
}

func (d *denyList) markLoaded() { d.once.Do(func() { close(d.loaded) }) }

// followDenyList keeps s.deny up to date with eng's deny collection until
// ctx is done or the engine closes.
func (s *Server) followDenyList(ctx context.Context, eng *engine.Engine) {
	var cur engine.Cursor
	again := false // the list is read again from its beginning
	for ctx.Err() == nil {
		// A bug (a panic) met reading the list fails that reading as a
		// store error does, on this goroutine no one else recovers: the
		// list held stands, and it is read again.
		err := bug.Recovered(func() error { return s.readDenyList(ctx, eng, &cur, &again) })
		switch {
		case ctx.Err() != nil, errors.Is(err, engine.ErrClosed):
			return
		case errors.Is(err, engine.ErrReset):
			// The list held stands until the new reading is whole: an
			// emptied list would let in whom it denies (it fails closed).
			s.log.Info("deny list: the store's history changed; reading it again", "err", err)
			cur, again = engine.Cursor{}, true
			continue
		case errors.Is(err, bug.ErrPanic):
			s.log.Error("deny list: read failed (a bug); retrying", "err", err)
		default:
			s.log.Warn("deny list: read failed; retrying", "err", err)
		}
		t := time.NewTimer(denyRetry)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// readDenyList subscribes, then pulls after *cur whenever the collection
// advances, until an error. With *again, the first reading, from the
// beginning, replaces the list once whole (an error before then leaves
// *cur and *again as they were: the next call reads from the beginning
// again); then *again is false.
func (s *Server) readDenyList(ctx context.Context, eng *engine.Engine, cur *engine.Cursor, again *bool) error {
	sub, err := eng.Subscribe(proto.DenyCollection)
	if err != nil {
		return err
	}
	defer sub.Close()
	select {
	case _, ok := <-sub.C():
		if !ok {
			return engine.ErrClosed // the engine closed
		}
	default:
	}
	for {
		next := *cur
		var whole []engine.Entry // read again: the list, once whole
		for more := true; more; {
			page, err := eng.Pull(ctx, proto.DenyCollection, next, engine.PageLimit{})
			if err != nil {
				return err
			}
			if *again {
				whole = append(whole, page.Entries...)
			} else {
				if s.deny.apply(page.Entries) {
					s.revokeLive()
				}
				*cur = page.Next
			}
			next, more = page.Next, page.More
		}
		if *again {
			if s.deny.replace(whole) {
				s.revokeLive()
			}
			*cur, *again = next, false
		}
		s.deny.markLoaded()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case _, ok := <-sub.C():
			if !ok {
				return engine.ErrClosed
			}
		}
	}
}

// checkDenied answers revoked for a denied principal, and unavailable
// while the deny list has not been read yet.
func (s *Server) checkDenied(ctx context.Context, p Principal) error {
	if p.Subject == "" && p.TokenID == "" {
		return nil
	}
	select {
	case <-s.deny.loaded:
	default:
		t := time.NewTimer(DenyWait)
		defer t.Stop()
		select {
		case <-s.deny.loaded:
		case <-ctx.Done():
			return proto.Errorf(proto.CodeUnavailable, "request cancelled")
		case <-t.C:
			return &proto.Error{Status: http.StatusServiceUnavailable, Code: proto.CodeUnavailable,
				Message: "the server cannot read its deny list yet; retry later", RetryAfter: time.Second}
		}
	}
	return s.deniedNow(p)
}

// deniedNow returns revoked if the deny list, as this server holds it now,
// names p; nil if it does not. It does not wait for the list's first read
// (checkDenied does, before it).
func (s *Server) deniedNow(p Principal) error {
	if id, denied := s.deny.deniedAt(p, s.now().UnixMilli()); denied {
		what := "this subject's"
		if strings.HasPrefix(id, DenyTokenID) {
			what = "this token's"
		}
		return proto.Errorf(proto.CodeRevoked, "%s access to this server was revoked", what)
	}
	return nil
}

// revokeLive ends the live sessions of principals that are now denied.
func (s *Server) revokeLive() {
	s.mu.Lock()
	conns := make([]*liveConn, 0, len(s.live))
	for c := range s.live {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	now := s.now().UnixMilli()
	for _, c := range conns {
		p, ok := c.principal()
		if !ok {
			continue
		}
		if _, denied := s.deny.deniedAt(p, now); denied {
			s.log.Info("live session revoked", "addr", c.addr, "request", c.id, "subject", p.Subject)
			c.fatal(ws.StatusPolicyViolation, errSessionRevoked())
		}
	}
}

// DenyEntry is one record of the deny list.
type DenyEntry struct {
	// ID is the record id: DenySubject or DenyTokenID and the name.
	ID string
	// Until is when the entry stops denying; zero for never.
	Until time.Time
	// Reason and By say why and who, for people.
	Reason, By string
}

// Deny writes e to the deny list of eng's store: every server on the
// store refuses the principal it names from then on (until e.Until).
// Like Allow it is stamped after the entry's last write, whichever
// instance made it, and refused while eng's clock is off its store's
// (engine.OwnStamp): a deny stamped a year ahead could not be undone for a
// year.
func Deny(ctx context.Context, eng *engine.Engine, e DenyEntry) error {
	if err := checkDenyID("deny", e.ID); err != nil {
		return err
	}
	st, err := eng.OwnStamp(ctx, proto.DenyCollection, e.ID)
	if err != nil {
		return fmt.Errorf("deny %s: %w", e.ID, err)
	}
	values := map[string]any{DenyFieldReason: e.Reason, DenyFieldBy: e.By}
	if !e.Until.IsZero() {
		values[DenyFieldUntil] = e.Until.UnixMilli()
	}
	rec := crdt.Record{ID: e.ID, Fields: map[string]crdt.Field{}}
	for name, v := range values {
		b, err := crdt.EncodeValue(v)
		if err != nil {
			return fmt.Errorf("deny %s: %w", e.ID, err)
		}
		rec.Fields[name] = crdt.Field{Stamp: st, Value: b}
	}
	if e.Until.IsZero() { // a denial for ever replaces an earlier one with an end
		rec.Fields[DenyFieldUntil] = crdt.Field{Stamp: st}
	}
	return applyOne(ctx, eng, crdt.Change{Collection: proto.DenyCollection, Record: rec})
}

// Allow deletes the deny list's record id (DenySubject or DenyTokenID and
// the name).
func Allow(ctx context.Context, eng *engine.Engine, id string) error {
	if err := checkDenyID("allow", id); err != nil {
		return err
	}
	st, err := eng.OwnStamp(ctx, proto.DenyCollection, id)
	if err != nil {
		return fmt.Errorf("allow %s: %w", id, err)
	}
	return applyOne(ctx, eng, crdt.Change{Collection: proto.DenyCollection, Record: crdt.DeleteRecord(id, st)})
}

// checkDenyID refuses an id that names no subject or token id.
func checkDenyID(op, id string) error {
	for _, prefix := range []string{DenySubject, DenyTokenID} {
		if len(id) > len(prefix) && strings.HasPrefix(id, prefix) {
			return nil
		}
	}
	return fmt.Errorf("%s %q: the id is %s<subject> or %s<token id>", op, id, DenySubject, DenyTokenID)
}

func applyOne(ctx context.Context, eng *engine.Engine, c crdt.Change) error {
	res, err := eng.Apply(ctx, []crdt.Change{c})
	if err != nil {
		return fmt.Errorf("deny list %s: %w", c.Record.ID, err)
	}
	if res[0].Err != nil {
		return fmt.Errorf("deny list %s: %w", c.Record.ID, res[0].Err)
	}
	return nil
}

// DenyEntries reads the deny list of eng's store: every entry, expired
// ones included.
func DenyEntries(ctx context.Context, eng *engine.Engine) ([]DenyEntry, error) {
	var out []DenyEntry
	var cur engine.Cursor
	for more := true; more; {
		page, err := eng.Pull(ctx, proto.DenyCollection, cur, engine.PageLimit{})
		if err != nil {
			return nil, fmt.Errorf("read the deny list: %w", err)
		}
		for _, en := range page.Entries {
			if !en.Record.Exists() {
				continue
			}
			e := DenyEntry{ID: en.Record.ID}
			var text string
			if f := en.Record.Fields[DenyFieldReason]; f.Value != nil && crdt.DecodeValue(f.Value, &text) == nil {
				e.Reason = text
			}
			text = ""
			if f := en.Record.Fields[DenyFieldBy]; f.Value != nil && crdt.DecodeValue(f.Value, &text) == nil {
				e.By = text
			}
			if ms := denyUntil(en.Record); ms > 0 {
				e.Until = time.UnixMilli(ms)
			}
			out = append(out, e)
		}
		cur, more = page.Next, page.More
	}
	return out, nil
}
