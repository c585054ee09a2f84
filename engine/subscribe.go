package engine

import (
	"context"
	"sync"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// Subscription delivers a collection's newest sequence number whenever it
// advances, on a channel (Subscribe) or to a callback (SubscribeFunc). Its
// channel holds one value; a newer head replaces one not yet received, so
// receiving never lags by more than one value and the engine never blocks
// on a slow subscriber.
type Subscription struct {
	e          *Engine
	collection string
	c          chan uint64                // Subscribe's; nil for SubscribeFunc
	fn         func(head uint64, ok bool) // SubscribeFunc's
	mu         sync.Mutex
	last       uint64
	closed     bool
}

// Subscribe subscribes to collection. The subscription starts with no value;
// callers pull from their cursor first, then on every value received.
func (e *Engine) Subscribe(collection string) (*Subscription, error) {
	return e.subscribe(&Subscription{e: e, collection: collection, c: make(chan uint64, 1)})
}

// SubscribeFunc subscribes to collection with a callback instead of a
// channel, so that a subscriber holds no goroutine while nothing happens:
// fn(head, true) is called whenever the collection's head advances (or goes
// back after a reset, as on Subscribe's channel), and fn(0, false) once when
// the engine closes (before SubscribeFunc returns if it is closed already),
// but not when the subscription is closed with Close.
//
// fn is called outside the subscription's lock, from the engine's
// goroutines or a pusher's, possibly from several at once: it must not
// block, and the head it is told may be older than one it was told before.
// A call that began before Close returned may still be under way after it.
func (e *Engine) SubscribeFunc(collection string, fn func(head uint64, ok bool)) (*Subscription, error) {
	return e.subscribe(&Subscription{e: e, collection: collection, fn: fn})
}

func (e *Engine) subscribe(s *Subscription) (*Subscription, error) {
	if err := crdt.ValidateCollection(s.collection); err != nil {
		return nil, err
	}
	e.subsMu.Lock()
	select {
	case <-e.closedCh:
		e.subsMu.Unlock()
		s.end(true)
		return s, nil
	default:
	}
	set := e.subs[s.collection]
	if set == nil {
		set = map[*Subscription]struct{}{}
		e.subs[s.collection] = set
	}
	set[s] = struct{}{}
	e.subsMu.Unlock()
	return s, nil
}

// C returns the channel of new heads. It is closed when the subscription or
// the engine closes. It is nil for a subscription made with SubscribeFunc.
func (s *Subscription) C() <-chan uint64 { return s.c }

// Collection returns the subscribed collection.
func (s *Subscription) Collection() string { return s.collection }

// Close ends the subscription.
func (s *Subscription) Close() {
	s.e.subsMu.Lock()
	if set := s.e.subs[s.collection]; set != nil {
		delete(set, s)
		if len(set) == 0 {
			delete(s.e.subs, s.collection)
		}
	}
	s.e.subsMu.Unlock()
	s.end(false)
}

// end closes the subscription, once; byEngine tells a SubscribeFunc
// callback that the engine closed. It is called without the engine's
// subsMu, since the callback is.
func (s *Subscription) end(byEngine bool) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	if s.c != nil {
		close(s.c)
	}
	s.mu.Unlock()
	if byEngine && s.fn != nil {
		s.fn(0, false)
	}
}

// offer delivers seq if it is newer than what the subscriber last got,
// replacing an undelivered older value; with rewind it delivers seq even
// if it is not (rewindSubscribers).
func (s *Subscription) offer(seq uint64, rewind bool) {
	s.mu.Lock()
	if s.closed || (seq <= s.last && !rewind) {
		s.mu.Unlock()
		return
	}
	s.last = seq
	if s.fn != nil {
		s.mu.Unlock()
		s.fn(seq, true)
		return
	}
	select {
	case <-s.c: // drop the older undelivered head
	default:
	}
	s.c <- seq
	s.mu.Unlock()
}

