package transport

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/transport/proto"
)

// The endpoints of the HTTP API: hello, push and pull. Each gets a body
// already read within the limits and a principal already authenticated
// (api.go), and returns the answer to encode.

func (s *Server) helloAnswer(p Principal) proto.HelloResponse {
	return proto.HelloResponse{
		Protocol:        proto.Version,
		ServerTime:      s.eng.ServerTime(),
		ServerReplica:   s.eng.Replica(),
		MaxPush:         uint64(s.limits.MaxPushChanges),
		MaxPull:         uint64(s.limits.MaxPullRecords),
		MaxBodyBytes:    uint64(s.limits.MaxBodyBytes),
		MaxDrift:        uint64(s.eng.MaxDrift().Milliseconds()), // at least 1: New
		Subject:         p.Subject,
		MaxPageBytes:    uint64(s.limits.MaxPageBytes),
		MaxMessageBytes: uint64(s.limits.MaxMessageBytes),
		ReplicaPrefix:   proto.ReplicaPrefix(p.Subject),
	}
}

func (s *Server) hello(_ context.Context, p Principal, body []byte) (any, error) {
	var req proto.HelloRequest
	if err := proto.Decode(body, &req); err != nil {
		return nil, decodeError("hello", err)
	}
	if req.Protocol != proto.Version {
		return nil, proto.Errorf(proto.CodeUnsupportedVersion, "protocol version %d: this server speaks %d", req.Protocol, proto.Version)
	}
	if err := crdt.ValidateReplica(req.Replica); err != nil {
		return nil, proto.Errorf(proto.CodeInvalid, "hello: %s", publicText(err))
	}
	if err := s.clockRefusal(); err != nil {
		return nil, err
	}
	return s.helloAnswer(p), nil
}

func (s *Server) push(ctx context.Context, p Principal, body []byte) (any, error) {
	// A push may name its replica by its device part under the principal's
	// prefix (docs/protocol.md, "Push"): the token vouches for the rest.
	charge, release := s.chargeDecoded(bodyHeld(ctx, int64(len(body))))
	defer release()
	req, err := proto.DecodePushCharged(body, proto.ReplicaPrefix(p.Subject), charge)
	if err != nil {
		return nil, decodeError("push", err)
	}
	if err := crdt.ValidateReplica(req.Replica); err != nil {
		return nil, proto.Errorf(proto.CodeInvalid, "push: %s", publicText(err))
	}
	if err := s.clockRefusal(); err != nil {
		return nil, err
	}
	results, err := s.pushChanges(ctx, p, req.Changes, req.Refused, req.Versions)
	if err != nil {
		return nil, err
	}
	return proto.PushResponse{Results: results}, nil
}

// pushChanges applies a decoded push by p, over HTTP or a live session
// (live.go): the changes, why those that did not decode were refused, and
// the schema versions they were written under. It returns one result per
// change once the store committed every applied change, or the error that
// refuses the push whole.
func (s *Server) pushChanges(ctx context.Context, p Principal, changes []crdt.Change, refused []error, versionsOf map[string]uint64) ([]proto.PushResult, error) {
	var versions map[string]int
	for coll, v := range versionsOf {
		if v == 0 || !p.CanWrite(coll) {
			// A collection p may not write has its changes refused
			// forbidden: its version is not looked at, which would tell
			// p the collection's current one (schema_ahead).
			continue
		}
		if _, _, err := s.schemaVersion(coll, v); err != nil {
			return nil, err
		}
		if versions == nil {
			versions = map[string]int{}
		}
		versions[coll] = int(v)
	}
	return s.apply(ctx, p, changes, refused, versions)
}

