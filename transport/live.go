package transport

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/internal/bug"
	"github.com/convergo/convergo/transport/proto"
)

// A live session is one WebSocket (wsconn.go) and what it borrows while it
// has work; an idle session holds no goroutine:
//
//   - reading: on Linux the connection's socket is registered with the
//     server's one epoll loop (poll_linux.go), and when it is readable a
//     reader of the server's pool (readers) reads and handles what
//     arrived, then re-arms it. A connection whose socket cannot be had
//     (TLS, a listener that wraps connections in a type of its own), or
//     any connection on other systems or with Config's noPoll, is read by
//     a goroutine of its own instead: the same code, only the loop
//     around it differs;
//   - writing: a broadcast page offered to a connection with nothing
//     queued and no writer is written at once by the group's goroutine,
//     with one write that does not wait (writeDirect); otherwise, and for
//     what such a write leaves, the server's pool of writers (writers.go):
//     a writer takes a connection with queued frames, writes what is
//     queued (control frames first, owed resyncs and resets after the
//     queued frames it takes, so that none overtakes the welcome) under
//     one deadline with one writev, and moves on;
//   - pushing: a push message is applied on a goroutine of its own, which
//     ends with its pushed answer queued; a session has at most one push
//     in flight (the client waits for the answer), so that the read loop
//     never waits for the store, and its message counts with the HTTP
//     bodies in flight (Limits.MaxBodyBytesInFlight) until it is answered;
//   - the server's one pinger (ping.go) has a ping written to every
//     connection each PingInterval, spread over the interval, and closes
//     connections silent for IdleTimeout;
//   - its subscriptions are entries of broadcast groups (broadcast.go),
//     which read each collection's new changes once and queue the same
//     frame bytes on every caught-up connection.
//
// Nothing is buffered without bound: the queue holds at most
// Limits.SendQueue messages and Limits.MaxQueueBytes bytes (the messages
// being written included; one message is always let into an empty queue,
// so a page larger than the bound still travels), and at most one page
// waits outside it, parked (broadcast.go); a subscription whose page stays
// parked for Limits.SlowConsumer stops with resync. A client that stops
// reading altogether is closed when a write takes longer than
// WriteTimeout, and one that begins a message and does not finish it
// within WriteTimeout is closed too (1008, reasonReadTimeout).

type frame struct {
	data  []byte        // a whole WebSocket frame, header and payload (wsconn.go)
	sub   *member       // the subscription of a changes page, else nil
	recs  int           // records in a changes page
	close ws.StatusCode // after data, close with this status (0: don't)
	why   string
}

type liveConn struct {
	s      *Server
	nc     net.Conn // the hijacked connection; finish closes it
	raw    net.Conn // nc without the Listener's wrapper: reads, writes, deadlines
	addr   string
	id     string // the request id of the upgrade: the session's, in its logs and errors
	ctx    context.Context
	cancel context.CancelFunc
	heard  atomic.Int64 // unix nanos of the last message or pong
	slot   int          // the pinger's slot (ping.go)
	poll   pollState    // the epoll registration (poll_linux.go)

	// The reading side: touched by one reader at a time. On the netpoll
	// path readers take rmu, uncontended: it orders their reads for the
	// race detector, which does not see the hand-off through epoll.
	rmu     sync.Mutex
	pending []byte // sent by the client before its upgrade was answered, not read yet
	prin    Principal
	sess    proto.Session // set by the hello: what a push is read in
	rateKey string

	started   atomic.Bool // the hello was accepted
	pushing   atomic.Bool // a push is in flight: applied, its pushed not queued yet
	pushMu    sync.Mutex  // held while a push's answer is queued: answers go in order
	pinged    atomic.Bool // a ping is out: its pong refreshes the leases
	closeSent atomic.Bool // our close frame is written (or being written)
	draining  atomic.Bool // read only for the client's close: the session is ending
	ended     sync.Once   // finish
	// wmu orders the writes on the socket, one at a time: a writer's
	// batch, a close, a direct write. A direct write that leaves part of
	// its frame keeps wmu locked for the writer that writes the rest
	// (rest), so that no other frame comes into the middle of it.
	wmu sync.Mutex
	// torn, under wmu: a frame on the socket may be unfinished (a direct
	// write's rest was dropped, or a write failed), so nothing more is
	// written on it, not even a close frame: the client would read its
	// bytes as the unfinished frame's.
	torn bool

	// sock is the socket, nil when it cannot be had (TLS, a listener's
	// own connection type, other systems): the poller registers it, and
	// broadcast pages are written on it directly (writeDirect) with dbuf,
	// dn and dsend (c.sendNow, bound once), under wmu.
	sock  syscall.RawConn
	dbuf  []byte
	dn    int
	dsend func(fd uintptr)

	tmu      sync.Mutex // guards the timers
	noHello  *time.Timer
	expiry   *time.Timer
	backstop *time.Timer // ends the session when the close handshake stalls

	qmu     sync.Mutex // guards the send queue below
	frames  []frame    // queued, oldest first
	qbytes  int64      // bytes of frames and of those being written
	rest    []byte     // the end of a frame writeDirect began: first out, under the wmu it keeps
	writing bool       // a writer (or a direct write) holds the connection (or it is dead)
	dead    bool       // writes ended: nothing is queued any more
	idle    chan struct{}
	room    chan struct{} // closed and replaced when room frees, if awaited
	awaited bool          // room is awaited: a put waits on it
	parked  *parkedFrame  // the one page waiting for room (broadcast.go)
	waiting []*member     // members refused the parking place
	owed    bool          // resyncs to write, after the frames queued before them
	turn    bool          // a page is being read for one subscription of it alone
	ping    bool          // a ping to write
	pong    []byte        // the payload of a pong to write, when wantPong
	wantP   bool

	who atomic.Pointer[Principal] // set by the hello
	// held is the subject whose count of sessions (Server.sessions) the
	// session holds, "" if none; under mu. finish releases it.
	held string

	// subMu is held by a sub while it joins its group, and by finish
	// while it takes the subscriptions to end: a sub handled as the
	// session ends (finish may run on another goroutine) either joins
	// before finish takes it or sees the session over and joins nothing.
	subMu   sync.Mutex
	mu      sync.Mutex
	subs    map[string]*member
	resyncs map[string]*proto.ResetInfo // collections owed a resync (nil) or a reset message
}

