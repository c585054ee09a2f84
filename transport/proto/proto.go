package proto

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Version is the protocol version of docs/protocol.md that this package
// describes. A client of any other version is answered
// CodeUnsupportedVersion.
const Version = 2

// Header names and the content type of every body.
const (
	HeaderProtocol   = "Convergo-Protocol"
	HeaderError      = "Convergo-Error"
	HeaderRequestID  = "Convergo-Request-Id"
	HeaderRetryAfter = "Retry-After"
	ContentType      = "application/cbor"
)

// Paths of the protocol's endpoints. PathPrefix is what every path of this
// version starts with; LegacyPrefix is version 1's, which is answered
// CodeUnsupportedVersion, as is any other version's (VersionOfPath).
const (
	PathPrefix   = "/v2/"
	LegacyPrefix = "/v1/"
	PathHello    = PathPrefix + "hello"
	PathPush     = PathPrefix + "push"
	PathPull     = PathPrefix + "pull"
	PathLive     = PathPrefix + "live"
	PathRestore  = PathPrefix + "restore"
)

// VersionPathPattern is VersionOfPath as a regular expression (RE2 and
// JavaScript alike): it matches exactly the paths that name a protocol
// version, which no cache may keep (the demo's service worker has it as
// PATHS.versionPattern).
const VersionPathPattern = `^/v[0-9]+(/|$)`

// VersionOfPath returns the protocol version a path names, the digits of
// its first segment "v<digits>" ("/v3/hello", "/v3": "3"), and false for a
// path that names none ("/healthz", "/v/", "/video"). Every such path
// belongs to the protocol: a server answers one of another version than
// its own CodeUnsupportedVersion, in the protocol's error form, whatever
// else it serves (docs/protocol.md, section 1).
func VersionOfPath(path string) (string, bool) {
	rest, ok := strings.CutPrefix(path, "/v")
	if !ok {
		return "", false
	}
	n := 0
	for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	if n == 0 || (n < len(rest) && rest[n] != '/') {
		return "", false
	}
	return rest[:n], true
}

// Reset reasons (docs/protocol.md, "Resets"): why a reader's cursor no
// longer describes the server's history, and so what the reader does.
const (
	// ResetHistoryLost: the server may have lost history (a wiped or
	// restored store, a failover): pull from the beginning, then give back
	// what the server lacks (push the outbox, restore sealed records).
	ResetHistoryLost = "history_lost"
	// ResetRebuilt: the log was rebuilt with nothing lost: pull from the
	// beginning.
	ResetRebuilt = "rebuilt"
	// ResetLeaseExpired: the reader's cursor is before the collection's
	// collected floor (its lease expired and tombstones after its cursor
	// were collected): pull from the beginning, then reconcile (drop held
	// records the server acknowledged once and no longer serves).
	ResetLeaseExpired = "lease_expired"
)

// ResetReasons lists the reasons a server of this version sends. A client
// treats a reason it does not know as ResetHistoryLost, the safe choice.
var ResetReasons = []string{ResetHistoryLost, ResetRebuilt, ResetLeaseExpired}

// Error codes. They are stable: clients branch on them.
const (
	CodeMalformed          = "malformed"
	CodeInvalid            = "invalid"
	CodeUnsupportedVersion = "unsupported_version"
	CodeUnauthenticated    = "unauthenticated"
	CodeTokenExpired       = "token_expired"
	CodeForbidden          = "forbidden"
	CodeNotFound           = "not_found"
	CodeMethodNotAllowed   = "method_not_allowed"
	CodeTooLarge           = "too_large"
	CodeUpgradeRequired    = "upgrade_required"
	CodeRateLimited        = "rate_limited"
	CodeClockDrift         = "clock_drift"
	CodeForgedReplica      = "forged_replica"
	CodeBadSeal            = "bad_seal"
	CodeQuotaExceeded      = "quota_exceeded"
	CodeCorrupt            = "corrupt"
	CodeOutOfScope         = "out_of_scope"
	CodeSchema             = "schema"
	CodeUntranslatable     = "untranslatable"
	CodeSchemaAhead        = "schema_ahead"
	CodeRevoked            = "revoked"
	CodeCollected          = "collected"
	CodeUnavailable        = "unavailable"
	CodeInternal           = "internal"
)

