// Package dynamodb is a stores.Store on one Amazon DynamoDB table, with a
// DynamoDB Streams consumer that wakes watchers across server instances and
// captures items other programs write directly to the table.
//
//	st, err := dynamodb.Open(ctx, dynamodb.Options{
//		Table: "convergo", Region: "us-east-1", Capture: true,
//	})
//
// or, with clients built by the caller, dynamodb.New(ctx, dynamodb.Config{
// Client: c, Streams: sc, Table: "convergo"}). The table is created only by
// an explicit CreateTable (or Options.CreateTable, the "create=1" of the
// store URL dynamodb://TABLE?region=…&endpoint=…, see ParseURL).
//
// # Table layout
//
// One table holds everything. Its key is pk (string, partition key) and sk
// (number, sort key); on-demand billing; its stream shows
// NEW_AND_OLD_IMAGES. Every item Convergo writes has a partition key that
// starts with '~' (which no collection name can start with) and an
// attribute cvg holding the layout version, 1 (the key prefix, not cvg,
// tells Convergo's items from foreign ones):
//
//	item          pk              sk    attributes
//	store         ~store          0     id (S: the identity), epoch (N: the store-wide epoch counter),
//	                                    inc (S: the incarnation of the table that holds it, restored.go),
//	                                    format (S: the table's format mark, "convergo-dynamodb-1", format.go),
//	                                    bt (S: the token of the last bump, epoch.go)
//	record        ~r#COLL#ID      0     rec (B: the merged crdt.Record, deterministic CBOR), seq (N)
//	head          ~h#COLL         0     head (N: the collection's highest sequence number), urecords, ubytes (N: its usage),
//	                                    towner (S), tbegan, tuntil (N: the last writer's commit turn, turn.go)
//	log entry     ~l#COLL         SEQ   id (S: record id), rec (B: the record's state at SEQ),
//	                                    tx (B: the log seqs its transaction wrote, when more than one; txread.go)
//	shard head    ~h#COLL#I       0     head (N), k (N: the collection's shard count K)
//	shard entry   ~l#COLL#I       SEQ   id (S), rec (B), as a log entry, in shard I
//	epoch         ~e#COLL         0     n, lost (N: epoch counters), k (N: K, when K > 1), bt (S: as on the store item),
//	                                    rs (N: while its log is rebuilt into rs shards, reshard.go; on heads too),
//	                                    rr (S: with rs, the token of the rebuild's run that holds the fence)
//	ledger entry  ~c#COLL#ID      0     q (S: last captured stream sequence number), w, l (N: its stamp's wall ms and counter)
//
// The change log of a collection is one item collection (partition key
// ~l#COLL), ordered by sk, so Pull is one strongly consistent Query:
// "sk > cursor", Limit page+1 to learn whether there is more (and a
// TransactGetItems when the page saw a transaction in part, below). A log entry
// holds the record's state, not just its id, so a page needs no second read;
// the price is that a record is stored twice.
//
// # Sharded logs
//
// A collection may split its log over K shards (Config.DefaultShards,
// Config.Shards; 1 to stores.MaxShards): shard I has its own head ~h#COLL#I
// and log partition ~l#COLL#I, and record ID lives in shard
// stores.ShardOf(ID, K). Everything below holds per shard: each shard's
// head is the lock of its log, and each (instance, collection, shard) has
// its own committer, so writers of records in different shards never
// contend, and the collection's write ceiling is K log partitions. K is
// fixed by the collection's first write (kept in the epoch item as k, with
// a marker head ~h#COLL {head 0, k}); K = 1 keeps the keys above, so tables
// from before read unchanged. The store implements stores.Sharder
// (PullShard, ShardHeads); the engine keeps K positions in the cursor.
// See shards.go. Changing K rebuilds the log from the record items, behind
// a fence that refuses writers, and starts a new epoch (Reshard,
// reshard.go; convergo store reshard). The fence names the run that holds
// it, and every write of the rebuild checks it, so a second run takes the
// rebuild over and the first writes nothing more. Repair is the same
// rebuild under the current K.
//
// # Identity, epochs, and restored tables
//
// The store item holds the identity and the store-wide epoch counter, and
// a collection's epoch item its own counters (stores.MetaOf); every bump
// sets a counter to stores.NextEpoch in an update conditioned on the value
// read (epoch.go). A point-in-time or backup restore creates a new table
// and puts the old items into it, the store item included, so the store
// item also records the incarnation of the table that holds it: the
// table's TableId (on DynamoDB Local, which has none, its
// CreationDateTime). Open reads it (one strongly consistent GetItem
// beside the DescribeTable it makes anyway): none recorded, it records the
// table's without a new epoch; another table's, it starts a new epoch of
// every collection, history lost, as `convergo store mark-restored` does,
// and records the table's in the same update, conditioned on the
// incarnation read, so servers that open a restored table at once start
// one epoch; it logs that at error level. A store running through a
// restore in place (the table deleted, the backup restored under its name)
// meets the table missing, and its next Meta checks again as Open does;
// its stream consumer checks too, when it finds the table another one, and
// moves to the new table's stream (see below). A
// backup of a table that no
// server of this version had opened records none and is not noticed: the
// restore procedure still runs mark-restored (docs/operations.md, "Backup
// and restore"). A backup keeps no transaction's items together, so a
// restored table may hold a record item whose log entry is missing, which
// no pull delivers and no write heals; Repair (convergo repair) rebuilds
// a collection's log from its record items, Reshard's rebuild under its
// current K, and mark-restored runs it on every collection (RepairAll,
// reshard.go). The replicas of a global table have TableIds of their
// own and share one store item, so the store does not support global
// tables, and refuses one at open (checkSchema). See restored.go.
//
// # Apply, and why it keeps the no-gap invariant
//
// Apply groups changes by collection into transactions of at most
// DynamoDB's 100 actions (a new record takes two, an updated one three, the
// head one: 49 new or 33 updated records) and about 3.75 MB (of its 4 MB). For each group it reads the
// head and the record items with one strongly consistent BatchGetItem,
// merges in Go with crdt.Record.Merge, gives every change that alters its
// record the next sequence number, and commits one TransactWriteItems:
//
//   - put the head item with the new head and usage, on condition that
//     head and usage still equal the values read (or, at head 0, that the
//     item does not exist: a rebuild that leaves a shard without a record
//     writes its head item with head 0);
//   - per record: put the record item on condition that its seq is still
//     the one read (or that it does not exist); put the new log entry; and
//     delete the record's previous log entry (compaction, in the same
//     transaction, so the log holds every record once).
//
// The head condition is what keeps the invariant across transactions. The
// transaction that commits sequence numbers N+1.. found the head at N,
// which only the commit of the transaction writing N can have set; so seq
// N is committed before N+1 starts, and transactions commit in the order of
// their sequence numbers. (A counter incremented by its own UpdateItem
// before the transaction would not do: the transaction with N+1 could
// commit before the one with N, and a reader between the two would skip N
// for good.)
//
// Within one transaction it is not enough. DynamoDB gives a Query
// read-committed isolation item by item; only TransactGetItems is
// serializable with TransactWriteItems. While a transaction that wrote
// N+1..N+k is being applied, a Query may return N+2 and not yet N+1, and a
// reader that moved its cursor to N+2 would skip N+1 for good. So every log
// entry of a transaction that writes more than one carries the seqs of all
// of them (tx: the first, the count, and the differences unless they are
// consecutive; a seq the transaction took for a record it changed again
// has no entry). A page that read some entries of a transaction, and not
// others at or below its cursor, reads those with one TransactGetItems
// (of up to 100 items and, as DynamoDB answers one with at most 4 MB of
// items, about 3.75 MB: one refused as too large is read again in halves,
// down to one transaction's gap, which always fits), together with the seq
// of the record item of an entry it did read of each such transaction: it
// sees the transaction's writes all or
// none, or is cancelled while the transaction is in progress; a record seq
// below that entry's would mean it was ordered before a transaction the
// Query saw, and it is read again too (after a backoff, up to MaxAttempts,
// then stores.ErrUnavailable). It does not read the head, which every
// commit writes: a TransactGetItems of it would conflict with, and cancel,
// the log's writers. An entry it finds joins the
// page in order (a record found twice keeps its later entry, the page is
// cut again at its limit); one it does not find was compacted by a later
// transaction. A page with no such gap costs nothing more than its
// Queries; a page whose transactions lost entries to compaction (a record
// changed again later) costs a TransactGetItems per 100 items, at two
// read units per item, even when nothing was in flight, since a Query cannot
// tell a compacted entry from one not yet visible. Entries written before
// tx existed, and those Purge or Reshard rewrite, carry none and read as
// before. See txread.go.
//
// The cost is throughput: commits to one collection are serial and
// optimistic. Within one store instance they are grouped (commit.go): each
// collection has one committer, which puts every pending change of every
// concurrent Apply into one transaction, up to 49 new or 33 updated records,
// and caches the collection's head so that a group reads only its records.
// Across instances they take turns (turn.go): each head put names its
// instance and until when it holds the turn (about two commit rounds past
// the commit, within a turn of Config.CommitTurn, 200 ms by default), and
// another instance that sees the turn held waits instead of sending a
// transaction the head condition would cancel; an instance alone on a log
// never waits. Turns are advisory: when two
// instances still race (a turn ending while a transaction is in flight),
// the loser retries at once against the winner's head (from the
// cancellation). A transaction
// costs twice the write units of plain writes, and every record is written
// twice (record and log entry); the log's single partition key caps a
// collection at about 500 inserts or 250 updates per second on AWS per log
// shard (docs/design.md, "Cost model"). Collections are independent. Under
// TransactionConflict or throttling Apply backs off with full jitter, up to
// Config.MaxAttempts, then fails with stores.ErrUnavailable.
//
// A cancelled transaction says which condition failed; with
// ReturnValuesOnConditionCheckFailure=ALL_OLD it also returns the winning
// item, which replaces what was read (every other retry reads the whole
// group again). Throttling and network failures are retried with the same
// ClientRequestToken (a hash of the transaction's content and a per-store
// nonce), so a transaction whose response was lost is not applied twice;
// Apply is idempotent besides, because merging the same change again
// changes nothing.
//
// Limits: a merged record larger than crdt.MaxRecordBytes, or an item over
// DynamoDB's 400 KB, is refused with stores.ErrTooLarge, never truncated.
// Throttling, server and network errors are stores.ErrUnavailable. The
// store uses no BatchWriteItem (25 items), since every write must be
// conditioned; BatchGetItem reads at most 50 keys of its 100 (a group's 49
// records and the head: at most crdt.MaxRecordBytes each, under its 16 MB).
//
// Usage (stores.Usager) rides on the head item, so it changes in the same
// transaction as the records: the plan adds new records and the change in
// their stored sizes to the usage read (usage.go). A collection written
// before usage existed is counted once, by a Query of its log, the first
// time Usage reads it.
//
// # Tombstone collection
//
// Purge (stores.Purger) reads each shard's log up to the read horizon
// with strongly consistent Queries (a log entry holds its record) and
// commits up to 48 purged records, 3.75 MB, per transaction: each
// record's put or delete conditioned on its seq, with its log entry, and
// an ADD of the usage change to the shard's head item, whose head it does
// not touch. A record Apply moved on fails its condition and is left. The
// horizon's positions are of one epoch's numbering of the log (its
// Epoch), so Purge reads K and the epoch from the epoch item and the
// store item (not from the instance's cache), refuses a horizon of
// another epoch, and every transaction checks that both items still hold
// the counters read and the epoch item no fence: after a reshard or
// rebuild by any instance, or a restore (BumpEpochs), the purge stops
// (stores.ErrEpochChanged) instead of purging the new logs by old
// positions.
//
// # Notifications and the stream consumer
//
// Apply notifies this instance's watchers after each commit. With
// Config.Streams set, a consumer reads the table's stream (DescribeStream,
// GetShardIterator, GetRecords; a child shard only after its parent is
// drained, so each item's records are seen in order): a change of a head
// item, by any store instance on the table, notifies watchers of the
// collection's new head. After the consumer fails and recovers, after an
// iterator expires, and when it fell behind the stream's 24-hour retention
// (TrimmedDataAccessException; it then restarts the shard from its oldest
// record), watchers get a Resync. The consumer starts at each shard's
// oldest record (TRIM_HORIZON), so foreign writes made while no store was
// running are captured on start; shards are read one after another by one
// goroutine, which suits the few shards of a Convergo table. At every
// shard refresh (Config.ShardRefresh) the consumer describes the table:
// when its latest stream is another one (the table deleted and created
// again, a restore in place; or its stream disabled and enabled again), it
// moves to it, logs that at warn, reads it from its oldest record, so that
// the foreign writes made to the new table before it moved are captured,
// and watchers get a Resync. From a table created again it moves at once
// (after the incarnation check, so a restored copy starts its new epoch
// before the first capture); on the same table, once the old stream is
// drained. A table without an enabled stream (a restore does not enable
// one) is a failure of the consumer, logged at warn and retried.
//
// # Capture of foreign writes
//
// A foreign item is one some other program (a Lambda, a script, the AWS
// console) writes straight to the table:
//
//	pk = "COLL#ID"   (a valid collection name, '#', a valid record id)
//	sk = 0
//	every other attribute is a field of record ID of collection COLL
//
// Reserved attribute names: pk and sk only (the item's key; they are never
// fields). Convergo recognises its own items by their '~' partition keys,
// so an attribute named like one of its own (cvg, rec, seq, ...) is an
// ordinary field on a foreign item. Items with other keys (another sort
// key, a key without '#', an invalid collection name or id) are other data
// in the table: passed over and counted (CaptureStats.Ignored).
//
// The consumer turns each stream record of a foreign item into a change
// and hands it to the capture sink (stores.Capturer: the engine registers
// its Apply), so it is admitted like any client write (validation, drift,
// limits), merges, takes a sequence number, reaches the log and wakes
// subscribers. The store never applies captured changes by itself: without
// a sink they are passed over, and registering a sink makes the consumer
// read the stream again from its oldest record, so nothing still in the
// stream is missed. A change the sink refuses (a record that would pass a
// limit, say) and a stream record that maps to no valid change are logged
// at warn with the item's key, stream sequence number and reason, counted
// (CaptureStats.Refused, Rejected), listed for an operator
// (RejectedCaptures) and skipped for good. When the sink fails a batch
// while it still takes changes, the consumer offers its collections one by
// one and parks the foreign writes of a collection whose changes still
// fail (a reshard's fence): kept in stream order, retried, applied once
// the sink takes them, while capture goes on for the others (park.go;
// CaptureStats.Parked, ParkedCaptures). Only an error of the sink as a
// whole (Ready) or of the capture ledger makes the consumer read the same
// records again.
//
// Only what a write changed becomes a change (the stream must show
// NEW_AND_OLD_IMAGES, as CreateTable makes it):
//
//   - INSERT: every attribute sets its field;
//   - MODIFY: an attribute whose value differs from the old image's, or
//     that the old image lacks, sets its field; an attribute of the old
//     image missing from the new one unsets its field; every other field
//     keeps its own stamp. So a foreign SET done = true cannot overwrite a
//     client's newer title, and after a client deleted the record it
//     revives done alone. A MODIFY without its old image (a NEW_IMAGE
//     stream) is rejected, not guessed;
//   - REMOVE: deletes the record.
//
// # Stamps of captured writes, and their window
//
// A captured change is stamped after the largest stamp its record holds
// (read consistently just before; crdt.Timestamp.Next of its MaxStamp) at
// the wall clock of the server that first sees its stream record, never
// earlier than the record's ApproximateCreationDateTime (which the stream
// rounds down: to the second on AWS, to the minute on DynamoDB Local): that
// clock's reading with logical 0 when it is ahead of the record, else the
// record's largest time with the next counter. A client's stamps may run up
// to the engine's drift bound ahead of the server's clock; stamped by the
// clock alone, a foreign write made after such a client write would lose
// to it. The replica id is Config.StreamReplica ("ddb-stream") + "-" + the
// record's sequence number padded to 40 digits: an id no client can own,
// which orders two captures of one time like the stream does. The first
// capture writes the stamp into the capture ledger (an item "~c#COLL#ID"
// holding the item's last captured sequence number and its stamp's wall
// time and counter) with a conditional
// update before handing the change to the sink; a duplicate delivery, a
// replay from the stream's start and the consumer of another server find
// the entry and reuse the stamp (applying it again is a no-op) or, for a
// record older than the entry's, skip it. A sink batch holds at most one
// record per item, so the ledger never runs more than one record ahead of
// the sink.
//
// The window: a foreign write is stamped up to one capture delay after it
// was made, the time the stream takes to show it (usually well under a
// second on AWS) plus the consumer's poll interval (Config.PollInterval)
// and its own lag. A client write to the same field stamped inside that
// window loses to the foreign write although it came later; one stamped
// before the foreign write also loses (correctly), even when its stamp ran
// ahead of the server's clock, and one stamped after the capture wins. When no server consumes the stream (all stopped, or the
// consumer failing), the window grows to the outage: foreign writes made
// meanwhile are stamped when consumption resumes, at most the stream's 24
// hours later.
//
// Attribute values become CBOR field values:
//
//	S     text string
//	N     integer if it is one within 64 bits ("1e3" is 1000), else float64
//	      (DynamoDB's 38 digits of precision are rounded)
//	B     byte string
//	BOOL  true / false
//	NULL  null
//	L     array
//	M     map with text keys
//	SS    array of text strings, sorted
//	NS    array of numbers, sorted by value
//	BS    array of byte strings, sorted
//
// Attribute names must be valid field names and values must fit
// crdt.MaxValueBytes and crdt.MaxNestedLevels; a stream record whose
// written attributes break a rule is rejected whole (logged, counted,
// listed). Convergo never writes foreign items:
// the captured state lives in the record item, not in the foreign one.
package dynamodb
