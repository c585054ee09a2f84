package client

import (
	"errors"
	"fmt"
	"time"

	"github.com/convergo/convergo/transport/proto"
)

// Sentinel errors, one per protocol error code (proto.Codes). An *Error
// matches the sentinel of its code with errors.Is; ErrTokenExpired also
// matches ErrUnauthenticated, since an expired token is one kind of missing
// authentication. Branch on proto's codes (Error.Code) or on these.
var (
	ErrMalformed          = errors.New("convergo: malformed")
	ErrInvalid            = errors.New("convergo: invalid")
	ErrUnsupportedVersion = errors.New("convergo: unsupported protocol version")
	ErrUnauthenticated    = errors.New("convergo: unauthenticated")
	ErrTokenExpired       = errors.New("convergo: token expired")
	ErrForbidden          = errors.New("convergo: forbidden")
	ErrNotFound           = errors.New("convergo: not found")
	ErrMethodNotAllowed   = errors.New("convergo: method not allowed")
	ErrTooLarge           = errors.New("convergo: too large")
	ErrUpgradeRequired    = errors.New("convergo: upgrade required")
	ErrRateLimited        = errors.New("convergo: rate limited")
	ErrClockDrift         = errors.New("convergo: clock drift")
	ErrForgedReplica      = errors.New("convergo: stamp of a replica id the subject does not own")
	ErrBadSeal            = errors.New("convergo: a restored record's seal is not the server's")
	ErrQuotaExceeded      = errors.New("convergo: the collection is at its quota")
	ErrCorrupt            = errors.New("convergo: the server's store holds damaged data")
	ErrOutOfScope         = errors.New("convergo: the change is outside the principal's write scope")
	ErrSchema             = errors.New("convergo: the change breaks the collection's schema")
	ErrCollected          = errors.New("convergo: the change is older than the collection's write horizon")
	// ErrUntranslatable refuses a change written in an older schema
	// version that the collection's migration cannot map.
	ErrUntranslatable = errors.New("convergo: the change cannot be translated to the collection's current schema version")
	// ErrSchemaAhead means the request named a schema version above the
	// collection's current one: the server runs older rules than this
	// client (Config.Migrations). Retried with backoff.
	ErrSchemaAhead = errors.New("convergo: the client's schema version is ahead of the server's")
	ErrUnavailable = errors.New("convergo: unavailable")
	ErrInternal    = errors.New("convergo: internal server error")

	// ErrRevoked means the server denies the principal: its subject or
	// token is on the deny list (403 revoked). Retrying cannot help; a
	// Replica told so purges every record it holds, moves its outbox to
	// its rejected changes with code revoked and stops syncing.
	ErrRevoked = errors.New("convergo: access revoked")

	// ErrProtocol means the server answered something this client cannot
	// read: a body that is not CBOR of the expected shape (a proxy's page,
	// a truncated answer), a message out of order. The protocol treats it
	// as a network failure: requests are retried and live sessions redialled
	// with backoff. It also says a server resets a collection past the
	// protocol's bounds (docs/protocol.md, "Resets", where the browser
	// client says malformed): a second live reset of one collection in one
	// session, or a pull reset more than proto.MaxPullResets times, its
	// text naming the reset. That is the collection's own failure: it is
	// tried again after its backoff, the live session kept for the others.
	ErrProtocol = errors.New("convergo: unreadable answer from the server")

	// ErrAnswerTooLarge means an answer was over Config.MaxResponseBytes,
	// the client's own bound (not the protocol's): unread, so it matches
	// ErrProtocol too. It is not retried, as the same request would get it
	// again; the answer to a push or a restore holds one result per item,
	// so the request is halved until the answers fit (splitRefused); a
	// pull page is asked for again with fewer records (pullFitting). One
	// item's answer still over it is returned, and refuses nothing.
	ErrAnswerTooLarge = fmt.Errorf("%w: over the client's bound", ErrProtocol)

	// ErrScopeTooLarge refuses a SetScope (or Config.Scopes in New) whose
	// collection's scopes, their "or" in its wire form, would be over
	// proto.MaxScopeBytes: the server refuses such a scope invalid (a
	// scope is valid only within the scope limits, docs/protocol.md
	// section 12), so the client keeps it from the wire and the error
	// matches ErrInvalid too. The scopes stay as they were.
	ErrScopeTooLarge = fmt.Errorf("%w: the collection's scopes are over the scope byte limit", ErrInvalid)

	// ErrNotHealed means a Replica gave up healing a collection: after
	// the store lost history, the server acknowledged records the replica
	// gave back and then did not serve them, heal after heal
	// (proto.MaxHealAgain heals again: a store that keeps going back in
	// time, or a DynamoDB table restored with record items its logs lack).
	// Those records stay local only; Pull and Sync return it once, Live
	// and Apply give it to ReplicaConfig.OnError. The remedy is the
	// server operator's (notHealedRemedy).
	ErrNotHealed = errors.New("convergo: the server does not keep what it acknowledged when healed")
)

