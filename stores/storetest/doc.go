// Package storetest is the conformance suite of the stores.Store contract.
// Every store runs it with one call from its own tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t testing.TB) stores.Store {
//			s := open(t) // a new, empty store, isolated from every other
//			return s
//		})
//	}
//
// and reuses its benchmarks with storetest.Bench. A durable store runs
// RunReopen too, and every store RunBumps, with a clock the checks move
// and a hook that puts its epoch counters back as a restore does.
//
// # What the suite checks
//
// The suite is written against the stores.Store interface only, so a store
// that passes it keeps the promises the engine relies on: merge semantics
// equal to crdt.Record.Merge (last writer wins per field, ties decided the
// same way everywhere, unsets, delete tombstones, revival after a delete);
// Results that report whether a change altered its record, the record's
// sequence number and the fields of it newer writes beat; no-op changes
// that take no sequence number and wake no one; idempotent replay of whole
// and partial batches; changes to one record in one batch merged in order;
// independent collections, also when collections, ids and field names are
// spelled like the separators, brackets and own keys stores build keys
// from (Names), records at every name limit at once in a batch with other
// changes, and a refusal past a limit read as too large whatever the id
// spells (RefusalNames); paging with exact Next and More, pages cut by
// count and by encoded bytes (the first record always travels); a
// compacted log in ascending order that holds each record
// once in its current state; Get, Head and ErrNotFound; refusal of invalid
// input and of records beyond the crdt size limits; the no-gap invariant
// under many concurrent writers and a tailing reader; Watch notifications as
// hints; cancelled contexts; use after Close and Close under load; and,
// on stores that collect tombstones (stores.Purger), that a purge drops
// exactly what its horizon allows and keeps everything else byte for
// byte at its sequence number, resumes from Next, is idempotent, keeps
// Usage exact, handles records near the size limits and loses no change
// written while it runs (PurgeConcurrent, three rounds).
//
// # The suite is tested too
//
// A suite that passes everything proves nothing. mutants_test.go wraps the
// in-memory store with one contract violation each (a log whose entries
// become visible out of order, More on a full last page, pages cut by count
// only, a record larger than the budget held back, Lost never reported,
// Changed on no-ops,
// notifications for no-ops or none at all, ignored contexts, a Close that
// closes nothing, a purge past its read or write horizon, a purge that
// reads and writes a record in two steps) and requires the suite to fail
// each in the right check; RunReopen and RunBumps have mutants of their
// own (a store that forgets its identity or epochs when reopened, bumps
// that count by one and so start a restored copy's lost epochs again).
//
// The concurrency check writes 2,000 changes; -short writes 400.
//
// # Isolation
//
// The factory passed to Run returns a new, empty store for every subtest.
// Stores on shared servers isolate each one by a random key prefix or table
// name and remove what they wrote in a t.Cleanup. The suite closes every
// store it opens (Close must be idempotent, so a factory may close it too)
// and uses fixed collection names, which is safe only because of that
// isolation.
//
// Integration tests find their servers with Endpoint, which skips the test
// when the service is not configured.
package storetest
