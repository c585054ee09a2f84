// Package client is the Go client of the Convergo sync protocol
// (docs/protocol.md): HTTP hello, push and pull, and live sync over a
// WebSocket, plus Replica, a small in-memory local copy with an outbox for
// Go programs and tests that write offline and sync later.
//
// # Clocks
//
// Every local write is stamped by a hybrid logical clock owned by the
// Client. Its wall part is the local clock corrected by the skew Hello
// measured (server time plus half the round trip, minus local time), so a
// client whose clock runs fast does not win every conflict and one whose
// clock runs slow does not lose them, and the server does not refuse its
// stamps as drift. Stamps received in pulled records are observed, so a
// local write always sorts after what the client has seen.
//
// # Retries
//
// Push is idempotent on the server (applying a change twice is a no-op), so
// the client retries it, like hello and pull, with exponential backoff and
// full jitter when the server is unavailable (503), rate limiting (429,
// honouring Retry-After) or unreachable. Errors the same request would meet
// again (malformed, forbidden, ...) are returned at once as *Error, which
// matches the sentinel of its code with errors.Is. A batch refused whole as
// too large or malformed is split until the offending change stands alone
// and is reported refused, so one bad change cannot stall an outbox.
//
// # Live sync
//
// Live subscribes to collections from cursors and delivers each page of
// changes in order. It redials with backoff when the connection breaks or
// goes silent (it pings the server), resuming from the cursor of the last
// delivery, and answers the server's resync by pulling over HTTP and
// subscribing again: no change is missed, and one delivered twice merges to
// the same state.
//
// # Wire types
//
// The package keeps its own copy of the protocol's message types rather
// than importing package transport, so a program that only syncs does not
// link the server, its engine and its stores. A test checks that both
// encode the same bytes.
package client
