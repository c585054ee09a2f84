package client

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Error codes of the protocol (docs/protocol.md). They are stable; messages
// are for people.
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

// Sentinel errors, one per protocol error code. An *Error matches the
// sentinel of its code with errors.Is; ErrTokenExpired also matches
// ErrUnauthenticated, since an expired token is one kind of missing
// authentication.
var (
	ErrMalformed          = errors.New("convergo: malformed")
	ErrInvalid            = errors.New("convergo: invalid")
	ErrUnsupportedVersion = errors.New("convergo: unsupported protocol version")
	ErrUnauthenticated    = errors.New("convergo: unauthenticated")
	ErrTokenExpired       = errors.New("convergo: token expired")
	ErrForbidden          = errors.New("convergo: forbidden")
	ErrNotFound           = errors.New("convergo: not found")
	ErrTooLarge           = errors.New("convergo: too large")
	ErrRateLimited        = errors.New("convergo: rate limited")
	ErrClockDrift         = errors.New("convergo: clock drift")
	ErrUnavailable        = errors.New("convergo: unavailable")
	ErrInternal           = errors.New("convergo: internal server error")

	// ErrProtocol means the server answered something this client cannot
	// read: a body that is not CBOR of the expected shape, a message out of
	// order. It is not retried.
	ErrProtocol = errors.New("convergo: protocol violation by the server")
)

var sentinels = map[string]error{
	CodeMalformed:          ErrMalformed,
	CodeInvalid:            ErrInvalid,
	CodeUnsupportedVersion: ErrUnsupportedVersion,
	CodeUnauthenticated:    ErrUnauthenticated,
	CodeTokenExpired:       ErrTokenExpired,
	CodeForbidden:          ErrForbidden,
	CodeNotFound:           ErrNotFound,
	CodeTooLarge:           ErrTooLarge,
	CodeRateLimited:        ErrRateLimited,
	CodeClockDrift:         ErrClockDrift,
	CodeUnavailable:        ErrUnavailable,
	CodeInternal:           ErrInternal,
}

// Error is an error answered by the server: over HTTP the status and the
// body {1: code, 2: message}; over WebSocket an "error" message (Status is
// then 0); for a refused change of a push, the result's code and message.
type Error struct {
	// Status is the HTTP status, or 0 for WebSocket errors and per-change
	// refusals.
	Status int
	// Code is the stable protocol error code, such as "forbidden".
	Code string
	// Message is the server's explanation, for people.
	Message string
	// Collection is the collection a WebSocket error is about, if any.
	Collection string
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
	return s
}

// Is matches the sentinel of e's code.
func (e *Error) Is(target error) bool {
	if s, ok := sentinels[e.Code]; ok && s == target {
		return true
	}
	return e.Code == CodeTokenExpired && target == ErrUnauthenticated
}

// Retryable reports whether the same request may succeed later without any
// change: the server was unavailable, overloaded or rate limiting.
func (e *Error) Retryable() bool {
	switch e.Status {
	case http.StatusServiceUnavailable, http.StatusTooManyRequests,
		http.StatusBadGateway, http.StatusGatewayTimeout:
		return true
	}
	return e.Code == CodeUnavailable || e.Code == CodeRateLimited
}

// codeForStatus names the code of an error answer that carried none (a
// proxy's answer, say).
func codeForStatus(status int) string {
	switch status {
	case http.StatusBadRequest:
		return CodeMalformed
	case http.StatusUnauthorized:
		return CodeUnauthenticated
	case http.StatusForbidden:
		return CodeForbidden
	case http.StatusNotFound:
		return CodeNotFound
	case http.StatusRequestEntityTooLarge:
		return CodeTooLarge
	case http.StatusTooManyRequests:
		return CodeRateLimited
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		return CodeUnavailable
	}
	return CodeInternal
}