// schemaVersion checks the schema version a request names for coll and
// returns the version it stands for and the current one: schema_ahead
// for a version above the current one (the client runs newer rules than
// this server).
func (s *Server) schemaVersion(coll string, v uint64) (version, current int, err error) {
	cur := s.eng.Migrations(coll).Current()
	if v > uint64(cur) {
		return 0, 0, proto.Errorf(proto.CodeSchemaAhead, "%s: schema version %d, this server's current version is %d: retry later", coll, v, cur)
	}
	if v == 0 {
		return cur, cur, nil
	}
	return int(v), cur, nil
}

// apply applies the changes p may write and answers one result per change.
// It returns only after the store committed every applied change. The
// engine fits the changes to the store (batches, size splits) and checks
// stamps against its clock; this layer decides who may write what: the
// collection (p.CanWrite) and the replica ids of the stamps (replica
// binding, proto.Owner), the one place either is checked.
func (s *Server) apply(ctx context.Context, p Principal, changes []crdt.Change, refused []error, versions map[string]int) ([]proto.PushResult, error) {
	if len(changes) > s.limits.MaxPushChanges {
		return nil, proto.Errorf(proto.CodeTooLarge, "%d changes in one push, at most %d", len(changes), s.limits.MaxPushChanges)
	}
	results := make([]proto.PushResult, len(changes))
	accepted := make([]crdt.Change, 0, len(changes))
	index := make([]int, 0, len(changes))
	owner := proto.OwnerOf(p.Subject)
	for i, c := range changes {
		switch {
		case refused != nil && refused[i] != nil:
			results[i] = refusal(refused[i])
		case !p.CanWrite(c.Collection):
			results[i] = proto.PushResult{Status: proto.StatusRefused, Code: proto.CodeForbidden, Message: "no write access to " + c.Collection}
		case forged(owner, c.Record) != "":
			results[i] = proto.PushResult{Status: proto.StatusRefused, Code: proto.CodeForgedReplica,
				Message: fmt.Sprintf("stamp of replica %q: this principal's ids start with %s%c", forged(owner, c.Record), owner.Prefix(), proto.ReplicaSeparator)}
		default:
			accepted = append(accepted, c)
			index = append(index, i)
		}
	}
	// The write scope of each collection is the principal's (scopes.go);
	// the engine checks every change against it before and after the
	// merge (out_of_scope) and applies the collection's schema (schema).
	write := engine.WithWriteScope(func(collection string) (*scope.Pred, error) {
		return s.writeScope(p, collection), nil
	})
	if err := s.applyChanges(ctx, accepted, index, results, write, engine.WithVersions(versions)); err != nil {
		return nil, err
	}
	return results, nil
}

// applyChanges applies the changes this layer let through and fills in
// their results at index; results of the others were filled by the caller.
// It counts every result, returning once the store committed every applied
// change.
func (s *Server) applyChanges(ctx context.Context, changes []crdt.Change, index []int, results []proto.PushResult, opts ...engine.ApplyOption) error {
	if len(changes) > 0 {
		res, err := s.eng.Apply(ctx, changes, opts...)
		if err != nil {
			if ctx.Err() != nil {
				return proto.Errorf(proto.CodeUnavailable, "request cancelled")
			}
			if errors.Is(err, engine.ErrSchemaAhead) {
				return proto.Errorf(proto.CodeSchemaAhead, "%s: retry later", publicText(err))
			}
			if errors.Is(err, engine.ErrHorizonMoved) {
				e := proto.Errorf(proto.CodeUnavailable, "a collection's write horizon moved while the push was applied; retry")
				e.RetryAfter = time.Second
				return e
			}
			return fmt.Errorf("%w: %w", errStore, err)
		}
		for j, r := range res {
			if r.Status == proto.StatusRefused {
				results[index[j]] = refusal(r.Err)
				continue
			}
			results[index[j]] = proto.PushResult{Status: r.Status, Lost: r.Lost}
		}
	}
	for _, r := range results {
		s.metrics.pushChanges.WithLabelValues(r.Status.String()).Inc()
	}
	return nil
}

