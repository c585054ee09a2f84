package transport

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/transport/proto"
)

// A live session is four kinds of goroutine around one WebSocket:
//
//   - the handler goroutine reads and handles client messages;
//   - one writer owns every data frame written, from a bounded queue, and
//     writes pending resyncs before anything else;
//   - one pinger pings every PingInterval and closes the connection when
//     the client was silent for IdleTimeout;
//   - one goroutine per subscription pulls from the engine whenever the
//     collection's head moves and queues changes pages.
//
// Nothing is buffered without bound: the queue holds at most
// Limits.SendQueue messages and Limits.MaxQueueBytes bytes (the message
// being written included; one message is always let into an empty queue,
// so a page larger than the bound still travels); a subscription holds at
// most one page while it waits for room in the queue, and one that waits
// longer than Limits.SlowConsumer stops and leaves a resync for the
// writer. The subscriptions of a connection take turns to read and offer
// their pages, so a connection holds at most one page outside its queue,
// however many subscriptions it has. A client that stops reading
// altogether is closed when a write takes longer than WriteTimeout.

type frame struct {
	data  []byte
	sub   *liveSub             // the subscription of a changes page, else nil
	recs  int                  // records in a changes page
	close websocket.StatusCode // after data, close with this status (0: don't)
	why   string
}

type liveConn struct {
	s      *Server
	ws     *websocket.Conn
	addr   string
	id     string // the request id of the upgrade: the session's, in its logs and errors
	ctx    context.Context
	cancel context.CancelFunc
	send   chan frame
	queued *budget       // bytes of the frames in send and of the one being written
	paging chan struct{} // held by the one subscription reading or offering a page
	heard  atomic.Int64  // unix nanos of the last message or pong
	wrote  chan struct{} // closed when the writer ends

	mu      sync.Mutex
	subs    map[string]*liveSub
	resyncs map[string]*proto.ResetInfo // collections owed a resync (nil) or a reset message
	kick    chan struct{}               // wakes the writer for resyncs
	wg      sync.WaitGroup              // writer, pinger, subscriptions
}

type liveSub struct {
	cancel context.CancelFunc
	done   chan struct{}
	// stopped is set by unsub and resync: the writer drops the pages of a
	// stopped subscription still in the queue, so none follows its unsub
	// or resync.
	stopped atomic.Bool
}