// Retry says whether and how a client may retry after an error code.
type Retry string

const (
	// RetryNever: the same request fails again.
	RetryNever Retry = "never"
	// RetryBackoff: retry with backoff (Backoff), after Retry-After if sent.
	RetryBackoff Retry = "backoff"
	// RetryAuth: retry with a new or refreshed token.
	RetryAuth Retry = "auth"
	// RetryUpgrade: the client must be upgraded.
	RetryUpgrade Retry = "upgrade"
)

// CodeInfo is what the protocol says about one error code.
type CodeInfo struct {
	Code string `json:"code"`
	// HTTP is the status of an HTTP answer with the code; 0 for codes that
	// only refuse single changes.
	HTTP int `json:"http"`
	// Retry says what a client does about it.
	Retry Retry `json:"retry"`
	// PerChange reports that a push may refuse a single change with it,
	// or a restore a single record (its results), unless RestoreOnly.
	PerChange bool `json:"perChange"`
	// RestoreOnly reports a per-change code only a restore's results
	// carry, never a push's (bad_seal): a client keeps the record so
	// refused and reports it as an error, never as a refused change of
	// its own (docs/protocol.md, section 8).
	RestoreOnly bool `json:"restoreOnly"`
	// Session reports that the code is the request's, the session's or
	// the principal's as a whole (the network path, the server, the
	// token), never one collection's: a client ends its round or its
	// live session for it. Any other code, answering a pull, restore or
	// sub of one collection, is that collection's alone: the client goes
	// on with its other collections (docs/protocol.md, "Retrying").
	Session bool `json:"session"`
	// Token reports that the request's token decides the code: a request
	// so refused that was sent with a token the client has replaced since
	// says nothing of the current one, and goes again with it, once
	// (docs/protocol.md, "Retrying"). unauthenticated is not one: it says
	// the token sent was none, whatever replaced it.
	Token bool `json:"token"`
}

// Codes lists every error code, in the order of the error table of
// docs/protocol.md.
var Codes = []CodeInfo{
	{CodeMalformed, http.StatusBadRequest, RetryNever, true, false, false, false},
	{CodeInvalid, http.StatusBadRequest, RetryNever, true, false, false, false},
	{CodeUnsupportedVersion, http.StatusBadRequest, RetryUpgrade, false, false, true, false},
	{CodeUnauthenticated, http.StatusUnauthorized, RetryAuth, false, false, true, false},
	{CodeTokenExpired, http.StatusUnauthorized, RetryAuth, false, false, true, true},
	{CodeForbidden, http.StatusForbidden, RetryNever, true, false, false, true},
	{CodeRevoked, http.StatusForbidden, RetryNever, false, false, true, true},
	{CodeNotFound, http.StatusNotFound, RetryNever, false, false, true, false},
	{CodeMethodNotAllowed, http.StatusMethodNotAllowed, RetryNever, false, false, true, false},
	{CodeTooLarge, http.StatusRequestEntityTooLarge, RetryNever, true, false, false, false},
	{CodeUpgradeRequired, http.StatusUpgradeRequired, RetryNever, false, false, true, false},
	{CodeRateLimited, http.StatusTooManyRequests, RetryBackoff, false, false, true, false},
	{CodeSchemaAhead, http.StatusConflict, RetryBackoff, false, false, false, false},
	{CodeClockDrift, 0, RetryNever, true, false, false, false},
	{CodeForgedReplica, 0, RetryNever, true, false, false, false},
	{CodeBadSeal, 0, RetryNever, true, true, false, false},
	{CodeQuotaExceeded, 0, RetryNever, true, false, false, false},
	{CodeOutOfScope, 0, RetryNever, true, false, false, false},
	{CodeSchema, 0, RetryNever, true, false, false, false},
	{CodeUntranslatable, 0, RetryNever, true, false, false, false},
	{CodeCollected, 0, RetryNever, true, false, false, false},
	{CodeUnavailable, http.StatusServiceUnavailable, RetryBackoff, false, false, true, false},
	{CodeInternal, http.StatusInternalServerError, RetryBackoff, false, false, false, false},
	{CodeCorrupt, http.StatusInternalServerError, RetryNever, true, false, false, false},
}

