// Package client is the Go client of the Convergo sync protocol
// (docs/protocol.md): HTTP hello, push and pull, and live sync over a
// WebSocket (over which Push goes while Live holds a session open), plus
// Replica, a small in-memory local copy with an outbox for
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
// local write always sorts after what the client has seen; the clock
// adopts a stamp up to the max drift the server's hello announced (what
// the server itself takes), and a Replica's write observes its record
// again before it stamps, so it sorts after a value whose stamp was too
// far ahead to adopt when it came but no longer is.
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
// errors.Is; so is an answer over Config.MaxResponseBytes, as
// ErrAnswerTooLarge (which matches ErrProtocol too).
//
// The server judges each pushed change alone and refuses a bad one without
// the rest. Fitting pushes to the server's size limits is the client's job:
// Push batches within the hello's limits and splits a batch the server
// still refuses whole as too_large or malformed until the change at fault
// (one that does not fit, or that the server cannot read) stands alone and
// is refused with that code, so one bad change cannot stall an outbox
// (malformed only if the server reads a push of no changes: else the
// fault is not the change's, and it stays). A batch whose answer is over
// Config.MaxResponseBytes is split too, as the answer holds one result
// per change, but nothing is refused for it: a single change's answer
// still over it fails the push with ErrAnswerTooLarge, and the change
// stays in the outbox. A pull page whose answer is over it is asked for
// again from the same cursor with fewer records, which the rest of that
// pull keeps (docs/protocol.md section 8); one of a single record still
// over it fails the pull, nothing skipped. A
// batch refused whole for any other reason (forbidden, unauthenticated)
// is not its changes' fault: they stay in the outbox, and Flush returns
// the error every time until the server takes them. Restore cuts and
// splits the records it gives back by the same rules (proto.PushRoom; a
// record at fault refused alone, when the server reads a restore of no
// records).
//
// # Cursors
//
// A cursor is the server's opaque byte string (empty: the beginning). The
// client stores it and sends it back unchanged; it never parses or orders
// one. A broken server's cursors are read no further (docs/protocol.md
// section 8): one over proto.MaxCursorBytes is never stored, and a pull
// whose page says more after a cursor it asked from already, or that is
// reset a third time, fails; each is ErrProtocol, the collection's
// failure, and the pages before it stay applied.
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
// One collection's failure stays that collection's (docs/protocol.md,
// "Retrying"): the session streams the others. A sub refused to the token
// (forbidden, or invalid under the collection's scopes) leaves the
// collection unsubscribed until the TokenFunc returns a new token, when
// Live dials again with it, or until the next session; any other error
// of one collection's sub or pull (schema_ahead, internal, corrupt...)
// subscribes it again after a backoff of its own, so no refusal makes Live
// redial in a loop. Each is given once to Live's onError (a Replica's
// ReplicaConfig.OnError), until the collection is served again, and
// again for a failure of another code (internal, then schema_ahead: the
// app hears it must upgrade). A second
// reset of one collection in a session (a store goes back in time
// rarely: a server resetting every sub) is that collection's failure
// too, ErrProtocol, so that a reset storm cannot have it pulled, and
// healed, again and again, back to back; until the next session, a page
// of it does not serve it again, so that a server sending a page before
// each reset has its backoff grow and its failure told once. Live
// returns only for an error
// of the session that retrying cannot fix.
//
// # Schema versions
//
// Config.Migrations gives the client the schema versions of collections
// (the server's rules file, "migrations"); the client speaks each one's
// current version on every push, pull, subscription and restore, and the
// server translates to and from it. The client has no durable local store,
// so there is nothing of its own to migrate when a definition changes: a
// program built for a new version starts with the new definition and
// pulls. A change the server cannot translate is refused
// ErrUntranslatable (a Replica lists it with its rejected changes); a
// server running older rules answers ErrSchemaAhead, which is retried with
// backoff (a Replica keeps its outbox for its next sync; Live subscribes
// the collection again after a backoff while it streams the others).
//
// # Replica ids
//
// The server accepts only stamps of replica ids the token's subject owns
// (proto.ReplicaFor(subject, device)). A Client with no Config.Replica binds
// itself to the id of the subject its token names and Config.Device, as the
// browser client does: the sub claim of a JWT, read without checking it (no
// token is the anonymous subject), at New for Config.Token and at the first
// token a Config.TokenFunc returns, so a Replica writes before it ever
// reaches the server. New and NewReplica do not call a TokenFunc (they
// take no context); the first request does (a Hello, a Sync, even one the
// network fails), and so does a Replica's write while the client is not
// bound yet, with a context of its own bounded by Config.HandshakeTimeout
// (a write takes none), as the browser client reads its first token when
// it opens: a program that starts offline writes at once. A TokenFunc
// that fails then fails the write with ErrUnbound and its error; the next
// write asks it again. A token that is no JWT naming a subject leaves it
// unbound until its first hello, which binds it to the id of the subject
// the server names; until then Now fails with ErrUnbound. (A server whose
// Authorizer names another subject than the token's sub claim needs
// Config.Replica: changes stamped with the id read from the token stay in
// the outbox once a hello binds the client to another, below.) A later hello that
// names another subject (a Config.TokenFunc that now returns its token)
// binds it to that subject's id and ends a live session opened under the
// old subject, whose pages were read under the old subject's rights: Live
// dials again with the new token and resumes from its cursors. A
// refreshed token of the same subject keeps the session. The answer of a
// hello (or a live session's welcome) begun before the last one the client
// took is dropped: sent perhaps with the old subject's token, it does not
// bind the client back to the old subject, and such a session is ended.
// A Replica pushes only the changes written by its client's current id:
// those written as another subject stay in its outbox for when that
// subject signs in again (pushed under this one they would be refused
// forged_replica). A change refused forged_replica all the same (the
// token's subject changed while it was pushed) has the Replica greet the
// server to learn the subject, and stays so when it is another's.
//
// # Replica: the server's version and the local view
//
// A Replica keeps, per record, the server's version (base: pulled and live
// records plus acknowledged local changes) apart from its outbox; the
// local view is always base ⊔ the pending changes for the record. It lives
// in memory only: when the process ends, its outbox (writes not yet
// acknowledged), its rejected changes, its cursors and its records are
// gone, and a new Replica reads every collection from the beginning (a
// program that must not lose writes Syncs before it exits and reads
// Rejected). A long-lived program gives its Client a stable
// Config.Device: with the default, a random one, each restart is a new
// reader, and its predecessor's lease holds the server's tombstone
// collection back until it expires (or --max-leases drops it). Two Replicas running at once must
// not share a replica id (one subject and Device): nothing refuses them,
// and they still converge (equal stamps are ordered by value), but a
// write of one may tie with its twin's and lose to it without being
// rejected.
//
// A write that breaks a model limit (docs/protocol.md, section 11: a name
// or id too long, a value over crdt.MaxValueBytes or nested deeper than
// crdt.MaxValueNestedLevels, or a record the change would take past
// crdt.MaxFieldsPerRecord as the Replica holds it) is refused at once, as
// the browser client refuses it, with an error that matches the sentinel
// of the code the server would give it (ErrTooLarge, ErrInvalid,
// ErrMalformed) as well as crdt's; nothing is queued. Limits a client
// cannot foresee (a record grown past crdt.MaxRecordBytes once merged
// with what others wrote, a quota) are the server's to refuse.
//
// # Refused changes
//
// A refused change leaves the outbox, its record's view is rolled back to
// base ⊔ the remaining pending changes, and it is kept in Rejected() (at
// most MaxRejected entries / MaxRejectedBytes, the oldest dropped and
// counted by RejectedDropped); OnRejected reports it; Retry re-stamps it as
// a new write, Discard drops it.
//
// # Resets and healing
//
// When the server says a cursor is of another history (Page.Reset: its
// store was wiped, restored, or failed over), the Replica pulls the
// collection from the beginning and, when history was lost, heals the
// server: it restores every record it holds as the server sealed it
// (Client.Restore; anyone's stamps, and a reader's too) and pushes its own
// acknowledged stamps again. A change whose push is answered after such a
// reset came, or after the reading that follows a heal found the store
// gone back again (the store that acknowledged it may be the one that
// lost it, and the heal did not give it back, still pending then), stays
// in the outbox and is pushed again. A record the server refuses to take back (a
// seal it cannot verify: its seal key changed; or, refused alone as a
// whole restore, too large or unreadable for it) stays local only: the
// Replica logs a warning naming it, and once the heal is done gives
// ReplicaConfig.OnError an error naming the collection that counts them
// and wraps the last refusal (errors.Is matches its code's sentinel), and
// the rest of the heal goes on. A heal that fails is made again by the
// next Sync, or by Replica.Live itself, with backoff, while its session
// runs; one refused forbidden (the token no longer grants reading the
// collection, or writing the replica's own stamps back) is skipped, told
// to ReplicaConfig.OnError once, and the collection is pulled on; it
// stays owed, made again by the next Sync, Pull or Heal, which asks first
// with a restore of no records (while that is refused, nothing held is
// sent) and gives back what the replica holds once the server grants the
// collection again. The reading from the beginning that follows a heal must deliver
// what the heal gave back and the server acknowledged: one that does not
// (the store went back in time again meanwhile, which no cursor can tell,
// as the empty one carries no store identity) makes the Replica heal
// again and read again from the beginning (Live too, over HTTP), up to
// proto.MaxHealAgain times in a row, and then Pull and Sync return
// ErrNotHealed; Live and Apply, which no call of the application's
// returns it from, give it to ReplicaConfig.OnError. Only that reading's
// pages end it: one read from the empty cursor begins it, one read from
// where it stands goes on with it; a page read from elsewhere (a live
// subscription's, from the middle of the log, while the reading goes on
// over HTTP) delivers records all the same, and ends nothing.
// A record whose every give-back the server refuses collected (its
// stamps are before the collection's write horizon: the server deleted
// and collected it while the replica was away) is dropped at the end of
// that reading unless it delivers the record, as a reconciliation drops
// one (below): OnLeave reports it, and its pending changes move to the
// rejected changes with code collected. Nothing else local is dropped by
// a reset, except after a lease expired (below).
//
// # Leases and tombstone collection
//
// Every pull and subscription names the client's replica id and the
// collection's pending floor (the wall time of the oldest change for it in
// a Replica's outbox, none when nothing is pending): the server keeps the
// reader's lease with them, and collects a tombstone only once every
// reader with a live lease has seen it and no pending change is older than
// it. A reader away longer than its lease is reset with reason
// lease_expired, and the server refuses changes stamped before the
// collection's write horizon (code collected, ErrCollected). The Replica
// then reconciles: it holds the collection's outbox, pulls it from the
// beginning, gives back its own stamps of each record the server had
// acknowledged and no longer sends (an ordinary push: taken back, the
// record was lost by a store that went back in time, and stays), drops
// each whose stamps come back refused collected (deleted and collected:
// OnLeave reports it, nothing is deleted or queued) and moves that
// record's pending changes to the rejected changes with code collected,
// never pushed; then it pushes the outbox, and a
// change refused collected whose record the server still has, or which it
// created itself and never saw acknowledged, is re-stamped and pushed
// again, once (as the subject that wrote it only: one of a subject the
// client greeted away from since stays rejected collected). So that the reset comes before any push, Flush pulls a
// collection first when it was not pulled within ReplicaConfig.FreshFor
// (a minute); a pull the server refuses the token (forbidden, or invalid
// for a scope it cannot bind) does not hold the push, as in the browser
// client. A reading from the beginning of a collection whose records
// the server acknowledged to the Replica before it ever pulled (no lease
// protected them, and the empty cursor carries no store identity, so a
// store that went back in time resets it not) reconciles the same way,
// without a reset. Replica's doc, "Reconciliation", has the details.
//
// # Scopes and leave entries
//
// A collection may be read through named scopes (Config.Scopes,
// Client.SetScope, Client.RemoveScope): predicates of crdt/scope over a
// record's top-level fields. Every pull and subscription of the collection
// carries the "or" of its scopes; the server ands it with the scopes it
// imposes (its rules, the token's cvg_scopes claim) and sends only the
// records that match. For every other change after the cursor it sends a
// leave entry, a digest of the collection and the record's id
// (proto.LeaveDigest, Page.Leaves), and the Replica drops a record it
// holds whose id digests to one: from its base, without a delete and
// without touching the outbox (ReplicaConfig.OnLeave reports it). A
// record it holds deleted (a delete the server acknowledged) stays: no
// scope matches a deleted record, so a delete leaves every scoped reader,
// and the tombstone is what gives the delete back after the server lost
// it (a heal pushes the replica's own stamps). A local
// change of a record that left stays queued; if the server's write scope
// refuses it, it becomes a rejected change with code out_of_scope like any
// other refusal.
//
// Changing the scopes keeps the cursor: the next pull, and at once a
// running Live (which subscribes again on the same connection), sends the
// new "or" with the old cursor, and the server answers with the difference
// (records that entered the scope, leaves for those that left it) rather
// than everything again. A collection without scopes is read as before.
//
// # Expired tokens
//
// A request refused token_expired goes again once, with what the
// TokenFunc returns then; a live session ended so dials again. In that
// call, and in every call until the TokenFunc returns another token,
// RefusedToken(ctx) names the token the server refused: a TokenFunc that
// caches its token fetches a new one then, even when it reads the cached
// one as valid (its clock, or the server's, is off; the token was cut
// short).
//
// # Revoked access
//
// A server that puts the client's subject or token on its deny list
// answers every request 403 revoked (ErrRevoked) and closes its live
// sessions. A refusal of a token the TokenFunc has replaced since (a
// request, a live session or a push over it sent with the old one) says
// nothing of the current token: it goes again, once, with the current
// one, and is not acted on. A Replica told so purges every record it holds, of every
// collection, moves every change of its outbox to the rejected changes with
// code revoked, and stops: Sync, Flush, Pull, Heal and Live return the
// revocation (Replica.Revoked), writes and Retry fail with it. A program
// that regains access starts a new Replica.
//
// # The protocol
//
// The package has no protocol definitions of its own: versions, paths,
// headers, codes, statuses, limits, timings and wire types all come from
// transport/proto, which the server uses too. Importing proto does not link
// the server, its engine or its stores.
package client
