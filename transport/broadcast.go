package transport

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/internal/bug"
	"github.com/convergo/convergo/transport/proto"
)

// Live subscriptions are entries in a broadcast group, not goroutines. A
// group serves every subscription of one collection and one effective
// read scope (groupKey) on one server. It holds one engine subscription
// (a callback: engine.SubscribeFunc) and, only while it has work, one
// goroutine, and one more for each catch-up read in flight (at most
// catchUpParallel).
//
// # Goroutines on demand
//
// A wake (a head announced while the group has members, a member that
// needs a read, a member ended from the group's side, the engine closing,
// a catch-up read ending while a member needs a read) starts the group's
// goroutine if none runs, and otherwise tells the running one to look
// again (again). The goroutine does rounds until a round finds no read to
// do or start, then decides under the group's lock, where every
// wake is taken, to exit: a wake before that decision makes it look again,
// one after it starts a new goroutine, so none is lost. An idle group, like
// an idle connection, holds no goroutine. A group left without members
// ends: removed from the hub (under the hub's lock, then the group's, so
// that join never finds an ended group) and its engine subscription
// closed, by the member's leave or by the goroutine.
//
// # Rounds
//
// The group works in rounds. A round takes every member that needs a read
// (it just joined, its last page said more, a head was announced since its
// last read, or room came back in its connection's queue) and has no read
// in flight, puts the members at the same cursor together, reads and
// encodes one page per cursor, and hands the same bytes to every member at
// that cursor. Caught-up subscribers all sit at the group's newest cursor,
// so a change costs one store read and one encoding however many of them
// there are; and the groups of one collection under other scopes, woken by
// the same write, share that store read in the engine (each judges it by
// its own scope), so a write costs a store read or two however many scopes
// read it. Heads announced during a round mark the members as needing a
// read, however many heads, and start the next round: pushes that land
// during a fan-out coalesce into its next page.
//
// # Catching up beside the broadcast
//
// A subscriber behind catches up from the log with reads of its own
// cursor, one page at a time, and joins the caught-up cursor when its
// reads reach it. Its reads must not hold back the caught-up subscribers:
// one client opening many sessions from the beginning of a large
// collection would delay every other subscriber of the group. So the
// group's goroutine reads, and waits for, only the cursors of members that
// have caught up (a page handed to them reached the head, and none since
// was parked or refused: member.live; a member at the same cursor shares
// their read). Every other cursor gets a catch-up read of its own, on a
// goroutine of its own, which the rounds do not wait for: its members sit
// out rounds until it ends, then need a read again if its page said more
// or a head came meanwhile, and the end wakes the group. At most
// catchUpParallel catch-up reads of a group are in flight, taken by the
// cursors that have waited longest, so readers behind take turns and leave
// the caught-up cursor a place among readParallel. A member that falls
// behind (its page parked, or refused the parking place or its
// connection's read turn) catches up that way too, so that no client's
// lag makes the group's goroutine wait. And at most catchUpsPerClient
// catch-up reads of one client are in flight across all groups: one
// subject's many sessions and subscriptions cannot take the store's
// reads (and the memory of their pages) from other tenants. The
// caught-up cursors of one client's groups, read by the groups'
// goroutines after a write, hold at most liveReadsPerClient pages at once
// across all groups, taking turns inside the engine's pull so that they
// still share its store read (liveTurns).
//
// # No gaps
//
// The group subscribes to the engine before its first read. A member is
// read for only by a read that began after the event that made it need a
// read (its join, or a head announced while it was a member), so every
// read it gets was started after the change it is owed committed, and
// includes it (sequence numbers become visible in order: package stores).
// A member has at most one read in flight, round's or catch-up's, and its
// cursor moves only to the Next of a page it was handed, by that read.
// The group has at most one goroutine doing rounds.
//
// # Slow consumers
//
// Handing a page to a member queues it on the member's connection without
// waiting (or, when the connection has nothing else to write, writes it
// with one write that does not wait: liveConn.writeDirect). When the
// queue has no room (Limits.SendQueue messages,
// Limits.MaxQueueBytes bytes), the page is parked on the connection, which
// holds at most one parked page: the member sits out rounds until the
// connection's writer moves the page into the queue, and a member parked
// for Limits.SlowConsumer is stopped with resync. A member that finds the
// connection's parking place taken by another subscription of it is not
// moved at all: its cursor stays, and it is read for again when the place
// frees. So a connection holds at most one page outside its queue.
//
// Resets (engine.ErrReset for a cursor) stop the members at that cursor
// with a reset message, any other read failure with resync; the engine
// closing stops every member with resync.