func (s *Server) serveLive(w http.ResponseWriter, r *http.Request) {
	start := s.now()
	sw := &statusWriter{ResponseWriter: w}
	defer func() {
		if sw.status != http.StatusSwitchingProtocols {
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
	addr := s.clientAddr(r)
	// Upgrades have their own bucket, so that a client's messages do not
	// keep another client at the same address from connecting.
	if wait := s.rate.take("upgrade:"+addr, s.now()); wait > 0 {
		s.writeError(sw, r, &proto.Error{Status: http.StatusTooManyRequests, Code: proto.CodeRateLimited, Message: "too many requests", RetryAfter: wait})
		return
	}
	if !s.conns.acquire(addr) {
		s.writeError(sw, r, &proto.Error{Status: http.StatusTooManyRequests, Code: proto.CodeRateLimited,
			Message: fmt.Sprintf("more than %d live connections from %s", s.limits.MaxConnsPerAddr, addr), RetryAfter: 5 * time.Second})
		return
	}
	defer s.conns.release(addr)
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		s.writeError(sw, r, proto.Errorf(proto.CodeUnavailable, "the server is shutting down"))
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	// checkOrigin above decided; the library's own check would accept a
	// page whose Origin matches the request's Host (DNS rebinding).
	ws, err := websocket.Accept(sw, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		s.log.Debug("websocket upgrade failed", "addr", addr, "err", err)
		return // Accept has answered
	}
	s.metrics.requests.WithLabelValues("live", "101").Inc()
	s.metrics.duration.WithLabelValues("live").Observe(s.now().Sub(start).Seconds())
	ws.SetReadLimit(s.limits.MaxMessageBytes)
	ctx, cancel := context.WithCancel(context.Background())
	c := &liveConn{
		s: s, ws: ws, addr: addr, ctx: ctx, cancel: cancel, id: sw.Header().Get(proto.HeaderRequestID),
		send:    make(chan frame, s.limits.SendQueue),
		queued:  newBudget(s.limits.MaxQueueBytes),
		paging:  make(chan struct{}, 1),
		subs:    map[string]*liveSub{},
		resyncs: map[string]*proto.ResetInfo{},
		kick:    make(chan struct{}, 1),
		wrote:   make(chan struct{}),
	}
	c.heard.Store(s.now().UnixNano())
	s.mu.Lock()
	s.live[c] = struct{}{}
	closing := s.closing // Shutdown began during the upgrade and missed c
	s.mu.Unlock()
	if closing {
		c.goAway()
	}
	s.metrics.liveConns.Inc()
	defer func() {
		s.mu.Lock()
		delete(s.live, c)
		s.mu.Unlock()
		s.metrics.liveConns.Dec()
	}()
	c.run()
}

// run serves the session until it ends, then stops every goroutine.
func (c *liveConn) run() {
	c.wg.Add(2)
	go c.writer()
	go c.pinger()
	err := c.readLoop()
	if errors.Is(err, errFatal) {
		// An error message is queued with the close after it: let the
		// writer send both.
		t := time.NewTimer(c.s.timing.write)
		select {
		case <-c.wrote:
		case <-t.C:
		}
		t.Stop()
	}
	c.cancel()
	c.mu.Lock()
	for coll, sub := range c.subs {
		sub.cancel()
		delete(c.subs, coll)
	}
	c.mu.Unlock()
	c.wg.Wait()
	c.ws.CloseNow()
	if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, errFatal) {
		c.s.log.Debug("live session ended", "addr", c.addr, "err", err)
	}
}

// goAway closes the session for a server shutdown.
func (c *liveConn) goAway() {
	go func() {
		_ = c.ws.Close(websocket.StatusGoingAway, "server shutting down")
		c.cancel()
	}()
}

func (c *liveConn) closeNow() {
	c.cancel()
	c.ws.CloseNow()
}

// errFatal ends the read loop after a fatal error was queued.
var errFatal = errors.New("fatal protocol error")

// readLoop reads and handles client messages until the connection ends.
func (c *liveConn) readLoop() error {
	var (
		p       Principal
		key     = "addr:" + c.addr
		started atomic.Bool
		expiry  *time.Timer
	)
	// A socket that never says hello would hold its connection slot.
	noHello := time.AfterFunc(c.s.timing.hello, func() {
		if !started.Load() {
			c.fatal(websocket.StatusPolicyViolation, proto.Errorf(proto.CodeUnauthenticated, "no hello within %v", c.s.timing.hello))
		}
	})
	defer func() {
		noHello.Stop()
		if expiry != nil {
			expiry.Stop()
		}
	}()
	for {
		typ, data, err := c.ws.Read(c.ctx)
		if err != nil {
			return err
		}
		c.heard.Store(c.s.now().UnixNano())
		if typ != websocket.MessageBinary {
			c.fatal(websocket.StatusUnsupportedData, proto.Errorf(proto.CodeMalformed, "messages are binary CBOR frames"))
			return errFatal
		}
		// A client over its rate is slowed down, not refused: the reader
		// waits before handling the message (and reads nothing meanwhile, so
		// TCP pushes back). Dropping a push or a sub would leave the client
		// waiting for an answer that never comes.
		for {
			wait := c.s.rate.take(key, c.s.now())
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
		m, err := proto.DecodeClientMessage(data)
		if errors.Is(err, proto.ErrUnknownType) && started.Load() {
			// A message of a later revision: say so, keep the session.
			c.queue(proto.ErrorMessage{Code: proto.CodeMalformed, Message: "unknown message type", RequestID: c.id})
			continue
		}
		if err != nil {
			c.fatal(websocket.StatusPolicyViolation, decodeError("message", err))
			return errFatal
		}
		c.s.metrics.liveMsgs.WithLabelValues(m.MessageType()).Inc()
		if !started.Load() {
			h, ok := m.(proto.Hello)
			if !ok {
				c.fatal(websocket.StatusPolicyViolation, proto.Errorf(proto.CodeMalformed, "the first message must be hello, got %s", m.MessageType()))
				return errFatal
			}
			if p, err = c.hello(h); err != nil {
				status := websocket.StatusPolicyViolation
				if e := (*proto.Error)(nil); errors.As(err, &e) && e.Code == proto.CodeUnsupportedVersion {
					status = proto.CloseProtocolVersion
				}
				c.fatal(status, err)
				return errFatal
			}
			started.Store(true)
			if p.Subject != "" {
				key = "sub:" + p.Subject
			}
			if !p.Expires.IsZero() {
				expiry = time.AfterFunc(p.Expires.Sub(c.s.now()), func() {
					c.fatal(websocket.StatusPolicyViolation, proto.Errorf(proto.CodeTokenExpired, "the token has expired: reconnect with a fresh one"))
				})
			}
			continue
		}
		switch m := m.(type) {
		case proto.Hello:
			c.fatal(websocket.StatusPolicyViolation, proto.Errorf(proto.CodeMalformed, "hello twice"))
			return errFatal
		case proto.Sub:
			c.subscribe(p, m)
		case proto.Unsub:
			c.unsubscribe(m.Collection)
		case proto.Ping:
			c.queue(proto.Pong{Nonce: m.Nonce})
		}
	}
}

func (c *liveConn) hello(h proto.Hello) (Principal, error) {
	if h.Protocol != proto.Version {
		return Principal{}, proto.Errorf(proto.CodeUnsupportedVersion, "protocol version %d: this server speaks %d", h.Protocol, proto.Version)
	}
	if err := crdt.ValidateReplica(h.Replica); err != nil {
		return Principal{}, proto.Errorf(proto.CodeInvalid, "hello: %s", publicText(err))
	}
	p, err := c.s.authenticate(c.ctx, h.Token)
	if err != nil {
		return Principal{}, err
	}
	c.queue(proto.Welcome{Hello: c.s.helloAnswer(p)})
	return p, nil
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
	if !c.put(c.ctx.Done(), frame{data: data}, c.s.timing.write) && c.ctx.Err() == nil {
		c.s.log.Info("live client not reading: closing", "addr", c.addr)
		c.closeNow()
	}
}

// put queues f, waiting at most wait for room in the queue: fewer than
// Limits.SendQueue frames and f's bytes within Limits.MaxQueueBytes (or an
// empty queue). It reports whether f was queued; false with done still
// open means there was no room in time.
func (c *liveConn) put(done <-chan struct{}, f frame, wait time.Duration) bool {
	start := time.Now()
	n := int64(len(f.data))
	if !c.queued.take(n, wait, done) {
		return false
	}
	select {
	case c.send <- f:
		return true
	default:
	}
	t := time.NewTimer(wait - time.Since(start))
	defer t.Stop()
	select {
	case c.send <- f:
		return true
	case <-done:
	case <-t.C:
	}
	c.queued.release(n)
	return false
}

// fatal sends an error message and closes the connection after it.
func (c *liveConn) fatal(status websocket.StatusCode, err error) {
	var e *proto.Error
	if !errors.As(err, &e) {
		c.s.log.Error("internal error in live session", "err", err)
		e = proto.Errorf(proto.CodeInternal, "internal error")
	}
	if e.Cause != nil {
		c.s.log.Debug("live session refused", "request", c.id, "code", e.Code, "err", e.Cause)
	}
	data, _ := proto.EncodeMessage(proto.ErrorMessage{Code: e.Code, Message: e.Message, RequestID: c.id})
	if c.ctx.Err() != nil {
		return
	}
	if !c.put(c.ctx.Done(), frame{data: data, close: status, why: e.Code}, 0) && c.ctx.Err() == nil {
		// queue full: close without the message
		_ = c.ws.Close(status, e.Code)
		c.cancel()
	}
}

// writer writes queued frames; resyncs go first.
func (c *liveConn) writer() {
	defer c.wg.Done()
	defer close(c.wrote)
	write := func(data []byte) bool {
		ctx, cancel := context.WithTimeout(c.ctx, c.s.timing.write)
		defer cancel()
		if err := c.ws.Write(ctx, websocket.MessageBinary, data); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				// The client stopped reading: no close frame can reach it, so
				// the log says why.
				c.s.log.Info("live client not reading: closing", "addr", c.addr, "request", c.id, "after", c.s.timing.write)
				_ = c.ws.CloseNow()
			}
			c.cancel()
			return false
		}
		return true
	}
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.kick:
			if !c.writeResyncs(write) {
				return
			}
		case f := <-c.send:
			if f.sub != nil {
				if f.sub.stopped.Load() {
					c.queued.release(int64(len(f.data)))
					continue
				}
				c.s.metrics.fanout.Inc()
				c.s.metrics.fanoutRecs.Add(float64(f.recs))
			}
			ok := write(f.data)
			c.queued.release(int64(len(f.data)))
			if !ok {
				return
			}
			if f.close != 0 {
				_ = c.ws.Close(f.close, f.why)
				c.cancel()
				return
			}
		}
	}
}

