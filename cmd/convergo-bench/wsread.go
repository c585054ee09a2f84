package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/convergo/convergo/transport/proto"
)

// rawSub is the fan-out scenario's subscriber: a WebSocket client written
// on the raw connection (RFC 6455, no extensions), so that the load
// generator spends as little CPU per delivery as it can and its own cost
// does not pass for the server's latency. It reads into one buffer reused
// for the life of the connection, answers pings, and hands each complete
// message to its caller, who finds the change ids in it
// without decoding it (recordIDs). It is not safe for concurrent use.
type rawSub struct {
	conn net.Conn
	in   []byte // bytes read, in[pos:] not yet parsed
	pos  int
	frag []byte // a fragmented message being joined
	out  []byte // an outgoing frame, reused
}

// wsGUID is RFC 6455's key suffix for Sec-WebSocket-Accept.
const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// dialRaw opens a live session (hello sent, welcome received) on the
// server at base, with the handshake bounded by ctx.
func dialRaw(ctx context.Context, base, replica string) (*rawSub, error) {
	host := strings.TrimPrefix(strings.TrimPrefix(base, "http://"), "https://")
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	var nonce [16]byte
	rand.Read(nonce[:])
	key := base64.StdEncoding.EncodeToString(nonce[:])
	req := "GET " + proto.PathLive + " HTTP/1.1\r\nHost: " + host +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + "\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		conn.Close()
		return nil, err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("websocket handshake: %w", err)
	}
	resp.Body.Close()
	s := &rawSub{conn: conn}
	// What the reader holds beyond the answer is the first frames.
	rest, _ := br.Peek(br.Buffered())
	s.in = append(make([]byte, 0, 4096), rest...)
	sum := sha1.Sum([]byte(key + wsGUID))
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		conn.Close()
		return nil, fmt.Errorf("websocket handshake: %s", resp.Status)
	}
	if err := s.send(proto.Hello{Protocol: proto.Version, Replica: replica}); err != nil {
		conn.Close()
		return nil, err
	}
	b, err := s.next()
	if err != nil {
		conn.Close()
		return nil, err
	}
	m, err := proto.DecodeServerMessage(b)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if _, ok := m.(proto.Welcome); !ok {
		conn.Close()
		return nil, fmt.Errorf("live: got %T, want welcome", m)
	}
	conn.SetDeadline(time.Time{})
	return s, nil
}

// send writes m as one masked binary frame.
func (s *rawSub) send(m proto.Message) error {
	b, err := proto.EncodeMessage(m)
	if err != nil {
		return err
	}
	return s.writeFrame(0x2, b)
}

// writeFrame writes one final, masked frame of opcode op.
func (s *rawSub) writeFrame(op byte, p []byte) error {
	f := append(s.out[:0], 0x80|op)
	switch n := len(p); {
	case n < 126:
		f = append(f, 0x80|byte(n))
	case n <= 0xffff:
		f = append(f, 0x80|126, byte(n>>8), byte(n))
	default:
		f = append(f, 0x80|127)
		f = binary.BigEndian.AppendUint64(f, uint64(n))
	}
	var mask [4]byte
	rand.Read(mask[:])
	f = append(f, mask[:]...)
	start := len(f)
	f = append(f, p...)
	for i := range p {
		f[start+i] ^= mask[i&3]
	}
	s.out = f
	_, err := s.conn.Write(f)
	return err
}

var errClosed = errors.New("websocket closed by the server")

// next returns the next data message, complete, reading from the
// connection as needed. The bytes are valid until the next call.
func (s *rawSub) next() ([]byte, error) {
	for {
		m, ok, err := s.parse()
		if err != nil || ok {
			return m, err
		}
		if err := s.fill(s.conn.Read); err != nil {
			return nil, err
		}
	}
}