// groupKey names a broadcast group: a collection, the canonical encoding
// of the effective read scope of its members (scopes.go; "" for unscoped
// ones) and the schema version they read in. Members of one scope and
// version at one cursor share reads; members of different scopes or
// versions never share a page (the engine may share the store's read
// under them), so no member is handed a page read under another scope or
// translated to another version. The key is the whole encoding,
// not a digest of it: scopes whose digests collided would share pages.
type groupKey struct {
	collection string
	scope      string
	version    int
}

// hub holds a server's broadcast groups.
type hub struct {
	s           *Server
	mu          sync.Mutex
	groups      map[groupKey]*group
	afterRounds func(*group) // Config.afterRounds
	catchUps    clientReads  // catch-up reads in flight by client, across groups
	liveReads   liveTurns    // caught-up reads holding pages by client, across groups
}

func newHub(s *Server, afterRounds func(*group)) *hub {
	return &hub{s: s, groups: map[groupKey]*group{}, afterRounds: afterRounds,
		catchUps:  clientReads{n: map[string]int{}, waiting: map[string][]*group{}, queued: map[*group]map[string]bool{}},
		liveReads: liveTurns{n: map[string]int{}, waiting: map[string]*turnQueue{}}}
}

// liveReadsPerClient bounds the pages one client's caught-up cursors hold
// at once across every group of the server, read from the store or
// judged from a read they shared, with their encodings: the cursors a
// group's goroutine reads whose members all belong to one client (a
// subject, or an anonymous session's address). One subject's
// subscriptions under many scopes, or of many collections, make as many
// groups, and one write to them all would otherwise have each read,
// decode and encode a page at once. A cursor of several clients' members
// is no one client's and takes no turn, and a read shared by many
// groups (engine.WithReadTurn) is still shared: the groups woken by one
// write join it before they take their turns, and hold its page once
// while they wait.
const liveReadsPerClient = 4

// liveTurns counts each client's turns taken (liveReadsPerClient) and
// holds in order the pulls that wait for one, those that hold a shared
// page first: a turn given back goes to the one that waited longest among
// them, so that a shared page is judged and let go before another read
// begins, and else to the one that waited longest to begin a read. It is
// handed over under the lock where the pull waits, so none is lost. It
// takes no other lock: a group's goroutine takes and gives a turn without
// the group's lock, in the engine's pull and after it.
type liveTurns struct {
	mu      sync.Mutex
	n       map[string]int
	waiting map[string]*turnQueue
}

// turnQueue is the pulls of one client that wait for a turn.
type turnQueue struct {
	held, begin []chan struct{} // holding a shared page; to begin a read
}

// liveTurn is one caught-up read's turn among its client's.
type liveTurn struct {
	r      *liveTurns
	client string
	held   bool // written by take, read by give, both on the read's goroutine
}

