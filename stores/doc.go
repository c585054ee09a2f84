// Package stores defines the contract between Convergo's engine and the
// databases that hold its state, and the types and sentinel errors shared by
// every implementation. Each implementation lives in its own sub-package
// (memory, bolt, redis, dynamodb) and imports only this package and crdt;
// storetest holds the conformance suite every one of them runs.
//
// # What a store keeps
//
// Per collection: the merged state of every record (a crdt.Record, kept
// with its tombstones) and a compacted change log. The log orders records
// by a per-collection sequence number, the cursor: each time Apply changes
// a record, the record gets the collection's next sequence number, so the
// log holds every record once, at the sequence of its latest change (like
// CouchDB's _changes feed). A reader pulls "everything after cursor c" page
// by page and ends up with every record's current state.
//
// # The no-gap invariant
//
// A reader that has pulled up to cursor c never later sees a change commit
// with a sequence number at or below c. Equivalently: sequence numbers become
// visible in order. Without it a reader tailing the log under concurrent
// writers would skip a change that took sequence 5 but committed after the
// change with sequence 6 was read. Every store keeps the invariant by
// allocating the sequence number inside the same atomic step that makes the
// change visible (a mutex, a bbolt write transaction, a Lua script, a
// DynamoDB transaction conditioned on the collection's counter); docs/design.md
// explains each.
//
// # Sharded logs
//
// A store may split a collection's log over K shards (Sharder, with K in
// Meta.Shards), each a log of its own with its own sequence numbers, heads
// and no-gap rule; a record lives in one shard (ShardOf), so compaction
// stays within it. Readers keep a position per shard. Only the DynamoDB
// store shards; the others keep one log per collection (K = 1).
//
// # Tombstone collection
//
// Deletes and unsets stay in records and the log as tombstones, so that
// every reader learns of them. A store that implements Purger can drop
// the ones the engine's horizon allows (PurgeRecord says what goes): for
// records whose log entry every live reader has passed (the read
// horizon), delete stamps and unsets older than every pending write (the
// write horizon). A record left with nothing is removed with its log
// entry. Purge checks and writes each record atomically with respect to
// Apply, takes no sequence number and keeps Usage exact. The read
// horizon's positions are of one epoch (Horizon.Epoch): in another, Purge
// refuses (ErrEpochChanged), checking the epoch in the same atomic step
// as its removals.
//
// # Notifications
//
// Watch tells the engine that a collection's log advanced. Notifications are
// hints: they may be late, merged or lost (Redis pub/sub is at-most-once), so
// a subscriber always catches up by pulling from its cursor. A store that
// may have lost notifications says so with a Resync notification.
package stores
