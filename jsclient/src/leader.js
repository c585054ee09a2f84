// The sync loop of the tab that leads, wired to its Database: what the
// Syncer (sync.js) learns reaches the app in every tab. Loaded with the
// sync loop when a tab starts leading (Database._startSyncer); a tab that
// never leads never loads it.

import { ConvergoError } from './errors.js';
import { sentWith } from './protocol.js';
import { Syncer } from './sync.js';
import { openedCollections, outboxCounts } from './syncstore.js';
import { toWire } from './tabs.js';
import { SyncMessage, forgetToken, onRefused } from './peer.js';

/** @typedef {import('./database.js').Database} Database */
/** @typedef {import('./database.js').Revocation} Revocation */
/** @typedef {import('./database.js').Unreadable} Unreadable */

/**
 * Starts db's sync loop, leader.js having loaded (Database._startSyncer):
 * the failed loads before are forgotten, and the loop starts unless
 * another call started one, the database closed or paused, or another tab
 * leads, meanwhile.
 * @param {Database} db
 */
export async function startLoop(db) {
  clearTimeout(db.loadTimer);
  db.loadTimer = null;
  db.loadAttempt = 0;
  db.syncLoadError = null;
  // What happened while it loaded.
  if (db.syncer || db.closed || db._status.paused || !db.leading) return;
  const syncer = await syncerFor(db);
  // And while syncerFor read the collections.
  if (!syncer || db.syncer || db.closed || db._status.paused || !db.leading) return;
  db.syncer = syncer;
  syncer.start();
}

/**
 * A sync loop for db, not started, once the collections other tabs opened
 * are db's too; null (told as an 'error') when there is no fetch.
 * @param {Database} db
 * @returns {Promise<Syncer|null>}
 */
export async function syncerFor(db) {
  // Collections that other tabs opened, now or before a reload: a
  // follower's subscriptions depend on the leader pulling them.
  try {
    for (const c of await openedCollections(db.store)) db.collections.add(c);
  } catch (e) {
    if (!db.closed) db._emit('error', e);
  }
  const o = db.o;
  const f = o.fetch ?? globalThis.fetch?.bind(globalThis);
  if (!f) {
    db._emit('error', new ConvergoError('network', 'open: no fetch available'));
    return null;
  }
  const kept = syncedKeeper(db);
  return new Syncer({
    url: /** @type {string} */ (o.url),
    store: db.store,
    collections: () => [...db.collections],
    token: (force) => token(db, force),
    fetch: f,
    WebSocket: o.WebSocket === undefined ? globalThis.WebSocket ?? null : o.WebSocket,
    // The Store reports what pulls and rollbacks changed (onChange),
    // in commit order.
    onChanges: () => {},
    // What the server told the leader, every tab's app hears (tell).
    onRefused: (r) => {
      // A refusal settled as this tab closes (its last push answered)
      // still reaches the other tabs: the writer may be one of them.
      db._post({ t: SyncMessage.refused, r });
      if (!db.closed) onRefused(db, r);
    },
    onServerReset: (r) => tell(db, { t: SyncMessage.serverReset, r }, r),
    onReconciled: (r) => tell(db, { t: SyncMessage.reconciled, r }, r),
    onSuperseded: (r) => tell(db, { t: SyncMessage.superseded, r }, r),
    onStatus: (s) => {
      db._setStatus(s);
      if (s.lastSyncedAt) kept.synced(s.lastSyncedAt);
    },
    onStopped: () => kept.stopped(),
    // 'error' stays in this tab: it tells of failures for the tab's own
    // log (the leader's sync loop, a tab's IndexedDB, a listener that
    // threw), and an error every tab told would be logged once per tab.
    // What a sync failure means for the app reaches every tab as
    // status.lastError, 'auth', 'schemaAhead', 'unreadable' or 'revoked'.
    onError: (e) => db._emit('error', e),
    onAuth: (e) => {
      const token = sentWith.get(e);
      forgetToken(db, token);
      tell(db, { t: SyncMessage.auth, e: toWire(e), token }, e);
    },
    leaves: async (c, leaves) => {
      const { LeaveIndex } = await import('./scope.js');
      db.leaveIndex ??= new LeaveIndex();
      return db.leaveIndex.resolve(db.store, c, leaves);
    },
    onRevoked: (e) => onRevoked(db, e),
    onSchemaAhead: (e) => {
      // The followers take the flag from the status this announces.
      db._setStatus({ schemaAhead: true });
      tell(db, { t: SyncMessage.schemaAhead, e: toWire(e) }, e);
    },
    onUnreadable: (c, u) => unreadable(db, c, u),
    pollInterval: o.pollInterval,
    backoff: o.backoff,
  });
}

/**
 * Database.sync() in the tab that leads, once its loop runs: a round now
 * (while disconnected it also reconnects at once), with status.syncing
 * set meanwhile and a failure kept as status.lastError.
 * @param {Database} db
 * @param {import('./sync.js').Syncer} syncer
 * @returns {Promise<void>}
 */