// take takes t's turn, waiting for one given back while the client has
// none left, or returns ctx's error once it ends; page says whether the
// caller holds a shared page meanwhile. It returns nil at once once it
// has taken the turn (engine.WithReadTurn).
func (t *liveTurn) take(ctx context.Context, page bool) error {
	if t.held {
		return nil
	}
	r := t.r
	r.mu.Lock()
	if r.n[t.client] < liveReadsPerClient {
		r.n[t.client]++
		r.mu.Unlock()
		t.held = true
		return nil
	}
	q := r.waiting[t.client]
	if q == nil {
		q = &turnQueue{}
		r.waiting[t.client] = q
	}
	ch := make(chan struct{})
	if page {
		q.held = append(q.held, ch)
	} else {
		q.begin = append(q.begin, ch)
	}
	r.mu.Unlock()
	select {
	case <-ch:
		t.held = true
		return nil
	case <-ctx.Done():
	}
	r.mu.Lock()
	if q := r.waiting[t.client]; q != nil {
		w := &q.begin
		if page {
			w = &q.held
		}
		if i := slices.Index(*w, ch); i >= 0 {
			*w = slices.Delete(*w, i, i+1)
			if len(q.held)+len(q.begin) == 0 {
				delete(r.waiting, t.client)
			}
			r.mu.Unlock()
			return ctx.Err()
		}
	}
	r.mu.Unlock()
	// Given to it meanwhile: on to the next.
	t.held = true
	t.give()
	return ctx.Err()
}

// give gives back t's turn, if it took one, to the pull of its client
// whose turn is next, else to the count. t may be nil.
func (t *liveTurn) give() {
	if t == nil || !t.held {
		return
	}
	t.held = false
	r := t.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if q := r.waiting[t.client]; q != nil {
		w := &q.held
		if len(*w) == 0 {
			w = &q.begin
		}
		close((*w)[0])
		(*w)[0] = nil
		*w = (*w)[1:]
		if len(q.held)+len(q.begin) == 0 {
			delete(r.waiting, t.client)
		}
		return
	}
	if r.n[t.client]--; r.n[t.client] <= 0 {
		delete(r.n, t.client)
	}
}

// catchUpsPerClient bounds the catch-up reads in flight of one client
// (the key its subscriptions count under: its subject, or an anonymous
// session's address) across every group of the server. A group bounds
// its own reads (readParallel), and a connection its reads for one
// subscription alone (its read turn), but a client holds many of both:
// without this bound one subject's sessions, each catching up on
// collections of its own (or the same ones under scopes of its own),
// would have as many store reads in flight, and as many pages in memory,
// as it has sessions and subscriptions, where the broadcast costs others
// one read a write. A read shared by the members of several clients is
// no one client's, and is not counted.
const catchUpsPerClient = 4

// clientReads counts each client's catch-up reads, in flight or granted
// to a group that waited for one, and holds in order the groups that
// found none left. A read given back goes to the group that waited
// longest (hub.handOff), which uses it in its next round or gives it back
// in turn, so that a read ending wakes one group, not every group of the
// client. Its lock is taken under a group's, never the other way round.
type clientReads struct {
	mu      sync.Mutex
	n       map[string]int
	waiting map[string][]*group
	queued  map[*group]map[string]bool // who is in waiting, for whom
}

// take takes a catch-up read of client for g, or has g wait for one and
// reports false.
func (r *clientReads) take(client string, g *group) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n[client] < catchUpsPerClient {
		r.n[client]++
		return true
	}
	if !r.queued[g][client] {
		if r.queued[g] == nil {
			r.queued[g] = map[string]bool{}
		}
		r.queued[g][client] = true
		r.waiting[client] = append(r.waiting[client], g)
	}
	return false
}

// give gives back a catch-up read of client: it returns the group that
// waited longest for one, which the read now belongs to, or nil when none
// waits and the read is given back to the count.
func (r *clientReads) give(client string) *group {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w := r.waiting[client]; len(w) > 0 {
		g := w[0]
		w[0] = nil
		if w = w[1:]; len(w) == 0 {
			delete(r.waiting, client)
		} else {
			r.waiting[client] = w
		}
		if delete(r.queued[g], client); len(r.queued[g]) == 0 {
			delete(r.queued, g)
		}
		return g
	}
	if r.n[client]--; r.n[client] <= 0 {
		delete(r.n, client)
	}
	return nil
}

