package proto

import (
	"bytes"
	"fmt"

	"github.com/fxamacker/cbor/v2"

	"github.com/convergo/convergo/crdt"
)

// Live push (docs/protocol.md, "Live sessions"): a client pushes over its
// open live session with a push message, answered by a pushed message.
// The pushing replica is the session's (its hello's), so the message names
// none; and its walls are written as differences from the session base,
// the server time of the session's welcome, which both ends hold, unless
// the message carries a base of its own (key 8).

// Session is what both ends of a live session share once the welcome is
// through, and what a push over it is read and written against.
type Session struct {
	// Replica is the session's replica, the hello's key 2: index 0 of a
	// push's replica table, and the replica that pushes.
	Replica string
	// Base is the session base: the server time (ms since the Unix epoch)
	// of the session's welcome (HelloResponse.ServerTime), the base of a
	// push's walls when it carries none (key 8).
	Base int64
}

// PushLive is a push over a live session: {0: "push", 2: [change...],
// 3: {collection: schema version}?, 7: replica table?, 8: base wall?}. It
// is applied as an HTTP push (PushRequest) of the same changes by the
// session's principal and replica, and answered by a Pushed. A live push
// has no key 1 or 9 (either is malformed): index 0 of its replica table is
// the session's replica. Its walls are always differences: from key 8 when
// present, else from the session base. The encoder's choice between the
// two (crdt.PlanCompactFrom) is the same in every implementation.
type PushLive struct {
	Type    string
	Changes []crdt.Change
	// Versions is as PushRequest.Versions.
	Versions map[string]uint64
	// Session is the session the push goes over. It is not on the wire:
	// EncodeMessage writes the push against it, DecodePushLive sets it.
	Session Session
	// Refused is nil when every change decoded; else Refused[i] says why
	// change i did not, and Changes[i] is zero (as PushRequest.Refused).
	Refused []error
}

type pushLiveWire struct {
	Type     string            `cbor:"0,keyasint"`
	Replica  cbor.RawMessage   `cbor:"1,keyasint,omitempty"` // never sent: refused when present
	Changes  []cbor.RawMessage `cbor:"2,keyasint"`
	Versions map[string]uint64 `cbor:"3,keyasint,omitempty"`
	Table    []string          `cbor:"7,keyasint,omitempty"`
	Base     *uint64           `cbor:"8,keyasint,omitempty"`
	Device   cbor.RawMessage   `cbor:"9,keyasint,omitempty"` // never sent: refused when present
}

// MarshalCBOR encodes a live push against p.Session, whatever its Type
// field says.
func (p PushLive) MarshalCBOR() ([]byte, error) {
	c := crdt.PlanCompactFrom(p.Session.Replica, func(yield func(crdt.Record) bool) {
		for _, ch := range p.Changes {
			if !yield(ch.Record) {
				return
			}
		}
	}, p.Session.Base)
	w := pushLiveWire{Type: TypePush, Changes: make([]cbor.RawMessage, len(p.Changes)), Versions: p.Versions, Table: c.Table()}
	if base, ok := c.Base(); ok {
		w.Base = &base
	}
	for i, ch := range p.Changes {
		w.Changes[i] = crdt.AppendChangeCompact(nil, ch, c)
	}
	return crdt.MarshalEnvelope(w)
}

// DecodePushLive decodes a push sent over the live session s. A message
// with key 1 or 9, or without key 8 when s has no base in 0..MaxWall, is
// malformed; a change that does not decode is refused alone (Refused), as
// in DecodePush.
func DecodePushLive(data []byte, s Session) (PushLive, error) {
	return DecodePushLiveCharged(data, s, nil)
}

// DecodePushLiveCharged is DecodePushLive telling charge of each change it
// decodes (Charge).
func DecodePushLiveCharged(data []byte, s Session, charge Charge) (PushLive, error) {
	var w pushLiveWire
	if err := crdt.UnmarshalEnvelope(data, &w); err != nil {
		return PushLive{}, fmt.Errorf("decode push message: %w", err)
	}
	if w.Type != TypePush {
		return PushLive{}, fmt.Errorf("%w: a %q message is not a push", crdt.ErrMalformed, w.Type)
	}
	if w.Changes == nil { // absent or null; an empty list decodes non-nil
		return PushLive{}, errNoChangeList
	}
	if len(w.Replica) > 0 || len(w.Device) > 0 {
		return PushLive{}, fmt.Errorf("%w: a push over a live session is its session's replica's: it has no key 1 or 9", crdt.ErrMalformed)
	}
	base := w.Base
	if base == nil {
		if s.Base < 0 || s.Base > crdt.MaxWall {
			return PushLive{}, fmt.Errorf("%w: a push without a base wall (key 8) in a session without a base", crdt.ErrMalformed)
		}
		b := uint64(s.Base)
		base = &b
	}
	pinned := s.Replica
	if crdt.ValidateReplica(pinned) != nil {
		pinned = "" // no session yet: a push before the welcome is refused
	}
	c, err := crdt.NewCompact(pinned, w.Table, base)
	if err != nil {
		return PushLive{}, err
	}
	if err := chargeVersions(w.Versions, charge); err != nil {
		return PushLive{}, err
	}
	changes, refused, err := decodeChanges(c, w.Changes, charge)
	if err != nil {
		return PushLive{}, err
	}
	return PushLive{Type: TypePush, Changes: changes, Refused: refused, Versions: w.Versions, Session: s}, nil
}