export async function syncNow(db, syncer) {
  db._setStatus({ syncing: true });
  try {
    await syncer.requestSync();
  } catch (e) {
    db._setStatus({ lastError: /** @type {any} */ (e) });
    throw e;
  } finally {
    db._setStatus({ syncing: false });
  }
}

/**
 * The tab's loop runs now that it leads (Database._lead): the sync()
 * calls of other tabs that came while it started (waiting, peer.js) and
 * those of this tab made before it knew it would lead (they went to a
 * leader that was not there) are answered after a round.
 * @param {Database} db
 * @param {import('./sync.js').Syncer} syncer
 * @param {((syncer: import('./sync.js').Syncer|null) => void)[]} waiting
 */
export function answerWaiting(db, syncer, waiting) {
  for (const settle of waiting) settle(syncer);
  for (const w of db.peerSync?.values() ?? []) syncer.requestSync().then(() => w.done(), (/** @type {any} */ e) => w.done(e ? toWire(e) : undefined));
}

/** How long the leader lets lastSyncedAt settle before storing it (ms). */
const STORE_SYNCED_MS = 500;

/**
 * Keeps the lastSyncedAt one sync loop of db reports for after a reload:
 * stored at most every STORE_SYNCED_MS, and one still waiting stored when
 * the loop stops (Database.close or pause awaits Syncer.stop, which awaits
 * stopped). Its timer is the loop's alone.
 * @param {Database} db
 */
function syncedKeeper(db) {
  /** @type {number} */
  let at;
  /** @type {any} */
  let timer = null;
  let done = false;
  const store = () => {
    clearTimeout(timer);
    timer = null;
    return db.store.setMeta('lastSyncedAt', at).then(() => {}, () => {});
  };
  return {
    /** @param {number} t the loop's lastSyncedAt */
    synced(t) {
      if (done) return;
      at = t;
      timer ??= setTimeout(store, STORE_SYNCED_MS);
    },
    /** @returns {Promise<void>} */
    stopped() {
      done = true;
      return timer === null ? Promise.resolve() : store();
    },
  };
}

/**
 * The server revoked the subject (the leader's Syncer): purge, tell the
 * app and the other tabs.
 * @param {Database} db
 * @param {ConvergoError} e
 */
async function onRevoked(db, e) {
  db.leaveIndex = null;
  const { moved, dropped } = await (await import('./scope.js')).purge(db.store, e, db.syncer?.subject() ?? null);
  /** @type {Revocation} */
  const r = { message: e.message, requestId: e.requestId ?? null, moved, dropped };
  db._setStatus({ revoked: true, online: false, ...(await outboxCounts(db.store)), rejected: await db.store.rejectedCount() });
  tell(db, { t: SyncMessage.revoked, r }, r);
}

/**
 * The server refused collection c to the token (u), or a pull of it
 * succeeded (null; after a refused heal, the heal: Syncer.healOwed):
 * the status lists it until then, and every tab hears
 * it once, unless the status said so already (a refused heal stays
 * said through the pulls refused after it).
 * @param {Database} db
 * @param {string} c
 * @param {Unreadable|null} u
 */
function unreadable(db, c, u) {
  const list = db._status.unreadable;
  const was = list.find((x) => x.collection === c);
  // A refused pull and a refused sub say the same: told once.
  if (u ? was?.code === u.code && (was.op === 'heal' || u.op !== 'heal') : !was) return;
  db._setStatus({ unreadable: [...list.filter((x) => x !== was), ...(u ? [u] : [])] });
  if (u) tell(db, { t: SyncMessage.unreadable, r: u }, u);
}

/**
 * The leader learned what the app hears in every tab: it emits event m.t
 * with arg here and posts m, which the other tabs re-emit (_onPeer), so
 * each tab's listeners hear it once. Closing, it emits nothing here, but
 * the other tabs still hear what its last requests were answered (a
 * write of theirs superseded as it closes).
 * @param {Database} db
 * @param {import('./tabs.js').TabMsg & {t: 'serverReset'|'reconciled'|'superseded'|'revoked'|'auth'|'schemaAhead'|'unreadable'}} m
 * @param {unknown} arg
 */
function tell(db, m, arg) {
  db._post(m);
  if (!db.closed) db._emit(m.t, arg);
}

/**
 * The token the sync loop sends (Syncer's token option): with getToken,
 * a fresh one when force is set or none is held, which becomes every
 * tab's; else the one held ('' for none).
 * @param {Database} db
 * @param {boolean} force
 * @returns {Promise<string>}
 */
export async function token(db, force) {
  if (db.o.getToken && (force || db.tok === null)) {
    const asked = db.tokAt;
    const t = await db.o.getToken();
    if (typeof t !== 'string') throw new ConvergoError('unauthenticated', 'getToken did not return a string');
    // A token set meanwhile (setToken, another tab's) is newer than
    // this answer, which was asked for before it: it stays.
    if (db.tokAt === asked) {
      db._ownToken(t);
      await db._writeAs(t);
    }
  }
  return db.tok ?? '';
}
