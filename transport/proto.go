package transport

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/convergo/convergo/crdt"
)

// ProtocolVersion is the version of docs/protocol.md this package speaks.
const ProtocolVersion = 1

// Header names and the content type of every body.
const (
	HeaderProtocol   = "Convergo-Protocol"
	HeaderError      = "Convergo-Error"
	HeaderRetryAfter = "Retry-After"
	ContentType      = "application/cbor"
)

// Paths of the protocol's endpoints.
const (
	PathHello = "/v1/hello"
	PathPush  = "/v1/push"
	PathPull  = "/v1/pull"
	PathLive  = "/v1/live"
)

// Default limits (docs/protocol.md, "Limits").
const (
	DefaultMaxBodyBytes    = 4 << 20
	DefaultMaxPushChanges  = 1000
	DefaultMaxPullRecords  = 1000
	DefaultMaxMessageBytes = 4 << 20
	DefaultRate            = 200
	DefaultBurst           = 400
	DefaultMaxConnsPerAddr = 64
)

// Error codes. They are stable: clients branch on them.
const (
	CodeMalformed          = "malformed"
	CodeInvalid            = "invalid"
	CodeUnsupportedVersion = "unsupported_version"
	CodeUnauthenticated    = "unauthenticated"
	CodeTokenExpired       = "token_expired"
	CodeForbidden          = "forbidden"
	CodeNotFound           = "not_found"
	CodeTooLarge           = "too_large"
	CodeRateLimited        = "rate_limited"
	CodeClockDrift         = "clock_drift"
	CodeUnavailable        = "unavailable"
	CodeInternal           = "internal"
)