func (c *liveConn) writeResyncs(write func([]byte) bool) bool {
	c.mu.Lock()
	owed := maps.Clone(c.resyncs)
	clear(c.resyncs)
	c.mu.Unlock()
	for coll, reset := range owed {
		var m proto.Message = proto.Resync{Collection: coll}
		if reset != nil {
			m = proto.Reset{Collection: coll, Reason: reset.Reason, Message: reset.Message}
		}
		data, _ := proto.EncodeMessage(m)
		if !write(data) {
			return false
		}
		c.s.metrics.resyncs.Inc()
	}
	return true
}

// pinger pings the client and closes a connection silent for IdleTimeout.
func (c *liveConn) pinger() {
	defer c.wg.Done()
	t := time.NewTicker(c.s.timing.ping)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(c.ctx, c.s.timing.ping)
		err := c.ws.Ping(ctx)
		cancel()
		if err == nil {
			c.heard.Store(c.s.now().UnixNano())
		}
		if silent := c.s.now().Sub(time.Unix(0, c.heard.Load())); silent >= c.s.timing.idle {
			c.s.log.Info("live client silent: closing", "addr", c.addr, "silent", silent)
			_ = c.ws.Close(websocket.StatusPolicyViolation, "no answer")
			c.cancel()
			return
		}
	}
}

