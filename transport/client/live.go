package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// stableSession is how long a live session must last for the next redial
// to start from the shortest backoff again.
const stableSession = time.Second

// ChangesFunc receives a page of records of collection that changed after
// the client's cursor, with their seals, the leave entries of a scoped read
// (page.Leaves: drop the records they digest to) and the cursor to resume
// from after them (page.Next: opaque bytes, store them and pass them back
// unchanged), or a page with Reset set when the cursor was of another
// history. Live calls it from one goroutine, in order, for every page the
// server sends, including the empty one that says a subscription is
// caught up; it must return before the next delivery.
type ChangesFunc func(collection string, page Page)

// Live keeps a WebSocket to the server open and streams the changes of the
// subscribed collections, each from its cursor in subs (nil or empty: from
// the beginning), to onChanges. It redials with backoff when the connection
// drops or stays silent (it pings the server when it has heard nothing for
// Config.PingInterval and drops the session after Config.SilenceTimeout),
// resuming every collection from the cursor of its last delivery, so no
// change is missed. When the server sends resync for a collection (the
// client fell behind), Live pulls it over HTTP from the cursor and
// subscribes again; when it sends reset (the cursor is of another
// history), Live hands onChanges the reset, pulls the collection from the
// beginning and subscribes again. Every subscription carries its
// collection's scopes (SetScope); when they change, Live subscribes to the
// collection again from the cursor of its last delivery, and the server
// answers with the difference. Like a pull, every subscription names the
// client's replica id and the collection's pending floor at the time it is
// sent (see Pull). Messages of types this client does not know are
// ignored. While the session is open, the client's pushes go over it
// (Push).
//
// A session reads as the principal of its hello's token. When a Hello
// names another subject than the open session's (a TokenFunc that now
// returns another subject's token), Hello ends the session and Live dials
// again at once with the new token, resuming every collection from its
// cursor under the new subject's rights; a refreshed token of the same
// subject keeps the session.
//
// Live returns when ctx ends (with ctx's error) or when the server sends an
// error retrying cannot fix: an *Error whose code's proto.Retry is
// RetryNever, RetryUpgrade (ErrUnsupportedVersion) or RetryAuth, except
// token_expired (ErrTokenExpired), which redials with a fresh token. An
// error about one subscription (Error.Collection set) ends Live like one
// about the session.
func (c *Client) Live(ctx context.Context, subs map[string][]byte, onChanges ChangesFunc) error {
	if onChanges == nil {
		return errors.New("live: onChanges is nil")
	}
	for coll := range subs {
		if err := crdt.ValidateCollection(coll); err != nil {
			return fmt.Errorf("live: %w", err)
		}
	}
	cursors := maps.Clone(subs)
	if cursors == nil {
		cursors = map[string][]byte{}
	}
	attempt := 0
	for {
		start := time.Now()
		welcomed, err := c.liveSession(ctx, cursors, onChanges)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if fatalLive(err) {
			return fmt.Errorf("live: %w", err)
		}
		if errors.Is(err, errSubjectChanged) {
			// Not a failure: dial again at once, with the new token.
			c.log.Info("live session ended: the token's subject changed; redialling")
			attempt = 0
			continue
		}
		// A session that opened and lasted resets the backoff; one the
		// server closes right after its welcome does not, so a server that
		// keeps refusing is not hammered.
		if welcomed && time.Since(start) >= stableSession {
			attempt = 0
		}
		var floor time.Duration
		var e *Error
		if errors.As(err, &e) {
			floor = e.RetryAfter
		}
		d := c.backoff.delay(attempt, floor)
		attempt++
		c.log.Info("live connection lost; redialling", "delay", d, "err", err)
		if err := sleep(ctx, d); err != nil {
			return err
		}
	}
}

// errSubjectChanged ends a live session whose hello was of another
// subject than the client's last hello names (a TokenFunc's new token):
// its pages are read under the old subject's rights, so Live dials again
// at once with the new token and resumes from the cursors.
var errSubjectChanged = errors.New("live session: the token's subject changed")

// fatalLive reports whether a session error ends Live: a server error that
// the code says retrying cannot fix (proto.Info), except token_expired,
// after which the next dial asks for a fresh token.
func fatalLive(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false // the network, or an unreadable answer
	}
	if e.Code == proto.CodeTokenExpired {
		return false
	}
	info, _ := proto.Info(e.Code)
	return info.Retry != proto.RetryBackoff
}

