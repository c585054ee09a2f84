// What a tab does with a message from another tab of its database (see
// TabMessage in tabs.js for who sends each and why). Loaded on demand, when
// the first one comes (Database._onPeer): a tab alone never needs it.

import { ConvergoError } from './errors.js';
import { validateCollection } from './record.js';
import { TabMessage, fromWire, toWire } from './tabs.js';

/**
 * Handles message m from another tab in db, in the order they came.
 * @param {import('./database.js').Database} db
 * @param {any} m
 */
export function onPeer(db, m) {
  if (db.closed) return;
  switch (m.t) {
    case TabMessage.changed:
      if (typeof m.c === 'string' && Array.isArray(m.ids)) db._changed(m.c, new Map(m.ids.filter((/** @type {unknown} */ id) => typeof id === 'string').map((/** @type {string} */ id) => [id, undefined])), 'tab');
      break;
    case TabMessage.push:
      db.syncer?.kick();
      break;
    case TabMessage.retry:
      // A follower's page became visible.
      db.syncer?.retryNow('visible');
      break;
    case TabMessage.ask:
      // A tab opened and wants the sync status (and the token): the
      // leader answers.
      if (!db._status.leader) break;
      db._announce();
      db._postToken();
      break;
    case TabMessage.token:
      // Another tab set the token: the later one is every tab's (a tie
      // goes to the greater token, the same choice in every tab).
      if (typeof m.token !== 'string' || typeof m.at !== 'number' || !(m.at > db.tokAt || (m.at === db.tokAt && m.token > (db.tok ?? '')))) break;
      db.tokAt = m.at;
      if (m.token === db.tok) break;
      db.tok = m.token;
      db._retoken(m.token);
      break;
    case TabMessage.collection:
      // A tab opened a collection (it also stored the name for leaders
      // to come). The leader syncs it from now on, paused or not.
      if (db.leading && typeof m.c === 'string' && !db.collections.has(m.c)) {
        try {
          validateCollection(m.c);
        } catch {
          break;
        }
        db.collections.add(m.c);
        db.syncer?.addCollection(m.c);
      }
      break;
    case TabMessage.sync: {
      if (!db.leading) break;
      const answer = (/** @type {any} */ e) => db._post({ t: TabMessage.synced, n: m.n, error: e ? toWire(e) : undefined });
      if (!db.syncer) {
        if (db._status.paused) answer(new ConvergoError('network', 'sync: the leader tab is paused'));
        else db.startupSyncs.push(answer); // answered once the syncer runs (_lead)
        break;
      }
      db.syncer.requestSync().then(() => answer(null), answer);
      break;
    }
    case TabMessage.synced:
      db.peerSync?.get(m.n)?.(m.error);
      break;
    case TabMessage.refused:
      if (m.r && typeof m.r === 'object') db._onRefused(m.r);
      break;
    case TabMessage.serverReset:
    case TabMessage.reconciled:
    case TabMessage.superseded:
    case TabMessage.unreadable:
      // The message is named as the event (the leader's _tell).
      if (m.r && typeof m.r === 'object') db._emit(m.t, m.r);
      break;
    case TabMessage.auth:
      db._forgetToken(m.token);
    // falls through
    case TabMessage.schemaAhead:
      if (m.e && typeof m.e === 'object') db._emit(m.t, fromWire(m.e));
      break;
    case TabMessage.rejected:
      db._recountRejected();
      db._recount(true);
      break;
    case TabMessage.scope:
      // A tab changed the scopes of a collection (stored already).
      if (db.leading && typeof m.c === 'string' && db.collections.has(m.c)) db.syncer?.rescope(m.c);
      break;
    case TabMessage.revoked:
      if (m.r && typeof m.r === 'object') db._emit('revoked', m.r);
      db._recountRejected();
      db._recount(true);
      break;
    case TabMessage.status:
      if (!db._status.leader && m.s && typeof m.s === 'object') {
        const { pending, held, ...rest } = m.s;
        const lastError = rest.lastError ? fromWire(rest.lastError) : null;
        db._setStatus({ ...rest, lastError }, true);
        db._recount();
      }
      break;
  }
}
