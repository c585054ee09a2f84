// Package redis is a stores.Store on Redis 7 or Redis Cluster 7.
//
//	s, err := redis.Open(ctx, redis.Options{Addrs: []string{"127.0.0.1:6379"}})
//	...
//	defer s.Close()
//	eng, err := engine.Open(engine.Config{Store: s})
//
// Several server instances may share one Redis: every write goes through a
// server-side script, so they agree on every record and every sequence
// number, and a write through one instance wakes the watchers of all of
// them.
//
// # Keys
//
// A collection is three keys (and its usage, see # Usage) that share the hash tag {collection}, so they
// live in one cluster slot and one script may touch them all:
//
//	<prefix>{<collection>}:seq  string  the collection's head (last sequence number)
//	<prefix>{<collection>}:log  zset    record id -> sequence number of its last change
//	<prefix>{<collection>}:r    hash    record id -> record blob (merged state and its seq)
//	<prefix>{<collection>}:usage hash   n records, b bytes (see # Usage)
//
// The log is the compacted change index the stores package describes: each
// record appears in it once, scored by the sequence number of its latest
// change, and Pull is a ZRANGE BYSCORE from the cursor. Sequence numbers are
// ZSET scores, doubles, so they stop at MaxSeq (2^53); at a million changes
// a second that is 285 years of one collection. crdt.ValidateCollection
// refuses braces and colons, so a collection name cannot leave its hash tag;
// Options.KeyPrefix separates deployments (and tests) sharing one server.
//
// # The script
//
// Open loads the scripts (SCRIPT LOAD, on every master of a cluster, never
// on a replica: a promoted replica must answer NOSCRIPT, see # Group
// commit).
// Apply sends the changes of one collection to merge.lua in one EVALSHA
// (falling back to EVAL when the server lost the script, after a restart
// or a failover; large batches take several calls, see # Caveats), in a
// pipeline shared with other callers' calls (see # Group commit). Before
// that, Go has read the records and merged the changes itself, and the
// script only checks that each record is still as Go read it (see #
// Merging in Go); what follows is what the script does for a record that
// is not, and for every record of a call that Go left to it. Redis runs a
// script atomically, and the script
//
//  1. reads the records the changes name (one HMGET) and merges each change
//     into its record exactly as crdt.Record.Merge does: the larger stamp
//     wins field by field (wall time, then logical counter, then replica
//     id, compared bytewise), an unset beats a value at an equal stamp and
//     the larger value bytes beat the smaller, a delete hides every field
//     stamped at or before it (a change without a delete to a record that
//     does not exist is the record as it is, with no merge);
//  2. gives every change that altered its record the collection's next
//     sequence number (several changes to one record in a batch are merged
//     in order, and the record ends up at the last of them);
//  3. checks the merged records against crdt's limits (field count and
//     encoded CBOR size, computed in Lua without encoding, and kept up to
//     date field by field as the merge replaces fields);
//  4. and only then writes: HSET of the changed records, ZADD of their
//     sequence numbers to the log, SET of the head, and one PUBLISH.
//
// Lua scripts have no rollback, so everything that can fail (malformed
// input, a record over the limits, a key of the wrong type) fails in steps
// 1 to 3, before the first write. The script does not check again what
// Apply's checkRecord proved in Go for every change it sends (stamps in
// range, no field with the zero stamp, names and values within their
// limits); it still refuses blobs it cannot read, whoever sent them. Sequence numbers are therefore allocated
// in the same atomic step that makes a change visible, which is the no-gap
// invariant of the stores package: a reader can never pull past a sequence
// number whose change commits later.
//
// The script is idempotent: merging a change a second time alters nothing,
// so it writes nothing, takes no sequence number and publishes nothing.
// That makes go-redis's retries safe (Options.MaxRetries): a script whose
// reply was lost to a network error and that runs again is a no-op, and
// Apply then reports the changes as not Changed, with the record's current
// sequence number.
//
// Tests hold the script to Go: rapid properties apply random batches (equal
// stamps, unsets, deletes, prefix replica ids, values that differ inside and
// across the script's 64-byte comparison chunks) to Redis and to
// crdt.Merge side by side, merged in Go and merged by the script, and
// compare results, records, their CBOR bytes, the log and the head;
// another checks the script's size computation against crdt.EncodeRecord
// at the exact limit.
//
// # Merging in Go
//
// Merging in Lua costs Redis several times the CPU of writing the records:
// parsing the change and the stored record into tables, merging,
// serialising and sizing them, per change (docs/benchmarks.md measures it
// at about three times the CPU of a script that only reads and writes as
// many records). Redis runs one script at a time on one core, so that
// work bounds every server instance sharing it; Go's work spreads over the
// instances and their cores. So Go merges, and the script compares and
// sets (cas.go):
//
//  1. Each round trip of group commit is preceded by one pipeline that
//     reads, for every call in it, the stored blobs of the call's records
//     (one HMGET per call) and the head of each collection (GET). It
//     reads only what Go does not know: a record that an earlier call of
//     the same round names is taken as that call's plan leaves it, and,
//     with Options.WrittenCacheBytes set, the blobs and heads that this
//     store's own script calls left (the written cache, written.go) are
//     not read; with nothing left to read there is no pipeline. What
//     is known so may be stale (another instance, a purge, a repair, a
//     restart); the comparison in step 3 finds that out, the script
//     merges such a record itself, and the store forgets it.
//  2. Go decodes the blobs and merges each change in order with
//     crdt.Record.Merge, as every store does, noting per change whether it
//     altered its record and its lost fields (crdt.LostFields); it checks
//     each merged record against the limits (crdt.MaxFieldsPerRecord and
//     the encoded size, from crdt.AppendRecord, which also gives the
//     change in the record's size for usage).
//  3. The script call carries the changes' record ids but not their
//     blobs, per change that verdict, and per record how Go read it
//     (absent, a readable blob, an unreadable one), the exact blob read,
//     the merged blob and the size delta. For each record the script
//     compares the blob stored now with the one read, as strings. A
//     record still as read is taken as Go merged it: its changes take
//     their seqs in batch order as the verdicts say, and the script
//     writes the merged blob, the log, the head, usage and the
//     notification exactly as for its own merge. When a record was
//     changed by another writer in between (another instance, a purge, a
//     repair), the script, which has no change blobs to merge it from,
//     refuses the whole call before it writes anything (CONVERGO-STALE),
//     and the store sends the call again in the same round, with the
//     change blobs and no compare-and-set section: the script merges it
//     all, and the lost fields are the script's. (Given the change blobs
//     as well, the script merges such records itself in the same run;
//     the store no longer sends both, which cost Redis and Go the blobs
//     on every call for the rare call that needs them.)
//
// The merged blobs carry the seqs Go foresees: the head it read plus the
// changes of the calls before in the pipeline. When the script finds the
// head as foreseen and every record as read it writes them unchanged;
// otherwise it puts the right seq into each. Results always come from the
// script, so a foresight that misses costs a string copy, never a wrong
// seq.
//
// What the script still does alone: an unreadable stored record is
// reported and replaced whichever side merges it (Go reads it as absent
// and says so); usage follows the same rules; a call in which Go finds a
// merged record over the limits goes to the script with no
// compare-and-set section, and the script refuses it against the record
// as it is then, with the error every store gives. The head checks, the
// key types and seq exhaustion stay in the script. A call whose read
// failed goes the same way (its script call then reports the failure, if
// it lasts). A go-redis retry of a call whose first run committed finds
// the records changed, is refused, and goes again for the script to
// merge, which changes nothing.
//
// The price is the read: one more round trip before each round of script
// calls, and Redis sends each record to Go and receives it back (the blob
// read and the merged one, beside the change). docs/benchmarks.md has the
// measurements. Two calls in one round that write the same record: the
// second compares against the blob read before the first wrote, so it
// falls back to the script's merge; so does every write that races
// another instance's to the same record. A test interleaves a second
// store's write between a store's read and its script, and checks the
// results and the records against the Go model applied in order.
//
// # Group commit
//
// Each hash slot has a queue of script calls (a single server has one
// queue for all), and while it holds calls one goroutine sends them: it
// takes every call queued (up to 64 calls and 8 MiB of changes), sends
// them as one pipeline, one EVALSHA per call (after one pipeline that
// reads their records, see # Merging in Go), and answers each call from
// its own reply; then it takes what queued while that round trip was in
// flight. So concurrent Apply calls share round trips (and Redis reads
// one socket instead of many), while a lone caller waits for no timer.
// Every call keeps its own script run: one call's error (a record over
// the limits, a collection out of sequence numbers, malformed input)
// fails that call's Apply alone, and Redis runs the calls after it in the
// pipeline as usual. A call whose caller's context ended before it was
// sent is left out; the pipeline itself is bounded by the latest deadline
// among its callers and by the socket timeouts, so no caller's
// cancellation fails the others. A NOSCRIPT reply is sent again with EVAL,
// after a check of the servers' run (epoch.go, checkRun): the server restarted
// or a replica took over, and may have lost the last writes. Redis does not
// replicate SCRIPT LOAD and a promotion keeps the script cache, so Open
// loads the scripts on masters only. A node that was a master once keeps
// the script while a replica, so before a round trip the store also
// compares the run of the node it goes to (INFO run_id and master_replid,
// at most once a second per node) with the masters' of the last check,
// and checks the run when it is not one of them (epoch.go, probeRun). On
// a cluster the calls go to that node's own client, so a redirect (MOVED,
// ASK: a demoted master names the node that took over) is not followed to
// a node no check found: it is answered by a check of the servers' run,
// which also reads the slots afresh, and the calls go again, to the
// slot's master as now known (at most maxRedirects times). Purge and
// Repair go the same way (onSlotMaster): a node that took the slot over
// unchecked may hold another history of the collection under the same
// epoch (a failover's new epoch is in the store-wide counter, on a
// cluster in another slot), so a purge there would drop entries under a
// horizon no reader of theirs reached, and a rebuild there would start an
// epoch saying Rebuilt for a history that lost writes. The other scripts
// follow redirects, and may: the epoch scripts (bumpScript,
// setEpochScript, checkServerScript) compare and set a counter read
// through the same client, and a new epoch is never an old one again
// (stores.NextEpoch), so a bump a node later loses only resets readers,
// and a run recorded without a node's makes that node's probe check
// again; capture.lua (capture, acknowledge, mirror) works on an app key
// and its shadow, in one slot on one node, and what it captures reaches
// the log through Apply, checked: on a node behind, it captures again
// what a newer shadow had (merged as a no-op) or acknowledges a change
// that is then captured again; usage.lua and
// headScript recount or raise what the node itself holds. Reads
// (read.lua) follow redirects too, which on a node no check found can
// show a history that the next write's check ends with a new epoch.
// Tests fail a master over to a replica that missed writes, and back to
// the old master after it missed writes, and check that a cursor from
// before is reset.
// Close waits for the queued calls to be answered.
//
// Merging several callers' changes into one script call would save the
// script's fixed work (key types, head, usage) but make one caller's
// refusal everybody's: a script fails whole. The tests hold a round trip
// in flight, queue concurrent callers behind it, and check that they go
// in one pipeline, each with its own results or error.
//
// # The record blob
//
// Records are stored, and changes sent to the script, as a flat binary
// layout (encoding.go) rather than CBOR: Redis's Lua has a cmsgpack and a
// cjson library but no CBOR decoder, and a hand-written CBOR reader in Lua
// would be slower and much larger than this layout, where every length and
// number is fixed-width big-endian (read with Redis's struct library) and
// a stamp's wall time and counter compare as two 32-bit halves and a
// 32-bit number, exactly as in Go. A field's bytes are the same in a change
// and in a stored record, so the script copies the fields that win into
// the new blob without re-encoding them, in the record's field order; an
// unchanged record round-trips to the same bytes. Values stay the canonical
// CBOR bytes the engine validated; the store never re-encodes them.
//
// The size limit is crdt.MaxRecordBytes of the record's CBOR encoding. Each
// CBOR head is at most as long as the blob's fixed-width field, except per
// field (a name's, wall time's, counter's and replica length's heads can be
// 1 byte longer each, 4 in all) and once for the id and the map heads, so
// the encoding is at most len(blob) + len(id) + 4×fields + 5 bytes (a test
// checks it, with equality in the worst case). The script computes the
// exact encoded size of every record it writes (size.lua), for the limit
// and for usage.
//
// # Usage
//
// The merge script keeps each collection's stores.Usage in the hash
// <prefix>{<collection>}:usage (n records, b bytes of their CBOR
// encodings) in the same step as the records, from each written record's
// size before and after. A collection written before usage existed, or
// whose usage is unsound or stale (a write replaced an unreadable record),
// is counted once by usage.lua when Usage next reads it; Repair counts it
// again (usage.go).
//
// # Tombstone collection
//
// Purge (stores.Purger) reads a page of the log (ZRANGE BYSCORE up to the
// read horizon) and its records (HMGET), purges them in Go with
// stores.PurgeRecord and sends the changed ones to purge.lua, which writes
// each only if its blob (which holds its seq) is still the one read: a
// compare-and-set per record, so a change Apply commits in between is
// never lost. The script keeps usage, removes purged records from the
// hash and the log, and drives the shrinking rehash of both keys a few
// steps per removal (Redis 7.0 shrinks a hash's table only as the key is
// looked up). Its keys share the collection's hash tag.
//
// The horizon's positions are of one epoch (stores.Horizon.Epoch): Purge
// reads the epoch as Meta does and refuses another
// (stores.ErrEpochChanged), and purge.lua writes nothing unless the
// collection's own counter (its meta hash, in its slot) is still the
// value read and, on a single server, the store-wide counter too. On a
// cluster the store-wide counter is in the slot of {convergo}, which a
// script of the collection's slot may not read: Purge reads it again
// before each script instead, so a BumpEpochs that lands between that
// read and the script (one round trip) is missed by that call. Such a
// bump follows a loss of history (a restore, a restart or a failover
// that may have lost writes), which the store cannot see before it
// anyway; the engine takes a record the purge then removes under a
// reader of the new epoch as one that a purge may have removed
// (docs/design.md, "Horizons across epochs").
//
// # Reads
//
// Pull runs read.lua, which takes one page of the log and the records it
// names in one atomic step (ZRANGE, then HGET record by record), so every
// record comes with the sequence number the log lists it under. The script
// cuts the page by count and by the records' CBOR size (computed from the
// blob by size.lua, which merge.lua shares for its size limit), so Redis
// sends only the page and reads at most one record beyond it. Get is one
// HGET and Head one GET. read.lua is marked no-writes, so it may run on a
// replica.
//
// # Notifications
//
// Apply tells the store's own watchers directly. The merge script also
// PUBLISHes "<collection> <head>" on the channel
// <prefix>convergo:notify. Watch starts one subscriber per Store (one
// pub/sub connection and one goroutine, whatever the number of watchers)
// and returns once Redis confirmed the subscription.
//
// Pub/sub is at-most-once: a message published while the subscriber is
// disconnected, or while its output buffer is over Redis's
// client-output-buffer-limit, is lost. So notifications are only hints,
// and the store says when some may have been lost. go-redis reconnects a
// dropped pub/sub connection and subscribes again by itself; the
// subscriber turns every (re)subscription, the first included, into a
// stores.Notification{Resync: true}, sent after the server confirmed it,
// so a consumer that re-reads its heads on Resync (the engine does) cannot
// miss a change that commits after it: the change is either published to
// the new subscription or committed before the head is read.
//
// A connection can also die silently: a crashed host or a dropped NAT entry
// sends no reset, and TCP gives up on the unanswered writes only after
// many minutes (go-redis's own health-check pings do not help, because
// their replies are never checked). So the subscriber also listens on a
// heartbeat channel of its own: after Options.Heartbeat (1 s) without any
// message it publishes a heartbeat there, and when that does not come back
// within another Heartbeat it replaces the subscription with a new one,
// which again ends in a Resync. Tests cut the subscriber with CLIENT KILL
// and freeze it behind a proxy, while another instance writes, and check
// that consumers catch up. The engine's PollInterval remains the last
// safety net.
//
// On a cluster the store uses plain PUBLISH/SUBSCRIBE, not Redis 7's
// sharded SPUBLISH/SSUBSCRIBE. A shard channel must hash to the slot of the
// script's keys, so sharded notifications would need one channel per
// collection, and Watch, which covers every collection, would have to know
// the collections in advance and hold one subscription per shard. Plain
// PUBLISH is broadcast over the cluster bus to every node, so one
// subscription on any node hears every collection. The price is that each
// notification (a few dozen bytes per Apply call, not per change) crosses
// the bus to every node, which is fine for clusters of tens of nodes; a
// deployment that outgrows it would move to per-collection shard channels
// subscribed on demand.
//
// # Damaged data
//
// Every script checks the type of each key it touches before its first
// write; a key of the wrong type, an unreadable record, a log entry
// without its record are stores.ErrCorrupt naming what is damaged,
// logged and counted (Store.Stats), never ErrUnavailable. A head that is
// unreadable or below the highest seq in the log is set right from the
// log by the merge script and Head, and the collection starts a new
// epoch. The next write to a damaged record replaces it; Repair (convergo
// repair) rebuilds a collection's log and head. docs/redis.md has the
// table.
//
// # Capture
//
// With Options.Capture the store captures writes other programs make to
// plain hashes (keyspace notifications on every master as the wake-up, a
// shadow per key for field-level diffs, a periodic SCAN reconciliation)
// and hands them to the stores.Capturer sink, stamped by replica
// CaptureReplica; it can mirror merged records back. capture.go and
// docs/redis.md give the semantics and the window in which a plain write
// loses to a client write.
//
// # Settings
//
// Open sets, on purpose, the go-redis settings that decide behaviour under
// failure (Options documents each and its default):
//
//   - ContextTimeoutEnabled is always on. Without it go-redis ignores the
//     caller's context deadline and bounds a call only by its socket
//     timeouts.
//   - DialTimeout, ReadTimeout and WriteTimeout (5 s each by default) bound
//     a stuck connection when the caller's context has no deadline.
//   - DialerRetries is 1: each try of a call dials once. go-redis's own
//     default dials up to five times, 100 ms apart and each given
//     DialTimeout, before a try fails, which multiplies MaxRetries and
//     DialTimeout by five: with Redis down and its port refusing, a call
//     took seconds instead of failing at once.
//   - MaxRetries (3) retries on network errors and retryable server errors
//     (LOADING, TRYAGAIN, CLUSTERDOWN; MOVED and ASK redirections are
//     followed), with go-redis's backoff of 10 ms to 1 s; this is safe
//     because the script is idempotent. A retried Apply whose first run
//     did commit reports its changes as not Changed.
//   - PoolSize (go-redis's default, 10 per GOMAXPROCS, per node) bounds
//     concurrent calls; a call beyond it waits up to the pool timeout.
//     Apply's merge calls take one connection per hash slot with calls in
//     flight (# Group commit).
//   - ClientName names every connection, the subscriber's included, in
//     CLIENT LIST, so operators can tell Convergo's connections apart.
//   - Heartbeat (1 s) is how long the subscriber may hear nothing before
//     it checks that its connection is alive (see # Notifications).
//
// Errors are translated at the edge: a closed client is stores.ErrClosed;
// connection errors and "not now" server states are stores.ErrUnavailable
// (Apply is idempotent, so the caller retries); a merged record over the
// limits is stores.ErrTooLarge and leaves Redis untouched.
//
// # Durability
//
// Apply returns after Redis executed the script in memory. What survives a
// crash of the Redis server depends on its persistence settings, not on
// this package:
//
//   - appendonly yes, appendfsync always: Redis fsyncs the AOF before it
//     replies, so an acknowledged Apply survives a crash of the process or
//     the machine. Each write pays a disk sync.
//   - appendonly yes, appendfsync everysec (Redis's default AOF policy):
//     the AOF is fsynced once a second, so a crash of the machine (not of
//     the process alone) can lose about the last second of acknowledged
//     writes.
//   - RDB snapshots only, or no persistence: everything since the last
//     snapshot is lost.
//
// Clients do not lose data either way: they keep their changes in their
// outbox until the server acknowledges them, and a server that forgot
// acknowledged changes gets them again only from clients that still hold
// them. Losing acknowledged writes also makes sequence numbers go back, and
// a client whose cursor is past the new head misses the records that reuse
// those numbers until it pulls from 0. Run
// appendfsync always where an acknowledged write must never be lost. With
// replicas, a failover can lose writes the old master acknowledged but had
// not yet replicated; WAIT is not used.
//
// # Caveats
//
// A batch is one script call per collection, and a collection's changes
// are split into calls of at most 256 changes and 1 MiB (sent in the same
// pipeline, in order): Redis runs nothing
// else while a script runs, and this keeps every call to milliseconds even
// for the largest records. A batch is therefore atomic per call, not as a
// whole (the stores contract asks for atomicity per record only). A
// deployment that evicts keys
// (maxmemory-policy other than noeviction) will lose records: configure
// noeviction.
package redis