// notify is the store's Watch callback; it must not block.
func (e *Engine) notify(n stores.Notification) {
	if n.Resync {
		select {
		case e.resync <- struct{}{}:
		default:
		}
		return
	}
	if n.Shards > 1 {
		// A shard's head: subscribers get the sum of the highest head
		// seen of every shard, which grows whenever one does.
		e.publish(n.Collection, e.hist.noteShardHeads(n.Collection, n.Shards, map[int]uint64{n.Shard: n.Seq}, false))
		return
	}
	e.publish(n.Collection, n.Seq)
}

func (e *Engine) publish(collection string, seq uint64) {
	e.subsMu.Lock()
	set := e.subs[collection]
	subs := make([]*Subscription, 0, len(set))
	for s := range set {
		subs = append(subs, s)
	}
	e.subsMu.Unlock()
	for _, s := range subs {
		s.offer(seq, false)
	}
}

// watchLoop reads the heads of subscribed collections after a Resync and
// every PollInterval.
func (e *Engine) watchLoop(ctx context.Context) {
	defer e.wg.Done()
	var tick <-chan time.Time
	if e.poll > 0 {
		t := time.NewTicker(e.poll)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.resync:
		case <-tick:
		}
		e.subsMu.Lock()
		colls := make([]string, 0, len(e.subs))
		for c := range e.subs {
			colls = append(colls, c)
		}
		e.subsMu.Unlock()
		for _, c := range colls {
			hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			h, err := e.readHead(hctx, c) // notes a head that went back
			var tag [8]byte
			var m stores.Meta
			if err == nil {
				tag, m, err = e.view(hctx, c, false)
			}
			cancel()
			if err != nil {
				if ctx.Err() == nil {
					e.log.Warn("read head for subscribers", "collection", c, "err", err)
				}
				continue
			}
			if e.served.changed(c, served{tag, m.Epoch}) {
				// Pages were served in another history (a store restored
				// from an older state may have its head at or above where
				// it was): every subscriber pulls, and is reset.
				e.rewindSubscribers(c, h)
				continue
			}
			e.publish(c, h)
		}
	}
}

// served is the history (store tag and epoch) pages of a collection were
// served in.
type served struct {
	tag   [8]byte
	epoch uint64
}

// servedHistories remembers, per collection, the histories pages Pull
// served in since the watch loop last read the collection's history, so
// that the watch loop can tell subscribers when the store's history
// changed under them. The last history served alone is not enough: a
// reader that pulls in the new history (a new one, or one already reset)
// before the watch loop reads it would hide the change from the
// subscribers served in the old one, which would then pull only once the
// new history's head passed the one they were told (never, on a quiet
// collection).
//
// It remembers at most maxHistory collections and forgets them all past
// that. Once it has forgotten, a collection it does not remember may have
// been served in any history, so it counts as changed: its subscribers
// pull once more (which costs a round where nothing changed), instead of
// never being told of a history that did.
type servedHistories struct {
	mu     sync.Mutex
	m      map[string]servedSince
	forgot bool // the memory was cleared at maxHistory
}

// servedSince is what pages of a collection were served in since the
// watch loop last read its history: the last history (or the one the
// watch loop read, when none was served since), and whether another was.
type servedSince struct {
	last  served
	mixed bool
}

func (s *servedHistories) note(collection string, h served) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]servedSince{}
	}
	was, ok := s.m[collection]
	if !ok && len(s.m) >= maxHistory {
		clear(s.m)
		s.forgot = true
	}
	s.m[collection] = servedSince{last: h, mixed: was.mixed || (ok && was.last != h)}
}

// changed reports whether pages of collection were served in another
// history than now since the last call, or may have been (forgotten), and
// remembers now.
func (s *servedHistories) changed(collection string, now served) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	was, ok := s.m[collection]
	if s.m != nil {
		s.m[collection] = servedSince{last: now}
	}
	if !ok {
		return s.forgot
	}
	return was.mixed || was.last != now
}
