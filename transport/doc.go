// Package transport is Convergo's sync server: the HTTP and WebSocket
// protocol of docs/protocol.md on top of an engine.Engine. The protocol
// itself (paths, codes, statuses, messages, limits) is declared in
// transport/proto, which the server and the Go client (transport/client)
// both use; neither declares any of it again.
//
// The files have one job each: server.go builds the server and its routes,
// api.go is what every HTTP request goes through (method, version, auth,
// rate, body, errors, request ids), origin.go the client address and
// browser origins, handlers.go the hello, push and pull endpoints, live.go
// the WebSocket sessions, broadcast.go the groups that read each
// collection's changes once for all its live subscribers, writers.go and
// ping.go the writers and the pinger live sessions share, health.go the
// probes, limits.go and auth.go the limits and tokens.
//
//	srv, err := transport.New(transport.Config{Engine: eng, Authorizer: jwtAuth})
//	http.ListenAndServe(addr, srv)
//	...
//	srv.Shutdown(ctx) // closes live sessions; http.Server.Shutdown drains the rest
//
// # Acknowledgement
//
// A push, over HTTP or a live session (a push message, answered by a
// pushed message: the same path after decoding), is answered only after
// engine.Apply returned, that is after the store committed every applied
// change. A client that loses the answer pushes again and gets duplicates:
// the merge is idempotent. A store failure is unavailable for the whole
// push (503 over HTTP), never a partial answer.
//
// # Refusals
//
// A change that cannot be applied (its collection not granted, a stamp too
// far in the future, an invalid name, a record over the size limit) is
// refused on its own, with a code, while the rest of the push applies: a
// client drops a refused change from its outbox instead of retrying a whole
// batch forever. Only a body whose framing is broken, or a request over a
// limit, fails whole. Cutting changes into store batches and splitting a
// batch a store refuses is the engine's job (engine.Apply); this package
// only decides who may write what.
//
// # Live sessions
//
// A WebSocket session streams each subscribed collection from the client's
// cursor. Its subscriptions are entries of a broadcast group, one per
// collection, effective read scope and schema version (subscribers of one
// scope and version share pages; others never do), which holds the engine
// subscription
// (engine.SubscribeFunc): whenever the head moves, the group reads and
// encodes the new page once per cursor among its subscribers and queues
// the same bytes on every connection at that cursor. Caught-up subscribers share
// one cursor, so a change costs one store read however many they are;
// subscribers behind catch up from the log and join them; changes that
// land during a fan-out coalesce into the next page. A subscriber is only
// handed a page read after the change that woke it, so none misses a
// change (broadcast.go, "No gaps"). A client that does not read its queue
// fast enough is not buffered for: its subscription stops with "resync",
// and the client catches up over HTTP from its cursor and subscribes
// again. The first page after a sub is sent even when empty: it tells the
// client it is caught up. An idle session holds no goroutine: on Linux its
// socket waits in the server's one epoll loop, and a pool of readers reads
// what arrives (a connection whose socket cannot be had, such as TLS, and
// every connection on other systems, is read by a goroutine of its own);
// a broadcast encodes a page's frame once and writes it itself to each
// connection with nothing else to write, with one write that does not
// wait; other writes, and what such a write leaves, go through a shared
// pool of writers; pings go through one pinger; a broadcast group runs a
// goroutine only while it has pages to read and hand out, so an idle
// subscription holds none, even alone in its group (broadcast.go,
// "Goroutines on demand").
//
// # Untrusted input
//
// Bodies are read through http.MaxBytesReader and decoded with crdt's
// hardened CBOR modes (no tags, no indefinite lengths, no duplicate keys,
// bounded nesting and sizes; unknown envelope keys are skipped), within
// Limits.RequestTimeout.
// Every client is rate-limited by a token bucket keyed by its token's
// subject, else its address (behind Config.TrustedProxies, the address they
// forwarded for): HTTP requests over the rate get 429, live messages over it
// are delayed rather than dropped, since a dropped sub would leave the
// client waiting. WebSocket connections are counted per address and
// their messages are size-limited. Browser origins other than the server's
// own must be listed in Config.AllowedOrigins, for HTTP (with CORS headers)
// and before a WebSocket upgrade.
//
// # Authentication
//
// Authorizer is the small interface the server needs; JWT implements it for
// HS256 tokens with the claims of the protocol (sub, exp, read, write). With
// Config.Demo, clients without a token may read and write DemoCollection
// only; the server logs a warning at startup when the demo is on.
package transport
