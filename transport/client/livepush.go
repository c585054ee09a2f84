package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// Live push (docs/protocol.md, "Pushing over a live session"): while Live
// holds a session open (its welcome received), Push sends each batch over
// it as a push message and waits for its pushed answer, one at a time;
// without a session, for a batch too large for a live message, and for a
// batch whose session ends before it is answered, Push goes over HTTP. A
// push with no answer within Config.PushTimeout ends its session as dead
// (Live dials again) and goes over HTTP.

// errSessionGone says a live session ended (or was never there) before a
// push over it was answered: the batch goes over HTTP, as it would have
// without a session. Pushes are idempotent, so what the server applied of
// it comes back duplicate.
var errSessionGone = errors.New("live session ended before the push was answered")

// errUnanswered says a push over a live session had no answer within
// Config.PushTimeout: the session is dropped as dead and the batch goes
// over HTTP.
var errUnanswered = errors.New("live push not answered in time; session dropped")

// errNoFit says a batch's push message is over the session's message
// limit: it goes over HTTP.
var errNoFit = errors.New("push message over the live message limit")

// liveLink is an open live session, as pushes see it.
type liveLink struct {
	conn    *websocket.Conn
	session proto.Session // the replica of the hello and the time of the welcome
	// replica and subject are the client's once the welcome was taken:
	// the session pushes only for them (link).
	replica, subject string
	// token is the token the session's hello carried: a refusal of a
	// push the token decides, of a token replaced since, says nothing
	// of the current one (sendPush).
	token    string
	maxBytes int64 // the largest message the server accepts (its hello's, defaulted)
	done     <-chan struct{}
	// end ends the session (nil: nothing to end): its reader does, when
	// it has read readAhead messages ahead of its loop.
	end func()
	// resubject ends the session because the client's subject is no
	// longer its hello's (endStaleLocked); nil: nothing to end.
	resubject func()
	// timeout bounds the wait for a push's answer: past it the push ends
	// the session (end) as dead.
	timeout time.Duration
	// slot is held while a push is in flight, from before its message is
	// written until its answer is taken: one at a time.
	slot chan struct{}
	// answer is where the session's reader hands the pushed of the push
	// in flight.
	answer chan proto.Pushed
	// sent wakes the session's reader when a push is written, so that it
	// reads on to the answer (inbox).
	sent chan struct{}
}

func newLiveLink(conn *websocket.Conn, s proto.Session, maxBytes int64, done <-chan struct{}, timeout time.Duration) *liveLink {
	return &liveLink{conn: conn, session: s, maxBytes: maxBytes, done: done, timeout: timeout,
		slot: make(chan struct{}, 1), answer: make(chan proto.Pushed, 1), sent: make(chan struct{}, 1)}
}

// awaiting reports whether a push is in flight.
func (l *liveLink) awaiting() bool { return len(l.slot) > 0 }

// deliver hands the reader's pushed to the push in flight; false for a
// pushed that answers none.
func (l *liveLink) deliver(p proto.Pushed) bool {
	if !l.awaiting() {
		return false
	}
	select {
	case l.answer <- p:
		return true
	default:
		return false // a second answer to one push
	}
}

// push sends changes as one push message and returns the results, in
// order, and the push's request id (pushed key 4). A push refused whole
// returns an *Error with its code and request id; a session that ends
// first, errSessionGone; a message over the limit, errNoFit.
func (l *liveLink) push(ctx context.Context, changes []crdt.Change, versions map[string]uint64) ([]proto.PushResult, string, error) {
	msg, err := proto.EncodeMessage(proto.PushLive{Changes: changes, Versions: versions, Session: l.session})
	if err != nil {
		return nil, "", err
	}
	if int64(len(msg)) > l.maxBytes {
		return nil, "", errNoFit
	}
	select {
	case l.slot <- struct{}{}:
	case <-l.done:
		return nil, "", errSessionGone
	case <-ctx.Done():
		return nil, "", ctx.Err()
	}
	if err := l.conn.Write(ctx, websocket.MessageBinary, msg); err != nil {
		<-l.slot
		if ctx.Err() != nil {
			return nil, "", ctx.Err()
		}
		return nil, "", fmt.Errorf("%w: %v", errSessionGone, err)
	}
	select {
	case l.sent <- struct{}{}:
	default:
	}
	var p proto.Pushed
	due := time.Now().Add(l.timeout)
	deadline := time.NewTimer(l.timeout)
	defer deadline.Stop()
	select {
	case p = <-l.answer:
		<-l.slot
	case <-l.done:
		return nil, "", errSessionGone
	case <-deadline.C:
		l.drop()
		return nil, "", fmt.Errorf("%w: no pushed within %v", errUnanswered, l.timeout)
	case <-ctx.Done():
		// The answer still comes: it frees the slot for the next push,
		// which waits for it; none by the push's deadline drops the
		// session all the same, or that push would wait for ever.
		go func() {
			deadline := time.NewTimer(time.Until(due))
			defer deadline.Stop()
			select {
			case <-l.answer:
				<-l.slot
			case <-l.done:
			case <-deadline.C:
				l.drop()
			}
		}()
		return nil, "", ctx.Err()
	}
	if p.Code != "" {
		return nil, p.RequestID, &Error{Code: p.Code, Message: p.Message, RequestID: p.RequestID}
	}
	a := proto.PushResponse{Results: p.Results}
	if err := checkPush(len(changes), &a); err != nil {
		return nil, "", err
	}
	return p.Results, p.RequestID, nil
}