// handOff gives back a catch-up read of each client in clients (one each
// time it is named): to the group that waited longest for one, woken to
// use it in its next round (group.granted), else to the count. The
// caller holds no group's lock.
func (h *hub) handOff(clients []string) {
	for _, client := range clients {
		for {
			g := h.catchUps.give(client)
			if g == nil {
				break
			}
			g.mu.Lock()
			if !g.closed {
				if g.granted == nil {
					g.granted = map[string]int{}
				}
				g.granted[client]++
				g.wakeLocked()
				g.mu.Unlock()
				break
			}
			g.mu.Unlock() // ended meanwhile: the next one
		}
	}
}

// takeGrantedLocked takes back the reads granted to g and not used: the
// caller hands them off (hub.handOff).
func (g *group) takeGrantedLocked() []string {
	var back []string
	for client, n := range g.granted {
		for range n {
			back = append(back, client)
		}
	}
	clear(g.granted)
	return back
}

// group is the broadcast group of one key.
type group struct {
	h     *hub
	key   groupKey
	scope *scope.Pred          // the members' effective read scope; nil: unscoped
	es    *engine.Subscription // set by join under the hub's lock

	mu          sync.Mutex // guards the fields below and members' fields
	members     map[*member]struct{}
	running     bool   // the group's goroutine runs
	again       bool   // a wake came while it ran: it looks again before it exits
	engineEnded bool   // the engine closed: every member is stopped
	closed      bool   // the group ended: out of the hub, no goroutine starts
	catching    int    // catch-up reads in flight
	reads       uint64 // catch-up reads started: members' queued
	// granted counts the catch-up reads of clients given to the group
	// (hub.handOff) for its next round: a round uses them or gives them
	// back, and so does the group's end.
	granted map[string]int
}

// member is one live subscription: an entry of a group.
type member struct {
	c       *liveConn
	g       *group
	coll    string
	scope   *scope.Pred  // effective read scope
	version int          // the schema version it reads in
	lease   engine.Lease // the replica and pending floor of the sub; the cursor is cursor's
	held    string       // its key in Server.subscriptions, released when it leaves c.subs
	// stopped is set by unsub, resync and reset: the connection's writer
	// drops the pages of a stopped member still in the queue, so none
	// follows its unsub, resync or reset.
	stopped atomic.Bool

	// guarded by g.mu
	cursor  engine.Cursor
	first   bool // the next page is sent even when empty: the client is caught up
	dirty   bool // needs a read
	parked  bool // its page waits in the connection's parking place
	blocked bool // refused the parking place: waits for the connection to wake it
	slow    *time.Timer
	removed bool
	live    bool   // caught up, and no page parked or refused since: the group's goroutine reads for it
	reading bool   // a catch-up read for it is in flight
	queued  uint64 // the group's reads when it joined or its last catch-up read started
}

// readParallel bounds a group's reads in flight: the caught-up cursor plus
// catch-up reads, which take at most catchUpParallel of them, so that the
// caught-up subscribers always have one.
const (
	readParallel    = 4
	catchUpParallel = readParallel - 1
)

// join adds m, a new subscription of m.c, to the group of its collection.
// Its first page comes in the group's next round. m.c must hold m among
// its subscriptions before, since the group may end it at once (owe).
func (h *hub) join(m *member) error {
	key := groupKey{collection: m.coll, scope: m.scope.Key(), version: m.version}
	h.mu.Lock()
	defer h.mu.Unlock()
	g := h.groups[key] // a group in the hub has not ended (end)
	if g == nil {
		g = &group{h: h, key: key, scope: m.scope, members: map[*member]struct{}{}}
		// Subscribed before the first read (no gaps).
		es, err := h.s.eng.SubscribeFunc(m.coll, g.announced)
		if err != nil {
			return err
		}
		g.es = es
		h.groups[key] = g
	}
	m.g = g
	g.mu.Lock()
	m.queued = g.reads
	g.members[m] = struct{}{}
	g.wakeLocked()
	g.mu.Unlock()
	return nil
}

// announced is the group's engine subscription callback: a new head (or
// one that went back) makes every member need a read; the engine closing
// stops them all. It does not block.
func (g *group) announced(_ uint64, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return // a call under way when the group ended
	}
	if !ok {
		g.engineEnded = true
	}
	if len(g.members) == 0 {
		return // whoever removed the last member ends the group
	}
	for m := range g.members {
		m.dirty = true
	}
	g.wakeLocked()
}

