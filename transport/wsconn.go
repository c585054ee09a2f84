package transport

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"

	"github.com/convergo/convergo/internal/bug"
)

// The server side of RFC 6455 for live sessions, on github.com/gobwas/ws:
// the upgrade hijacks the HTTP connection, and the session reads and
// writes frames on the bare net.Conn itself. Frames the server sends are
// encoded once, header and payload in one slice (server frames are not
// masked), so the same bytes go to every connection a broadcast page is
// for; the broadcast writes them itself to a connection with nothing else
// to write (liveConn.writeDirect), a writer writes a batch of them with
// one writev under one deadline (liveConn.writeBatch).
//
// Reading holds no buffer between messages: a reader takes a pooled
// bufio.Reader while it reads and gives it back once nothing it read is
// left over (the netpoll path), or keeps one for the session (the reader
// goroutine, which holds a stack anyway).

const (
	// closeLinger is how long a session that sent its close frame waits
	// for the client's before it closes the socket.
	closeLinger = 2 * time.Second
	// readBufSize is the size of the buffered readers of live sessions.
	readBufSize = 4 << 10
	// reasonReadTimeout is the close reason (status 1008) of a session
	// whose client began a message and did not finish it within
	// WriteTimeout.
	reasonReadTimeout = "message not finished in time"
)

var (
	errNoData        = errors.New("no data")
	errClientClosed  = errors.New("the client closed the session")
	errReadTimeout   = errors.New("a message not finished in time")
	errProtocol      = errors.New("websocket protocol error")
	errMessageTooBig = errors.New("message over the size limit")
	errCloseTimeout  = errors.New("no close frame from the client in time")
	errWriteTimeout  = errors.New("the client stopped reading")
	errClosedByUs    = errors.New("closed by the server")
)

var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufSize) }}

// pingFrame is the server's ping: no payload.
var pingFrame = encodeFrame(ws.OpPing, nil)

// encodeFrame returns a final, unmasked frame of op carrying payload.
func encodeFrame(op ws.OpCode, payload []byte) []byte {
	h := ws.Header{Fin: true, OpCode: op, Length: int64(len(payload))}
	buf := bytes.NewBuffer(make([]byte, 0, ws.HeaderSize(h)+len(payload)))
	_ = ws.WriteHeader(buf, h) // a bytes.Buffer does not fail
	buf.Write(payload)
	return buf.Bytes()
}

// maxCloseReason is the longest close reason a close frame holds: a
// control frame's payload less the 2-byte status.
const maxCloseReason = ws.MaxControlFramePayloadSize - 2

// closeFrame returns a close frame with status and reason, the reason cut
// to fit at a character boundary (RFC 6455 §5.5.1: it must be UTF-8, and
// a client fails the connection on a broken one).
func closeFrame(status ws.StatusCode, reason string) []byte {
	if len(reason) > maxCloseReason {
		n := maxCloseReason
		for n > 0 && !utf8.RuneStart(reason[n]) {
			n--
		}
		reason = reason[:n]
	}
	return encodeFrame(ws.OpClose, ws.NewCloseFrameBody(status, reason))
}

// connSource reads what the client sent before its upgrade was answered
// (left in net/http's buffer), then the connection.
type connSource struct{ c *liveConn }

