// The sync loop of the tab that leads, wired to its Database: what the
// Syncer (sync.js) learns reaches the app in every tab. Loaded with the
// sync loop when a tab starts leading (Database._startSyncer); a tab that
// never leads never loads it.

import { ConvergoError, sentWith } from './errors.js';
import { Syncer } from './sync.js';
import { TabMessage, toWire } from './tabs.js';

/** @typedef {import('./database.js').Database} Database */
/** @typedef {import('./database.js').Revocation} Revocation */
/** @typedef {import('./database.js').Unreadable} Unreadable */

/**
 * A sync loop for db, not started; null (told as an 'error') when there
 * is no fetch.
 * @param {Database} db
 * @returns {Syncer|null}
 */
export function syncerFor(db) {
  const o = db.o;
  const f = o.fetch ?? globalThis.fetch?.bind(globalThis);
  if (!f) {
    db._emit('error', new ConvergoError('network', 'open: no fetch available'));
    return null;
  }
  return new Syncer({
    url: /** @type {string} */ (o.url),
    store: db.store,
    collections: () => [...db.collections],
    token: (force) => db._token(force),
    fetch: f,
    WebSocket: o.WebSocket === undefined ? globalThis.WebSocket ?? null : o.WebSocket,
    // The Store reports what pulls and rollbacks changed (onChange),
    // in commit order.
    onChanges: () => {},
    // What the server told the leader, every tab's app hears (_tell).
    onRefused: (r) => {
      if (db.closed) return;
      db._post({ t: TabMessage.refused, r });
      db._onRefused(r);
    },
    onServerReset: (r) => db._tell({ t: TabMessage.serverReset, r }, r),
    onReconciled: (r) => db._tell({ t: TabMessage.reconciled, r }, r),
    onSuperseded: (r) => db._tell({ t: TabMessage.superseded, r }, r),
    onStatus: (s) => db._setStatus(s),
    // 'error' stays in this tab: it tells of failures for the tab's own
    // log (the leader's sync loop, a tab's IndexedDB, a listener that
    // threw), and an error every tab told would be logged once per tab.
    // What a sync failure means for the app reaches every tab as
    // status.lastError, 'auth', 'schemaAhead', 'unreadable' or 'revoked'.
    onError: (e) => db._emit('error', e),
    onAuth: (e) => {
      const token = sentWith.get(e);
      db._forgetToken(token);
      db._tell({ t: TabMessage.auth, e: toWire(e), token }, e);
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
      db._tell({ t: TabMessage.schemaAhead, e: toWire(e) }, e);
    },
    onUnreadable: (c, u) => unreadable(db, c, u),
    pollInterval: o.pollInterval,
    backoff: o.backoff,
  });
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
  db._setStatus({ revoked: true, online: false, ...(await db.store.outboxCounts()), rejected: await db.store.rejectedCount() });
  db._tell({ t: TabMessage.revoked, r }, r);
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
  if (u) db._tell({ t: TabMessage.unreadable, r: u }, u);
}