// wakeLocked makes the group's goroutine run: it starts one if none runs,
// or makes the running one look again before it exits. An ended group
// starts none, so none starts after the server's last session ended and
// its groups with it (Shutdown waits for s.bg after them).
func (g *group) wakeLocked() {
	switch {
	case g.closed:
	case g.running:
		g.again = true
	default:
		g.running = true
		g.h.s.bg.Add(1)
		go g.run()
	}
}

// newMember makes a subscription of coll from cursor under the effective
// read scope sc in schema version version on c, not yet in a group
// (hub.join).
func newMember(c *liveConn, coll string, cursor engine.Cursor, sc *scope.Pred, version int) *member {
	return &member{c: c, coll: coll, scope: sc, version: version, cursor: cursor, first: true, dirty: true}
}

// leave removes m (unsub, or its connection ended). No page is handed to
// it after leave returns.
func (m *member) leave() {
	m.stopped.Store(true)
	g := m.g
	if g == nil {
		return // never joined
	}
	g.mu.Lock()
	g.removeLocked(m)
	empty := len(g.members) == 0
	g.mu.Unlock()
	if empty {
		g.end() // here, not in a goroutine: a session's end starts none
	}
}

func (g *group) removeLocked(m *member) {
	if m.removed {
		return
	}
	m.removed = true
	delete(g.members, m)
	if m.slow != nil {
		m.slow.Stop()
	}
	if m.parked {
		m.parked = false
		m.c.unpark(m)
	}
}

// endLocked stops m from the group's side: resync, or with reset a reset
// message. The caller is the group's goroutine or wakes it: a group left
// empty ends.
func (g *group) endLocked(m *member, reset *proto.ResetInfo) {
	m.stopped.Store(true)
	g.removeLocked(m)
	m.c.owe(m, reset)
}

// run is the group's goroutine (wakeLocked): rounds until no member needs
// a read and no wake came meanwhile; then it exits, ending the group if it
// has no members.
func (g *group) run() {
	defer g.h.s.bg.Done()
	for {
		g.mu.Lock()
		g.again = false
		if g.engineEnded {
			for m := range g.members {
				g.endLocked(m, nil)
			}
		}
		g.mu.Unlock()
		for g.round() {
		}
		if g.h.afterRounds != nil {
			g.h.afterRounds(g)
		}
		g.mu.Lock()
		switch {
		case g.again: // a wake during the rounds
			g.mu.Unlock()
			continue
		case g.closed || len(g.members) > 0:
			// Idle, or ended by a leave. A wake from now on starts a
			// new goroutine.
			g.running = false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		if g.end() {
			return
		}
		// A member joined meanwhile (and found the goroutine running).
	}
}

// end ends the group if it has no members, and reports whether the group
// has ended (by this call or before).
func (g *group) end() bool {
	g.h.mu.Lock()
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		g.h.mu.Unlock()
		return true
	}
	if len(g.members) > 0 {
		g.mu.Unlock()
		g.h.mu.Unlock()
		return false
	}
	g.closed = true
	g.running = false
	if g.h.groups[g.key] == g {
		delete(g.h.groups, g.key)
	}
	back := g.takeGrantedLocked() // granted since its last round
	g.mu.Unlock()
	g.h.mu.Unlock()
	g.h.handOff(back)
	g.es.Close() // not under g.mu: announced takes it
	return true
}

// cursorSet is the members of a group at one cursor.
type cursorSet struct {
	cursor  engine.Cursor
	members []*member
	turn    bool   // its one member holds its connection's read turn
	live    bool   // a member has caught up: the group's goroutine reads for it
	waited  uint64 // the least of its members' queued: catch-up sets go oldest first
	catchUp bool   // read by a goroutine of its own (catchUp), not the group's
	client  string // its members' one client, "" if several: whose catch-up read it is (catchUpsPerClient)
	charged bool   // its catch-up read is counted among its client's
}