// fill reads once into the free end of s.in with read.
func (s *rawSub) fill(read func([]byte) (int, error)) error {
	if s.pos > 0 && s.pos == len(s.in) { // all consumed: start over
		s.in, s.pos = s.in[:0], 0
	}
	if cap(s.in)-len(s.in) < 1024 {
		if s.pos > 0 { // move the unconsumed bytes to the front
			s.in = s.in[:copy(s.in, s.in[s.pos:])]
			s.pos = 0
		}
		s.in = slices.Grow(s.in, max(4096, cap(s.in)))
	}
	n, err := read(s.in[len(s.in):cap(s.in)])
	if n > 0 {
		s.in = s.in[:len(s.in)+n]
		return nil
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// parse consumes the frames complete in s.in: it answers pings, joins
// fragments, and returns the first complete data message (ok) or nothing
// (not ok: more bytes are needed). A message in one frame is returned in
// place, without a copy; it is valid until the next fill.
func (s *rawSub) parse() (msg []byte, ok bool, err error) {
	for {
		b := s.in[s.pos:]
		if len(b) < 2 {
			return nil, false, nil
		}
		fin, op := b[0]&0x80 != 0, b[0]&0x0f
		if b[1]&0x80 != 0 {
			return nil, false, errors.New("websocket: masked frame from the server")
		}
		n, h := uint64(b[1]&0x7f), 2
		switch n {
		case 126:
			if len(b) < 4 {
				return nil, false, nil
			}
			n, h = uint64(binary.BigEndian.Uint16(b[2:])), 4
		case 127:
			if len(b) < 10 {
				return nil, false, nil
			}
			n, h = binary.BigEndian.Uint64(b[2:]), 10
		}
		if n > 64<<20 {
			return nil, false, fmt.Errorf("websocket: frame of %d bytes", n)
		}
		if uint64(len(b)-h) < n {
			return nil, false, nil
		}
		p := b[h : h+int(n)]
		s.pos += h + int(n)
		switch {
		case op == 0x8:
			s.writeFrame(0x8, p[:min(len(p), 2)])
			if len(p) >= 2 { // RFC 6455 §5.5.1: a status code, then a reason
				return nil, false, fmt.Errorf("%w: %d %s", errClosed, binary.BigEndian.Uint16(p), p[2:])
			}
			return nil, false, errClosed
		case op == 0x9:
			if err := s.writeFrame(0xA, p); err != nil {
				return nil, false, err
			}
		case op >= 0x8: // pong and reserved control frames
		case fin && len(s.frag) == 0:
			return p, true, nil
		default:
			s.frag = append(s.frag, p...)
			if fin {
				m := s.frag
				s.frag = s.frag[:0]
				return m, true, nil
			}
		}
	}
}

func (s *rawSub) Close() { s.conn.Close() }

// recordIDs calls f with the id of each record of b if b is a "changes"
// message ({0: "changes", 1: collection, 2: [record, ...], ...}, each
// record {1: id, ...}; docs/protocol.md) and says whether it was one; it
// does nothing for other messages. It walks the CBOR without decoding values or allocating; the
// id passed to f is only valid during the call. The server's messages are
// trusted to be well-formed: a malformed one is an error.
func recordIDs(b []byte, f func(id []byte)) (changes bool, err error) {
	isChanges := false
	major, n, off, err := cborHead(b, 0)
	if err != nil {
		return false, err
	}
	if major != 5 {
		return false, errors.New("cbor: message is not a map")
	}
	for range n {
		kmaj, key, o, err := cborHead(b, off)
		if err != nil {
			return isChanges, err
		}
		if kmaj != 0 {
			return isChanges, errors.New("cbor: message key is not an integer")
		}
		off = o
		switch {
		case key == 0:
			s, o, err := cborText(b, off)
			if err != nil {
				return isChanges, err
			}
			if string(s) != proto.TypeChanges {
				return false, nil
			}
			isChanges, off = true, o
		case key == 2 && isChanges:
			amaj, count, o, err := cborHead(b, off)
			if err != nil {
				return isChanges, err
			}
			if amaj == 7 { // null: no records
				off = o
				continue
			}
			if amaj != 4 {
				return isChanges, errors.New("cbor: records are not an array")
			}
			off = o
			for range count {
				rmaj, fields, o, err := cborHead(b, off)
				if err != nil {
					return isChanges, err
				}
				if rmaj != 5 {
					return isChanges, errors.New("cbor: record is not a map")
				}
				off = o
				for range fields {
					_, rk, o, err := cborHead(b, off)
					if err != nil {
						return isChanges, err
					}
					off = o
					if rk == 1 {
						id, o, err := cborText(b, off)
						if err != nil {
							return isChanges, err
						}
						f(id)
						off = o
						continue
					}
					if off, err = cborSkip(b, off); err != nil {
						return isChanges, err
					}
				}
			}
		default:
			if off, err = cborSkip(b, off); err != nil {
				return isChanges, err
			}
		}
	}
	return isChanges, nil
}

var errCBOR = errors.New("cbor: truncated or unsupported item")

// cborHead reads the head of the item at off: its major type, its argument
// (a length, a count or a value) and the offset after the head.
// Indefinite lengths are not supported (the protocol forbids them).
func cborHead(b []byte, off int) (major byte, arg uint64, next int, err error) {
	if off >= len(b) {
		return 0, 0, 0, errCBOR
	}
	major, info := b[off]>>5, b[off]&0x1f
	off++
	switch {
	case info < 24:
		return major, uint64(info), off, nil
	case info == 24 && off+1 <= len(b):
		return major, uint64(b[off]), off + 1, nil
	case info == 25 && off+2 <= len(b):
		return major, uint64(binary.BigEndian.Uint16(b[off:])), off + 2, nil
	case info == 26 && off+4 <= len(b):
		return major, uint64(binary.BigEndian.Uint32(b[off:])), off + 4, nil
	case info == 27 && off+8 <= len(b):
		return major, binary.BigEndian.Uint64(b[off:]), off + 8, nil
	}
	return 0, 0, 0, errCBOR
}

// cborText returns the text string at off and the offset after it.
func cborText(b []byte, off int) ([]byte, int, error) {
	major, n, off, err := cborHead(b, off)
	if err != nil {
		return nil, 0, err
	}
	if major != 3 || uint64(len(b)-off) < n {
		return nil, 0, errCBOR
	}
	return b[off : off+int(n)], off + int(n), nil
}

// cborSkip returns the offset after the item at off.
func cborSkip(b []byte, off int) (int, error) {
	major, n, off, err := cborHead(b, off)
	if err != nil {
		return 0, err
	}
	switch major {
	case 0, 1, 7: // integers, simple values and floats: the head is all
		return off, nil
	case 2, 3:
		if uint64(len(b)-off) < n {
			return 0, errCBOR
		}
		return off + int(n), nil
	case 4, 5:
		if major == 5 {
			n *= 2
		}
		for range n {
			if off, err = cborSkip(b, off); err != nil {
				return 0, err
			}
		}
		return off, nil
	case 6: // tag: its content follows
		return cborSkip(b, off)
	}
	return 0, errCBOR
}