// liveURL is the WebSocket URL of the live endpoint.
func (c *Client) liveURL() string {
	u := c.base + proto.PathLive
	if rest, ok := strings.CutPrefix(u, "https://"); ok {
		return "wss://" + rest
	}
	return "ws://" + strings.TrimPrefix(u, "http://")
}

// liveSession runs one WebSocket connection until it fails. welcomed
// reports whether the server opened the session.
func (c *Client) liveSession(ctx context.Context, cursors map[string][]byte, onChanges ChangesFunc) (welcomed bool, err error) {
	ctx, cancelCause := context.WithCancelCause(ctx)
	cancel := func() { cancelCause(nil) }
	defer cancel()
	defer func() {
		if errors.Is(context.Cause(ctx), errSubjectChanged) {
			err = errSubjectChanged
		}
	}()
	n := c.beginHello()
	tok, err := c.token(ctx)
	if err != nil {
		return false, err
	}
	hctx, hcancel := context.WithTimeout(ctx, c.cfg.HandshakeTimeout)
	defer hcancel()
	conn, resp, err := websocket.Dial(hctx, c.liveURL(), &websocket.DialOptions{
		HTTPClient: c.http,
		HTTPHeader: http.Header{proto.HeaderProtocol: {strconv.Itoa(proto.Version)}},
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			var body []byte
			if resp.Body != nil {
				body, _ = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			}
			return false, errorFromResponse(resp, body)
		}
		return false, fmt.Errorf("live dial: %w", err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(c.cfg.MaxResponseBytes)

	sent := c.cfg.Now()
	replica := c.helloReplica()
	if err := writeMsg(hctx, conn, proto.Hello{Protocol: proto.Version, Replica: replica, Token: tok}); err != nil {
		return false, err
	}
	var link *liveLink
	for link == nil {
		m, err := readMsg(hctx, conn)
		if err != nil {
			return false, err
		}
		switch m := m.(type) {
		case nil: // a type this client does not know
		case proto.Welcome:
			c.setInfo(n, m.Hello, sent, c.cfg.Now())
			link = newLiveLink(conn, proto.Session{Replica: replica, Base: m.Hello.ServerTime},
				int64(min(m.Hello.MaxMessageBytes, 1<<62)), ctx.Done(), c.cfg.PushTimeout)
			// The session is its welcome's subject's: when a later hello
			// named another (its welcome was dropped), setLink ends it.
			link.replica, link.subject, link.end = c.Replica(), m.Hello.Subject, cancel
			link.resubject = func() { cancelCause(errSubjectChanged) }
		case proto.ErrorMessage:
			return false, errorFromMessage(m)
		default:
			return false, fmt.Errorf("%w: %q before welcome", ErrProtocol, m.MessageType())
		}
	}
	hcancel()
	// Pushes go over the session from now on (Push), until it ends.
	c.setLink(link)
	defer c.unsetLink(link)

	// sentScope is the scope each subscription was last sent with, so that a
	// change of the client's scopes subscribes again the collections it
	// changed, from the cursor they are at.
	sentScope := make(map[string][]byte, len(cursors))
	sub := func(coll string) error {
		sc := c.scopeWire(coll)
		sentScope[coll] = sc
		return writeMsg(ctx, conn, proto.Sub{Collection: coll, Cursor: cursors[coll], Scope: sc,
			Replica: c.Replica(), Pending: c.pendingFloor(coll), Version: c.version(coll)})
	}
	changed := c.scopesChanged()
	for coll := range cursors {
		if err := sub(coll); err != nil {
			return true, err
		}
	}

	var lastRead atomic.Int64
	lastRead.Store(time.Now().UnixNano())
	go c.pinger(ctx, cancel, conn, &lastRead)

	in := newInbox()
	go readInto(ctx, conn, in, link, func() { lastRead.Store(time.Now().UnixNano()) })

	for {
		var m proto.Message
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case <-changed:
			changed = c.scopesChanged()
			for coll := range cursors {
				if !bytes.Equal(sentScope[coll], c.scopeWire(coll)) {
					if err := sub(coll); err != nil {
						return true, err
					}
				}
			}
			continue
		case <-in.ready:
			if ctx.Err() != nil {
				// Ended (a hello of another subject, say): what the
				// session read meanwhile is not delivered.
				return true, ctx.Err()
			}
			r, ok := in.pop()
			if !ok {
				continue
			}
			if r.err != nil {
				return true, r.err
			}
			m = r.m
		}
		switch m := m.(type) {
		case proto.Changes:
			if _, ok := cursors[m.Collection]; !ok {
				continue // unsubscribed or never asked for: ignore
			}
			next := m.Next
			if next == nil {
				next = []byte{}
			}
			if len(m.Seals) != 0 && len(m.Seals) != len(m.Records) {
				return true, fmt.Errorf("%w: %d seals for %d records", ErrProtocol, len(m.Seals), len(m.Records))
			}
			c.observeRecords(m.Records)
			onChanges(m.Collection, Page{Records: m.Records, Next: next, More: m.More, Seals: m.Seals, Leaves: m.Leaves})
			cursors[m.Collection] = next
		case proto.Reset:
			// The subscription has ended: start the collection again from
			// the beginning, then subscribe again.
			if _, ok := cursors[m.Collection]; !ok {
				continue
			}
			cursors[m.Collection] = []byte{}
			onChanges(m.Collection, Page{Next: []byte{}, Reset: resetReason(m.Reason)})
			if err := c.catchUp(ctx, m.Collection, cursors, onChanges); err != nil {
				return true, err
			}
			if err := sub(m.Collection); err != nil {
				return true, err
			}
		case proto.Resync:
			if _, ok := cursors[m.Collection]; !ok {
				continue
			}
			if err := c.catchUp(ctx, m.Collection, cursors, onChanges); err != nil {
				return true, err
			}
			if err := sub(m.Collection); err != nil {
				return true, err
			}
		case proto.ErrorMessage:
			return true, errorFromMessage(m)
		case proto.Pong, nil:
		default:
			return true, fmt.Errorf("%w: unexpected %q", ErrProtocol, m.MessageType())
		}
	}
}

// catchUp pulls collection over HTTP from its cursor until the server has
// no more.
func (c *Client) catchUp(ctx context.Context, coll string, cursors map[string][]byte, onChanges ChangesFunc) error {
	for {
		p, err := c.Pull(ctx, coll, cursors[coll], 0)
		if err != nil {
			return fmt.Errorf("resync: %w", err)
		}
		onChanges(coll, p)
		cursors[coll] = p.Next
		if !p.More && p.Reset == "" {
			return nil
		}
	}
}

// pinger sends a ping whenever the session has heard nothing for
// PingInterval, and drops the session (cancelling it) once it has heard
// nothing for SilenceTimeout.
func (c *Client) pinger(ctx context.Context, cancel context.CancelFunc, conn *websocket.Conn, lastRead *atomic.Int64) {
	var nonce uint64
	lastPing := time.Time{}
	for {
		heard := time.Unix(0, lastRead.Load())
		quiet := time.Since(heard)
		if quiet >= c.cfg.SilenceTimeout {
			c.log.Info("live connection silent; dropping it", "silent", quiet.Round(time.Millisecond))
			cancel()
			return
		}
		since := heard
		if lastPing.After(since) {
			since = lastPing
		}
		if time.Since(since) >= c.cfg.PingInterval {
			nonce++
			if err := writeMsg(ctx, conn, proto.Ping{Nonce: nonce}); err != nil {
				cancel()
				return
			}
			lastPing = time.Now()
			since = lastPing
		}
		wait := min(time.Until(since.Add(c.cfg.PingInterval)), time.Until(heard.Add(c.cfg.SilenceTimeout)))
		if err := sleep(ctx, max(wait, time.Millisecond)); err != nil {
			return
		}
	}
}

func writeMsg(ctx context.Context, conn *websocket.Conn, m proto.Message) error {
	b, err := proto.EncodeMessage(m)
	if err != nil {
		return err
	}
	if err := conn.Write(ctx, websocket.MessageBinary, b); err != nil {
		return fmt.Errorf("live write: %w", err)
	}
	return nil
}

// readMsg reads a server message; nil (without error) for a message of a
// type this client does not know, which the protocol says to ignore.
func readMsg(ctx context.Context, conn *websocket.Conn) (proto.Message, error) {
	mt, b, err := conn.Read(ctx)
	if err != nil {
		return nil, fmt.Errorf("live read: %w", err)
	}
	if mt != websocket.MessageBinary {
		return nil, fmt.Errorf("%w: text frame", ErrProtocol)
	}
	m, err := proto.DecodeServerMessage(b)
	if errors.Is(err, proto.ErrUnknownType) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	return m, nil
}

func errorFromMessage(m proto.ErrorMessage) *Error {
	return &Error{Code: m.Code, Message: m.Message, Collection: m.Collection, RequestID: m.RequestID}
}