type parkedFrame struct {
	m *member
	f frame
}

// netConner is a connection wrapping another (the Listener's): the socket
// is the inner one's.
type netConner interface{ netConn() net.Conn }

func (s *Server) serveLive(w http.ResponseWriter, r *http.Request) {
	start := s.now()
	sw := &statusWriter{ResponseWriter: w}
	upgraded := false
	defer func() {
		if !upgraded {
			s.metrics.requests.WithLabelValues("live", strconv.Itoa(sw.code())).Inc()
			s.metrics.duration.WithLabelValues("live").Observe(s.now().Sub(start).Seconds())
		}
	}()
	if err := s.checkOrigin(sw, r); err != nil {
		s.writeError(sw, r, err)
		return
	}
	if r.Method != http.MethodGet {
		sw.Header().Set("Allow", "GET")
		s.writeError(sw, r, proto.Errorf(proto.CodeMethodNotAllowed, "%s %s: open a WebSocket with GET", r.Method, r.URL.Path))
		return
	}
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		s.writeError(sw, r, proto.Errorf(proto.CodeUpgradeRequired, "%s is a WebSocket endpoint", r.URL.Path))
		return
	}
	addr := limitKey(s.clientAddr(r))
	// Upgrades have their own bucket, so that a client's messages do not
	// keep another client at the same address from connecting.
	if wait := s.rate.take("upgrade:"+addr, s.now()); wait > 0 {
		s.writeError(sw, r, rateLimited(wait))
		return
	}
	if !s.conns.acquire(addr) {
		s.writeError(sw, r, &proto.Error{Status: http.StatusTooManyRequests, Code: proto.CodeRateLimited,
			Message: fmt.Sprintf("more than %d live connections from %s", s.limits.MaxConnsPerAddr, addr), RetryAfter: 5 * time.Second})
		return
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		s.conns.release(addr)
		s.writeError(sw, r, proto.Errorf(proto.CodeUnavailable, "the server is shutting down"))
		return
	}
	s.wg.Add(1) // until the session's finish
	s.mu.Unlock()

	// checkOrigin above decided. The upgrade answers with the headers set
	// so far (the request id).
	nc, rw, _, err := ws.HTTPUpgrader{Header: sw.Header()}.Upgrade(r, sw)
	if err != nil {
		s.log.Debug("websocket upgrade failed", "addr", addr, "err", err)
		if nc != nil {
			_ = nc.Close()
		}
		s.conns.release(addr)
		s.wg.Done()
		return // the upgrader has answered
	}
	upgraded = true
	s.metrics.requests.WithLabelValues("live", "101").Inc()
	s.metrics.duration.WithLabelValues("live").Observe(s.now().Sub(start).Seconds())
	// net/http's buffers go with the request; what the client sent after
	// its upgrade request and net/http read ahead is kept for the reader.
	var pending []byte
	if n := rw.Reader.Buffered(); n > 0 {
		p, _ := rw.Reader.Peek(n)
		pending = bytes.Clone(p)
	}
	raw := nc
	if u, ok := nc.(netConner); ok {
		raw = u.netConn()
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &liveConn{
		s: s, nc: nc, raw: raw, addr: addr, ctx: ctx, cancel: cancel, id: sw.Header().Get(proto.HeaderRequestID),
		sock:    socketOf(raw),
		pending: pending,
		rateKey: "addr:" + addr,
		room:    make(chan struct{}),
		subs:    map[string]*member{},
		resyncs: map[string]*proto.ResetInfo{},
	}
	if c.sock != nil {
		c.dsend = c.sendNow
	}
	c.heard.Store(s.now().UnixNano())
	s.mu.Lock()
	s.live[c] = struct{}{}
	closing := s.closing // Shutdown began during the upgrade and missed c
	s.mu.Unlock()
	s.metrics.liveConns.Inc()
	s.pinger.add(c)
	// A socket that never says hello would hold its connection slot.
	c.tmu.Lock()
	c.noHello = time.AfterFunc(s.timing.hello, func() {
		if !c.started.Load() {
			c.fatal(ws.StatusPolicyViolation, proto.Errorf(proto.CodeUnauthenticated, "no hello within %v", s.timing.hello))
		}
	})
	c.tmu.Unlock()
	if closing {
		c.goAway()
	}
	if !s.noPoll && s.poller.add(c, len(pending) == 0) {
		if len(pending) > 0 {
			s.readers.run(c) // the bytes are here already: read them, then arm
		}
		return // the handler's goroutine ends: the poller wakes a reader
	}
	c.readLoop()
}

// readLoop is the reading of a connection that is not polled: a goroutine
// reads and handles client messages until the session ends.
func (c *liveConn) readLoop() {
	br := bufio.NewReaderSize(connSource{c}, readBufSize)
	for {
		if err := c.readNext(br, false); err != nil {
			c.finish(err)
			return
		}
	}
}

// readReady is what a reader of the pool does with a polled connection
// that is readable: it reads and handles the messages that arrived, then
// re-arms the connection. Its buffer goes back to the pool at a message
// boundary, so an idle connection holds none.
func (c *liveConn) readReady() {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(connSource{c})
	var err error
	for {
		if err = c.readNext(br, true); err != nil || (br.Buffered() == 0 && len(c.pending) == 0) {
			break
		}
	}
	br.Reset(nil)
	readerPool.Put(br)
	if err != nil && !errors.Is(err, errNoData) {
		c.finish(err)
		return
	}
	c.s.poller.rearm(c)
}

// finish ends the session, once: its subscriptions, its writes (waiting
// for a writer that holds it), its timers, its socket, and its place in the
// server.
func (c *liveConn) finish(err error) {
	c.ended.Do(func() {
		c.cancel()
		c.tmu.Lock()
		for _, t := range []*time.Timer{c.noHello, c.expiry, c.backstop} {
			if t != nil {
				t.Stop()
			}
		}
		c.tmu.Unlock()
		c.subMu.Lock()
		c.mu.Lock()
		subs := make([]*member, 0, len(c.subs))
		for coll, m := range c.subs {
			subs = append(subs, m)
			delete(c.subs, coll)
			c.s.subscriptions.release(m.held)
		}
		held := c.held
		c.held = ""
		c.mu.Unlock()
		if held != "" {
			c.s.sessions.release(held)
		}
		c.subMu.Unlock()
		for _, m := range subs {
			m.leave()
		}
		c.endWrites(false)
		c.s.poller.remove(c)
		_ = c.nc.Close()
		c.s.pinger.remove(c)
		c.s.mu.Lock()
		delete(c.s.live, c)
		c.s.mu.Unlock()
		c.s.metrics.liveConns.Dec()
		c.s.conns.release(c.addr)
		if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, errClientClosed) {
			c.s.log.Debug("live session ended", "addr", c.addr, "err", err)
		}
		c.s.wg.Done()
	})
}