func (s connSource) Read(p []byte) (int, error) {
	c := s.c
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		if len(c.pending) == 0 {
			c.pending = nil
		}
		return n, nil
	}
	return c.raw.Read(p)
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// readNext reads the client's next message, or one control frame, from
// br and handles it. A client that begins a message must finish it within
// WriteTimeout; on the netpoll path (polled), the read of a readable
// connection is bounded the same way, and errNoData says nothing came.
// An error means the session is over.
func (c *liveConn) readNext(br *bufio.Reader, polled bool) error {
	if polled {
		_ = c.raw.SetReadDeadline(time.Now().Add(c.s.timing.write))
	}
	if _, err := br.Peek(1); err != nil {
		if polled && isTimeout(err) {
			return errNoData
		}
		return err
	}
	if !polled {
		_ = c.raw.SetReadDeadline(time.Now().Add(c.s.timing.write))
		defer func() { _ = c.raw.SetReadDeadline(time.Time{}) }()
	}
	var (
		msg   []byte
		op    ws.OpCode
		inMsg bool
		hbuf  [ws.MaxHeaderSize - 2]byte
	)
	for {
		h, err := ws.ReadHeaderBuffer(br, hbuf[:])
		if err != nil {
			return c.readFailed(err)
		}
		switch {
		case !h.Masked:
			return c.protocolError("unmasked client frame")
		case h.Rsv != 0:
			return c.protocolError("reserved bits set")
		case h.OpCode.IsReserved():
			return c.protocolError("reserved opcode")
		case h.OpCode.IsControl():
			if !h.Fin || h.Length > ws.MaxControlFramePayloadSize {
				return c.protocolError("fragmented or long control frame")
			}
			var pbuf [ws.MaxControlFramePayloadSize]byte
			p := pbuf[:h.Length]
			if _, err := io.ReadFull(br, p); err != nil {
				return c.readFailed(err)
			}
			ws.Cipher(p, h.Mask, 0)
			if err := c.control(h.OpCode, p); err != nil {
				return err
			}
			if inMsg {
				continue // control frames may come between fragments
			}
			return nil
		case h.OpCode == ws.OpContinuation && !inMsg, h.OpCode != ws.OpContinuation && inMsg:
			return c.protocolError("unexpected frame")
		}
		if !inMsg {
			op, inMsg = h.OpCode, true
		}
		if c.draining.Load() {
			if _, err := br.Discard(int(h.Length)); err != nil {
				return c.readFailed(err)
			}
		} else {
			if h.Length > c.s.limits.MaxMessageBytes-int64(len(msg)) { // no overflow: a length is < 2^63
				c.closeWith(ws.StatusMessageTooBig, fmt.Sprintf("read limited at %d bytes", c.s.limits.MaxMessageBytes))
				// Read what was sent of it, so that the close frame is not
				// lost to a reset, then wait for the client's close.
				if _, err := br.Discard(int(h.Length)); err != nil {
					return errMessageTooBig
				}
				return nil
			}
			start := len(msg)
			if msg, err = readPayload(br, msg, int(h.Length)); err != nil {
				return c.readFailed(err)
			}
			ws.Cipher(msg[start:], h.Mask, 0)
		}
		if h.Fin {
			break
		}
	}
	c.heard.Store(c.s.now().UnixNano())
	if c.draining.Load() {
		c.s.noteMessage(false)
		return nil // after a fatal error or our close: read only for the client's close
	}
	// A polled connection's reader is a goroutine of the server's pool,
	// which no one recovers: a bug (a panic) met handling what a client
	// sent ends that session with internal, as a request's handler
	// answers internal, not the process every session shares. fatal logs
	// it at error level, with the stack.
	err := bug.Recovered(func() error { return c.handle(op, msg) })
	if errors.Is(err, bug.ErrPanic) {
		c.fatal(ws.StatusInternalServerError, err)
		err = errFatal
	}
	c.s.noteMessage(true)
	if errors.Is(err, errFatal) {
		// The error message and the close are queued: read on for the
		// client's close, for as long as the writer may take.
		c.draining.Store(true)
		c.armBackstop(c.s.timing.write + closeLinger)
		return nil
	}
	return err
}

// readChunk is the most readPayload holds beyond what has arrived (and
// than what the message holds already).
const readChunk = 64 << 10

// readPayload appends n bytes read from br to msg, growing msg as they
// arrive: by at most readChunk or what msg holds, whichever is more, at a
// time. A frame header announcing megabytes (up to MaxMessageBytes) thus
// makes the server hold about what the client sent, not what it
// announced: a client that stalls after the header until WriteTimeout,
// on every connection it may open, holds little. The copies as msg grows
// are amortized: each step at least doubles it past readChunk.
func readPayload(br *bufio.Reader, msg []byte, n int) ([]byte, error) {
	for n > 0 {
		k := min(n, max(readChunk, len(msg)))
		start := len(msg)
		msg = slices.Grow(msg, k)[:start+k]
		if _, err := io.ReadFull(br, msg[start:]); err != nil {
			return msg, err
		}
		n -= k
	}
	return msg, nil
}

// control handles a control frame of the client.
func (c *liveConn) control(op ws.OpCode, p []byte) error {
	c.heard.Store(c.s.now().UnixNano())
	switch op {
	case ws.OpPing:
		c.wantPong(bytes.Clone(p))
	case ws.OpPong:
		if c.pinged.CompareAndSwap(true, false) {
			c.refreshLeases()
		}
	case ws.OpClose:
		// RFC 6455 §5.5.1, §7.4: no body, or a status that may go on the
		// wire and a UTF-8 reason; anything else fails the session, and
		// is not echoed. ws.CheckCloseFrameData passes a status above the
		// private range (5000 to 65535), to which §7.4.2 gives no meaning
		// and which a close frame may not carry.
		code, reason := ws.ParseCloseFrameData(p)
		switch {
		case len(p) == 0:
			code = ws.StatusNormalClosure
		case len(p) == 1 || code > ws.StatusRangePrivate.Max || ws.CheckCloseFrameData(code, reason) != nil:
			return c.protocolError("bad close frame")
		}
		c.s.log.Debug("live client closed", "addr", c.addr, "request", c.id, "code", int(code), "reason", reason)
		c.closeWith(code, "") // the answer, unless ours went first
		return errClientClosed
	}
	return nil
}

// readFailed closes a session whose client began a message and did not
// finish it in time, or sent a frame header RFC 6455 forbids; other read
// errors (the socket closed) pass.
func (c *liveConn) readFailed(err error) error {
	if errors.Is(err, ws.ErrHeaderLengthMSB) || errors.Is(err, ws.ErrHeaderLengthUnexpected) {
		return c.protocolError("bad frame length")
	}
	if isTimeout(err) {
		c.s.log.Info("live client did not finish a message: closing", "addr", c.addr, "request", c.id, "after", c.s.timing.write)
		c.closeWith(ws.StatusPolicyViolation, reasonReadTimeout)
		return errReadTimeout
	}
	return err
}

// protocolError closes a session whose client broke RFC 6455.
func (c *liveConn) protocolError(why string) error {
	c.closeWith(ws.StatusProtocolError, why)
	return fmt.Errorf("%w: %s", errProtocol, why)
}