// drop ends the session as dead to pushes, when a push had no answer
// within the timeout (a server that keeps the session alive but never
// answers). The slot stays taken: no push goes over it again.
func (l *liveLink) drop() {
	if l.end != nil {
		l.end()
	}
}

// link returns the open live session pushes may go over, nil for none.
// A session pushes as the principal and replica of its hello: after a
// hello under another subject (a TokenFunc's new token) has bound the
// client to another replica, its pushes go over HTTP, with the new token,
// until a session of the new subject opens (that hello ends the old
// session: endStaleLocked).
func (c *Client) link() *liveLink {
	c.mu.Lock()
	defer c.mu.Unlock()
	if l := c.live; l != nil && l.replica == c.replicaLocked() && l.subject == c.info.Subject {
		return l
	}
	return nil
}

// endStaleLocked ends the open live session when its hello was of
// another subject than subject, the one the client's last hello named:
// its pages would keep coming under the old subject's rights. Live dials
// again at once. A new token of the same subject keeps the session.
// Called with c.mu held.
func (c *Client) endStaleLocked(subject string) {
	if l := c.live; l != nil && l.subject != subject && l.resubject != nil {
		c.live = nil // pushes go over HTTP from now on
		l.resubject()
	}
}

// setLink makes l the session pushes go over (ending it at once if a
// hello of another subject came after its welcome); unsetLink removes
// it, if it is still the one.
func (c *Client) setLink(l *liveLink) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.live = l
	c.endStaleLocked(c.info.Subject)
}

func (c *Client) unsetLink(l *liveLink) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.live == l {
		c.live = nil
	}
}

// sendPush sends one batch, over the open live session when there is one
// and the batch fits in a message, else over HTTP (with the retries of
// call), and returns its results in order and the request id to quote.
func (c *Client) sendPush(ctx context.Context, changes []crdt.Change) ([]proto.PushResult, string, error) {
	versions := c.versions(changes)
	if l := c.link(); l != nil {
		rs, id, err := l.push(ctx, changes, versions)
		var e *Error
		switch {
		case err == nil:
			return rs, id, nil
		case ctx.Err() != nil:
			return nil, "", fmt.Errorf("push: %w", ctx.Err())
		case errors.Is(err, errNoFit):
		case errors.Is(err, errSessionGone), errors.Is(err, errUnanswered), errors.Is(err, ErrProtocol):
			c.log.Debug("live push not answered; pushing over HTTP", "err", err)
		case errors.As(err, &e) && c.staleToken(ctx, e.Code, l.token):
			// Refused for the session's token (revoked, forbidden),
			// replaced since: the same batch over HTTP with the current
			// one, the refusal neither told nor acted on
			// (docs/protocol.md, section 10).
			c.log.Info("live push refused for a token replaced since; pushing over HTTP", "err", err)
		case errors.As(err, &e) && (e.Code == proto.CodeMalformed || e.Code == proto.CodeInvalid):
			// The server could not read the push message: the same batch
			// once over HTTP, which answers change by change or refuses it
			// as it would any HTTP push (a disagreement on the live
			// encoding must not hold the outbox while a session is open).
			c.log.Warn("live push refused whole; pushing over HTTP", "err", err)
		case errors.As(err, &e) && e.Retryable():
			// Again over HTTP, after a backoff, with call's retries.
			d := c.backoff.delay(0, 0)
			c.log.Debug("live push refused for now; retrying over HTTP", "delay", d, "err", err)
			if err := sleep(ctx, d); err != nil {
				return nil, "", fmt.Errorf("push: %w", err)
			}
		default:
			return nil, id, err
		}
	}
	return c.pushHTTP(ctx, changes, versions)
}

