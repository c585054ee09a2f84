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
// ignored. A message over Config.MaxResponseBytes is read past, and Live
// pulls every subscribed collection over HTTP from its cursor instead, in
// pages that fit (Pull), the session staying open; unless a push waits
// for its answer over the session (it may be that answer): the session
// ends then, and the push goes over HTTP. While the session is open, the
// client's pushes go over it (Push).
//
// A session reads as the principal of its hello's token. When a Hello
// names another subject than the open session's (a TokenFunc that now
// returns another subject's token), Hello ends the session and Live dials
// again at once with the new token, resuming every collection from its
// cursor under the new subject's rights; a refreshed token of the same
// subject keeps the session, unless a collection was refused to the old
// token (below).
//
// One collection's failure is that collection's (docs/protocol.md,
// "Retrying"): the session goes on streaming the others. A sub the server
// refuses to the token (forbidden, or invalid under the collection's
// scopes) leaves the collection unsubscribed until the TokenFunc returns
// a new token (any request reads it; Hello does at once), when Live dials
// again with it, or until the next session; any other error naming one
// collection (schema_ahead, internal, corrupt...), of its sub or of its
// pull over HTTP, subscribes it again after a backoff of its own, pulling
// it over HTTP first when its pull failed or its sub was refused
// too_large (a session holding the server's max subscriptions: a client
// keeping more collections than that reads those beyond it by these
// pulls, at most proto.BackoffMax apart, not live). Each
// such failure is given to onError (nil: it is only logged) as an error
// naming the collection and wrapping the server's *Error, once until a
// page of the collection is delivered again or, for a refused one, the
// token changes, and again for a failure of another code (internal,
// then schema_ahead: the app hears it must upgrade). A second reset of one collection in a session is its
// failure too (ErrProtocol); until the next session a page of it does not
// count as delivered: its backoff grows and it is told once, however
// many pages the server sends before its resets. onError is called by
// the goroutine running Live, between deliveries, and must return
// promptly.
//
// Live returns when ctx ends (with ctx's error) or when the server sends an
// error about the session retrying cannot fix: an *Error whose code's
// proto.Retry is RetryNever, RetryUpgrade (ErrUnsupportedVersion) or
// RetryAuth, except token_expired (ErrTokenExpired), which redials with a
// fresh token. An error naming a collection with a code that is the
// server's or the principal's rather than the collection's (unavailable,
// rate_limited, unauthenticated, token_expired, revoked,
// unsupported_version) is the session's.
func (c *Client) Live(ctx context.Context, subs map[string][]byte, onChanges ChangesFunc, onError func(error)) error {
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
	st := &liveState{cursors: cursors, refused: map[string]bool{}, failing: map[string]*liveRetry{},
		told: map[string]string{}, onError: onError}
	attempt := 0
	for {
		start := time.Now()
		welcomed, err := c.liveSession(ctx, st, onChanges)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if fatalLive(err) {
			return fmt.Errorf("live: %w", err)
		}
		if errors.Is(err, errSubjectChanged) || errors.Is(err, errNewToken) {
			// Not a failure: dial again at once, with the new token.
			c.log.Info("live session ended for a new token; redialling", "err", err)
			attempt = 0
			continue
		}
		// A session that opened and lasted (proto.StableSession) resets
		// the backoff; one the server closes soon after its welcome does
		// not, so a server that keeps cutting sessions is not hammered.
		if welcomed && time.Since(start) >= proto.StableSession {
			attempt = 0
		}
		var floor time.Duration
		var e *Error
		if errors.As(err, &e) {
			floor = e.RetryAfter
		}
		d := c.backoff.delay(attempt, floor)
		c.log.Info(liveRedialMsg, "attempt", attempt, "delay", d, "err", err)
		attempt++
		if err := sleep(ctx, d); err != nil {
			return err
		}
	}
}

// liveRedialMsg is the message of the log record of a redial: with its
// backoff attempt (0 for the first) and the wait before it.
const liveRedialMsg = "live connection lost; redialling"