// abort ends the session from a goroutine of its own: the caller may be
// its writer, which finish waits for.
func (c *liveConn) abort(err error) {
	c.cancel()
	c.s.bg.Add(1)
	go func() { defer c.s.bg.Done(); c.finish(err) }()
}

// armBackstop ends the session after d, if it has not ended by then.
func (c *liveConn) armBackstop(d time.Duration) {
	c.tmu.Lock()
	defer c.tmu.Unlock()
	if c.backstop == nil {
		c.backstop = time.AfterFunc(d, func() { c.finish(errCloseTimeout) })
	}
}

// closeWith writes a close frame with status and reason, unless one was
// written, and lets the session end: at the client's close, or after
// closeLinger.
func (c *liveConn) closeWith(status ws.StatusCode, reason string) {
	if !c.closeSent.CompareAndSwap(false, true) {
		return
	}
	c.wmu.Lock()
	var err error
	if !c.torn { // else the session ends without our close frame
		_ = c.raw.SetWriteDeadline(time.Now().Add(c.s.timing.write))
		_, err = c.raw.Write(closeFrame(status, reason))
		c.torn = err != nil
	}
	c.wmu.Unlock()
	c.afterClose(err)
}

// afterClose is what follows our close frame: nothing is handled any more,
// and the session ends at the client's close or after closeLinger.
func (c *liveConn) afterClose(err error) {
	c.draining.Store(true)
	c.cancel()
	if err != nil {
		c.abort(err)
		return
	}
	c.armBackstop(closeLinger)
}

// goAway closes the session for a server shutdown.
func (c *liveConn) goAway() {
	c.s.bg.Add(1)
	go func() { defer c.s.bg.Done(); c.closeWith(ws.StatusGoingAway, "server shutting down") }()
}

// closeNow ends the session without a close frame.
func (c *liveConn) closeNow() { c.abort(errClosedByUs) }

// errFatal ends the handling of messages after a fatal error was queued.
var errFatal = errors.New("fatal protocol error")

// handle handles one client message.
func (c *liveConn) handle(op ws.OpCode, data []byte) error {
	if op != ws.OpBinary {
		c.fatal(ws.StatusUnsupportedData, proto.Errorf(proto.CodeMalformed, "messages are binary CBOR frames"))
		return errFatal
	}
	// A client over its rate is slowed down, not refused: the reader
	// waits before handling the message (and reads nothing meanwhile, so
	// TCP pushes back). Dropping a push or a sub would leave the client
	// waiting for an answer that never comes.
	for {
		wait := c.s.rate.take(c.rateKey, c.s.now())
		if wait == 0 {
			break
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-c.ctx.Done():
			t.Stop()
			return c.ctx.Err()
		}
	}
	started := c.started.Load()
	if started {
		// As every HTTP request: the expiry timer may be late, and the
		// session's close by revokeLive may not have come yet.
		if err := c.s.stillValid(c.prin); err != nil {
			c.fatal(ws.StatusPolicyViolation, err)
			return errFatal
		}
		if proto.IsPush(data) {
			return c.push(data)
		}
	}
	m, err := proto.DecodeClientMessage(data, c.sess)
	if errors.Is(err, proto.ErrUnknownType) && started {
		// A message of a later revision: say so, keep the session.
		c.queue(proto.ErrorMessage{Code: proto.CodeMalformed, Message: "unknown message type", RequestID: c.id})
		return nil
	}
	if err != nil {
		c.fatal(ws.StatusPolicyViolation, decodeError("message", err))
		return errFatal
	}
	c.s.metrics.liveMsgs.WithLabelValues(m.MessageType()).Inc()
	if !started {
		h, ok := m.(proto.Hello)
		if !ok {
			c.fatal(ws.StatusPolicyViolation, proto.Errorf(proto.CodeMalformed, "the first message must be hello, got %s", m.MessageType()))
			return errFatal
		}
		p, err := c.hello(h)
		if err != nil && c.ctx.Err() != nil {
			// The session has begun to end meanwhile (holdSubject): there
			// is no one to tell, and nothing failed.
			return errFatal
		}
		if err != nil {
			c.fatal(refusalStatus(err), err)
			return errFatal
		}
		c.prin = p
		c.started.Store(true)
		if c.s.ownClient(p) {
			c.rateKey = "sub:" + p.Subject
		}
		if !p.Expires.IsZero() {
			c.tmu.Lock()
			c.expiry = time.AfterFunc(p.Expires.Sub(c.s.now()), func() {
				c.fatal(ws.StatusPolicyViolation, errSessionExpired())
			})
			c.tmu.Unlock()
		}
		return nil
	}
	switch m := m.(type) {
	case proto.Hello:
		c.fatal(ws.StatusPolicyViolation, proto.Errorf(proto.CodeMalformed, "hello twice"))
		return errFatal
	case proto.Sub:
		c.subscribe(c.prin, m)
	case proto.Unsub:
		c.unsubscribe(m.Collection)
	case proto.Ping:
		c.queue(proto.Pong{Nonce: m.Nonce})
	}
	return nil
}

// refusalStatus is the close status of a session ended by err, a
// refused hello or the clock's refusal of a push: 1002 for another
// protocol version, 1013 (try again later) for a condition of the
// server's own, refused unavailable (its clock off its store's, say),
// 1008 otherwise (docs/protocol.md, section 9, "Close codes").
func refusalStatus(err error) ws.StatusCode {
	var e *proto.Error
	if errors.As(err, &e) {
		switch e.Code {
		case proto.CodeUnsupportedVersion:
			return ws.StatusCode(proto.CloseProtocolVersion)
		case proto.CodeUnavailable:
			return ws.StatusCode(proto.CloseTryAgainLater)
		}
	}
	return ws.StatusPolicyViolation
}