func (c *liveConn) subscribe(p Principal, m proto.Sub) {
	if err := crdt.ValidateCollection(m.Collection); err != nil {
		c.queue(proto.ErrorMessage{Code: proto.CodeInvalid, Message: publicText(err), Collection: m.Collection, RequestID: c.id})
		return
	}
	if !p.CanRead(m.Collection) {
		c.queue(proto.ErrorMessage{Code: proto.CodeForbidden, Message: "no read access to " + m.Collection, Collection: m.Collection, RequestID: c.id})
		return
	}
	cursor, err := engine.ParseCursor(m.Cursor)
	if err != nil {
		c.queue(proto.ErrorMessage{Code: proto.CodeInvalid, Message: publicText(err), Collection: m.Collection, RequestID: c.id})
		return
	}
	c.unsubscribe(m.Collection) // a new sub replaces the old one, from its cursor
	c.mu.Lock()
	if len(c.subs) >= c.s.limits.MaxSubscriptions {
		c.mu.Unlock()
		c.queue(proto.ErrorMessage{Code: proto.CodeTooLarge, Message: fmt.Sprintf("more than %d subscriptions", c.s.limits.MaxSubscriptions), Collection: m.Collection, RequestID: c.id})
		return
	}
	ctx, cancel := context.WithCancel(c.ctx)
	sub := &liveSub{cancel: cancel, done: make(chan struct{})}
	c.subs[m.Collection] = sub
	delete(c.resyncs, m.Collection)
	c.wg.Add(1)
	c.mu.Unlock()
	go c.stream(ctx, sub, m.Collection, cursor)
}

func (c *liveConn) unsubscribe(coll string) {
	c.mu.Lock()
	sub := c.subs[coll]
	delete(c.subs, coll)
	c.mu.Unlock()
	if sub != nil {
		sub.stopped.Store(true)
		sub.cancel()
		<-sub.done
	}
}