// liveState is what Live keeps from one session to the next.
type liveState struct {
	// cursors holds each collection's cursor: of its last delivery.
	cursors map[string][]byte
	// refused holds the collections whose sub the server refused to the
	// token (unreadable): not subscribed again in the session, but in
	// the next one (a new token starts one).
	refused map[string]bool
	// failing holds the collections whose sub or pull failed with an
	// error of their own, each subscribed again after its backoff.
	failing map[string]*liveRetry
	// told holds the collections whose failure onError was told of, and
	// that failure's code (failureCode), until a page of theirs is
	// delivered (served; or, refused, the token changes): a failure of
	// another code is told again.
	told    map[string]string
	onError func(error)
}

// liveRetry is a failing collection's next try.
type liveRetry struct {
	attempt int       // the backoff attempt of the next failure
	at      time.Time // when to subscribe again; zero while a try is under way
	pull    bool      // pull it over HTTP first (its pull failed)
}

// due returns the earliest time a failing collection waits for, and false
// when none waits.
func (st *liveState) due() (time.Time, bool) {
	var at time.Time
	for _, f := range st.failing {
		if !f.at.IsZero() && (at.IsZero() || f.at.Before(at)) {
			at = f.at
		}
	}
	return at, !at.IsZero()
}

// served says a page of coll was delivered: it no longer fails, its
// backoff starts over and its next failure is told. A page of a
// collection the session reset twice does not count (liveSession's
// stormed).
func (st *liveState) served(coll string) {
	delete(st.failing, coll)
	delete(st.refused, coll)
	delete(st.told, coll)
}

// collectionCode reports whether an error with code, naming a collection,
// is that collection's alone rather than the server's as a whole or the
// principal's (docs/protocol.md, "Retrying").
func collectionCode(code string) bool {
	info, _ := proto.Info(code)
	return !info.Session
}

// collectionFailure reports whether err, of a sub or pull of one
// collection, is that collection's: a server error of a code that is
// (collectionCode), or an answer the client cannot read. The network's,
// and the rest, end the session.
func collectionFailure(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return collectionCode(e.Code)
	}
	return errors.Is(err, ErrProtocol)
}

// failed takes coll out of the session for err: refused to the token, it
// waits for a new token or session; else it is tried again after a
// backoff. onError is told once, or again for a failure of another
// code (see liveState.told).
func (c *Client) failed(st *liveState, coll string, err error, pull bool) {
	if c.unreadable(coll, err) {
		st.refused[coll] = true
		delete(st.failing, coll)
		c.log.Warn(liveFailedMsg, "collection", coll, "err", err)
	} else {
		f := st.failing[coll]
		if f == nil {
			f = &liveRetry{}
			st.failing[coll] = f
		}
		var floor time.Duration
		var e *Error
		if errors.As(err, &e) {
			floor = e.RetryAfter
		}
		d := c.backoff.delay(f.attempt, floor)
		c.log.Warn(liveFailedMsg, "collection", coll, "err", err, "attempt", f.attempt, "retry_in", d)
		f.at = time.Now().Add(d)
		f.attempt++
		f.pull = f.pull || pull
	}
	code := failureCode(err)
	if told, ok := st.told[coll]; ok && told == code {
		return
	}
	st.told[coll] = code
	if st.onError != nil {
		st.onError(fmt.Errorf("live %s: %w", coll, err))
	}
}

// failureCode is the code of err, a collection's failure in a live
// session (collectionFailure, or refused to the token): the server's
// *Error's, or malformed for an answer the client cannot read (the
// browser client's code for it). A failure told is told again when its
// code changes: a collection refused internal, then schema_ahead, must
// have the app hear that it is to upgrade.
func failureCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return proto.CodeMalformed
}

// liveFailedMsg is the message of the log record of a collection's
// failure in a live session: with its backoff attempt (0 for the first)
// and the wait before it is tried again, unless it waits for a new token.
const liveFailedMsg = "live: a collection failed; the session goes on with the others"

