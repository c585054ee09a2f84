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
// Push is idempotent on the server (a change sent twice comes back
// duplicate), so the client retries it, like hello and pull, with the
// protocol's exponential backoff and full jitter (proto.BackoffCeiling)
// when the code of the error says to (proto.Info: unavailable, internal,
// rate_limited, honouring Retry-After), when the server is unreachable, and
// when its answer is unreadable (a proxy's page, a truncated body). Errors
// the same request would meet again (malformed, forbidden, ...) are
// returned at once as *Error, which matches the sentinel of its code with
// errors.Is.
//
// The server judges each pushed change alone and refuses a bad one without
// the rest. Fitting pushes to the server's size limits is the client's job:
// Push batches within the hello's limits and splits a batch the server
// still refuses whole as too_large until the change that does not fit
// stands alone, so one bad change cannot stall an outbox.
//
// # Cursors
//
// A cursor is the server's opaque byte string (empty: the beginning). The
// client stores it and sends it back unchanged; it never parses or orders
// one.
//
// # Live sync
//
// Live subscribes to collections from cursors and delivers each page of
// records in order. It redials with backoff when the connection breaks or
// goes silent (it pings the server after proto.PingInterval of silence and
// gives up after proto.ClientSilenceTimeout), resuming from the cursor of
// the last delivery, and answers the server's resync by pulling over HTTP
// and subscribing again: no change is missed, and one delivered twice
// merges to the same state. Live messages of unknown types, and unknown
// keys in any message, are ignored.
//
// # The protocol
//
// The package has no protocol definitions of its own: versions, paths,
// headers, codes, statuses, limits, timings and wire types all come from
// transport/proto, which the server uses too. Importing proto does not link
// the server, its engine or its stores.
package client