func (c *liveConn) hello(h proto.Hello) (Principal, error) {
	if h.Protocol != proto.Version {
		return Principal{}, proto.Errorf(proto.CodeUnsupportedVersion, "protocol version %d: this server speaks %d", h.Protocol, proto.Version)
	}
	if err := crdt.ValidateReplica(h.Replica); err != nil {
		return Principal{}, proto.Errorf(proto.CodeInvalid, "hello: %s", publicText(err))
	}
	if err := c.s.clockRefusal(); err != nil {
		return Principal{}, err
	}
	p, err := c.s.authenticate(c.ctx, h.Token)
	var e *proto.Error
	if h.Token == "" && errors.As(err, &e) && e.Code == proto.CodeUnauthenticated {
		// A session reads no Authorization header: its token is the hello's.
		return Principal{}, withCause(proto.Errorf(proto.CodeUnauthenticated, "no token: send it in the hello, key 3"), err)
	}
	if err != nil {
		return Principal{}, err
	}
	c.who.Store(&p)
	if _, denied := c.s.deny.deniedAt(p, c.s.now().UnixMilli()); denied { // denied since authenticate
		return Principal{}, errSessionRevoked()
	}
	if err := c.holdSubject(p.Subject); err != nil {
		return Principal{}, err
	}
	welcome := c.s.helloAnswer(p)
	c.sess = proto.Session{Replica: h.Replica, Base: welcome.ServerTime}
	c.queue(proto.Welcome{Hello: welcome})
	return p, nil
}

// holdSubject counts the session among its subject's (Server.sessions),
// refusing it rate_limited beyond Limits.MaxSessionsPerSubject: one
// subject cannot take every connection of the server by spreading its
// sessions over addresses. An anonymous session (no subject) is counted
// by its address only.
func (c *liveConn) holdSubject(subject string) error {
	if subject == "" {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx.Err() != nil {
		// finish has begun, and may have looked at held already: hold
		// nothing it would not release.
		return c.ctx.Err()
	}
	if !c.s.sessions.acquire(subject) {
		return &proto.Error{Status: http.StatusTooManyRequests, Code: proto.CodeRateLimited,
			Message: fmt.Sprintf("more than %d live sessions of this subject", c.s.limits.MaxSessionsPerSubject), RetryAfter: 5 * time.Second}
	}
	c.held = subject
	return nil
}

// errSessionExpired is the error of a session whose token has expired.
func errSessionExpired() error {
	return proto.Errorf(proto.CodeTokenExpired, "the token has expired: reconnect with a fresh one")
}

// errSessionRevoked is the error of a session whose principal the deny
// list names.
func errSessionRevoked() error {
	return proto.Errorf(proto.CodeRevoked, "access to this server was revoked")
}

// stillValid reports why the principal of an open session may no longer
// be served: its token has expired (token_expired) or the deny list names
// it (revoked); nil if it may. Every message of the session is checked,
// as every HTTP request is.
func (s *Server) stillValid(p Principal) error {
	now := s.now()
	if !p.Expires.IsZero() && !now.Before(p.Expires) {
		return errSessionExpired()
	}
	if _, denied := s.deny.deniedAt(p, now.UnixMilli()); denied {
		return errSessionRevoked()
	}
	return nil
}

// push applies a push message of the session, as an HTTP push of the
// same changes by the session's principal, off the read loop: the store
// is not waited for here. What costs nothing comes before the message is
// decoded (the principal's checks came first, in handle): one push in
// flight, the size an HTTP body may have, room among the bodies in
// flight.
func (c *liveConn) push(data []byte) error {
	c.s.metrics.liveMsgs.WithLabelValues(proto.TypePush).Inc()
	// The session's client corrected its clock by this server's at its
	// hello: with the clock off since, the session ends, unanswered, and
	// the client pushes again in its next one (clockRefusal).
	if err := c.s.clockRefusal(); err != nil {
		c.fatal(refusalStatus(err), err)
		return errFatal
	}
	p := c.prin
	if !c.claimPush() {
		return errFatal
	}
	// Each push has a request id of its own, as an HTTP request has: its
	// answer carries it (pushed key 4) and its refusals are logged under it.
	id := c.s.ids.next()
	failed := func(err error) proto.Pushed {
		e := c.s.errorOf(err, "live push", id)
		return proto.Pushed{Code: e.Code, Message: cutMessage(e.Message), RequestID: id}
	}
	refuse := func(err error) { c.answerPush(func() proto.Pushed { return failed(err) }) }
	// No more than an HTTP push may carry, whatever MaxMessageBytes.
	size := int64(len(data))
	if size > c.s.limits.MaxBodyBytes {
		refuse(proto.Errorf(proto.CodeTooLarge, "push message over %d bytes", c.s.limits.MaxBodyBytes))
		return nil
	}
	// The message's bytes count with the HTTP bodies in flight until the
	// push is answered; the reader does not wait for room.
	release, err := c.s.reserveBytes(size, c.rateKey, 0, nil)
	if err != nil {
		refuse(err)
		return nil
	}
	charge, releaseDecoded := c.s.chargeDecoded(heldBody{size, c.rateKey})
	m, err := proto.DecodePushLiveCharged(data, c.sess, charge)
	if err != nil {
		// Refused whole, as its HTTP body would be; the session goes on.
		releaseDecoded()
		release()
		refuse(decodeError("push", err))
		return nil
	}
	c.answerPush(func() proto.Pushed {
		defer release()
		defer releaseDecoded()
		// The push runs to its end if the session ends meanwhile, as a
		// request would: its changes may be committed, and the client
		// pushes them again (duplicate).
		ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx), c.s.limits.RequestTimeout)
		defer cancel()
		var results []proto.PushResult
		err := bug.Recovered(func() (err error) {
			results, err = c.s.pushChanges(ctx, p, m.Changes, m.Refused, m.Versions)
			return err
		})
		if err != nil {
			return failed(err)
		}
		return proto.Pushed{Results: results, RequestID: id}
	})
	return nil
}

// claimPush marks a push of the session in flight, unless one is: a
// client sends its next push only once the one before is answered, and a
// second one is a protocol error that ends the session (false).
func (c *liveConn) claimPush() bool {
	if !c.pushing.CompareAndSwap(false, true) {
		c.fatal(ws.StatusPolicyViolation, proto.Errorf(proto.CodeMalformed, "a push before the pushed answering the one before: one push at a time"))
		return false
	}
	return true
}