// forged returns the first replica id among r's stamps that owner does not
// own, or "".
func forged(owner proto.Owner, r crdt.Record) string {
	if !r.Deleted.IsZero() && !owner.Owns(r.Deleted.Replica) {
		return r.Deleted.Replica
	}
	for _, f := range r.Fields {
		if !owner.Owns(f.Stamp.Replica) {
			return f.Stamp.Replica
		}
	}
	return ""
}

// refusal maps why a change was refused to its result.
func refusal(err error) proto.PushResult {
	code := proto.CodeInvalid
	switch {
	case errors.Is(err, crdt.ErrClockDrift):
		code = proto.CodeClockDrift
	case errors.Is(err, crdt.ErrTooLarge): // engine.ErrTooLarge is the same error
		code = proto.CodeTooLarge
	case errors.Is(err, crdt.ErrMalformed):
		code = proto.CodeMalformed
	case errors.Is(err, engine.ErrQuotaExceeded):
		code = proto.CodeQuotaExceeded
	case errors.Is(err, engine.ErrCorrupt):
		code = proto.CodeCorrupt
	case errors.Is(err, engine.ErrOutOfScope):
		code = proto.CodeOutOfScope
	case errors.Is(err, engine.ErrSchema):
		code = proto.CodeSchema
	case errors.Is(err, engine.ErrUntranslatable):
		code = proto.CodeUntranslatable
	case errors.Is(err, engine.ErrCollected):
		code = proto.CodeCollected
	}
	return proto.PushResult{Status: proto.StatusRefused, Code: code, Message: publicText(err)}
}

func (s *Server) pull(ctx context.Context, p Principal, body []byte) (any, error) {
	var req proto.PullRequest
	if err := proto.Decode(body, &req); err != nil {
		return nil, decodeError("pull", err)
	}
	if err := crdt.ValidateCollection(req.Collection); err != nil {
		return nil, proto.Errorf(proto.CodeInvalid, "pull: %s", publicText(err))
	}
	if !p.CanRead(req.Collection) {
		return nil, proto.Errorf(proto.CodeForbidden, "no read access to %s", req.Collection)
	}
	if req.Limit > uint64(s.limits.MaxPullRecords) {
		return nil, proto.Errorf(proto.CodeTooLarge, "pull limit %d: at most %d", req.Limit, s.limits.MaxPullRecords)
	}
	cursor, err := s.sealer.readCursor(req.Collection, req.Cursor)
	if err != nil {
		return nil, proto.Errorf(proto.CodeInvalid, "pull: %s", publicText(err))
	}
	if req.Fresh && len(req.Cursor) == 0 {
		cursor = engine.FreshStart()
	}
	if err := s.checkLease(p, req.Collection, req.Replica, req.Pending); err != nil {
		return nil, err
	}
	sc, err := s.readScope(p, req.Collection, req.Scope)
	if err != nil {
		return nil, err
	}
	page, err := s.pullPage(ctx, req.Collection, cursor, int(req.Limit), sc, req.Version)
	if reset := resetOf(err); reset != nil {
		s.metrics.resets.WithLabelValues(reset.Reason).Inc()
		return proto.PullResponse{Next: []byte{}, Reset: reset}, nil
	}
	if err != nil {
		return nil, err
	}
	s.noteLease(ctx, req.Collection, leaseOf(req.Replica, req.Pending, cursor))
	return proto.PullResponse{Records: page.Records, Next: s.sealer.cursorBytes(req.Collection, page.Next), More: page.More,
		Leaves: page.Leaves, Seals: s.sealer.seals(req.Collection, page.Version, page.Current, page.Records)}, nil
}

// resetOf returns what a client is told of a pull whose cursor is of
// another history (engine.ErrReset), or nil for any other outcome.
func resetOf(err error) *proto.ResetInfo {
	var re *engine.ResetError
	if !errors.As(err, &re) {
		return nil
	}
	msg := "the server's history changed since this cursor: pull from the beginning"
	switch re.Reason {
	case engine.ResetHistoryLost:
		msg += ", then give back what the server lacks"
	case engine.ResetLeaseExpired:
		msg = "this cursor is older than what the server has collected (the lease expired): pull from the beginning, then reconcile"
	}
	return &proto.ResetInfo{Reason: re.Reason.String(), Message: msg}
}

