// How the tabs of one database work together. They share one IndexedDB
// database, but only one of them, the leader, runs the sync loop: the tab
// that holds the Web Lock "convergo:<name>". The others (followers) reach it
// through the messages below, posted on the BroadcastChannel of the same
// name. When the leader closes, the lock passes to a waiting tab, which
// becomes the leader.
//
// This module names the messages every tab posts (TabMessage); the names
// of those only the sync side sends and reads are peer.js's (SyncMessage),
// so that the main entry does not carry them. channel.js carries them and
// asks for the lock; what a tab does on receiving one is the Database's
// (database.js, _onPeer, and peer.js).

/** @typedef {import('./database.js').Status} Status */

/**
 * The messages on a database's BroadcastChannel. Each is an object whose
 * field `t` is one of these names (from `sync` and `synced`, and from
 * `refused` to `revoked` with `auth`, `schemaAhead` and `unreadable`:
 * peer.js's SyncMessage; the others: TabMessage below). A tab receives every message but its
 * own; the ones marked "leader" are ignored by followers and the other way
 * round. "A tab without a sync loop" is a follower, or the leader while
 * paused (then nobody acts on it). The app's events that only the leader
 * learns (from refused to revoked, and auth, schemaAhead, unreadable) are named as the
 * event each carries: the leader emits it and posts it, the others emit it
 * on receipt, so each tab's listeners hear it once. The others are each
 * tab's own: 'status' (a follower's mirrors the leader's `status`),
 * 'change' (`changed`), 'reset' (each tab's Store sees the wipe) and
 * 'error' (database.js, _startSyncer, says why).
 *
 * | t            | sent by                                   | fields                               | the receiver                                                        |
 * |--------------|-------------------------------------------|--------------------------------------|---------------------------------------------------------------------|
 * | `changed`    | any tab: its own writes and what its schema upgrade changed as it opened; the leader also what it pulled or rolled back | `c` collection, `ids` record ids | refreshes its subscriptions to them, emits 'change' with origin 'tab' |
 * | `push`       | a tab without a sync loop, after a write; every tab, as it opens, when changes are pending | none | leader: pushes the outbox soon (Syncer.kick) and counts it (status.pending, held) |
 * | `retry`      | a tab without a sync loop whose page became visible | none                       | leader: cuts a reconnect wait short (Syncer.retryNow('visible'))   |
 * | `ask`        | every tab, as it opens                    | none                                 | leader: answers with `status`                                       |
 * | `collection` | every tab, as it opens, for each collection of its options; a tab without a sync loop, for a collection it opens later | `c` collection | leader: syncs c from now on (paused or not), if c is a valid name it did not sync yet |
 * | `lead`       | a tab, as it starts leading               | none                                 | asks again, of it, for each of its sync() calls not answered yet (`sync`): the leader they went to closed first |
 * | `sync`       | a tab without a sync loop, for its sync(); again on `lead` | `n` a random number naming the call | leader: syncs now and answers `synced`; while it starts, once it runs; while paused, at once with a network error; closing, a failure is not answered (the next leader is asked again); an n it took already (asked again on its `lead`) is neither run nor answered again |
 * | `synced`     | the leader, answering `sync`              | `n` as in the call, `error` {code, message, requestId?} or absent | the tab whose call n is: resolves that sync(), or rejects it with error |
 * | `status`     | the leader, when its status changes and on `ask` | `s` its Status without leader, paused; lastError as {code, message, requestId?} or null | followers: take it as theirs, counting pending and held in their own read of the outbox |
 * | `refused`    | the leader, when the server refused a pushed change | `r` the Refusal             | emits 'refused', counts it for whenSynced, recounts the rejected changes |
 * | `serverReset`| the leader, when the server reset a collection's cursor | `r` {collection, reason, message} | emits 'serverReset' |
 * | `reconciled` | the leader, when it reconciled a collection and pushed its outbox: after lease_expired, or at the first pull of a collection it pushed to and never pulled if that dropped or rejected something | `r` the Reconciliation | emits 'reconciled' |
 * | `superseded` | the leader, when fields of a pushed change lost to newer writes | `r` as the 'superseded' event | emits 'superseded' |
 * | `auth`       | the leader, when the server refused its token | `e` the refusal, a WireError; `token` the token refused, if known | with getToken, forgets the token if it is that one (asks getToken should it lead); emits 'auth' |
 * | `schemaAhead`| the leader, when the server refused a schema version it does not have yet (after the `status` that sets schemaAhead) | `e` the refusal, a WireError | emits 'schemaAhead' |
 * | `unreadable` | the leader, when the server refused a pull, a live sub or a heal of a collection to the token (after the `status` that lists it) | `r` the Unreadable | emits 'unreadable' |
 * | `rejected`   | any tab that retried or discarded a rejected change | none                        | recounts the rejected changes (status.rejected)                     |
 * | `scope`      | a tab without a sync loop that changed the scopes of a collection (stored already); every tab, as it opens, for each collection whose scopes its options changed | `c` collection | leader: reads c again under its new scope (Syncer.rescope) |
 * | `revoked`    | the leader, when the server revoked the subject and it purged | `r` the Revocation | emits 'revoked', recounts the rejected changes |
 * | `reset`      | the tab that found the database wiped and rebuilt it (wiped.js): the others' connections reopen on a database whose identity is theirs already | none | clears what it remembers of the records, counts the rebuilt database and emits 'reset' (Database._onReset) |
 * | `token`      | a tab whose token changed (setToken, getToken's answer), or that opened with one; the leader, on `ask` | `token` the token, `at` when it was set (ms; later than any token the tab held before) | takes it if it is later than its own (at; a tie goes to the greater token), as setToken does: one token for the whole database, never stored |
 */
