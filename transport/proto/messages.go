package proto

import (
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"

	"github.com/convergo/convergo/crdt"
)

// ErrorBody is the body of an HTTP error answer: {1: code, 2: message,
// 3: request id}.
type ErrorBody struct {
	Code      string `cbor:"1,keyasint"`
	Message   string `cbor:"2,keyasint,omitempty"`
	RequestID string `cbor:"3,keyasint,omitempty"`
}

// HelloRequest is the body of POST /v2/hello: {1: protocol, 2: replica}.
type HelloRequest struct {
	Protocol uint64 `cbor:"1,keyasint"`
	Replica  string `cbor:"2,keyasint"`
}

// HelloResponse answers a hello, over HTTP and inside a welcome message.
type HelloResponse struct {
	Protocol        uint64 `cbor:"1,keyasint"`
	ServerTime      int64  `cbor:"2,keyasint"` // ms since the Unix epoch
	ServerReplica   string `cbor:"3,keyasint"`
	MaxPush         uint64 `cbor:"4,keyasint"` // changes per push
	MaxPull         uint64 `cbor:"5,keyasint"` // records per pull page
	MaxBodyBytes    uint64 `cbor:"6,keyasint"`
	MaxDrift        uint64 `cbor:"7,keyasint"` // ms
	Subject         string `cbor:"8,keyasint"` // "" when anonymous
	MaxPageBytes    uint64 `cbor:"9,keyasint"`
	MaxMessageBytes uint64 `cbor:"10,keyasint"`
	// ReplicaPrefix is the prefix of the replica ids the principal owns
	// (ReplicaPrefix of Subject): the only ids its pushed stamps may carry.
	ReplicaPrefix string `cbor:"11,keyasint"`
}

// helloResponseWire is a hello answer as it is read: keys 1 and 2 are
// required.
type helloResponseWire struct {
	Protocol        *uint64 `cbor:"1,keyasint"`
	ServerTime      *int64  `cbor:"2,keyasint"`
	ServerReplica   string  `cbor:"3,keyasint"`
	MaxPush         uint64  `cbor:"4,keyasint"`
	MaxPull         uint64  `cbor:"5,keyasint"`
	MaxBodyBytes    uint64  `cbor:"6,keyasint"`
	MaxDrift        uint64  `cbor:"7,keyasint"`
	Subject         string  `cbor:"8,keyasint"`
	MaxPageBytes    uint64  `cbor:"9,keyasint"`
	MaxMessageBytes uint64  `cbor:"10,keyasint"`
	ReplicaPrefix   string  `cbor:"11,keyasint"`
}

// UnmarshalCBOR decodes a hello answer (over HTTP, or a welcome's key 1):
// its protocol (key 1) and its server time (key 2), a wall time of 1 to
// crdt.MaxWall ms, are required (docs/protocol.md, section 6), else it is
// malformed, an answer a client cannot read and takes nothing of: read as
// 0, the server time would restart the client's clock at the epoch. The
// browser client's parseHello reads it alike. Another protocol version is
// read, for the client to refuse unsupported_version.
func (h *HelloResponse) UnmarshalCBOR(data []byte) error {
	var w helloResponseWire
	if err := crdt.UnmarshalEnvelope(data, &w); err != nil {
		return err
	}
	if w.ServerTime != nil && (*w.ServerTime <= 0 || *w.ServerTime > crdt.MaxWall) {
		return fmt.Errorf("%w: a hello answer of server time %d, not a wall time", crdt.ErrMalformed, *w.ServerTime)
	}
	if w.Protocol == nil {
		return fmt.Errorf("%w: a hello answer without its protocol (key 1)", crdt.ErrMalformed)
	}
	if w.ServerTime == nil {
		return fmt.Errorf("%w: a hello answer without its server time (key 2)", crdt.ErrMalformed)
	}
	*h = HelloResponse{Protocol: *w.Protocol, ServerTime: *w.ServerTime, ServerReplica: w.ServerReplica, MaxPush: w.MaxPush,
		MaxPull: w.MaxPull, MaxBodyBytes: w.MaxBodyBytes, MaxDrift: w.MaxDrift, Subject: w.Subject, MaxPageBytes: w.MaxPageBytes,
		MaxMessageBytes: w.MaxMessageBytes, ReplicaPrefix: w.ReplicaPrefix}
	return nil
}