// pushHead is how a push message begins after its map's head, key 0 first
// as every encoder writes it (deterministic order): 0, "push".
var pushHead = []byte("\x00\x64push")

// IsPush reports whether the live message data is a push, its key 0
// "push". A definite-length map whose first key is 0 with the value "push"
// is one without reading further: what follows is read by DecodePushLive,
// after the receiver's cheap checks, and a push that does not decode as a
// whole is refused as a push (a pushed message with a code), not as an
// unreadable message. Any other message is read whole for its type
// (PeekType).
func IsPush(data []byte) bool {
	if len(data) > 0 && data[0]>>5 == 5 { // a map
		off := 1
		switch info := data[0] & 0x1f; {
		case info >= 24 && info <= 27: // the count in 1, 2, 4 or 8 bytes
			off += 1 << (info - 24)
		case info >= 24: // indefinite (forbidden) or reserved
			off = 0
		}
		if off > 0 && off <= len(data) && bytes.HasPrefix(data[off:], pushHead) {
			return true
		}
	}
	t, err := PeekType(data)
	return err == nil && t == TypePush
}

// Pushed answers a PushLive, in the order of the pushes: {0: "pushed",
// 1: [result...]} with one result per change in order, as PushResponse;
// or {0: "pushed", 2: code, 3: message} when the push was refused whole
// (with the code and retry class an HTTP push would have been answered
// with: too_large, unavailable, schema_ahead, malformed, ...). Key 4 is
// the request id of the push, as HeaderRequestID is of an HTTP request:
// the server logs the push's refusals and failures under it.
type Pushed struct {
	Type      string
	Results   []PushResult // nil when refused whole
	Code      string       // the code of a push refused whole, else ""
	Message   string
	RequestID string // the push's request id; "" when the server sent none
}

type pushedWire struct {
	Type      string        `cbor:"0,keyasint"`
	Results   *[]PushResult `cbor:"1,keyasint,omitempty"`
	Code      *string       `cbor:"2,keyasint,omitempty"`
	Message   *string       `cbor:"3,keyasint,omitempty"`
	RequestID string        `cbor:"4,keyasint,omitempty"`
}

// MarshalCBOR encodes a pushed message, whatever its Type field says: the
// refusal form when m.Code is set, else the results form.
func (m Pushed) MarshalCBOR() ([]byte, error) {
	w := pushedWire{Type: TypePushed, RequestID: m.RequestID}
	if m.Code != "" {
		w.Code, w.Message = &m.Code, &m.Message
	} else {
		rs := m.Results
		if rs == nil {
			rs = []PushResult{}
		}
		w.Results = &rs
	}
	return crdt.MarshalEnvelope(w)
}

// UnmarshalCBOR decodes a pushed message: exactly one of its results
// (key 1) and its code (key 2), else it is malformed.
func (m *Pushed) UnmarshalCBOR(data []byte) error {
	var w pushedWire
	if err := crdt.UnmarshalEnvelope(data, &w); err != nil {
		return err
	}
	out := Pushed{Type: w.Type, RequestID: w.RequestID}
	switch {
	case w.Results != nil && w.Code != nil:
		return fmt.Errorf("%w: a pushed message has results (key 1) or a code (key 2), not both", crdt.ErrMalformed)
	case w.Results != nil:
		out.Results = *w.Results
		if out.Results == nil {
			out.Results = []PushResult{}
		}
	case w.Code != nil && *w.Code != "":
		out.Code = *w.Code
		if w.Message != nil {
			out.Message = *w.Message
		}
	default:
		return fmt.Errorf("%w: a pushed message without results (key 1) or a code (key 2)", crdt.ErrMalformed)
	}
	*m = out
	return nil
}
