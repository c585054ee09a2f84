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
// # The server's clock
//
// Clients correct their clocks by the engine's (ServerTime, announced by
// the hello), so an engine whose clock is far off would set every client
// it serves off by as much. On a store with a clock of its own
// (StoreClock: Redis, DynamoDB) the engine checks its clock against it at
// Open and every Config.ClockCheckEvery (CheckClock); off by more than
// MaxClockSkew, half the max drift, it logs at ERROR, ClockHealth fails
// (the transport then refuses hellos and pushes, and /readyz), Collect
// does not run, NoteLease writes no lease, Put, Update, Unset and Delete
// are refused and captured changes held back, until a check finds it
// back. A store it cannot
// read is not taken for a skew. Memory and bbolt are in the engine's
// process, on its clock: nothing is checked.
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
// bounded by records and by bytes (PageLimit); PullScoped is Pull under a
// scope (below). A Cursor is opaque to
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
// # Scopes and transitions
//
// PullScoped reads a collection as a reader whose scope (a crdt/scope
// predicate, bound with the principal's parameters) limits what it sees.
// Each log entry after the cursor gives the reader either the record
// (it exists and the scope matches it) or a leave (Page.Left: it was
// deleted, or does not match, or no longer does), and the reader drops a
// record it holds when told it left. What a scoped reader learns of
// records outside its scope is therefore never a value, a field name or
// an id (the transport sends a leave as a 16-byte digest of collection
// and id, not the id), only that some record outside changed, once per
// change after its cursor; and, for an id it already knows or can guess,
// whether that record changed (it can digest its guess). Sending leaves
// only for records the reader held would need per-reader state or the
// records' earlier versions, which a compacted log does not keep: the
// engine stays stateless and the cursor opaque instead. Leaves count as
// records toward a page's record limit and as 20 bytes toward its byte
// limit.
//
// A scoped cursor holds the canonical bytes of the scope it was read
// under (cursor format 2). When the reader comes back with another scope
// (it changed its filter, its token's claims or the rules changed), the
// read becomes a transition: the cursor keeps the old scope and
// positions as prev, and a scan from the start of the log, under the new
// scope, goes to the head. An entry at or before prev's position is
// unchanged since the reader last read, so the reader holds it exactly
// when prev matches it: the record is sent when only the new scope
// matches, a leave when only prev matches, and nothing otherwise (a
// transition's pages may thus be empty with More set). Entries after
// prev's position are read as usual. When the scope changes again during
// a transition, prev becomes the or of the two old scopes at the old
// positions; the reader then holds, before those positions, some of the
// records prev matches but perhaps not all (what the cut scan already
// told it to drop), so there the scan sends every record the new scope
// matches and a leave for the others prev matches: correct, at the cost
// of records sent again. A prev over the scope limits (its bytes, its
// nesting or its predicates), which a cursor cannot carry, is dropped and
// the scan reads from the start as for a new reader (a record or a leave
// for every entry). When the scan reaches the head, or
// passes prev's positions in every shard, the cursor forgets prev. A
// cursor the caller cannot vouch for (Cursor.Unverified: a client may
// have written its scope) is in no transition, and read under another
// scope than its own it starts again from the beginning with no prev: a
// written scope must not choose which leaves a reader is sent. An
// unscoped read is the same with no scope: every record, tombstones
// included, and no leaves.
//
// # Rules
//
// Config.Rules (a rules file read by ParseRules) holds, per collection
// pattern, a read scope, a write scope, a declarative Schema and, for
// embedding programs, a validation function. The engine does not know
// principals: the layer that does binds the scopes (ReadScope,
// WriteScope) and passes them to PullScoped and to Apply
// (WithWriteScope). Apply checks each change of a collection with a write
// scope or a schema against the record it would change: the stored
// record merged with the batch's earlier changes to it. A record that
// exists outside the write scope may not be changed, a change whose
// merged record exists outside it (a create outside, a move out) is
// refused, and a delete of a record inside passes (ErrOutOfScope); a
// merged record that exists must then keep to every matching rule's
// schema and validation function (ErrSchema). Refusals are per change,
// like every other. Changes of collections no rule covers cost no read.
// The quotas are checked before the rules, and a later change of a record
// one of whose changes the store then refuses (too large) is judged again
// on the record as stored, whether the rules took or refused it: a
// refused change leaves nothing that a later one was judged on.
//
// The check and the store's atomic merge are two steps: a change another
// writer makes to the same record between them is not seen, so a rule
// decides on the record as it was a moment before the write. A writer can
// therefore move a record out of its scope while another writer's change
// that was checked against the old state still lands on it; each write
// was allowed on what its writer could see.
//
// # Schema versions
//
// A rule of an exact collection name may carry Migrations (package
// crdt/migrate): the collection's schema versions. Installing them
// rewrites nothing: the store keeps every record in the shape it was
// written in. Instead the engine translates at its doors, since it is the
// only one: Apply translates changes written under an older version
// (WithVersions) up to the current one before any check, and stores them
// so; every read of a stored record (rules, Get, pulls) resolves it to
// the current version, which translation's resolving rule makes safe for
// records that hold fields of several versions; rules and scopes see the
// current version's defaults; PullAt translates a page down to the
// reader's version after the scope was judged, so readers of all versions
// see the same records. A change that cannot be mapped is refused
// (ErrUntranslatable); a version above the current one fails the call
// (ErrSchemaAhead).
//
// # Ownership
//
// The engine does not own its store: the caller opens the store, hands it to
// Open, and closes it after closing the engine.
package engine