// StatusOf returns the HTTP status of an error code (500 for an unknown
// one). clock_drift is a per-change code; as a request error it is a 400.
func StatusOf(code string) int {
	switch code {
	case CodeMalformed, CodeInvalid, CodeUnsupportedVersion, CodeClockDrift:
		return http.StatusBadRequest
	case CodeUnauthenticated, CodeTokenExpired:
		return http.StatusUnauthorized
	case CodeForbidden:
		return http.StatusForbidden
	case CodeNotFound:
		return http.StatusNotFound
	case CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case CodeRateLimited:
		return http.StatusTooManyRequests
	case CodeUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// Error is a protocol error: a stable code, its HTTP status and a message
// for people. Handlers return it; clients decode it from error bodies and
// error messages.
type Error struct {
	Status  int
	Code    string
	Message string
	// RetryAfter is set with rate_limited: when to try again.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	return fmt.Sprintf("convergo: %s: %s", e.Code, e.Message)
}

// Errorf builds an Error with code's status.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Status: StatusOf(code), Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorBody is the body of an HTTP error answer: {1: code, 2: message}.
type ErrorBody struct {
	Code    string `cbor:"1,keyasint"`
	Message string `cbor:"2,keyasint"`
}

// HelloRequest is the body of POST /v1/hello: {1: protocol, 2: replica}.
type HelloRequest struct {
	Protocol uint64 `cbor:"1,keyasint"`
	Replica  string `cbor:"2,keyasint"`
}

// HelloResponse answers a hello, over HTTP and inside a welcome message.
type HelloResponse struct {
	Protocol      uint64 `cbor:"1,keyasint"`
	ServerTime    int64  `cbor:"2,keyasint"` // ms since the Unix epoch
	ServerReplica string `cbor:"3,keyasint"`
	MaxPush       uint64 `cbor:"4,keyasint"` // changes per push
	MaxPull       uint64 `cbor:"5,keyasint"` // records per pull page
	MaxBodyBytes  uint64 `cbor:"6,keyasint"`
	MaxDrift      int64  `cbor:"7,keyasint"` // ms
	Subject       string `cbor:"8,keyasint"` // "" when anonymous
}

// PushRequest is the body of POST /v1/push: {1: replica, 2: [change...]}.
//
// Decoding is lenient per change: a change that is well-formed CBOR but
// breaks a rule of the model (an invalid name, a record over the size
// limit) does not fail the request. It is left zero in Changes and its
// error recorded at the same index of Refused, so that the server refuses
// that change alone and the client can drop it from its outbox. A change of
// the wrong shape fails the whole decode with crdt.ErrMalformed.
type PushRequest struct {
	Replica string        `cbor:"1,keyasint"`
	Changes []crdt.Change `cbor:"2,keyasint"`
	// Refused is nil when every change decoded; else Refused[i] says why
	// change i did not.
	Refused []error `cbor:"-"`
}

type pushRequestWire struct {
	Replica string            `cbor:"1,keyasint"`
	Changes []cbor.RawMessage `cbor:"2,keyasint"`
}

// UnmarshalCBOR decodes a push request; see PushRequest.
func (p *PushRequest) UnmarshalCBOR(data []byte) error {
	var w pushRequestWire
	if err := crdt.Unmarshal(data, &w); err != nil {
		return err
	}
	changes, refused, err := decodeChanges(w.Changes)
	if err != nil {
		return err
	}
	*p = PushRequest{Replica: w.Replica, Changes: changes, Refused: refused}
	return nil
}

// decodeChanges decodes each raw change on its own. Errors that are not
// ErrMalformed are per change.
func decodeChanges(raws []cbor.RawMessage) ([]crdt.Change, []error, error) {
	changes := make([]crdt.Change, len(raws))
	var refused []error
	for i, raw := range raws {
		err := crdt.Unmarshal(raw, &changes[i])
		if err == nil {
			continue
		}
		if errors.Is(err, crdt.ErrMalformed) {
			return nil, nil, fmt.Errorf("change %d: %w", i, err)
		}
		changes[i] = crdt.Change{}
		if refused == nil {
			refused = make([]error, len(raws))
		}
		refused[i] = fmt.Errorf("change %d: %w", i, err)
	}
	return changes, refused, nil
}

// Push statuses of a PushResult.
const (
	StatusApplied = 0
	StatusNoop    = 1
	StatusRefused = 2
)

// PushResult is the outcome of one pushed change:
// {1: status, 2: seq?, 3: code?, 4: message?}.
type PushResult struct {
	Status  uint64 `cbor:"1,keyasint"`
	Seq     uint64 `cbor:"2,keyasint,omitempty"`
	Code    string `cbor:"3,keyasint,omitempty"`
	Message string `cbor:"4,keyasint,omitempty"`
}

// PushResponse answers a push: {1: [result...]}, one per change in order.
type PushResponse struct {
	Results []PushResult `cbor:"1,keyasint"`
}

// PullRequest is the body of POST /v1/pull: {1: collection, 2: cursor,
// 3: limit}. A limit of 0 means the server's maximum.
type PullRequest struct {
	Collection string `cbor:"1,keyasint"`
	Cursor     uint64 `cbor:"2,keyasint"`
	Limit      uint64 `cbor:"3,keyasint"`
}

// Entry is a record at the sequence number of its latest change, the
// array [seq, record].
type Entry struct {
	_      struct{} `cbor:",toarray"`
	Seq    uint64
	Record crdt.Record
}

// PullResponse answers a pull: {1: [[seq, record]...], 2: next, 3: more}.
type PullResponse struct {
	Entries []Entry `cbor:"1,keyasint"`
	Next    uint64  `cbor:"2,keyasint"`
	More    bool    `cbor:"3,keyasint"`
}

// Types of live (WebSocket) messages, the value under key 0.
const (
	TypeHello   = "hello"
	TypeSub     = "sub"
	TypeUnsub   = "unsub"
	TypePush    = "push"
	TypePing    = "ping"
	TypeWelcome = "welcome"
	TypeChanges = "changes"
	TypeAck     = "ack"
	TypePong    = "pong"
	TypeError   = "error"
	TypeResync  = "resync"
)

// Message is a live message. The Type field of each is set by
// EncodeMessage; callers leave it empty.
type Message interface{ messageType() string }

// Hello opens a live session: {0: "hello", 1: protocol, 2: replica, 3: token}.
type Hello struct {
	Type     string `cbor:"0,keyasint"`
	Protocol uint64 `cbor:"1,keyasint"`
	Replica  string `cbor:"2,keyasint"`
	Token    string `cbor:"3,keyasint"`
}

// Sub subscribes to a collection after a cursor.
type Sub struct {
	Type       string `cbor:"0,keyasint"`
	Collection string `cbor:"1,keyasint"`
	Cursor     uint64 `cbor:"2,keyasint"`
}

// Unsub ends a subscription.
type Unsub struct {
	Type       string `cbor:"0,keyasint"`
	Collection string `cbor:"1,keyasint"`
}

// Push pushes changes over a live session; it is answered by an Ack with the
// same ID. Decoding is lenient per change as for PushRequest.
type Push struct {
	Type    string        `cbor:"0,keyasint"`
	ID      uint64        `cbor:"1,keyasint"`
	Changes []crdt.Change `cbor:"2,keyasint"`
	Refused []error       `cbor:"-"`
}

type pushWire struct {
	Type    string            `cbor:"0,keyasint"`
	ID      uint64            `cbor:"1,keyasint"`
	Changes []cbor.RawMessage `cbor:"2,keyasint"`
}

// UnmarshalCBOR decodes a live push; see PushRequest.
func (p *Push) UnmarshalCBOR(data []byte) error {
	var w pushWire
	if err := crdt.Unmarshal(data, &w); err != nil {
		return err
	}
	changes, refused, err := decodeChanges(w.Changes)
	if err != nil {
		return err
	}
	*p = Push{Type: w.Type, ID: w.ID, Changes: changes, Refused: refused}
	return nil
}

// Ping asks for a Pong with the same nonce.
type Ping struct {
	Type  string `cbor:"0,keyasint"`
	Nonce uint64 `cbor:"1,keyasint"`
}

// Welcome answers Hello.
type Welcome struct {
	Type  string        `cbor:"0,keyasint"`
	Hello HelloResponse `cbor:"1,keyasint"`
}

// Changes streams a page of a subscribed collection.
type Changes struct {
	Type       string  `cbor:"0,keyasint"`
	Collection string  `cbor:"1,keyasint"`
	Entries    []Entry `cbor:"2,keyasint"`
	Next       uint64  `cbor:"3,keyasint"`
	More       bool    `cbor:"4,keyasint"`
}

// Ack answers a Push.
type Ack struct {
	Type    string       `cbor:"0,keyasint"`
	ID      uint64       `cbor:"1,keyasint"`
	Results []PushResult `cbor:"2,keyasint"`
}

// Pong answers a Ping.
type Pong struct {
	Type  string `cbor:"0,keyasint"`
	Nonce uint64 `cbor:"1,keyasint"`
}

// ErrorMessage reports a refused sub or a protocol error. Collection is set
// when the error concerns one subscription.
type ErrorMessage struct {
	Type       string `cbor:"0,keyasint"`
	Code       string `cbor:"1,keyasint"`
	Message    string `cbor:"2,keyasint"`
	Collection string `cbor:"3,keyasint,omitempty"`
}

// Resync says the server stopped streaming a collection: the client pulls
// from its cursor over HTTP and subscribes again.
type Resync struct {
	Type       string `cbor:"0,keyasint"`
	Collection string `cbor:"1,keyasint"`
}

func (Hello) messageType() string        { return TypeHello }
func (Sub) messageType() string          { return TypeSub }
func (Unsub) messageType() string        { return TypeUnsub }
func (Push) messageType() string         { return TypePush }
func (Ping) messageType() string         { return TypePing }
func (Welcome) messageType() string      { return TypeWelcome }
func (Changes) messageType() string      { return TypeChanges }
func (Ack) messageType() string          { return TypeAck }
func (Pong) messageType() string         { return TypePong }
func (ErrorMessage) messageType() string { return TypeError }
func (Resync) messageType() string       { return TypeResync }

// Encode encodes a request or response body (not a live message; see
// EncodeMessage) in deterministic CBOR.
func Encode(v any) ([]byte, error) {
	if p, ok := v.(PullResponse); ok {
		return p.MarshalCBOR() // hand-encoded: no reflection, no re-check of the bytes
	}
	return crdt.Marshal(v)
}

// Decode decodes a request or response body with crdt's hardened decoding:
// unknown keys, duplicate keys, tags and indefinite lengths are refused.
// Errors wrap crdt.ErrMalformed, crdt.ErrInvalid or crdt.ErrTooLarge.
func Decode(data []byte, v any) error { return crdt.Unmarshal(data, v) }

// EncodeMessage encodes a live message, setting its type.
func EncodeMessage(m Message) ([]byte, error) {
	switch v := m.(type) {
	case Hello:
		v.Type = TypeHello
		return crdt.Marshal(v)
	case Sub:
		v.Type = TypeSub
		return crdt.Marshal(v)
	case Unsub:
		v.Type = TypeUnsub
		return crdt.Marshal(v)
	case Push:
		v.Type = TypePush
		return crdt.Marshal(v)
	case Ping:
		v.Type = TypePing
		return crdt.Marshal(v)
	case Welcome:
		v.Type = TypeWelcome
		return crdt.Marshal(v)
	case Changes:
		return v.MarshalCBOR() // hand-encoded: no reflection, no re-check of the bytes
	case Ack:
		v.Type = TypeAck
		return crdt.Marshal(v)
	case Pong:
		v.Type = TypePong
		return crdt.Marshal(v)
	case ErrorMessage:
		v.Type = TypeError
		return crdt.Marshal(v)
	case Resync:
		v.Type = TypeResync
		return crdt.Marshal(v)
	}
	return nil, fmt.Errorf("encode message: unsupported type %T", m)
}

// messageType reads key 0 of a live message.
func peekType(data []byte) (string, error) {
	var m map[int]cbor.RawMessage
	if err := crdt.Unmarshal(data, &m); err != nil {
		return "", err
	}
	raw, ok := m[0]
	if !ok {
		return "", fmt.Errorf("%w: message without a type (key 0)", crdt.ErrMalformed)
	}
	var t string
	if err := crdt.Unmarshal(raw, &t); err != nil {
		return "", fmt.Errorf("message type: %w", err)
	}
	return t, nil
}

// DecodeClientMessage decodes a message a client sends: Hello, Sub, Unsub,
// Push or Ping (values, not pointers). An unknown type wraps
// crdt.ErrMalformed.
func DecodeClientMessage(data []byte) (Message, error) {
	t, err := peekType(data)
	if err != nil {
		return nil, err
	}
	switch t {
	case TypeHello:
		return decodeAs[Hello](data)
	case TypeSub:
		return decodeAs[Sub](data)
	case TypeUnsub:
		return decodeAs[Unsub](data)
	case TypePush:
		return decodeAs[Push](data)
	case TypePing:
		return decodeAs[Ping](data)
	}
	return nil, fmt.Errorf("%w: unknown client message type %q", crdt.ErrMalformed, t)
}

// DecodeServerMessage decodes a message a server sends: Welcome, Changes,
// Ack, Pong, ErrorMessage or Resync (values, not pointers).
func DecodeServerMessage(data []byte) (Message, error) {
	t, err := peekType(data)
	if err != nil {
		return nil, err
	}
	switch t {
	case TypeWelcome:
		return decodeAs[Welcome](data)
	case TypeChanges:
		return decodeAs[Changes](data)
	case TypeAck:
		return decodeAs[Ack](data)
	case TypePong:
		return decodeAs[Pong](data)
	case TypeError:
		return decodeAs[ErrorMessage](data)
	case TypeResync:
		return decodeAs[Resync](data)
	}
	return nil, fmt.Errorf("%w: unknown server message type %q", crdt.ErrMalformed, t)
}

func decodeAs[T Message](data []byte) (Message, error) {
	var v T
	if err := crdt.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("decode %s message: %w", v.messageType(), err)
	}
	return v, nil
}