// notHealedRemedy is what the log line of ErrNotHealed tells the server's
// operator to do.
const notHealedRemedy = "the server's operator rebuilds the collection's log from its records: convergo repair --store URL --collection C (docs/operations.md, \"Repairing a collection's log\")"

// sentinels maps proto's codes to the sentinels above; a test checks that
// every code of proto.Codes has one.
var sentinels = map[string]error{
	proto.CodeMalformed:          ErrMalformed,
	proto.CodeInvalid:            ErrInvalid,
	proto.CodeUnsupportedVersion: ErrUnsupportedVersion,
	proto.CodeUnauthenticated:    ErrUnauthenticated,
	proto.CodeTokenExpired:       ErrTokenExpired,
	proto.CodeForbidden:          ErrForbidden,
	proto.CodeNotFound:           ErrNotFound,
	proto.CodeMethodNotAllowed:   ErrMethodNotAllowed,
	proto.CodeTooLarge:           ErrTooLarge,
	proto.CodeUpgradeRequired:    ErrUpgradeRequired,
	proto.CodeRateLimited:        ErrRateLimited,
	proto.CodeClockDrift:         ErrClockDrift,
	proto.CodeForgedReplica:      ErrForgedReplica,
	proto.CodeBadSeal:            ErrBadSeal,
	proto.CodeQuotaExceeded:      ErrQuotaExceeded,
	proto.CodeCorrupt:            ErrCorrupt,
	proto.CodeOutOfScope:         ErrOutOfScope,
	proto.CodeSchema:             ErrSchema,
	proto.CodeCollected:          ErrCollected,
	proto.CodeUntranslatable:     ErrUntranslatable,
	proto.CodeSchemaAhead:        ErrSchemaAhead,
	proto.CodeRevoked:            ErrRevoked,
	proto.CodeUnavailable:        ErrUnavailable,
	proto.CodeInternal:           ErrInternal,
}

// Error is an error answered by the server: over HTTP the status and the
// body {1: code, 2: message, 3: request id}; over WebSocket an "error"
// message (Status is then 0); for a refused change of a push, the result's
// code and message.
type Error struct {
	// Status is the HTTP status, or 0 for WebSocket errors and per-change
	// refusals.
	Status int
	// Code is the stable protocol error code, one of proto's Code*
	// constants (or a newer server's code this client does not know).
	Code string
	// Message is the server's explanation, for people.
	Message string
	// Collection is the collection a WebSocket error is about, if any.
	Collection string
	// RequestID is the id under which the server logged the request (the
	// Convergo-Request-Id of the answer), "" when it sent none. Quote it
	// when reporting a problem.
	RequestID string
	// RetryAfter is the server's Retry-After, when it sent one.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	var s string
	switch {
	case e.Status != 0:
		s = fmt.Sprintf("convergo: %d %s", e.Status, e.Code)
	default:
		s = "convergo: " + e.Code
	}
	if e.Collection != "" {
		s += " (" + e.Collection + ")"
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.RequestID != "" {
		s += " [request " + e.RequestID + "]"
	}
	return s
}

// Is matches the sentinel of e's code.
func (e *Error) Is(target error) bool {
	if s, ok := sentinels[e.Code]; ok && s == target {
		return true
	}
	return e.Code == proto.CodeTokenExpired && target == ErrUnauthenticated
}

// Retryable reports whether the same request may succeed later without any
// change (proto.RetryBackoff): the server was unavailable, overloaded, rate
// limiting or failed. (An answer with a code this client does not know is
// not an *Error: it is ErrProtocol, retried as a network failure.)
func (e *Error) Retryable() bool {
	info, _ := proto.Info(e.Code)
	return info.Retry == proto.RetryBackoff
}