// round reads once per cursor of the members that need a read and hands
// each page to the members at its cursor. The cursors with a caught-up
// member are read by the group's goroutine, which waits for them; the
// others start catch-up reads of their own, as many as there are places
// for (catchUpParallel), oldest waiting first, and the round does not
// wait for them. It reports whether it read or started anything.
func (g *group) round() bool {
	g.mu.Lock()
	var sets []*cursorSet
	at := map[engine.Cursor]*cursorSet{}
	for m := range g.members {
		if !m.dirty || m.parked || m.blocked || m.reading {
			continue
		}
		b := at[m.cursor]
		if b == nil {
			b = &cursorSet{cursor: m.cursor, waited: m.queued, client: m.held}
			at[m.cursor] = b
			sets = append(sets, b)
		}
		if b.client != m.held {
			b.client = ""
		}
		b.members = append(b.members, m)
		b.live = b.live || m.live
		b.waited = min(b.waited, m.queued)
	}
	var live, started []*cursorSet
	var back []string // catch-up reads of clients given back
	slices.SortFunc(sets, func(a, b *cursorSet) int { return cmp.Compare(a.waited, b.waited) })
	for _, b := range sets {
		switch {
		case b.live:
			if g.claimLocked(b) {
				live = append(live, b)
			}
		case g.catching < catchUpParallel:
			if b.client != "" {
				switch {
				case g.granted[b.client] > 0:
					g.granted[b.client]--
				case !g.h.catchUps.take(b.client, g):
					continue // granted one when one of the client's ends
				}
				b.charged = true
			}
			if !g.claimLocked(b) {
				if b.charged {
					b.charged = false
					back = append(back, b.client)
				}
			} else {
				b.catchUp = true
				for _, m := range b.members {
					m.reading = true
					m.queued = g.reads
				}
				g.reads++
				g.catching++
				started = append(started, b)
			}
		}
		// Otherwise it needs a read still: the end of a catch-up read
		// wakes the group.
	}
	for _, b := range started {
		g.h.s.bg.Add(1) // the group's goroutine, counted in bg, runs
		go g.catchUp(b)
	}
	places := readParallel - g.catching // at least 1: catchUpParallel < readParallel
	back = append(back, g.takeGrantedLocked()...)
	g.mu.Unlock()
	g.h.handOff(back)
	switch {
	case len(live) == 0:
	case len(live) == 1:
		g.serve(live[0])
	default:
		// The most populated cursor (the caught-up subscribers) first.
		slices.SortFunc(live, func(a, b *cursorSet) int { return cmp.Compare(len(b.members), len(a.members)) })
		sem := make(chan struct{}, places)
		var wg sync.WaitGroup
		for _, b := range live {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				g.serve(b)
			})
		}
		wg.Wait()
	}
	return len(live) > 0 || len(started) > 0
}

// claimLocked takes b's members' read: they need no read until its page.
// A page read for one member alone is that connection's: a connection has
// at most one such read in flight, and none while a page of it is parked
// (see liveConn.takeTurn); a member refused the turn waits to be woken,
// and claimLocked reports false.
func (g *group) claimLocked(b *cursorSet) bool {
	if len(b.members) == 1 {
		m := b.members[0]
		if !m.c.takeTurn(m) {
			m.blocked = true
			m.live = false // left behind the broadcast while it waits
			return false
		}
		b.turn = true
	}
	for _, m := range b.members {
		m.dirty = false
	}
	return true
}

// catchUp is the goroutine of a catch-up read (round).
func (g *group) catchUp(b *cursorSet) {
	defer g.h.s.bg.Done()
	g.serve(b)
}

// caughtUpLocked ends b's catch-up read: its members may be read for
// again, and a place for another catch-up read is free, in the group and
// among its client's. It returns the client's read to hand off
// (hub.handOff), if b's read was one.
func (g *group) caughtUpLocked(b *cursorSet) []string {
	g.catching--
	for _, m := range b.members {
		m.reading = false
	}
	var back []string
	if b.charged {
		b.charged = false
		back = []string{b.client}
	}
	for m := range g.members {
		if m.dirty && !m.parked && !m.blocked && !m.reading {
			g.wakeLocked()
			break
		}
	}
	return back
}