// answerPush runs the push in flight with run, on a goroutine of its own,
// and queues its answer.
func (c *liveConn) answerPush(run func() proto.Pushed) {
	c.s.bg.Add(1)
	go func() {
		defer c.s.bg.Done()
		answer := run()
		// In flight ends before the answer is queued, since the client
		// may push again as soon as it reads it; pushMu keeps the answer
		// of a push that a client sent too early behind this one.
		c.pushMu.Lock()
		defer c.pushMu.Unlock()
		c.pushing.Store(false)
		c.queue(answer)
	}()
}

func (c *liveConn) principal() (Principal, bool) {
	p := c.who.Load()
	if p == nil {
		return Principal{}, false
	}
	return *p, true
}

// queue sends a control message (welcome, ack, pong), waiting for room in
// the queue. A client that leaves the queue full for WriteTimeout is
// dropped.
func (c *liveConn) queue(m proto.Message) {
	data, err := proto.EncodeMessage(m)
	if err != nil {
		c.s.log.Error("encode live message", "type", m.MessageType(), "err", err)
		c.closeNow()
		return
	}
	if !c.put(c.ctx.Done(), frame{data: encodeFrame(ws.OpBinary, data)}, c.s.timing.write) && c.ctx.Err() == nil {
		c.s.log.Info("live client not reading: closing", "addr", c.addr)
		c.closeNow()
	}
}

// put queues f, waiting at most wait for room in the queue: fewer than
// Limits.SendQueue frames and f's bytes within Limits.MaxQueueBytes (or an
// empty queue). It reports whether f was queued; false with done still
// open means there was no room in time (or the connection's writes ended).
func (c *liveConn) put(done <-chan struct{}, f frame, wait time.Duration) bool {
	var t *time.Timer
	for {
		ok, room := c.tryPut(f)
		if ok {
			return true
		}
		if room == nil || wait <= 0 {
			return false
		}
		if t == nil {
			t = time.NewTimer(wait)
			defer t.Stop()
		}
		select {
		case <-room:
		case <-done:
			return false
		case <-t.C:
			return false
		}
	}
}

// tryPut queues f if there is room now. Otherwise it returns a channel
// closed when room frees, or nil when the connection's writes ended.
func (c *liveConn) tryPut(f frame) (bool, <-chan struct{}) {
	c.qmu.Lock()
	if c.dead {
		c.qmu.Unlock()
		return false, nil
	}
	if !c.fitsLocked(f) {
		room := c.room
		c.awaited = true
		c.qmu.Unlock()
		return false, room
	}
	c.pushLocked(f)
	c.unlockWake(true)
	return true, nil
}

func (c *liveConn) fitsLocked(f frame) bool {
	n := int64(len(f.data))
	return len(c.frames) < c.s.limits.SendQueue && (c.qbytes == 0 || c.qbytes+n <= c.s.limits.MaxQueueBytes)
}

func (c *liveConn) pushLocked(f frame) {
	c.frames = append(c.frames, f)
	c.qbytes += int64(len(f.data))
}

// The outcomes of offer.
const (
	offerQueued = iota // in the queue
	offerDirect        // to be written at once: the caller holds the writing flag and wmu, and calls writeDirect once the group is unlocked
	offerParked        // in the parking place: the member waits for room
	offerBusy          // neither: another subscription holds the parking place
)

// offer queues a changes page of m without waiting; a page that finds no
// room is parked, if the parking place is free (broadcast.go). A page
// that finds the connection with nothing to write and no writer is to be
// written at once instead (offerDirect): the connection is the caller's
// until it calls writeDirect, after unlocking the group, so that a fan-out
// to many connections does not hold the group (and the joins that wait
// for it) for the length of its writes. Called with m's group locked.
func (c *liveConn) offer(m *member, f frame) int {
	c.qmu.Lock()
	switch {
	case c.dead:
		c.qmu.Unlock()
		return offerQueued // dropped: the session is ending and m with it
	case c.parked == nil && c.fitsLocked(f):
		// The direct path: nothing queued or owed, no writer, no close
		// sent, and wmu free at once (a close being written holds it: the
		// page is queued rather than have the group wait).
		if c.dsend != nil && !c.writing && !c.workLocked() && !m.stopped.Load() && !c.closeSent.Load() && c.wmu.TryLock() {
			c.writing = true
			c.qbytes += int64(len(f.data))
			c.qmu.Unlock()
			return offerDirect
		}
		c.pushLocked(f)
		c.unlockWake(true)
		return offerQueued
	case c.parked == nil:
		c.parked = &parkedFrame{m: m, f: f}
		c.qmu.Unlock()
		return offerParked
	default:
		c.waiting = append(c.waiting, m)
		c.qmu.Unlock()
		return offerBusy
	}
}

// workLocked reports whether the connection has work for a writer: queued
// frames, owed resyncs, control frames, a parked page or members to wake.
func (c *liveConn) workLocked() bool {
	return len(c.frames) > 0 || c.owed || c.ping || c.wantP || c.parked != nil || len(c.waiting) > 0
}

// writeDirect is the broadcast's fast path: the caller, a group's
// goroutine, holds the connection's writing flag and wmu (offer), and
// writes f with one write on the socket that does not wait, with no
// deadline: a socket with room takes it whole. What the socket does not
// take (all of it, when the socket is full) is left in rest for the pool's
// writers, with wmu still locked, so that the rest goes out before any
// other frame and under the deadline of the writers' path, which handles
// a slow or stalled client as for any queued frame. The page is counted
// here, once.
func (c *liveConn) writeDirect(f frame) {
	// A page after our close frame is dropped, as writeBatch drops it, and
	// so is a page of a subscription that ended since offer.
	n := len(f.data)
	if !c.closeSent.Load() && (f.sub == nil || !f.sub.stopped.Load()) {
		c.countPage(f)
		c.dbuf, c.dn = f.data, 0
		if c.sock.Control(c.dsend) != nil {
			c.dn = 0 // the socket is closing: the writer's write says why
		}
		n = c.dn
		c.dbuf = nil
		if n == len(f.data) {
			c.s.metrics.directWhole.Inc()
		} else {
			c.s.metrics.directPartial.Inc()
		}
	}
	rest := f.data[n:]
	if len(rest) == 0 {
		c.wmu.Unlock()
	}
	c.qmu.Lock()
	if c.dead { // endWrites dropped the queue and its bytes
		if len(rest) > 0 {
			c.torn = true
			c.wmu.Unlock()
		}
		c.writing = false
		c.signalIdleLocked()
		c.qmu.Unlock()
		return
	}
	c.qbytes -= int64(n)
	c.freedLocked()
	if len(rest) > 0 {
		c.rest = rest
		c.qmu.Unlock()
		c.s.writers.run(c)
		return
	}
	c.unlockHandOff()
}