export const TabMessage = Object.freeze({
  changed: 'changed',
  push: 'push',
  retry: 'retry',
  ask: 'ask',
  collection: 'collection',
  lead: 'lead',
  status: 'status',
  rejected: 'rejected',
  scope: 'scope',
  token: 'token',
  reset: 'reset',
});

/**
 * An error as it crosses between tabs (a ConvergoError does not survive
 * structured cloning as one).
 * @typedef {{code: any, message: string, requestId?: string}} WireError
 */

/**
 * The leader's status as it announces it.
 * @typedef {Omit<Status, 'leader'|'paused'|'lastError'> & {lastError: WireError|null}} WireStatus
 */

/**
 * A message to post: see TabMessage.
 * @typedef {{t: typeof TabMessage.changed, c: string, ids: string[]}
 *   | {t: typeof TabMessage.push}
 *   | {t: typeof TabMessage.retry}
 *   | {t: typeof TabMessage.ask}
 *   | {t: typeof TabMessage.collection, c: string}
 *   | {t: typeof TabMessage.lead}
 *   | {t: typeof import('./peer.js').SyncMessage.sync, n: number}
 *   | {t: typeof import('./peer.js').SyncMessage.synced, n: number, error: WireError|undefined}
 *   | {t: typeof TabMessage.status, s: WireStatus}
 *   | {t: typeof import('./peer.js').SyncMessage.refused, r: import('./database.js').Refusal}
 *   | {t: typeof import('./peer.js').SyncMessage.serverReset, r: {collection: string, reason: string, message: string}}
 *   | {t: typeof import('./peer.js').SyncMessage.reconciled, r: import('./sync.js').Reconciliation}
 *   | {t: typeof import('./peer.js').SyncMessage.superseded, r: import('./sync.js').Superseded}
 *   | {t: typeof import('./peer.js').SyncMessage.auth, e: WireError, token?: string}
 *   | {t: typeof import('./peer.js').SyncMessage.schemaAhead, e: WireError}
 *   | {t: typeof import('./peer.js').SyncMessage.unreadable, r: import('./database.js').Unreadable}
 *   | {t: typeof TabMessage.rejected}
 *   | {t: typeof TabMessage.scope, c: string}
 *   | {t: typeof import('./peer.js').SyncMessage.revoked, r: import('./database.js').Revocation}
 *   | {t: typeof TabMessage.token, token: string, at: number}
 *   | {t: typeof TabMessage.reset}} TabMsg
 */

/**
 * An error in the form that crosses between tabs.
 * @param {any} e
 * @returns {WireError}
 */
export function toWire(e) {
  /** @type {WireError} */
  const w = { code: e.code, message: e.message };
  if (typeof e.requestId === 'string') w.requestId = e.requestId;
  return w;
}