// serve reads the page after b's cursor once and hands it to b's members.
func (g *group) serve(b *cursorSet) {
	s := g.h.s
	var turn *liveTurn
	if b.live && b.client != "" {
		// The caught-up cursor of one client's members alone: its read
		// takes one of the client's turns (liveReadsPerClient).
		turn = &liveTurn{r: &g.h.liveReads, client: b.client}
	}
	page, data, err := s.readPage(g.key.collection, b.cursor, g.scope, g.key.version, turn)
	// Pages offered for a direct write are written once the group is
	// unlocked (offerDirect), in the order offered.
	var direct []frame
	var back []string // the catch-up read of b's client, to hand off
	defer func() {
		turn.give() // the page handed out
		g.h.handOff(back)
		for _, f := range direct {
			f.sub.c.writeDirect(f)
		}
	}()
	g.mu.Lock()
	defer g.mu.Unlock()
	if b.catchUp {
		defer func() { back = g.caughtUpLocked(b) }() // after the members' cursors moved
	}
	if b.turn {
		defer b.members[0].c.endTurn()
	}
	if err != nil {
		reset := resetOf(err)
		switch {
		case errors.Is(err, bug.ErrPanic):
			s.log.Error("live pull failed (a bug): resync", "collection", g.key.collection, "err", err)
		case reset == nil:
			s.log.Warn("live pull failed: resync", "collection", g.key.collection, "err", err)
		}
		for _, m := range b.members {
			if !m.removed {
				g.endLocked(m, reset) // a reset: the cursor is of another history
			}
		}
		return
	}
	for _, m := range b.members {
		if m.removed {
			continue
		}
		if len(page.Records) == 0 && len(page.Leaves) == 0 && !m.first {
			// Nothing to tell. A scope change (a transition) may still have
			// moved the cursor over entries the reader need not hear of:
			// follow it, and tell the client the cursor when its reads end.
			if page.Next == b.cursor {
				m.live = m.live || !page.More
				continue
			}
			m.cursor = page.Next
			if page.More {
				m.dirty = true
				continue
			}
		}
		f := frame{data: data, sub: m, recs: len(page.Records)}
		// live: at the head when read (or caught up before: a burst longer
		// than a page keeps the broadcast), with the page on its way. A
		// page parked or refused leaves the member behind the broadcast
		// until it catches up again.
		live := m.live || !page.More
		switch m.c.offer(m, f) {
		case offerDirect:
			direct = append(direct, f)
		case offerQueued:
		case offerParked:
			m.parked = true
			m.slow = time.AfterFunc(s.limits.SlowConsumer, func() { g.slowConsumer(m) })
			live = false
		case offerBusy: // not handed: read again when the connection wakes it
			m.dirty = true
			m.blocked = true
			m.live = false
			continue
		}
		m.first = false
		m.cursor = page.Next
		m.live = live
		if page.More {
			m.dirty = true
		}
	}
}

// slowConsumer stops m if its page is still parked: its client does not
// read fast enough.
func (g *group) slowConsumer(m *member) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if m.removed || !m.parked || !m.c.unpark(m) {
		return // the page went into the queue meanwhile
	}
	m.parked = false
	if m.c.ctx.Err() == nil {
		g.h.s.log.Info("slow live consumer: resync", "addr", m.c.addr)
	}
	g.endLocked(m, nil)
	if len(g.members) == 0 {
		g.wakeLocked() // to end the group
	}
}

// unparked is called by m's connection once m's parked page is in the
// queue (or m may try again): m takes part in rounds again.
func (m *member) unparked(wasParked bool) {
	g := m.g
	g.mu.Lock()
	if m.removed {
		g.mu.Unlock()
		return
	}
	if wasParked {
		m.parked = false
		if m.slow != nil {
			m.slow.Stop()
		}
	} else {
		m.blocked = false
	}
	if m.dirty {
		g.wakeLocked()
	}
	g.mu.Unlock()
}