// takeTurn takes the connection's read turn for a page read for one of
// its subscriptions alone: a connection holds at most one such page in
// flight, and none beside a parked page, so it holds at most one page
// outside its queue (docs/operations.md, "Memory"). A member refused the
// turn waits to be woken like one refused the parking place.
func (c *liveConn) takeTurn(m *member) bool {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.turn || c.parked != nil {
		c.waiting = append(c.waiting, m)
		return false
	}
	c.turn = true
	return true
}

// unlockHandOff unlocks qmu, held by the caller with the writing flag,
// and hands the connection to a writer if there is work for one (queued
// while the caller wrote), or lets go of it.
func (c *liveConn) unlockHandOff() {
	work := c.workLocked()
	if !work {
		c.writing = false
	}
	c.qmu.Unlock()
	if work {
		c.s.writers.run(c)
	}
}

// unlockWake unlocks qmu, held by the caller, and with work for the
// writer (wake) has one write the connection's queue unless one does.
func (c *liveConn) unlockWake(wake bool) {
	start := wake && !c.writing
	if start {
		c.writing = true
	}
	c.qmu.Unlock()
	if start {
		c.s.writers.run(c)
	}
}

// endTurn gives the read turn back; waiting members are woken by the
// writer.
func (c *liveConn) endTurn() {
	c.qmu.Lock()
	c.turn = false
	c.unlockWake(len(c.waiting) > 0)
}

// unpark empties the parking place if m's page is in it, and reports
// whether it was. Called with m's group locked; the members waiting for
// the place are woken by the writer.
func (c *liveConn) unpark(m *member) bool {
	c.qmu.Lock()
	if c.parked == nil || c.parked.m != m {
		c.qmu.Unlock()
		return false
	}
	c.parked = nil
	c.unlockWake(len(c.waiting) > 0)
	return true
}

// owe ends m from its group's side and owes the client a resync for it,
// or with reset a reset message: its cursor is of another history.
func (c *liveConn) owe(m *member, reset *proto.ResetInfo) {
	c.mu.Lock()
	if c.subs[m.coll] == m {
		delete(c.subs, m.coll)
		c.s.subscriptions.release(m.held)
		c.resyncs[m.coll] = reset
	}
	c.mu.Unlock()
	c.qmu.Lock()
	c.owed = true
	c.unlockWake(true)
}

// fatal sends an error message and closes the connection after it, with
// status, or 1011 when err is not a protocol error (an internal one). It
// does not wait for the client or its writer.
func (c *liveConn) fatal(status ws.StatusCode, err error) {
	// No client message is handled after a fatal error, from whichever
	// goroutine (the expiry timer, revokeLive): the reader reads on only
	// for the client's close (readNext), while the error and the close
	// wait in the queue.
	c.draining.Store(true)
	var e *proto.Error
	if !errors.As(err, &e) {
		c.s.log.Error("internal error in live session", "err", err)
		e = proto.Errorf(proto.CodeInternal, "internal error")
		status = ws.StatusInternalServerError
	}
	if e.Cause != nil {
		c.s.log.Debug("live session refused", "request", c.id, "code", e.Code, "err", e.Cause)
	}
	data, _ := proto.EncodeMessage(proto.ErrorMessage{Code: e.Code, Message: cutMessage(e.Message), RequestID: c.id})
	if c.ctx.Err() != nil {
		return
	}
	if !c.put(c.ctx.Done(), frame{data: encodeFrame(ws.OpBinary, data), close: status, why: e.Code}, 0) && c.ctx.Err() == nil {
		// Queue full: close without the message, on a goroutine of its
		// own. The close frame waits for wmu, which a writer holds for as
		// long as WriteTimeout on a client that does not read, and the
		// caller may be one that must not wait for any one client: the
		// deny list's reader (revokeLive), which would otherwise apply no
		// later entry, another tenant's revocation, meanwhile.
		c.s.bg.Add(1)
		go func() { defer c.s.bg.Done(); c.closeWith(status, e.Code) }()
	}
}

// wantPing has a ping written to the client (ping.go).
func (c *liveConn) wantPing() {
	c.wantControl(func() { c.ping = true; c.pinged.Store(true) })
}

// wantPong has a pong with payload written: the answer to the client's
// ping (the latest one, if several wait).
func (c *liveConn) wantPong(payload []byte) {
	c.wantControl(func() { c.pong, c.wantP = payload, true })
}

// wantControl records a control frame to write (set, under qmu) and hands
// the connection to a writer unless one holds it.
func (c *liveConn) wantControl(set func()) {
	c.qmu.Lock()
	if c.dead {
		c.qmu.Unlock()
		return
	}
	set()
	c.unlockWake(true)
}

// batchBytes is about how many bytes one writer batch holds: small frames
// share one deadline and one writev, large pages get one each.
const batchBytes = 64 << 10

// flush is what a writer does with a connection it took: it writes control
// frames, queued frames and owed resyncs, a batch at a time under
// one deadline, until nothing is queued; then it moves the parked page
// into the queue and wakes the members waiting for room. The connection is
// held by one writer at a time (writing).
func (c *liveConn) flush() {
	var batch []frame
	for {
		c.qmu.Lock()
		if c.dead {
			c.writing = false
			c.signalIdleLocked()
			c.qmu.Unlock()
			return
		}
		if rest := c.rest; rest != nil {
			c.rest = nil
			c.qmu.Unlock()
			if !c.writeRest(rest) {
				c.endWrites(true)
				return
			}
			continue
		}
		owed := c.owed
		c.owed = false
		var ctl [][]byte
		if c.wantP {
			ctl = append(ctl, encodeFrame(ws.OpPong, c.pong))
			c.pong, c.wantP = nil, false
		}
		if c.ping {
			ctl = append(ctl, pingFrame)
			c.ping = false
		}
		var size int
		n := 0
		for n < len(c.frames) && (n == 0 || size+len(c.frames[n].data) <= batchBytes) {
			size += len(c.frames[n].data)
			n++
		}
		batch = append(batch[:0], c.frames[:n]...)
		c.frames = slices.Delete(c.frames, 0, n)
		nothing := n == 0 && !owed && len(ctl) == 0
		var wake []*member
		var unparked *member
		if nothing {
			// Nothing to write: the parked page moves in, or its place
			// goes to a waiting member.
			if c.parked != nil && c.fitsLocked(c.parked.f) {
				c.pushLocked(c.parked.f)
				unparked = c.parked.m
				c.parked = nil
			}
			if c.parked == nil {
				wake, c.waiting = c.waiting, nil
			}
			if unparked == nil {
				c.writing = false
			}
		}
		c.qmu.Unlock()
		if nothing {
			if unparked != nil {
				unparked.unparked(true)
			}
			for _, m := range wake {
				m.unparked(false)
			}
			if unparked != nil {
				continue
			}
			return
		}
		ok := c.writeBatch(owed, ctl, batch)
		clear(batch)
		if !ok {
			c.endWrites(true)
			return
		}
	}
}