// stream sends collection's changes after cursor, then whenever its head
// moves. It subscribes before the first pull, so no change between the two
// is missed. The first page is sent even when empty: it tells the client it
// is caught up.
func (c *liveConn) stream(ctx context.Context, sub *liveSub, coll string, cursor engine.Cursor) {
	defer c.wg.Done()
	defer close(sub.done)
	es, err := c.s.eng.Subscribe(coll)
	if err != nil {
		c.stop(sub, coll)
		return
	}
	defer es.Close()
	first := true
	// head is the newest head announced; a shared page must include it.
	// The catch-up reads after the sub, whose head is unknown, are the
	// subscriber's own; pages are shared once it has caught up.
	var (
		head   uint64
		shared bool
	)
	for {
		for {
			var (
				page wirePage
				data []byte
				err  error
			)
			select {
			case c.paging <- struct{}{}:
			case <-ctx.Done():
				return
			}
			if !shared {
				page, data, err = c.s.readPage(coll, cursor)
			} else {
				page, data, err = c.s.pages.do(ctx, pageKey{coll, cursor}, head, func() (wirePage, []byte, error) {
					return c.s.readPage(coll, cursor)
				})
			}
			if err != nil {
				<-c.paging
				if reset := resetOf(err); reset != nil {
					c.stopWith(sub, coll, reset) // the cursor is of another history
					return
				}
				if ctx.Err() == nil {
					c.s.log.Warn("live pull failed: resync", "collection", coll, "err", err)
					c.stop(sub, coll)
				}
				return
			}
			if len(page.Records) == 0 && !first {
				<-c.paging
				break
			}
			first = false
			offered := c.offer(ctx, frame{data: data, sub: sub, recs: len(page.Records)})
			<-c.paging
			if !offered {
				if ctx.Err() == nil {
					c.stop(sub, coll)
				}
				return
			}
			cursor = page.Next
			if !page.More {
				break
			}
		}
		shared = true
		select {
		case <-ctx.Done():
			return
		case h, ok := <-es.C():
			if !ok { // the engine closed
				c.stop(sub, coll)
				return
			}
			head = h
		}
	}
}

// readPage reads and encodes the changes page of coll after cursor for
// live subscribers. It does not depend on any one subscriber's context:
// others may be waiting for it (see pageGroup).
func (s *Server) readPage(coll string, cursor engine.Cursor) (wirePage, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), livePullTimeout)
	defer cancel()
	page, err := s.pullPage(ctx, coll, cursor, 0)
	if err != nil {
		return wirePage{}, nil, err
	}
	data, err := proto.EncodeMessage(proto.Changes{Collection: coll, Records: page.Records, Next: page.Next.Bytes(), More: page.More,
		Seals: s.sealer.seals(coll, page.Records)})
	if err != nil {
		return wirePage{}, nil, fmt.Errorf("encode changes of %s: %w", coll, err)
	}
	return page, data, nil
}

// livePullTimeout bounds one store read for live subscribers.
const livePullTimeout = 30 * time.Second

// offer queues a changes page, waiting at most Limits.SlowConsumer for
// room.
func (c *liveConn) offer(ctx context.Context, f frame) bool {
	if c.put(ctx.Done(), f, c.s.limits.SlowConsumer) {
		return true
	}
	if ctx.Err() == nil {
		c.s.log.Info("slow live consumer: resync", "addr", c.addr)
	}
	return false
}

// stop ends a subscription from its own goroutine and owes the client a
// resync for it.
func (c *liveConn) stop(sub *liveSub, coll string) { c.stopWith(sub, coll, nil) }

// stopWith ends a subscription from its own goroutine and owes the client
// a resync for it, or with reset a reset message: its cursor is of another
// history.
func (c *liveConn) stopWith(sub *liveSub, coll string, reset *proto.ResetInfo) {
	sub.stopped.Store(true)
	c.mu.Lock()
	if c.subs[coll] == sub {
		delete(c.subs, coll)
		c.resyncs[coll] = reset
	}
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}