// WithDefaults returns h with each limit it leaves at 0 (keys 4, 5, 6, 7,
// 9 and 10: max-push, max-pull, max-body, max-drift, max-page-bytes,
// max-message) set to its default: the Default* constant, or for the max
// drift crdt.DefaultMaxDrift in ms. It is the rule by which both clients
// read a hello (docs/protocol.md, section 6). A server never announces 0
// (transport's Limits.Validate refuses a limit below 1, and New an
// engine's max drift below 1 ms); absent and 0 decode alike, and both
// mean the default. The browser client's parseHello follows the same rule
// over DEFAULTS, the constants these are exported as.
func (h HelloResponse) WithDefaults() HelloResponse {
	if h.MaxPush == 0 {
		h.MaxPush = DefaultMaxPushChanges
	}
	if h.MaxPull == 0 {
		h.MaxPull = DefaultMaxPullRecords
	}
	if h.MaxBodyBytes == 0 {
		h.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if h.MaxDrift == 0 {
		h.MaxDrift = uint64(crdt.DefaultMaxDrift.Milliseconds())
	}
	if h.MaxPageBytes == 0 {
		h.MaxPageBytes = DefaultMaxPageBytes
	}
	if h.MaxMessageBytes == 0 {
		h.MaxMessageBytes = DefaultMaxMessageBytes
	}
	return h
}

// Keys of compact stamps (docs/protocol.md, "Compact stamps"), the same in
// a pull answer, a changes message and a push body.
const (
	// KeyReplicaTable holds the message's replica table: an array of
	// replica ids that its stamps may name by index.
	KeyReplicaTable = 7
	// KeyBaseWall holds the message's base wall: its stamps' walls are
	// their differences to it.
	KeyBaseWall = 8
	// KeyPushDevice, in a push body and in place of key 1, names the
	// pushing replica by its device part alone: the replica is the
	// principal's replica prefix, the separator and the device part.
	KeyPushDevice = 9
)

// PushRequest is the body of POST /v2/push: {1: replica, 2: [change...],
// 3: {collection: schema version}?, 7: replica table?, 8: base wall?}, or
// with 9: device part in place of 1; its stamps compact (docs/protocol.md,
// "Compact stamps"; index 0 is the pushing replica). See the package doc
// for how it is decoded.
type PushRequest struct {
	Replica string        `cbor:"1,keyasint"`
	Changes []crdt.Change `cbor:"2,keyasint"`
	// Versions is the schema version the changes of each collection were
	// written under; a collection absent or at 0 means the current one
	// (docs/protocol.md, "Schema versions").
	Versions map[string]uint64 `cbor:"3,keyasint,omitempty"`
	// Prefix, when encoding, is the replica prefix of the subject of the
	// token the body goes with: when Replica is one of that prefix's ids,
	// the body names it by its device part (key 9), which is how the
	// server, knowing the subject, reads it back. The token and the body
	// must be chosen together (a body sent with another subject's token
	// would name another replica), so "" (key 1) unless the sender knows
	// them to match. When decoding (DecodePush) it is the principal's
	// prefix; Replica is the whole id in either form.
	Prefix string `cbor:"-"`
	// Refused is nil when every change decoded; else Refused[i] says why
	// change i did not, and Changes[i] is zero.
	Refused []error `cbor:"-"`
}

type pushRequestWire struct {
	Replica  *string           `cbor:"1,keyasint,omitempty"`
	Changes  []cbor.RawMessage `cbor:"2,keyasint"`
	Versions map[string]uint64 `cbor:"3,keyasint,omitempty"`
	Table    []string          `cbor:"7,keyasint,omitempty"`
	Base     *uint64           `cbor:"8,keyasint,omitempty"`
	Device   *string           `cbor:"9,keyasint,omitempty"`
}

// DeviceOf returns the device part of replica when replica is one of
// prefix's ids (the prefix, the separator, a device part), else "".
func DeviceOf(replica, prefix string) string {
	if len(prefix) != ReplicaPrefixLen || !(Owner{prefix: prefix}).Owns(replica) {
		return ""
	}
	return replica[ReplicaPrefixLen+1:]
}

// MarshalCBOR encodes a push request with compact stamps, naming the
// replica by its device part when p.Prefix is its prefix.
func (p PushRequest) MarshalCBOR() ([]byte, error) {
	c := crdt.PlanCompact(p.Replica, func(yield func(crdt.Record) bool) {
		for _, ch := range p.Changes {
			if !yield(ch.Record) {
				return
			}
		}
	})
	w := pushRequestWire{Changes: make([]cbor.RawMessage, len(p.Changes)), Versions: p.Versions, Table: c.Table()}
	if d := DeviceOf(p.Replica, p.Prefix); d != "" {
		w.Device = &d
	} else {
		w.Replica = &p.Replica
	}
	if base, ok := c.Base(); ok {
		w.Base = &base
	}
	for i, ch := range p.Changes {
		w.Changes[i] = crdt.AppendChangeCompact(nil, ch, c)
	}
	return crdt.MarshalEnvelope(w)
}

// UnmarshalCBOR decodes a push request that names its replica whole (key
// 1); one that names it by its device part (key 9) needs the principal's
// prefix, DecodePush, and is malformed here.
func (p *PushRequest) UnmarshalCBOR(data []byte) error {
	r, err := DecodePush(data, "")
	if err != nil {
		return err
	}
	*p = r
	return nil
}

// errNoChangeList refuses a push, over HTTP or live, whose change list
// (key 2) is absent or null: it is not readable as a whole.
var errNoChangeList = fmt.Errorf("%w: a push without a change list (key 2)", crdt.ErrMalformed)

// Charge is told of each change of a push as it is read, before the next
// one is: a change that decoded (refused nil), or one refused alone (ch
// zero, refused the error the push holds for it, PushRequest.Refused); an
// error stops the decoding and refuses the push whole with it. A server
// charges what each change holds to its memory for bodies in flight
// (transport), so that a push of many tiny fields, which decodes to many
// times its bytes, or of many tiny changes that do not decode, whose
// refusals do too, is bounded as it grows, not once it is whole. Before
// the changes, it is told of each entry of the push's schema versions
// (key 3) as a change of that collection holding nothing (chargeVersions).
// Nil charges nothing.
type Charge func(ch crdt.Change, refused error) error

// chargeVersions tells charge of a push's schema versions: the map is
// held until the push is answered, and an entry holds less than a change
// of its collection holding nothing (its name and its slot, about 50
// bytes), however little of the body it took: 16,384 of them, the most a
// map holds, take some 840 KB for a body of 94 KB.
func chargeVersions(versions map[string]uint64, charge Charge) error {
	if charge == nil {
		return nil
	}
	for coll := range versions {
		if err := charge(crdt.Change{Collection: coll}, nil); err != nil {
			return err
		}
	}
	return nil
}

// refusedChange is why a change of a push did not decode, as the push
// holds it until it is answered: the decoder's message once, however many
// errors it wrapped to say it, and the kind it is told by (crdt's
// ErrMalformed, ErrInvalid or ErrTooLarge, else the decoder's error
// itself), so that it holds about its message's bytes (Charge).
type refusedChange struct {
	msg  string
	kind error
}

func (e *refusedChange) Error() string { return e.msg }
func (e *refusedChange) Unwrap() error { return e.kind }

// refusedKinds are the kinds a refusedChange keeps, in the order a server
// tells refusals by.
var refusedKinds = []error{crdt.ErrTooLarge, crdt.ErrMalformed, crdt.ErrInvalid}

// refuseChange is the refusal of change i of a push, which err says.
func refuseChange(i int, err error) error {
	kind := err
	for _, k := range refusedKinds {
		if errors.Is(err, k) {
			kind = k
			break
		}
	}
	return &refusedChange{msg: fmt.Sprintf("change %d: %v", i, err), kind: kind}
}

// decodeChanges decodes a push's change list with c, over HTTP or live. A
// change that does not decode is refused alone: refused[i] says why
// (refused is nil when every change decodes) and changes[i] is zero. An
// error of charge refuses the push whole.
func decodeChanges(c *crdt.Compact, raw []cbor.RawMessage, charge Charge) (changes []crdt.Change, refused []error, err error) {
	changes = make([]crdt.Change, len(raw))
	for i, b := range raw {
		var err error
		if changes[i], err = c.DecodeChange(b); err != nil {
			changes[i] = crdt.Change{}
			if refused == nil {
				refused = make([]error, len(raw))
			}
			refused[i] = refuseChange(i, err)
		}
		if charge != nil {
			var why error
			if refused != nil {
				why = refused[i]
			}
			if err := charge(changes[i], why); err != nil {
				return nil, nil, err
			}
		}
	}
	return changes, refused, nil
}

// DecodePush decodes a push body sent by a principal whose replica prefix
// is prefix: key 1 names the pushing replica, or key 9 its device part
// under prefix (exactly one of them). A device part that is not one
// (1 to MaxDeviceBytes of [A-Za-z0-9_-]) is invalid; see the package doc
// for the rest.
func DecodePush(data []byte, prefix string) (PushRequest, error) {
	return DecodePushCharged(data, prefix, nil)
}

// DecodePushCharged is DecodePush telling charge of each change it decodes
// (Charge).
func DecodePushCharged(data []byte, prefix string, charge Charge) (PushRequest, error) {
	var w pushRequestWire
	if err := crdt.UnmarshalEnvelope(data, &w); err != nil {
		return PushRequest{}, err
	}
	if w.Changes == nil { // absent or null; an empty list decodes non-nil
		return PushRequest{}, errNoChangeList
	}
	var replica string
	switch {
	case w.Replica != nil && w.Device != nil:
		return PushRequest{}, fmt.Errorf("%w: a push names its replica by key 1 or by key 9, not both", crdt.ErrMalformed)
	case w.Device != nil && prefix == "":
		return PushRequest{}, fmt.Errorf("%w: a push naming its replica by its device part (key 9) is read with the principal's prefix", crdt.ErrMalformed)
	case w.Device != nil:
		d := *w.Device
		if d == "" || len(d) > MaxDeviceBytes || crdt.ValidateReplica(d) != nil {
			return PushRequest{}, fmt.Errorf("%w: device part %q: 1 to %d bytes of [A-Za-z0-9_-]", crdt.ErrInvalid, d, MaxDeviceBytes)
		}
		replica = prefix + string(ReplicaSeparator) + d
	case w.Replica != nil:
		replica = *w.Replica
	}
	pinned := replica
	if crdt.ValidateReplica(pinned) != nil {
		pinned = "" // the push is refused for its replica
	}
	c, err := crdt.NewCompact(pinned, w.Table, w.Base)
	if err != nil {
		return PushRequest{}, err
	}
	if err := chargeVersions(w.Versions, charge); err != nil {
		return PushRequest{}, err
	}
	changes, refused, err := decodeChanges(c, w.Changes, charge)
	if err != nil {
		return PushRequest{}, err
	}
	out := PushRequest{Replica: replica, Changes: changes, Versions: w.Versions, Refused: refused}
	if w.Device != nil {
		out.Prefix = prefix
	}
	return out, nil
}

// PushResult is the outcome of one pushed change: {1: status, 2: code?,
// 3: message?, 4: [lost field...]?}.
type PushResult struct {
	Status  Status   `cbor:"1,keyasint"`
	Code    string   `cbor:"2,keyasint,omitempty"`
	Message string   `cbor:"3,keyasint,omitempty"`
	Lost    []string `cbor:"4,keyasint,omitempty"`
}

// UnmarshalCBOR decodes a push result, whose status (key 1) is required:
// a result without one says nothing of its change, and read as status 0
// it would be taken as applied, the change dropped from its client's
// outbox although the server may never have taken it. It is malformed,
// an answer the client cannot read (the browser client's parsePushAnswer
// refuses it too), and so is a result of a status not one of the four
// (docs/protocol.md, section 7). Unknown keys are ignored, as in any
// envelope.
func (r *PushResult) UnmarshalCBOR(data []byte) error {
	var w struct {
		Status  *Status  `cbor:"1,keyasint"`
		Code    string   `cbor:"2,keyasint"`
		Message string   `cbor:"3,keyasint"`
		Lost    []string `cbor:"4,keyasint"`
	}
	if err := crdt.UnmarshalEnvelope(data, &w); err != nil {
		return err
	}
	if w.Status == nil {
		return fmt.Errorf("%w: a push result without its status (key 1)", crdt.ErrMalformed)
	}
	if *w.Status > StatusRefused {
		// A status this client does not know acknowledges nothing.
		return fmt.Errorf("%w: a push result of status %d", crdt.ErrMalformed, *w.Status)
	}
	*r = PushResult{Status: *w.Status, Code: w.Code, Message: w.Message, Lost: w.Lost}
	return nil
}

// PushResponse answers a push: {1: [result...]}, one per change in order.
type PushResponse struct {
	Results []PushResult `cbor:"1,keyasint"`
}

// UnmarshalCBOR decodes a push answer, whose results (key 1) are
// required: an answer without them is malformed (unreadable), not one of
// no results, which answers a push of no changes.
func (p *PushResponse) UnmarshalCBOR(data []byte) error {
	rs, err := decodeResults(data, "push")
	p.Results = rs
	return err
}

// decodeResults reads the results of a push or restore answer.
func decodeResults(data []byte, what string) ([]PushResult, error) {
	var w struct {
		Results *[]PushResult `cbor:"1,keyasint"`
	}
	if err := crdt.UnmarshalEnvelope(data, &w); err != nil {
		return nil, err
	}
	if w.Results == nil {
		return nil, fmt.Errorf("%w: a %s answer without its results (key 1)", crdt.ErrMalformed, what)
	}
	if *w.Results == nil {
		return []PushResult{}, nil
	}
	return *w.Results, nil
}

// PullRequest is the body of POST /v2/pull: {1: collection, 2: cursor,
// 3: limit, 4: scope?, 5: replica?, 6: pending floor?, 7: fresh?}. An empty cursor is
// the beginning; a limit of 0 the server's maximum. Scope is the client's
// own narrowing, a predicate in its CBOR form (crdt/scope); absent narrows
// nothing. Replica and Pending make the pull the reader's lease
// (docs/protocol.md, "Tombstone collection").
type PullRequest struct {
	Collection string          `cbor:"1,keyasint"`
	Cursor     []byte          `cbor:"2,keyasint"`
	Limit      uint64          `cbor:"3,keyasint"`
	Scope      cbor.RawMessage `cbor:"4,keyasint,omitempty"`
	// Replica is the reader's replica id, one the principal owns (else
	// forbidden); "" holds no lease.
	Replica string `cbor:"5,keyasint,omitempty"`
	// Pending is the reader's pending floor: the wall time (ms) of the
	// oldest change in its outbox for the collection; nil when none is
	// pending.
	Pending *uint64 `cbor:"6,keyasint,omitempty"`
	// Fresh says, with an empty cursor, that the reader holds no record of
	// the collection: a scoped read then sends no leave entries until it
	// reaches the head (there is nothing to drop).
	Fresh bool `cbor:"7,keyasint,omitempty"`
	// Version is the schema version the answer's records are translated
	// to; 0 means the current one.
	Version uint64 `cbor:"8,keyasint,omitempty"`
}

// PullResponse answers a pull: {1: [record...], 2: next cursor, 3: more,
// 4: reset?, 5: [leave...]?, 6: [seal...]?}. With Reset the cursor was of
// another history: no records, Next is the beginning. Seals[i] is the seal
// of Records[i]. Leaves are leave entries (LeaveDigest) of records the
// reader must drop.
type PullResponse struct {
	Records []crdt.Record `cbor:"1,keyasint"`
	Next    []byte        `cbor:"2,keyasint"`
	More    bool          `cbor:"3,keyasint"`
	Reset   *ResetInfo    `cbor:"4,keyasint,omitempty"`
	Leaves  [][]byte      `cbor:"5,keyasint,omitempty"`
	Seals   [][]byte      `cbor:"6,keyasint,omitempty"`
}

type pullResponseWire struct {
	Records cbor.RawMessage `cbor:"1,keyasint"`
	Next    []byte          `cbor:"2,keyasint"`
	More    bool            `cbor:"3,keyasint"`
	Reset   *resetInfoWire  `cbor:"4,keyasint,omitempty"`
	Leaves  [][]byte        `cbor:"5,keyasint,omitempty"`
	Seals   [][]byte        `cbor:"6,keyasint,omitempty"`
	Table   []string        `cbor:"7,keyasint,omitempty"`
	Base    *uint64         `cbor:"8,keyasint,omitempty"`
}

// resetInfoWire is a reset as it is read: its reason is required.
type resetInfoWire struct {
	Reason  *string `cbor:"1,keyasint"`
	Message string  `cbor:"2,keyasint"`
}

// UnmarshalCBOR decodes a pull answer, plain or compact, by the order of
// docs/protocol.md section 2: every key's type (a next cursor over
// MaxCursorBytes among them), then the records, then the keys required
// and the rules across keys. A page without its next cursor (key 2; an
// empty one is the cursor of an empty log), unless reset, or of a reset
// without its reason, or of seals not one per record, is malformed, an
// answer the client cannot read (section 5) and stores nothing of: read
// as the beginning, the next cursor would send the reader back there
// after every page. The browser client's parsePullAnswer reads it alike.
func (p *PullResponse) UnmarshalCBOR(data []byte) error {
	var w pullResponseWire
	if err := crdt.UnmarshalEnvelope(data, &w); err != nil {
		return err
	}
	if err := checkCursor(w.Next); err != nil {
		return err
	}
	rs, err := decodeRecords(w.Records, w.Table, w.Base)
	if err != nil {
		return err
	}
	if w.Reset != nil {
		if w.Reset.Reason == nil {
			return fmt.Errorf("%w: a reset without its reason (key 1)", crdt.ErrMalformed)
		}
		// The rest of a reset page is not read: its next is the
		// beginning whatever it says.
		*p = PullResponse{Records: rs, Next: w.Next, More: w.More, Reset: &ResetInfo{Reason: *w.Reset.Reason, Message: w.Reset.Message}, Leaves: w.Leaves, Seals: w.Seals}
		return nil
	}
	if w.Next == nil {
		return fmt.Errorf("%w: a pull page without its next cursor (key 2)", crdt.ErrMalformed)
	}
	if err := checkSeals(w.Seals, rs); err != nil {
		return err
	}
	*p = PullResponse{Records: rs, Next: w.Next, More: w.More, Leaves: w.Leaves, Seals: w.Seals}
	return nil
}

// checkCursor reads a cursor the server sent: one over MaxCursorBytes,
// stored, would go back with every read and be refused, the collection
// stuck behind it; it is malformed, read with its key's type.
func checkCursor(next []byte) error {
	if len(next) > MaxCursorBytes {
		return fmt.Errorf("%w: cursor of %d bytes, over %d", crdt.ErrMalformed, len(next), MaxCursorBytes)
	}
	return nil
}

// checkSeals reads the seals of a page: one per record, or none.
func checkSeals(seals [][]byte, records []crdt.Record) error {
	if len(seals) != 0 && len(seals) != len(records) {
		return fmt.Errorf("%w: %d seals for %d records", crdt.ErrMalformed, len(seals), len(records))
	}
	return nil
}

// decodeRecords decodes the records of a message with its replica table
// and base wall.
// A table or base that is not one is malformed for the whole message, with
// records or without them (docs/protocol.md, "Compact stamps").
func decodeRecords(raw []byte, table []string, base *uint64) ([]crdt.Record, error) {
	c, err := crdt.NewCompact("", table, base)
	if err != nil {
		return nil, err
	}
	if len(raw) == 0 {
		return nil, nil
	}
	return c.DecodeRecords(raw)
}

// ResetInfo says why a cursor was reset: {1: reason, 2: message}.
type ResetInfo struct {
	Reason  string `cbor:"1,keyasint"`
	Message string `cbor:"2,keyasint,omitempty"`
}

// SealedRecord is a record as the server served it, with its seal:
// [record, seal].
type SealedRecord struct {
	_      struct{} `cbor:",toarray"`
	Record crdt.Record
	Seal   []byte
}

// RestoreRequest is the body of POST /v2/restore: {1: collection,
// 2: [[record, seal]...]}: records a client holds as the server sealed
// them, given back after a reset that lost history.
type RestoreRequest struct {
	Collection string         `cbor:"1,keyasint"`
	Records    []SealedRecord `cbor:"2,keyasint"`
	// Version is the schema version the records were served in (and
	// sealed at); 0 means the current one.
	Version uint64 `cbor:"3,keyasint,omitempty"`
}

// RestoreResponse answers a restore: {1: [result...]}, one per record, as
// a push's.
type RestoreResponse struct {
	Results []PushResult `cbor:"1,keyasint"`
}

// UnmarshalCBOR decodes a restore answer, whose results (key 1) are
// required, as a push answer's.
func (p *RestoreResponse) UnmarshalCBOR(data []byte) error {
	rs, err := decodeResults(data, "restore")
	p.Results = rs
	return err
}

// Types of live (WebSocket) messages, the value under key 0.
const (
	TypeHello   = "hello"
	TypeSub     = "sub"
	TypeUnsub   = "unsub"
	TypePing    = "ping"
	TypePush    = "push"
	TypeWelcome = "welcome"
	TypeChanges = "changes"
	TypePong    = "pong"
	TypeError   = "error"
	TypeResync  = "resync"
	TypeReset   = "reset"
	TypePushed  = "pushed"
)

// Close codes of live sessions beyond RFC 6455's usual ones.
const (
	// CloseProtocolVersion closes a session whose hello spoke another
	// version (RFC 6455's 1002, protocol error).
	CloseProtocolVersion = 1002
	// CloseTryAgainLater closes a session the server cannot serve for a
	// while, a condition of its own that a later session may not meet
	// (RFC 6455's 1013, try again later): a hello, or a push, refused
	// unavailable, such as while its clock is off its store's. The error
	// message before the close says why; clients reconnect with backoff.
	CloseTryAgainLater = 1013
)

// Message is a live message. EncodeMessage sets the Type field of each;
// callers leave it empty.
type Message interface{ MessageType() string }

// Hello opens a live session: {0: "hello", 1: protocol, 2: replica, 3: token}.
type Hello struct {
	Type     string `cbor:"0,keyasint"`
	Protocol uint64 `cbor:"1,keyasint"`
	Replica  string `cbor:"2,keyasint"`
	Token    string `cbor:"3,keyasint"`
}

// Sub subscribes to a collection after a cursor: {0: "sub",
// 1: collection, 2: cursor, 3: scope?, 5: replica?, 6: pending floor?},
// Scope, Replica and Pending as PullRequest's.
type Sub struct {
	Type       string          `cbor:"0,keyasint"`
	Collection string          `cbor:"1,keyasint"`
	Cursor     []byte          `cbor:"2,keyasint"`
	Scope      cbor.RawMessage `cbor:"3,keyasint,omitempty"`
	Replica    string          `cbor:"5,keyasint,omitempty"`
	Pending    *uint64         `cbor:"6,keyasint,omitempty"`
	Fresh      bool            `cbor:"7,keyasint,omitempty"` // as PullRequest.Fresh
	Version    uint64          `cbor:"8,keyasint,omitempty"` // as PullRequest.Version
}

// Unsub ends a subscription.
type Unsub struct {
	Type       string `cbor:"0,keyasint"`
	Collection string `cbor:"1,keyasint"`
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

// UnmarshalCBOR decodes a welcome, whose hello answer (key 1) is
// required, else it is malformed.
func (m *Welcome) UnmarshalCBOR(data []byte) error {
	var w struct {
		Type  string         `cbor:"0,keyasint"`
		Hello *HelloResponse `cbor:"1,keyasint"`
	}
	if err := crdt.UnmarshalEnvelope(data, &w); err != nil {
		return err
	}
	if w.Hello == nil {
		return fmt.Errorf("%w: a welcome without its hello answer (key 1)", crdt.ErrMalformed)
	}
	*m = Welcome{Type: w.Type, Hello: *w.Hello}
	return nil
}

// Changes streams a page of a subscribed collection; Seals[i] is the seal
// of Records[i], Leaves are leave entries as in a PullResponse.
type Changes struct {
	Type       string        `cbor:"0,keyasint"`
	Collection string        `cbor:"1,keyasint"`
	Records    []crdt.Record `cbor:"2,keyasint"`
	Next       []byte        `cbor:"3,keyasint"`
	More       bool          `cbor:"4,keyasint"`
	Seals      [][]byte      `cbor:"5,keyasint,omitempty"`
	Leaves     [][]byte      `cbor:"6,keyasint,omitempty"`
}

type changesWire struct {
	Type       string          `cbor:"0,keyasint"`
	Collection *string         `cbor:"1,keyasint"`
	Records    cbor.RawMessage `cbor:"2,keyasint"`
	Next       []byte          `cbor:"3,keyasint"`
	More       bool            `cbor:"4,keyasint"`
	Seals      [][]byte        `cbor:"5,keyasint,omitempty"`
	Leaves     [][]byte        `cbor:"6,keyasint,omitempty"`
	Table      []string        `cbor:"7,keyasint,omitempty"`
	Base       *uint64         `cbor:"8,keyasint,omitempty"`
}

// UnmarshalCBOR decodes a changes message, plain or compact, as a pull
// answer (PullResponse.UnmarshalCBOR): its collection (key 1), a valid
// name, and its next cursor (key 3) are required.
func (m *Changes) UnmarshalCBOR(data []byte) error {
	var w changesWire
	if err := crdt.UnmarshalEnvelope(data, &w); err != nil {
		return err
	}
	if err := checkCursor(w.Next); err != nil {
		return err
	}
	if err := validCollection(w.Collection); err != nil {
		return err
	}
	rs, err := decodeRecords(w.Records, w.Table, w.Base)
	if err != nil {
		return err
	}
	if w.Collection == nil {
		return fmt.Errorf("%w: a changes message without its collection (key 1)", crdt.ErrMalformed)
	}
	if w.Next == nil {
		return fmt.Errorf("%w: a changes message without its next cursor (key 3)", crdt.ErrMalformed)
	}
	if err := checkSeals(w.Seals, rs); err != nil {
		return err
	}
	*m = Changes{Type: w.Type, Collection: *w.Collection, Records: rs, Next: w.Next, More: w.More, Seals: w.Seals, Leaves: w.Leaves}
	return nil
}

// validCollection checks the collection a server message names, when it
// names one: a name that is not one is invalid (what the key holds).
func validCollection(c *string) error {
	if c == nil {
		return nil
	}
	return crdt.ValidateCollection(*c)
}

// Reset ends a subscription whose cursor is of another history: the
// client pulls from the beginning (and, for ResetHistoryLost, gives back
// what the server lacks), then subscribes again.
type Reset struct {
	Type       string `cbor:"0,keyasint"`
	Collection string `cbor:"1,keyasint"`
	Reason     string `cbor:"2,keyasint"`
	Message    string `cbor:"3,keyasint,omitempty"`
}

// UnmarshalCBOR decodes a reset message: its collection (key 1), a valid
// name, and its reason (key 2) are required; its message (key 3) is not.
func (m *Reset) UnmarshalCBOR(data []byte) error {
	var w struct {
		Type       string  `cbor:"0,keyasint"`
		Collection *string `cbor:"1,keyasint"`
		Reason     *string `cbor:"2,keyasint"`
		Message    string  `cbor:"3,keyasint"`
	}
	if err := crdt.UnmarshalEnvelope(data, &w); err != nil {
		return err
	}
	if err := validCollection(w.Collection); err != nil {
		return err
	}
	if w.Collection == nil || w.Reason == nil {
		return fmt.Errorf("%w: a reset message without its collection (key 1) or reason (key 2)", crdt.ErrMalformed)
	}
	*m = Reset{Type: w.Type, Collection: *w.Collection, Reason: *w.Reason, Message: w.Message}
	return nil
}

// Pong answers a Ping.
type Pong struct {
	Type  string `cbor:"0,keyasint"`
	Nonce uint64 `cbor:"1,keyasint"`
}

// UnmarshalCBOR decodes a pong, whose nonce (key 1) is required.
func (m *Pong) UnmarshalCBOR(data []byte) error {
	var w struct {
		Type  string  `cbor:"0,keyasint"`
		Nonce *uint64 `cbor:"1,keyasint"`
	}
	if err := crdt.UnmarshalEnvelope(data, &w); err != nil {
		return err
	}
	if w.Nonce == nil {
		return fmt.Errorf("%w: a pong without its nonce (key 1)", crdt.ErrMalformed)
	}
	*m = Pong{Type: w.Type, Nonce: *w.Nonce}
	return nil
}

// ErrorMessage reports a refused sub or a protocol error. Collection is set
// when the error concerns one subscription.
type ErrorMessage struct {
	Type       string `cbor:"0,keyasint"`
	Code       string `cbor:"1,keyasint"`
	Message    string `cbor:"2,keyasint"`
	Collection string `cbor:"3,keyasint,omitempty"`
	RequestID  string `cbor:"4,keyasint,omitempty"`
}

// UnmarshalCBOR decodes an error message, whose code (key 1) is
// required; its message, collection and request id are not.
func (m *ErrorMessage) UnmarshalCBOR(data []byte) error {
	var w struct {
		Type       string  `cbor:"0,keyasint"`
		Code       *string `cbor:"1,keyasint"`
		Message    string  `cbor:"2,keyasint"`
		Collection string  `cbor:"3,keyasint"`
		RequestID  string  `cbor:"4,keyasint"`
	}
	if err := crdt.UnmarshalEnvelope(data, &w); err != nil {
		return err
	}
	if w.Code == nil {
		return fmt.Errorf("%w: an error message without its code (key 1)", crdt.ErrMalformed)
	}
	*m = ErrorMessage{Type: w.Type, Code: *w.Code, Message: w.Message, Collection: w.Collection, RequestID: w.RequestID}
	return nil
}

// Resync says the server stopped streaming a collection: the client pulls
// from its cursor over HTTP and subscribes again.
type Resync struct {
	Type       string `cbor:"0,keyasint"`
	Collection string `cbor:"1,keyasint"`
}

// UnmarshalCBOR decodes a resync, whose collection (key 1) is required.
func (m *Resync) UnmarshalCBOR(data []byte) error {
	var w struct {
		Type       string  `cbor:"0,keyasint"`
		Collection *string `cbor:"1,keyasint"`
	}
	if err := crdt.UnmarshalEnvelope(data, &w); err != nil {
		return err
	}
	if w.Collection == nil {
		return fmt.Errorf("%w: a resync without its collection (key 1)", crdt.ErrMalformed)
	}
	*m = Resync{Type: w.Type, Collection: *w.Collection}
	return nil
}

func (Hello) MessageType() string        { return TypeHello }
func (Sub) MessageType() string          { return TypeSub }
func (Unsub) MessageType() string        { return TypeUnsub }
func (Ping) MessageType() string         { return TypePing }
func (Welcome) MessageType() string      { return TypeWelcome }
func (Changes) MessageType() string      { return TypeChanges }
func (Pong) MessageType() string         { return TypePong }
func (ErrorMessage) MessageType() string { return TypeError }
func (Resync) MessageType() string       { return TypeResync }
func (Reset) MessageType() string        { return TypeReset }
func (PushLive) MessageType() string     { return TypePush }
func (Pushed) MessageType() string       { return TypePushed }

// clientTypes and serverTypes are the message types each side sends.
var (
	clientTypes = []string{TypeHello, TypeSub, TypeUnsub, TypePing, TypePush}
	serverTypes = []string{TypeWelcome, TypeChanges, TypePong, TypeError, TypeResync, TypeReset, TypePushed}
)

// Encode encodes a request or answer body (not a live message; see
// EncodeMessage) in deterministic CBOR.
func Encode(v any) ([]byte, error) {
	if p, ok := v.(PullResponse); ok {
		return p.MarshalCBOR() // hand-encoded: no reflection, no re-check of the bytes
	}
	return crdt.MarshalEnvelope(v)
}

// Decode decodes a request or answer body: unknown keys are skipped, the
// rest is decoded with crdt's hardened rules. Errors wrap crdt.ErrMalformed,
// crdt.ErrInvalid or crdt.ErrTooLarge.
func Decode(data []byte, v any) error { return crdt.UnmarshalEnvelope(data, v) }

// EncodeMessage encodes a live message, setting its type.
func EncodeMessage(m Message) ([]byte, error) {
	switch v := m.(type) {
	case Hello:
		v.Type = TypeHello
		return crdt.MarshalEnvelope(v)
	case Sub:
		v.Type = TypeSub
		return crdt.MarshalEnvelope(v)
	case Unsub:
		v.Type = TypeUnsub
		return crdt.MarshalEnvelope(v)
	case Ping:
		v.Type = TypePing
		return crdt.MarshalEnvelope(v)
	case Welcome:
		v.Type = TypeWelcome
		return crdt.MarshalEnvelope(v)
	case Changes:
		return v.MarshalCBOR() // hand-encoded: no reflection, no re-check of the bytes
	case Pong:
		v.Type = TypePong
		return crdt.MarshalEnvelope(v)
	case ErrorMessage:
		v.Type = TypeError
		return crdt.MarshalEnvelope(v)
	case Resync:
		v.Type = TypeResync
		return crdt.MarshalEnvelope(v)
	case Reset:
		v.Type = TypeReset
		return crdt.MarshalEnvelope(v)
	case PushLive:
		return v.MarshalCBOR()
	case Pushed:
		return v.MarshalCBOR()
	}
	return nil, fmt.Errorf("encode message: unsupported type %T", m)
}

// ErrUnknownType is wrapped by the Decode*Message functions for a well-formed
// message of a type the receiver does not know. Clients ignore such
// messages; the server answers them with an error and keeps the session.
var ErrUnknownType = errors.New("unknown message type")

// PeekType reads key 0 of a live message.
func PeekType(data []byte) (string, error) {
	var m struct {
		Type *string `cbor:"0,keyasint"`
	}
	if err := crdt.UnmarshalEnvelope(data, &m); err != nil {
		return "", err
	}
	if m.Type == nil {
		return "", fmt.Errorf("%w: message without a type (key 0)", crdt.ErrMalformed)
	}
	return *m.Type, nil
}

// DecodeClientMessage decodes a message a client sends: Hello, Sub, Unsub,
// Ping or PushLive (values, not pointers). A push is read in the session s
// (DecodePushLive); before the welcome, s is the zero Session. An unknown
// type wraps ErrUnknownType.
func DecodeClientMessage(data []byte, s Session) (Message, error) {
	t, err := PeekType(data)
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
	case TypePing:
		return decodeAs[Ping](data)
	case TypePush:
		return DecodePushLive(data, s)
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownType, t)
}

// DecodeServerMessage decodes a message a server sends: Welcome, Changes,
// Pong, ErrorMessage, Resync, Reset or Pushed (values, not pointers). An unknown type
// wraps ErrUnknownType.
func DecodeServerMessage(data []byte) (Message, error) {
	t, err := PeekType(data)
	if err != nil {
		return nil, err
	}
	switch t {
	case TypeWelcome:
		return decodeAs[Welcome](data)
	case TypeChanges:
		return decodeAs[Changes](data)
	case TypePong:
		return decodeAs[Pong](data)
	case TypeError:
		return decodeAs[ErrorMessage](data)
	case TypeResync:
		return decodeAs[Resync](data)
	case TypeReset:
		return decodeAs[Reset](data)
	case TypePushed:
		return decodeAs[Pushed](data)
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownType, t)
}

func decodeAs[T Message](data []byte) (Message, error) {
	var v T
	if err := crdt.UnmarshalEnvelope(data, &v); err != nil {
		return nil, fmt.Errorf("decode %s message: %w", v.MessageType(), err)
	}
	return v, nil
}