// writeBatch writes the control frames ctl, batch and owed resyncs with
// one writev under one deadline, then releases the frames' bytes. It
// reports false when the connection's writes ended.
func (c *liveConn) writeBatch(owed bool, ctl [][]byte, batch []frame) bool {
	bufs := make(net.Buffers, 0, len(ctl)+len(batch)+1)
	bufs = append(bufs, ctl...)
	var size int64
	closing := false
	for _, f := range batch {
		size += int64(len(f.data))
		if closing || (f.sub != nil && f.sub.stopped.Load()) {
			continue
		}
		c.countPage(f)
		bufs = append(bufs, f.data)
		if f.close != 0 && c.closeSent.CompareAndSwap(false, true) {
			bufs = append(bufs, closeFrame(f.close, f.why))
			closing = true
		}
	}
	if owed && !closing {
		// After the batch, not before it: the session's first batch holds
		// its welcome, which a reset owed to a sub sent right behind the
		// hello must not overtake (docs/protocol.md, section 9). A page of
		// the subscription a resync or reset ends is dropped above, as
		// its member stopped before it was owed.
		bufs = c.appendResyncs(bufs)
	}
	var err error
	if len(bufs) > 0 {
		c.wmu.Lock()
		if c.torn || (c.closeSent.Load() && !closing) {
			// Our close frame went: no frame follows it, and the session
			// ends at the client's close. Or a frame was left unfinished.
		} else {
			_ = c.raw.SetWriteDeadline(time.Now().Add(c.s.timing.write))
			_, err = bufs.WriteTo(c.raw)
			c.torn = err != nil // it was not: see above
		}
		c.wmu.Unlock()
	}
	c.release(size)
	switch {
	case closing:
		c.afterClose(err)
		return false
	case err != nil:
		c.writeFailed(err)
		return false
	}
	return true
}

// writeRest writes the end of a frame writeDirect began, under the wmu it
// kept locked, and the writers' deadline; then it unlocks wmu and gives
// back the bytes. It reports false when the connection's writes ended.
func (c *liveConn) writeRest(rest []byte) bool {
	_ = c.raw.SetWriteDeadline(time.Now().Add(c.s.timing.write))
	_, err := c.raw.Write(rest)
	c.torn = err != nil // it was not: wmu was kept since writeDirect
	c.wmu.Unlock()
	c.release(int64(len(rest)))
	if err != nil {
		c.writeFailed(err)
		return false
	}
	return true
}

// writeFailed ends the session after a failed write.
func (c *liveConn) writeFailed(err error) {
	if isTimeout(err) {
		// The client stopped reading: no close frame can reach it, so
		// the log says why.
		c.s.log.Info("live client not reading: closing", "addr", c.addr, "request", c.id, "after", c.s.timing.write)
		err = errWriteTimeout
	}
	c.abort(err)
}

// countPage counts a changes page going out, once: the end of a page
// that writeDirect began is not a page of its own.
func (c *liveConn) countPage(f frame) {
	if f.sub != nil {
		c.s.metrics.fanout.Inc()
		c.s.metrics.fanoutRecs.Add(float64(f.recs))
	}
}

// release gives back n queued bytes.
func (c *liveConn) release(n int64) {
	c.qmu.Lock()
	c.qbytes -= n
	c.freedLocked()
	c.qmu.Unlock()
}

// freedLocked tells the puts waiting for room that bytes were given back.
// The channel is replaced only when one waits on it: most releases find
// none, and make no channel.
func (c *liveConn) freedLocked() {
	if c.awaited {
		close(c.room)
		c.room = make(chan struct{})
		c.awaited = false
	}
}

// endWrites ends the connection's writes: what is queued is dropped, and
// unless called by the writer itself, it waits for a writer holding the
// connection to let go.
func (c *liveConn) endWrites(writer bool) {
	c.qmu.Lock()
	c.dead = true
	c.frames = nil
	c.qbytes = 0
	c.parked = nil
	c.waiting = nil
	if c.rest != nil { // a writer has not taken it: no one will finish it
		c.rest = nil
		c.torn = true
		c.wmu.Unlock()
	}
	c.freedLocked()
	var idle chan struct{}
	if writer {
		c.writing = false
		c.signalIdleLocked()
	} else if c.writing {
		if c.idle == nil {
			c.idle = make(chan struct{})
		}
		idle = c.idle
	}
	c.qmu.Unlock()
	c.cancel()
	if idle != nil {
		<-idle
	}
}

func (c *liveConn) signalIdleLocked() {
	if c.idle != nil {
		close(c.idle)
		c.idle = nil
	}
}

// appendResyncs appends the frames of the resyncs and resets owed.
func (c *liveConn) appendResyncs(bufs net.Buffers) net.Buffers {
	c.mu.Lock()
	owed := maps.Clone(c.resyncs)
	clear(c.resyncs)
	c.mu.Unlock()
	for coll, reset := range owed {
		var m proto.Message = proto.Resync{Collection: coll}
		if reset != nil {
			m = proto.Reset{Collection: coll, Reason: reset.Reason, Message: reset.Message}
			c.s.metrics.resets.WithLabelValues(reset.Reason).Inc()
		} else {
			c.s.metrics.resyncs.Inc()
		}
		data, _ := proto.EncodeMessage(m)
		bufs = append(bufs, encodeFrame(ws.OpBinary, data))
	}
	return bufs
}

