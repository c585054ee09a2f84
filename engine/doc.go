// Package engine is Convergo's store-agnostic heart: it applies pushed
// changes, serves pulls and tells subscribers when collections advance, on
// any stores.Store. The transport puts it on the network; Go programs embed
// it directly (Open, Put, Update, Delete, Get, Subscribe).
//
// # Apply
//
// Every incoming stamp passes through the engine's hybrid logical clock
// (crdt.Clock.Observe). A change carrying a stamp further in the future than
// MaxDrift is refused on its own, with crdt.ErrClockDrift, while the rest of
// its batch applies; observing the others keeps the server's clock ahead of
// every stamp it accepted, so its own writes (Put, Update, Delete) order
// after what it has seen. The store merges atomically per record and
// assigns sequence numbers; a change that alters nothing is reported as a
// no-op, writes nothing and wakes no one. Applying a batch again is a no-op
// in effect, which is what makes client retries safe.
//
// # The only door to a store
//
// Everything that reaches a store goes through the engine, which owns the
// policies on the way: validation of names and stamps (admit, once per
// change; the crdt decoders have already checked shapes and limits of what
// came over the wire), the clock of each collection (one per collection,
// so a stamp accepted in one tenant's collection does not move another's),
// cutting changes into batches of at most stores.MaxBatch and splitting a
// batch a store refuses whole until only the culprit is refused. Writes
// other programs make directly in a backend (stores.Capturer) come in
// through the same admission. Callers above, such as the transport, see
// only the engine's types (Entry, Page, Cursor, Result) and its error
// values, which are the store contract's sentinels.
//
// # Pull and subscribe
//
// Pull returns a page of a collection's compacted change log after a cursor,
// bounded by records and by bytes (PageLimit). A Cursor is opaque to
// clients: the bytes say which store, epoch and position it is. For a
// collection whose log the store splits over K shards (stores.Sharder) the
// cursor holds K positions, and Pull merges the shards' pages into one page
// within the limit, moving each shard's position only past what the page
// holds; a cursor of another K resets (rebuilt).
// Subscribe returns a Subscription whose channel carries the collection's
// newest sequence number whenever it advances (for K shards, the sum of
// the shards' newest). The channel holds one value
// and newer heads replace older ones, so a slow subscriber never blocks the
// engine and never grows a buffer: it pulls from its own cursor and catches
// up. Notifications from the store are hints; when a store reports it may
// have lost some (Resync), and every PollInterval as a safety net, the engine
// reads the head of every subscribed collection itself.
//
// # Ownership
//
// The engine does not own its store: the caller opens the store, hands it to
// Open, and closes it after closing the engine.
package engine