// unreadable reports whether err, of a pull or sub of coll, is the
// server refusing coll to the token: forbidden, or invalid for a scope
// it cannot bind (the browser client skips the same).
func (c *Client) unreadable(coll string, err error) bool {
	return errors.Is(err, ErrForbidden) || (errors.Is(err, ErrInvalid) && c.scopeWire(coll) != nil)
}

// errSubjectChanged ends a live session whose hello was of another
// subject than the client's last hello names (a TokenFunc's new token):
// its pages are read under the old subject's rights, so Live dials again
// at once with the new token and resumes from the cursors.
var errSubjectChanged = errors.New("live session: the token's subject changed")

// errNewToken ends a live session that has collections refused to its
// hello's token once the TokenFunc returns another, or that the server
// refused or ended for its token (staleToken) after the TokenFunc
// replaced it: Live dials again at once, and the new session subscribes
// them under the new token.
var errNewToken = errors.New("live session: a new token for the collections refused to the old one")

// staleToken reports whether a refusal with code of a request or session
// sent with token tok is of a token the TokenFunc has replaced since, and
// one the token decides (proto.CodeInfo.Token: token_expired, forbidden,
// revoked): it says nothing of the current token, and is neither told
// nor acted on (a revoked purges nothing); the request goes again, once,
// with the current token (docs/protocol.md, section 10).
func (c *Client) staleToken(ctx context.Context, code, tok string) bool {
	if info, _ := proto.Info(code); !info.Token || c.cfg.TokenFunc == nil {
		return false
	}
	now, err := c.token(ctx)
	return err == nil && now != tok
}

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
func (c *Client) liveSession(ctx context.Context, st *liveState, onChanges ChangesFunc) (welcomed bool, err error) {
	ctx, cancelCause := context.WithCancelCause(ctx)
	cancel := func() { cancelCause(nil) }
	defer cancel()
	defer func() {
		if errors.Is(context.Cause(ctx), errSubjectChanged) {
			err = errSubjectChanged
		}
	}()
	cursors := st.cursors
	n := c.beginHello()
	newToken, _ := c.tokenChanged()
	tok, err := c.token(ctx)
	if err != nil {
		return false, err
	}
	defer func() {
		// Refused or ended as expired: the next dial asks the TokenFunc
		// for a fresh token, naming this one (RefusedToken).
		if e := (*Error)(nil); errors.As(err, &e) && e.Code == proto.CodeTokenExpired {
			c.noteExpired(tok)
		}
	}()
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
	// readMsg bounds each message by Config.MaxResponseBytes itself and
	// reads past one over it, where the library's limit ends the session.
	conn.SetReadLimit(-1)
	limit := c.cfg.MaxResponseBytes

	sent := c.cfg.Now()
	replica := c.helloReplica()
	if err := writeMsg(hctx, conn, proto.Hello{Protocol: proto.Version, Replica: replica, Token: tok}); err != nil {
		return false, err
	}
	var link *liveLink
	for link == nil {
		m, err := readMsg(hctx, conn, limit)
		if err != nil {
			return false, err
		}
		switch m := m.(type) {
		case nil: // a type this client does not know
		case proto.Welcome:
			if err := checkHello(m.Hello); err != nil {
				return false, err
			}
			c.setInfo(n, m.Hello, sent, c.cfg.Now())
			link = newLiveLink(conn, proto.Session{Replica: replica, Base: m.Hello.ServerTime},
				limitsOf(m.Hello).MaxMessageBytes, ctx.Done(), c.cfg.PushTimeout)
			// The session is its welcome's subject's: when a later hello
			// named another (its welcome was dropped), setLink ends it.
			link.replica, link.subject, link.token, link.end = c.Replica(), m.Hello.Subject, tok, cancel
			link.resubject = func() { cancelCause(errSubjectChanged) }
		case proto.ErrorMessage:
			if e := errorFromMessage(m); !c.staleToken(ctx, e.Code, tok) {
				return false, e
			}
			return false, errNewToken
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
	// subscribed holds the collections the session streams: not those
	// refused or failing (liveState), whose pages are ignored.
	subscribed := make(map[string]bool, len(cursors))
	sub := func(coll string) error {
		sc := c.scopeWire(coll)
		sentScope[coll] = sc
		subscribed[coll] = true
		delete(st.refused, coll)
		return writeMsg(ctx, conn, proto.Sub{Collection: coll, Cursor: cursors[coll], Scope: sc,
			Replica: c.Replica(), Pending: c.pendingFloor(coll), Version: c.version(coll)})
	}
	// reset holds the collections the session reset: a store goes back
	// in time rarely, and a server that resets every sub would have the
	// client pull the collection again (and a Replica heal it) back to
	// back. A second reset is the collection's failure, tried again
	// after a backoff of its own (as in the browser client).
	reset := map[string]bool{}
	// stormed holds the collections the session reset twice: a page of
	// one does not serve it again (liveState.served) until the next
	// session, so that a server sending a page before each reset has its
	// backoff grow, not start over at every try (near zero, with full
	// jitter), and its failure told once, not at every try.
	stormed := map[string]bool{}
	// fail takes coll out of the session for err, its own failure.
	fail := func(coll string, err error, pull bool) {
		delete(subscribed, coll)
		c.failed(st, coll, err, pull)
	}
	// again pulls (if its pull failed) and subscribes coll again.
	again := func(coll string) error {
		f := st.failing[coll]
		if f != nil {
			f.at = time.Time{}
			if f.pull {
				if err := c.catchUp(ctx, coll, cursors, onChanges); err != nil {
					if !collectionFailure(err) {
						return err
					}
					fail(coll, err, true)
					return nil
				}
				f.pull = false
			}
		}
		return sub(coll)
	}
	changed := c.scopesChanged()
	for coll := range cursors {
		if f := st.failing[coll]; f != nil && time.Now().Before(f.at) {
			continue // it waits for its backoff
		}
		if err := again(coll); err != nil {
			return true, err
		}
	}

	var lastRead atomic.Int64
	lastRead.Store(time.Now().UnixNano())
	go c.pinger(ctx, cancel, conn, &lastRead)

	in := newInbox()
	go readInto(ctx, conn, limit, in, link, func() { lastRead.Store(time.Now().UnixNano()) })

	for {
		var m proto.Message
		var retry <-chan time.Time
		if at, ok := st.due(); ok {
			retry = time.After(time.Until(at))
		}
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case <-changed:
			changed = c.scopesChanged()
			for coll := range cursors {
				// A collection refused under its old scope may be
				// readable under the new one; a failing one waits.
				if (subscribed[coll] || st.refused[coll]) && !bytes.Equal(sentScope[coll], c.scopeWire(coll)) {
					if err := sub(coll); err != nil {
						return true, err
					}
				}
			}
			continue
		case <-newToken:
			var last string
			newToken, last = c.tokenChanged()
			if len(st.refused) > 0 && last != tok {
				// The session reads as its hello's principal: the
				// collections refused to it are read again under the
				// new token's in a new session, and told again if
				// refused again.
				for coll := range st.refused {
					delete(st.told, coll)
				}
				return true, errNewToken
			}
			continue
		case <-retry:
			now := time.Now()
			for coll, f := range st.failing {
				if !f.at.IsZero() && !now.Before(f.at) {
					if err := again(coll); err != nil {
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
			if r.over {
				// A message too large to read, of an unknown collection:
				// pull every subscription over HTTP from its cursor
				// instead, in pages that fit (as the browser client does).
				// The subscriptions go on; what they send next is after
				// the message dropped, and merges again what the pulls
				// brought.
				c.log.Info("live message over the client's bound; pulling over HTTP", "err", r.err)
				for coll := range cursors {
					if !subscribed[coll] {
						continue
					}
					if err := c.catchUp(ctx, coll, cursors, onChanges); err != nil {
						if !collectionFailure(err) {
							return true, err
						}
						fail(coll, err, true)
					}
				}
				continue
			}
			if r.err != nil {
				return true, r.err
			}
			m = r.m
		}
		switch m := m.(type) {
		case proto.Changes:
			if !subscribed[m.Collection] {
				continue // failed, or never asked for: ignore
			}
			// A page without its next cursor (key 3; read as the
			// beginning, the collection would be subscribed from there at
			// the next dial), over proto.MaxCursorBytes, or of seals not
			// one per record did not decode: unreadable (readMessage).
			next := m.Next
			c.observeRecords(m.Records)
			onChanges(m.Collection, Page{Records: m.Records, Next: next, More: m.More, Seals: m.Seals, Leaves: m.Leaves, from: readFrom(cursors[m.Collection])})
			cursors[m.Collection] = next
			if !stormed[m.Collection] {
				st.served(m.Collection)
			}
		case proto.Reset:
			// The subscription has ended: start the collection again from
			// the beginning, then subscribe again.
			if !subscribed[m.Collection] {
				continue
			}
			cursors[m.Collection] = []byte{}
			onChanges(m.Collection, Page{Next: []byte{}, Reset: resetReason(m.Reason)})
			if reset[m.Collection] {
				stormed[m.Collection] = true
				fail(m.Collection, fmt.Errorf("%w: the server reset %s twice in one session", ErrProtocol, m.Collection), true)
				continue
			}
			reset[m.Collection] = true
			if err := c.catchUp(ctx, m.Collection, cursors, onChanges); err != nil {
				if !collectionFailure(err) {
					return true, err
				}
				fail(m.Collection, err, true)
				continue
			}
			if err := sub(m.Collection); err != nil {
				return true, err
			}
		case proto.Resync:
			if !subscribed[m.Collection] {
				continue
			}
			if err := c.catchUp(ctx, m.Collection, cursors, onChanges); err != nil {
				if !collectionFailure(err) {
					return true, err
				}
				fail(m.Collection, err, true)
				continue
			}
			if err := sub(m.Collection); err != nil {
				return true, err
			}
		case proto.ErrorMessage:
			e := errorFromMessage(m)
			if e.Collection == "" && c.staleToken(ctx, e.Code, tok) {
				// Of the session's token, replaced since: it says nothing
				// of the current one (docs/protocol.md, section 10). Dial
				// again at once with it; refused again, it stands.
				c.log.Info("live session refused for a token replaced since; redialling with the current one", "err", e)
				return true, errNewToken
			}
			if e.Collection == "" || !collectionCode(e.Code) {
				return true, e
			}
			if !subscribed[e.Collection] {
				continue // of a collection out of the session already
			}
			// A sub beyond the session's bound (too_large: the server's
			// max subscriptions) is refused again at each retry while
			// the session holds as many: its retries pull it over HTTP
			// first, so that it is still read, at each backoff.
			fail(e.Collection, e, e.Code == proto.CodeTooLarge)
		case proto.Pong, nil:
		default:
			return true, fmt.Errorf("%w: unexpected %q", ErrProtocol, m.MessageType())
		}
	}
}

// catchUp pulls collection over HTTP from its cursor until the server has
// no more.
func (c *Client) catchUp(ctx context.Context, coll string, cursors map[string][]byte, onChanges ChangesFunc) error {
	limit := 0 // the server's max-pull, until a page is over the client's bound
	var rd reading
	for {
		rd.ask(cursors[coll])
		p, err := c.pullFitting(ctx, coll, cursors[coll], &limit, false)
		if err == nil {
			err = rd.check(coll, p)
		}
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
// type this client does not know, which the protocol says to ignore. A
// message over limit bytes is read past, not kept, and is
// ErrAnswerTooLarge: the session may go on with the next one.
func readMsg(ctx context.Context, conn *websocket.Conn, limit int64) (proto.Message, error) {
	mt, r, err := conn.Reader(ctx)
	if err != nil {
		return nil, fmt.Errorf("live read: %w", err)
	}
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err == nil && int64(len(b)) > limit {
		if _, err = io.Copy(io.Discard, r); err == nil {
			return nil, fmt.Errorf("%w: live message over %d bytes", ErrAnswerTooLarge, limit)
		}
	}
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