func (c *liveConn) subscribe(p Principal, m proto.Sub) {
	// A new sub replaces the old one, taken or refused: a sub refused
	// with its collection leaves that collection not streamed
	// (docs/protocol.md, section 9), and nothing of the old subscription
	// follows its refusal, as nothing follows an unsub.
	c.unsubscribe(m.Collection)
	if err := crdt.ValidateCollection(m.Collection); err != nil {
		c.queue(proto.ErrorMessage{Code: proto.CodeInvalid, Message: publicText(err), Collection: m.Collection, RequestID: c.id})
		return
	}
	if !p.CanRead(m.Collection) {
		c.queue(proto.ErrorMessage{Code: proto.CodeForbidden, Message: "no read access to " + m.Collection, Collection: m.Collection, RequestID: c.id})
		return
	}
	cursor, err := c.s.sealer.readCursor(m.Collection, m.Cursor)
	if err != nil {
		c.queue(proto.ErrorMessage{Code: proto.CodeInvalid, Message: publicText(err), Collection: m.Collection, RequestID: c.id})
		return
	}
	if m.Fresh && len(m.Cursor) == 0 {
		cursor = engine.FreshStart()
	}
	if err := c.s.checkLease(p, m.Collection, m.Replica, m.Pending); err != nil {
		c.refuseSub(m.Collection, err)
		return
	}
	sc, err := c.s.readScope(p, m.Collection, m.Scope)
	if err != nil {
		c.refuseSub(m.Collection, err)
		return
	}
	// Refused now, as a pull of it is, rather than at the group's first
	// read (a resync that sends the client to that pull).
	if err := engine.CheckReadScope(sc); err != nil {
		c.refuseSub(m.Collection, proto.Errorf(proto.CodeInvalid, "scope: %s", publicText(err)))
		return
	}
	version, _, err := c.s.schemaVersion(m.Collection, m.Version)
	if err != nil {
		c.refuseSub(m.Collection, err)
		return
	}
	c.subMu.Lock()
	defer c.subMu.Unlock()
	if c.ctx.Err() != nil {
		return // the session has ended (finish took its subscriptions) or is ending
	}
	c.mu.Lock()
	if len(c.subs) >= c.s.limits.MaxSubscriptions {
		c.mu.Unlock()
		c.queue(proto.ErrorMessage{Code: proto.CodeTooLarge, Message: fmt.Sprintf("more than %d subscriptions", c.s.limits.MaxSubscriptions), Collection: m.Collection, RequestID: c.id})
		return
	}
	// Counted among its subject's (an anonymous session's: its address's)
	// while in c.subs: every removal from c.subs releases it, and finish
	// (which takes subMu) removes them all, so the count stays exact
	// however a sub and the session's end race.
	// Its key is the session's rate key: "sub:" and the subject, or
	// "addr:" and the client's address.
	held, whose := c.rateKey, "subject"
	if !c.s.ownClient(p) {
		whose = "address"
	}
	if !c.s.subscriptions.acquire(held) {
		c.mu.Unlock()
		c.queue(proto.ErrorMessage{Code: proto.CodeTooLarge, Message: fmt.Sprintf("more than %d subscriptions of this %s", c.s.limits.MaxSubscriptionsPerSubject, whose), Collection: m.Collection, RequestID: c.id})
		return
	}
	delete(c.resyncs, m.Collection)
	// In c.subs before it joins: its group may end it at once (a reset).
	sub := newMember(c, m.Collection, cursor, sc, version)
	sub.lease = leaseOf(m.Replica, m.Pending, cursor)
	sub.held = held
	c.subs[m.Collection] = sub
	c.mu.Unlock()
	c.s.noteLease(c.ctx, m.Collection, sub.lease)
	if err := c.s.hub.join(sub); err != nil { // the engine refused: the client pulls and subscribes again
		sub.stopped.Store(true)
		c.owe(sub, nil)
	}
}

// refuseSub answers a sub of coll with err's code and message (internal
// for an error that is not the protocol's).
func (c *liveConn) refuseSub(coll string, err error) {
	var e *proto.Error
	if !errors.As(err, &e) {
		e = proto.Errorf(proto.CodeInternal, "internal error")
	}
	c.queue(proto.ErrorMessage{Code: e.Code, Message: cutMessage(e.Message), Collection: coll, RequestID: c.id})
}

// unsubscribe ends the subscription of coll, if any, and drops a resync or
// reset of coll still owed: nothing of a subscription is written once its
// unsub is read (docs/protocol.md, section 9), not even the end the server
// gave it before, which the client would otherwise read behind the pong
// of a ping it sent after the unsub.
func (c *liveConn) unsubscribe(coll string) {
	c.mu.Lock()
	delete(c.resyncs, coll)
	sub := c.subs[coll]
	if sub != nil {
		delete(c.subs, coll)
		c.s.subscriptions.release(sub.held)
	}
	c.mu.Unlock()
	if sub != nil {
		sub.leave()
	}
}

// readPage reads and encodes the changes page of coll after cursor under
// the scope sc, in schema version version, for live subscribers: the bytes
// are a whole WebSocket frame. It does
// not depend on any one subscriber's context: every subscriber at the
// cursor, of the same scope and version, gets its bytes (broadcast.go).
// turn, when not nil, is the read's turn among its client's
// (liveReadsPerClient), which the caller gives back.
func (s *Server) readPage(coll string, cursor engine.Cursor, sc *scope.Pred, version int, turn *liveTurn) (wirePage, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), livePullTimeout)
	defer cancel()
	if turn != nil {
		ctx = engine.WithReadTurn(ctx, turn.take)
	}
	var page wirePage
	err := bug.Recovered(func() (err error) {
		page, err = s.pullPage(ctx, coll, cursor, 0, sc, uint64(version))
		return err
	})
	if err != nil {
		return wirePage{}, nil, err
	}
	data, err := proto.EncodeMessage(proto.Changes{Collection: coll, Records: page.Records, Next: s.sealer.cursorBytes(coll, page.Next), More: page.More,
		Seals: s.sealer.seals(coll, page.Version, page.Current, page.Records), Leaves: page.Leaves})
	if err != nil {
		return wirePage{}, nil, fmt.Errorf("encode changes of %s: %w", coll, err)
	}
	return page, encodeFrame(ws.OpBinary, data), nil
}

// livePullTimeout bounds one store read for live subscribers.
const livePullTimeout = 30 * time.Second