// chargedRestore is a decoded restore whose records hold their room
// among the bodies in flight until release.
type chargedRestore struct {
	proto.RestoreRequest
	release func()
}

// errNoRecordList refuses a restore whose record list (key 2) is absent
// or null, as a push without its change list is refused: only an empty
// list is a restore of no records (docs/protocol.md, "Restore").
var errNoRecordList = fmt.Errorf("%w: a restore without a record list (key 2)", crdt.ErrMalformed)

// decodeRestore decodes a restore body record by record, each taking its
// room among the bodies in flight as it is decoded (chargeDecoded), as a
// push's changes do: the records of a restore of tiny fields hold many
// times its bytes.
func (s *Server) decodeRestore(ctx context.Context, body []byte) (chargedRestore, error) {
	var w struct {
		Collection string            `cbor:"1,keyasint"`
		Records    []cbor.RawMessage `cbor:"2,keyasint"`
		Version    uint64            `cbor:"3,keyasint,omitempty"`
	}
	if err := proto.Decode(body, &w); err != nil {
		return chargedRestore{}, decodeError("restore", err)
	}
	if w.Records == nil { // absent or null; an empty list decodes non-nil
		return chargedRestore{}, decodeError("restore", errNoRecordList)
	}
	charge, release := s.chargeDecoded(bodyHeld(ctx, int64(len(body))))
	req := chargedRestore{RestoreRequest: proto.RestoreRequest{Collection: w.Collection, Version: w.Version}, release: release}
	if w.Records != nil {
		req.Records = make([]proto.SealedRecord, len(w.Records))
	}
	for i, raw := range w.Records {
		if err := proto.Decode(raw, &req.Records[i]); err != nil {
			release()
			return chargedRestore{}, decodeError("restore", err)
		}
		if err := charge(crdt.Change{Collection: w.Collection, Record: req.Records[i].Record}, nil); err != nil {
			release()
			return chargedRestore{}, err
		}
	}
	return req, nil
}

