// Package e2e holds Convergo's end-to-end tests: real HTTP and WebSocket
// on loopback between the Go client (transport/client) and the server
// (package transport, or the convergo binary), on the embedded store and on
// Redis.
//
//   - Convergence: a random number of clients write at random to a small
//     key space, go offline and come back, some live over WebSocket and
//     some pulling; at the end every client, the server's store and a
//     reference merge of every acknowledged change hold the same state. The
//     seed is printed; -e2e.seed replays it.
//   - Bad inputs: hostile and broken requests are each answered with their
//     status and error code while a background client keeps syncing.
//   - Crash: the server process (and, every other time, Redis) is
//     SIGKILLed while clients push; every change it acknowledged is in the
//     store after a restart, the clients' unacknowledged outboxes arrive
//     when they retry, and pushing everything again changes nothing.
//   - Live: a client whose tokens expire every second or two redials with
//     fresh ones; a client too slow for the server's send queue gets
//     resync, pulls over HTTP and subscribes again; neither misses a change.
//   - Heal: the store is lost or restored from a backup; the clients are
//     reset and give back what they hold.
//   - Scopes: two server instances on each store (bolt, Redis, Redis
//     Cluster, DynamoDB Local) under a rules file; clients with different
//     team claims hold exactly their scope and never receive anything
//     outside it (every pull answer and live frame is decoded and
//     checked), a moved record leaves one device and reaches another, write
//     rules refuse out_of_scope, and a subject denied through the store is
//     revoked on the other instance.
//   - Schema versions: a collection on the embedded store goes through a
//     server restart that installs its migration; clients of versions 1
//     and 2 write and read the same records, each in its own shape, over
//     pulls and live subscriptions; an untranslatable change is refused
//     alone, a client ahead of the server gets schema_ahead, and a record
//     sealed at version 1 restores at version 1 only.
//   - Attack: a siege of hostile clients while honest ones sync, and the
//     server's peak memory against the documented worst case.
//
// Tests that need Redis get its address (CONVERGO_REDIS_ADDR) or its
// binary (CONVERGO_REDIS_SERVER_BIN) through storetest.Endpoint and skip
// without them; `eval "$(bash scripts/services.sh up)"` sets both. The
// crash and token tests take a few seconds each and skip under -short.
// CONVERGO_E2E_LOG=1 with -v logs the servers and clients;
// CONVERGO_E2E_CRASHES sets the number of crashes per store (default 3).
package e2e