// Info returns what the protocol says about code, and false for a code it
// does not know (a newer server's: treat it as RetryBackoff over HTTP).
func Info(code string) (CodeInfo, bool) {
	for _, c := range Codes {
		if c.Code == code {
			return c, true
		}
	}
	return CodeInfo{Code: code, HTTP: http.StatusInternalServerError, Retry: RetryBackoff}, false
}

// StatusOf returns the HTTP status of an error code: 500 for an unknown
// one, 400 for a per-change-only code used as a request error.
func StatusOf(code string) int {
	c, _ := Info(code)
	if c.HTTP == 0 {
		return http.StatusBadRequest
	}
	return c.HTTP
}

// CodeOfStatus is the code of an HTTP error answer that carried none (a
// proxy's page): the one code with that status, when only one has it (a
// proxy's 413, 429 or 503), else "": the answer is one the client cannot
// read, a network failure (docs/protocol.md section 5). The browser client's
// codeOfStatus is the same rule over the same table.
func CodeOfStatus(status int) string {
	code := ""
	for _, c := range Codes {
		if c.HTTP == status {
			if code != "" {
				return ""
			}
			code = c.Code
		}
	}
	return code
}

// Error is a protocol error: a stable code, its HTTP status and a message
// for people. The server answers with it (the Go client has an error type
// of its own, with the request id and its sentinels).
type Error struct {
	Status  int
	Code    string
	Message string
	// RetryAfter is the server's Retry-After, with rate_limited and
	// unavailable.
	RetryAfter time.Duration
	// Cause is what the server logs beside the request id; it is never
	// sent, so Message can stay free of internal detail.
	Cause error
}

func (e *Error) Error() string {
	return fmt.Sprintf("convergo: %s: %s", e.Code, e.Message)
}

// Errorf builds an Error with code's status.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Status: StatusOf(code), Code: code, Message: fmt.Sprintf(format, args...)}
}

// Status is the outcome of one pushed change, numbered as on the wire.
type Status uint8

// Push statuses (docs/protocol.md, "Push").
const (
	// StatusApplied: the change altered its record (PushResult.Lost lists
	// fields of it that newer writes beat).
	StatusApplied Status = 0
	// StatusDuplicate: the server already held every stamp of the change.
	StatusDuplicate Status = 1
	// StatusSuperseded: the change altered nothing because newer writes
	// won; PushResult.Lost lists the fields that lost.
	StatusSuperseded Status = 2
	// StatusRefused: the change was not applied; PushResult.Code says why.
	StatusRefused Status = 3
)

// Statuses lists the statuses in wire order, with their names.
var Statuses = []Status{StatusApplied, StatusDuplicate, StatusSuperseded, StatusRefused}

func (s Status) String() string {
	switch s {
	case StatusApplied:
		return "applied"
	case StatusDuplicate:
		return "duplicate"
	case StatusSuperseded:
		return "superseded"
	case StatusRefused:
		return "refused"
	}
	return fmt.Sprintf("Status(%d)", uint8(s))
}

// Acknowledged reports whether the server holds the change (or something
// newer): the client removes it from its outbox.
func (s Status) Acknowledged() bool { return s <= StatusSuperseded }