// restore merges records a client gives back after a reset, each as the
// server sealed it. It needs read access only: a seal proves the server
// held the record, so a reader can restore it but not make one up; and
// only records its effective read scope matches, what it could have been
// shown, into records as held that it matches too (out_of_scope for
// others: the answer would describe a record it may not read). Stamps are not checked against the
// replica binding (they are other replicas' by design), and their logical
// counters are those a stored record may carry (engine.WithHeld); the
// engine admits them like any change otherwise, with the collection's
// schema.
func (s *Server) restore(ctx context.Context, p Principal, body []byte) (any, error) {
	req, err := s.decodeRestore(ctx, body)
	if err != nil {
		return nil, err
	}
	defer req.release()
	if err := crdt.ValidateCollection(req.Collection); err != nil {
		return nil, proto.Errorf(proto.CodeInvalid, "restore: %s", publicText(err))
	}
	if err := s.clockRefusal(); err != nil {
		return nil, err
	}
	if !p.CanRead(req.Collection) {
		return nil, proto.Errorf(proto.CodeForbidden, "no read access to %s", req.Collection)
	}
	if len(req.Records) > s.limits.MaxPushChanges {
		return nil, proto.Errorf(proto.CodeTooLarge, "%d records in one restore, at most %d", len(req.Records), s.limits.MaxPushChanges)
	}
	sc, err := s.readScope(p, req.Collection, nil)
	if err != nil {
		return nil, err
	}
	version, current, err := s.schemaVersion(req.Collection, req.Version)
	if err != nil {
		return nil, err
	}
	mig := s.eng.Migrations(req.Collection)
	results := make([]proto.PushResult, len(req.Records))
	changes := make([]crdt.Change, 0, len(req.Records))
	index := make([]int, 0, len(req.Records))
	for i, sr := range req.Records {
		if !s.sealer.valid(req.Collection, version, current, sr.Record, sr.Seal) {
			results[i] = proto.PushResult{Status: proto.StatusRefused, Code: proto.CodeBadSeal,
				Message: "the seal does not match: give back records exactly as the server sent them, with the schema version they were pulled in"}
			continue
		}
		if version != current {
			// A record translates whatever it holds (records rule): never untranslatable.
			up, _, err := mig.Record(sr.Record, version, current)
			if err != nil {
				return nil, fmt.Errorf("restore %s: %w", req.Collection, err)
			}
			sr.Record = up
		}
		if sc != nil && !sc.Match(engine.WithDefaults(mig, sr.Record)) {
			results[i] = proto.PushResult{Status: proto.StatusRefused, Code: proto.CodeOutOfScope,
				Message: "the record is outside this principal's read scope"}
			continue
		}
		changes = append(changes, crdt.Change{Collection: req.Collection, Record: sr.Record})
		index = append(index, i)
	}
	opts := []engine.ApplyOption{engine.WithHeld()}
	if sc != nil {
		// The record as held, too: merged into one outside the read scope
		// (it moved out since it was sealed), the answer would tell which
		// of its fields changed since. The engine refuses it out_of_scope,
		// as a push to it, and a merge that would leave it outside.
		opts = append(opts, engine.WithWriteScope(func(string) (*scope.Pred, error) { return sc, nil }))
	}
	if err := s.applyChanges(ctx, changes, index, results, opts...); err != nil {
		return nil, err
	}
	return proto.RestoreResponse{Results: results}, nil
}

// wirePage is a page of records as the protocol sends it.
type wirePage struct {
	Records []crdt.Record
	Leaves  [][]byte // leave entries (proto.LeaveDigest)
	Next    engine.Cursor
	More    bool
	// Version is the schema version the records are in, Current the
	// collection's current one (the seals depend on both).
	Version, Current int
}

// pullPage reads a page of coll after cursor under the effective read
// scope sc (nil: unscoped), translated to schema version version (0: the
// current one); limit 0 means the server's maximum.
func (s *Server) pullPage(ctx context.Context, coll string, cursor engine.Cursor, limit int, sc *scope.Pred, version uint64) (wirePage, error) {
	if limit <= 0 || limit > s.limits.MaxPullRecords {
		limit = s.limits.MaxPullRecords
	}
	v, cur, err := s.schemaVersion(coll, version)
	if err != nil {
		return wirePage{}, err
	}
	page, err := s.eng.PullAt(ctx, coll, cursor, engine.PageLimit{Records: limit, Bytes: s.limits.MaxPageBytes}, sc, v)
	if err != nil {
		if errors.Is(err, engine.ErrInvalid) {
			return wirePage{}, proto.Errorf(proto.CodeInvalid, "pull: %s", publicText(err))
		}
		if errors.Is(err, engine.ErrCorrupt) {
			s.log.Error("pull met damaged data", "collection", coll, "err", err)
			return wirePage{}, proto.Errorf(proto.CodeCorrupt, "pull %s: the server's store holds damaged data here; an operator must repair it", coll)
		}
		return wirePage{}, fmt.Errorf("%w: %w", errStore, err)
	}
	records := make([]crdt.Record, len(page.Entries))
	for i, e := range page.Entries {
		records[i] = e.Record
	}
	var leaves [][]byte
	if len(page.Left) > 0 {
		leaves = make([][]byte, len(page.Left))
		for i, l := range page.Left {
			leaves[i] = proto.LeaveDigest(coll, l.ID)
		}
	}
	s.metrics.pullRecords.Add(float64(len(records)))
	return wirePage{Records: records, Leaves: leaves, Next: page.Next, More: page.More, Version: v, Current: cur}, nil
}
