package client

import (
	"fmt"

	"github.com/convergo/convergo/crdt"
	"github.com/fxamacker/cbor/v2"
)

// ProtocolVersion is the protocol version this client speaks.
const ProtocolVersion = 1

// Header names of the protocol.
const (
	headerProtocol = "Convergo-Protocol"
	headerError    = "Convergo-Error"
	contentType    = "application/cbor"
)

// Wire forms of the protocol messages (docs/protocol.md): CBOR maps with
// small integer keys, encoded by crdt.Marshal and decoded by crdt.Unmarshal,
// which refuses unknown keys, duplicate keys and oversized containers.

type helloRequest struct {
	Protocol uint   `cbor:"1,keyasint"`
	Replica  string `cbor:"2,keyasint"`
}

type helloAnswer struct {
	Protocol      uint   `cbor:"1,keyasint"`
	ServerTime    int64  `cbor:"2,keyasint"`
	ServerReplica string `cbor:"3,keyasint"`
	MaxPush       int    `cbor:"4,keyasint"`
	MaxPull       int    `cbor:"5,keyasint"`
	MaxBody       int64  `cbor:"6,keyasint"`
	MaxDrift      int64  `cbor:"7,keyasint"`
	Subject       string `cbor:"8,keyasint"`
}

type pushRequest struct {
	Replica string        `cbor:"1,keyasint"`
	Changes []crdt.Change `cbor:"2,keyasint"`
}

type pushAnswer struct {
	Results []resultWire `cbor:"1,keyasint"`
}

type resultWire struct {
	Status  uint   `cbor:"1,keyasint"`
	Seq     uint64 `cbor:"2,keyasint,omitempty"`
	Code    string `cbor:"3,keyasint,omitempty"`
	Message string `cbor:"4,keyasint,omitempty"`
}

type pullRequest struct {
	Collection string `cbor:"1,keyasint"`
	Cursor     uint64 `cbor:"2,keyasint"`
	Limit      int    `cbor:"3,keyasint"`
}

type entryWire struct {
	_      struct{} `cbor:",toarray"`
	Seq    uint64
	Record crdt.Record
}

type pullAnswer struct {
	Entries []entryWire `cbor:"1,keyasint"`
	Next    uint64      `cbor:"2,keyasint"`
	More    bool        `cbor:"3,keyasint"`
}

type errorBody struct {
	Code    string `cbor:"1,keyasint"`
	Message string `cbor:"2,keyasint,omitempty"`
}

// WebSocket message types.
const (
	msgHello   = "hello"
	msgWelcome = "welcome"
	msgSub     = "sub"
	msgUnsub   = "unsub"
	msgPush    = "push"
	msgAck     = "ack"
	msgPing    = "ping"
	msgPong    = "pong"
	msgChanges = "changes"
	msgError   = "error"
	msgResync  = "resync"
)

type wsHello struct {
	Type     string `cbor:"0,keyasint"`
	Protocol uint   `cbor:"1,keyasint"`
	Replica  string `cbor:"2,keyasint"`
	Token    string `cbor:"3,keyasint"`
}

type wsWelcome struct {
	Type  string      `cbor:"0,keyasint"`
	Hello helloAnswer `cbor:"1,keyasint"`
}

type wsSub struct {
	Type       string `cbor:"0,keyasint"`
	Collection string `cbor:"1,keyasint"`
	Cursor     uint64 `cbor:"2,keyasint"`
}

type wsPing struct {
	Type  string `cbor:"0,keyasint"`
	Nonce uint64 `cbor:"1,keyasint"`
}

type wsChanges struct {
	Type       string      `cbor:"0,keyasint"`
	Collection string      `cbor:"1,keyasint"`
	Entries    []entryWire `cbor:"2,keyasint"`
	Next       uint64      `cbor:"3,keyasint"`
	More       bool        `cbor:"4,keyasint"`
}

type wsError struct {
	Type       string `cbor:"0,keyasint"`
	Code       string `cbor:"1,keyasint"`
	Message    string `cbor:"2,keyasint,omitempty"`
	Collection string `cbor:"3,keyasint,omitempty"`
}

type wsResync struct {
	Type       string `cbor:"0,keyasint"`
	Collection string `cbor:"1,keyasint"`
}

type wsAck struct {
	Type    string       `cbor:"0,keyasint"`
	ID      uint64       `cbor:"1,keyasint"`
	Results []resultWire `cbor:"2,keyasint"`
}

// messageType reads key 0 of a WebSocket frame.
func messageType(frame []byte) (string, error) {
	var m map[int]cbor.RawMessage
	if err := crdt.Unmarshal(frame, &m); err != nil {
		return "", fmt.Errorf("%w: websocket frame: %v", ErrProtocol, err)
	}
	raw, ok := m[0]
	if !ok {
		return "", fmt.Errorf("%w: websocket frame without a type", ErrProtocol)
	}
	var t string
	if err := crdt.Unmarshal(raw, &t); err != nil {
		return "", fmt.Errorf("%w: websocket frame type: %v", ErrProtocol, err)
	}
	return t, nil
}

func entriesFromWire(ws []entryWire) []Entry {
	out := make([]Entry, len(ws))
	for i, w := range ws {
		out[i] = Entry{Seq: w.Seq, Record: w.Record}
	}
	return out
}
