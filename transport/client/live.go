package client

import (
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
)

// stableSession is how long a live session must last for the next redial
// to start from the shortest backoff again.
const stableSession = time.Second

// ChangesFunc receives the entries of a collection after the client's
// cursor, and the cursor to resume from after them. Live calls it from one
// goroutine, in order; it must return before the next delivery.
type ChangesFunc func(collection string, entries []Entry, next uint64)

// Live keeps a WebSocket to the server open and streams the changes of the
// subscribed collections, each from its cursor in subs, to onChanges. It
// redials with backoff when the connection drops or stops answering pings,
// resuming every collection from the cursor of the last delivery, so no
// change is missed. When the server sends resync for a collection (the
// client fell behind), Live pulls it over HTTP from the cursor and
// subscribes again.
//
// Live returns when ctx ends (with ctx's error) or when the server refuses
// the session in a way retrying cannot fix: an *Error matching
// ErrUnauthenticated (but not ErrTokenExpired, which redials with a fresh
// token), ErrForbidden, ErrInvalid, ErrMalformed or
// ErrUnsupportedVersion, or ErrProtocol.
func (c *Client) Live(ctx context.Context, subs map[string]uint64, onChanges ChangesFunc) error {
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
		cursors = map[string]uint64{}
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

// fatalLive reports whether a session error ends Live.
func fatalLive(err error) bool {
	if errors.Is(err, ErrProtocol) {
		return true
	}
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	switch e.Code {
	case CodeUnauthenticated, CodeForbidden, CodeInvalid, CodeMalformed, CodeUnsupportedVersion:
		return true
	}
	return false
}

// liveURL is the WebSocket URL of the live endpoint.
func (c *Client) liveURL() string {
	u := c.base + "/v1/live"
	if rest, ok := strings.CutPrefix(u, "https://"); ok {
		return "wss://" + rest
	}
	return "ws://" + strings.TrimPrefix(u, "http://")
}

// liveSession runs one WebSocket connection until it fails. welcomed
// reports whether the server opened the session.
func (c *Client) liveSession(ctx context.Context, cursors map[string]uint64, onChanges ChangesFunc) (welcomed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	tok, err := c.token(ctx)
	if err != nil {
		return false, err
	}
	hctx, hcancel := context.WithTimeout(ctx, c.cfg.HandshakeTimeout)
	defer hcancel()
	conn, resp, err := websocket.Dial(hctx, c.liveURL(), &websocket.DialOptions{
		HTTPClient: c.http,
		HTTPHeader: http.Header{headerProtocol: {strconv.Itoa(ProtocolVersion)}},
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			var body []byte
			if resp.Body != nil {
				body, _ = io.ReadAll(resp.Body)
			}
			return false, errorFromResponse(resp, body)
		}
		return false, fmt.Errorf("live dial: %w", err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(c.cfg.MaxResponseBytes)

	sent := c.cfg.Now()
	if err := writeMsg(hctx, conn, wsHello{Type: msgHello, Protocol: ProtocolVersion, Replica: c.cfg.Replica, Token: tok}); err != nil {
		return false, err
	}
	typ, frame, err := readMsg(hctx, conn)
	if err != nil {
		return false, err
	}
	switch typ {
	case msgWelcome:
		var w wsWelcome
		if err := crdt.Unmarshal(frame, &w); err != nil {
			return false, fmt.Errorf("%w: welcome: %v", ErrProtocol, err)
		}
		c.setInfo(w.Hello, sent, c.cfg.Now())
	case msgError:
		return false, decodeWSError(frame)
	default:
		return false, fmt.Errorf("%w: %q before welcome", ErrProtocol, typ)
	}
	hcancel()

	for coll, cur := range cursors {
		if err := writeMsg(ctx, conn, wsSub{Type: msgSub, Collection: coll, Cursor: cur}); err != nil {
			return true, err
		}
	}

	var lastRead atomic.Int64
	lastRead.Store(time.Now().UnixNano())
	go c.pinger(ctx, cancel, conn, &lastRead)

	for {
		typ, frame, err := readMsg(ctx, conn)
		if err != nil {
			return true, err
		}
		lastRead.Store(time.Now().UnixNano())
		switch typ {
		case msgChanges:
			var m wsChanges
			if err := crdt.Unmarshal(frame, &m); err != nil {
				return true, fmt.Errorf("%w: changes: %v", ErrProtocol, err)
			}
			cur, ok := cursors[m.Collection]
			if !ok {
				continue // unsubscribed or never asked for: ignore
			}
			entries := entriesFromWire(m.Entries)
			c.observeEntries(entries)
			if len(entries) > 0 || m.Next > cur {
				onChanges(m.Collection, entries, max(cur, m.Next))
			}
			cursors[m.Collection] = max(cur, m.Next)
		case msgResync:
			var m wsResync
			if err := crdt.Unmarshal(frame, &m); err != nil {
				return true, fmt.Errorf("%w: resync: %v", ErrProtocol, err)
			}
			if _, ok := cursors[m.Collection]; !ok {
				continue
			}
			if err := c.catchUp(ctx, m.Collection, cursors, onChanges); err != nil {
				return true, err
			}
			if err := writeMsg(ctx, conn, wsSub{Type: msgSub, Collection: m.Collection, Cursor: cursors[m.Collection]}); err != nil {
				return true, err
			}
		case msgError:
			return true, decodeWSError(frame)
		case msgPong, msgAck:
		default:
			c.log.Debug("ignoring unknown live message", "type", typ)
		}
	}
}

// catchUp pulls collection over HTTP from its cursor to the end of its log.
func (c *Client) catchUp(ctx context.Context, coll string, cursors map[string]uint64, onChanges ChangesFunc) error {
	for {
		cur := cursors[coll]
		p, err := c.Pull(ctx, coll, cur, 0)
		if err != nil {
			return fmt.Errorf("resync: %w", err)
		}
		if len(p.Entries) > 0 || p.Next > cur {
			onChanges(coll, p.Entries, max(cur, p.Next))
		}
		cursors[coll] = max(cur, p.Next)
		if !p.More {
			return nil
		}
	}
}

// pinger pings the server every PingInterval and drops the connection
// (cancelling the session) when nothing was read for two intervals.
func (c *Client) pinger(ctx context.Context, cancel context.CancelFunc, conn *websocket.Conn, lastRead *atomic.Int64) {
	t := time.NewTicker(c.cfg.PingInterval)
	defer t.Stop()
	var nonce uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if time.Since(time.Unix(0, lastRead.Load())) > 2*c.cfg.PingInterval {
			c.log.Info("live connection silent; dropping it")
			cancel()
			return
		}
		nonce++
		if err := writeMsg(ctx, conn, wsPing{Type: msgPing, Nonce: nonce}); err != nil {
			cancel()
			return
		}
	}
}

func writeMsg(ctx context.Context, conn *websocket.Conn, m any) error {
	b, err := crdt.Marshal(m)
	if err != nil {
		return err
	}
	if err := conn.Write(ctx, websocket.MessageBinary, b); err != nil {
		return fmt.Errorf("live write: %w", err)
	}
	return nil
}

func readMsg(ctx context.Context, conn *websocket.Conn) (string, []byte, error) {
	mt, b, err := conn.Read(ctx)
	if err != nil {
		return "", nil, fmt.Errorf("live read: %w", err)
	}
	if mt != websocket.MessageBinary {
		return "", nil, fmt.Errorf("%w: text frame", ErrProtocol)
	}
	typ, err := messageType(b)
	return typ, b, err
}

func decodeWSError(frame []byte) error {
	var m wsError
	if err := crdt.Unmarshal(frame, &m); err != nil {
		return fmt.Errorf("%w: error message: %v", ErrProtocol, err)
	}
	return &Error{Code: m.Code, Message: m.Message, Collection: m.Collection}
}