// pushHTTP sends one batch over HTTP (with the retries of call) and
// returns its results in order and the request id to quote.
func (c *Client) pushHTTP(ctx context.Context, changes []crdt.Change, versions map[string]uint64) ([]proto.PushResult, string, error) {
	var a proto.PushResponse
	ans, err := c.call(ctx, proto.PathPush, proto.PushRequest{Replica: c.helloReplica(), Changes: changes, Versions: versions, Prefix: c.pushPrefix()}, &a,
		func() error { return checkPush(len(changes), &a) })
	if err != nil {
		return nil, ans.requestID, err
	}
	return a.Results, ans.requestID, nil
}

// inbox is what a session's reader hands its loop. At most one message
// waits, so that a loop busy with a page holds the reader back and the
// server sees it (a slow consumer gets resync), except while a push is in
// flight: then the reader reads on, so that the push's answer (taken by
// the reader itself) is not stuck behind pages the loop has not taken,
// which a loop waiting for that push (its callback pushing, or waiting
// for a lock a pusher holds) would never take.
type inbox struct {
	mu    sync.Mutex
	msgs  []read
	ready chan struct{} // messages wait
	room  chan struct{} // the loop took one
}

type read struct {
	m   proto.Message
	err error
	// over says a message over Config.MaxResponseBytes was read past
	// (err says so) and the session goes on: Live pulls its
	// subscriptions over HTTP instead.
	over bool
}

func newInbox() *inbox {
	return &inbox{ready: make(chan struct{}, 1), room: make(chan struct{}, 1)}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (b *inbox) put(r read) {
	b.mu.Lock()
	b.msgs = append(b.msgs, r)
	b.mu.Unlock()
	signal(b.ready)
}

// pop takes the oldest message; ok is false when none waits.
func (b *inbox) pop() (r read, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.msgs) == 0 {
		return read{}, false
	}
	r = b.msgs[0]
	b.msgs[0] = read{}
	b.msgs = b.msgs[1:]
	if len(b.msgs) > 0 {
		signal(b.ready)
	}
	signal(b.room)
	return r, true
}

func (b *inbox) waiting() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.msgs)
}

// readAhead is how many messages a session's reader holds for its loop
// while a push is in flight (each within Config.MaxResponseBytes, in
// practice a page of the server's): with that many waiting, the reader
// ends the session rather than read more. The client connects again and
// resumes from its cursors; the push in flight goes again, over HTTP
// (its changes come back duplicate).
const readAhead = 8

// errReadAhead ends a session whose loop fell readAhead messages behind
// its reader while a push was in flight.
var errReadAhead = fmt.Errorf("live session: %d messages read ahead of the loop while a push waits its answer", readAhead)

// readInto reads the session's messages into b until a read fails (the
// failure is the last message) or ctx ends: one waiting message at a
// time, or on while l has a push in flight, to readAhead of them; the
// answers of pushes go to l. A message over limit, read past, is put as
// read.over and reading goes on, unless a push is in flight.
func readInto(ctx context.Context, conn *websocket.Conn, limit int64, b *inbox, l *liveLink, heard func()) {
	for {
		for b.waiting() > 0 && !l.awaiting() {
			select {
			case <-b.room:
			case <-l.sent:
			case <-ctx.Done():
				return
			}
		}
		if b.waiting() >= readAhead {
			// The loop takes none of them (busy, or waiting for the push
			// itself): end the session, which ends the push's wait too.
			b.put(read{err: errReadAhead})
			if l.end != nil {
				l.end()
			}
			return
		}
		m, err := readMsg(ctx, conn, limit)
		if err == nil {
			heard()
		} else if errors.Is(err, ErrAnswerTooLarge) && !l.awaiting() {
			// Read past: the session goes on. While a push is in flight
			// it may be the push's answer: the session ends then, as a
			// lost one, and the push goes again over HTTP, where an
			// answer over the bound splits it.
			heard()
			b.put(read{err: err, over: true})
			continue
		}
		if p, ok := m.(proto.Pushed); ok {
			if !l.deliver(p) {
				b.put(read{err: fmt.Errorf("%w: pushed without a push in flight", ErrProtocol)})
				return
			}
			continue
		}
		b.put(read{m: m, err: err})
		if err != nil {
			return
		}
	}
}
