// Package bolt is Convergo's default store: a stores.Store in one file,
// embedded in the server process, on go.etcd.io/bbolt (a copy-on-write
// B+tree with serializable transactions, one writer at a time).
//
// # Layout
//
// Every collection has two buckets, and the file has two more:
//
//	meta            "format" → "convergo-bolt-1"; "identity" → the store's identity;
//	                "epoch" → the store-wide epoch (8 bytes, big-endian);
//	                "gen" → write transactions that took sequence numbers (8 bytes, big-endian)
//	heads           collection → head seq (8 bytes, big-endian)
//	epochs          collection → own epoch ‖ own epoch at its latest loss (2 × 8 bytes)
//	r:<collection>  record id → seq (8 bytes, big-endian) ‖ record (CBOR, crdt.AppendRecord)
//	l:<collection>  seq (8 bytes, big-endian) → record id
//
// The log bucket is compacted as it is written: when a record takes a new
// sequence number, the entry of its old one is deleted in the same
// transaction, so the log holds every record once and Pull walks it in key
// order (big-endian keys sort numerically). Collection names cannot clash
// with "meta" or "heads": the prefixes put them in their own name space.
//
// # The no-gap invariant and durability
//
// bbolt runs one write transaction at a time. Apply reads the head, merges,
// takes sequence numbers and writes the records, the log and the new head
// in one transaction, so sequence numbers become visible in the order they
// were taken, all at once at commit. Commits fsync the file (unless the
// unsafe Options.NoSync is set): when Apply returns, its changes survive a
// crash of the process or the machine. The crash test kills a writer with
// SIGKILL at random moments and checks that every acknowledged change is in
// the reopened file.
//
// # Group commit
//
// One goroutine owns the writes. Apply hands it a batch and waits; while a
// transaction commits, the batches of other callers queue, and the next
// transaction takes them all, so one fsync serves many callers. A lone
// writer waits for no timer (bbolt's own DB.Batch waits up to 10 ms for
// company). Each batch is merged on its own: a batch refused with
// stores.ErrTooLarge, or one that meets corrupt data, is left out of the
// transaction while the others commit.
//
// # Tombstone collection
//
// Purge (stores.Purger) runs one write transaction per call, between the
// commit loop's: it walks the log up to the read horizon, rewrites or
// deletes the records it purges, deletes the log entries of those it
// removes and updates the usage bucket, all in that transaction. Freed
// pages go to bbolt's freelist and are reused; the file does not shrink.
//
// # Identity and epochs
//
// A new file gets a new identity (stores.NewIdentity) in the transaction
// that marks its format; a file written before identities existed gets one
// when it is first opened. The identity travels with the file, so a file
// that was moved away and replaced by a new one is a new store. A backup
// copy restored in its place cannot know it went back in time, but the
// note the store keeps beside the file (seen.go, NotePath) can: when it
// counts more write transactions than the file has, Open starts a new
// epoch of every collection. A copy restored with its note is not noticed:
// the documented restore procedure (docs/operations.md, "Backup and
// restore") runs `convergo store mark-restored`, which calls BumpEpochs on
// the restored file before the server opens it. Epochs follow stores.MetaOf:
// BumpEpochs raises the store-wide "epoch", BumpEpoch a collection's own
// counters, each to stores.NextEpoch at the clock Options.Now gives, so a
// copy put back from before a bump never starts an epoch again. Both are
// ordinary write transactions.
//
// # Untrusted file
//
// Everything read back from the file is checked: records go through crdt's
// hardened decoder, keys and heads must have their exact sizes, and a log
// entry must point at a record with the same sequence number. What fails a
// check is reported as an error wrapping ErrCorrupt, never a panic; a panic
// inside bbolt on a damaged page is recovered and reported the same way.
package bolt
